"""sync:<host>: the host's doas rules and content folders, then its arch folder of the
repository (after bootstrap:<host>)."""
from doit.tools import config_changed

from outpost.steps import sync as sync_step
from outpost.steps.common import host_marker
from outpost.taskutil import action


def sync(inventory):
    for host in inventory.hosts:
        index = sync_step.repo_index(inventory, host.arch)
        yield {
            "name": host.name,
            "doc": f"Copy the {host.arch} repository and its public key to {host.name}",
            "actions": [action(sync_step.sync, inventory, host)],
            "file_dep": [str(index), str(inventory.repository.public_key)]
            + host_marker(inventory, host),
            "uptodate": [config_changed(sync_step.sync_settings(inventory, host))],
            "task_dep": [f"bootstrap:{host.name}"],
        }
