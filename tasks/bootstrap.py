"""bootstrap:<host>: root's one-time setup of each host (commands.bootstrap): as root over SSH
with [ssh] bootstrap_identity, else checked and written to build/bootstrap/<host>.sh."""
from doit.tools import config_changed

from outpost import render
from outpost.commands import bootstrap as bootstrap_commands
from outpost.steps import bootstrap as bootstrap_step
from outpost.steps.common import host_marker
from outpost.taskutil import action


def bootstrap(inventory):
    hosts = [(host, bootstrap_commands.host_plan(inventory, host)) for host in inventory.hosts]
    if inventory.acme is not None:
        hosts.append((inventory.acme.cert_host, bootstrap_commands.certhost_plan(inventory)))
    for host, plan in hosts:
        yield {
            "name": host.name,
            "doc": f"Prepare {host.name} as root: base packages, the repository's key and list,"
                   f" the bundle helper and its doas rule",
            "actions": [action(bootstrap_step.bootstrap, inventory, host, plan)],
            "file_dep": [str(inventory.repository.public_key),
                         str(render.TEMPLATES / bootstrap_commands.HELPER_TEMPLATE)]
            + host_marker(inventory, host),
            "targets": [str(bootstrap_step.bootstrap_file(inventory, host))],
            "uptodate": [config_changed(bootstrap_step.bootstrap_settings(plan, inventory))],
            "task_dep": ["fleet:up"] if inventory.fleet is not None else [],
        }
