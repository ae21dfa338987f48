"""The second half of the pipeline, one subtask per host:
fleet:up -> bootstrap:<host> -> sync:<host> -> upgrade:<host> -> config:<host>
-> content:<host> -> check:<host> -> deploy:<host>  (bootstrap and config: tasks/config.py).
And rollback:content:<host>, run only when asked for."""
import functools

from doit.tools import config_changed

from outpost import content as content_step
from outpost import rollout, steps
from outpost.taskutil import action


def fleet(inventory):
    if inventory.fleet is None:
        return
    yield {
        "name": "up",
        "doc": "Start the local fleet's hosts that are down",
        "actions": [action(steps.fleet_up, inventory)],
        # The pinned host keys and the deploy key: the host steps depend on them.
        "targets": [str(inventory.ssh.known_hosts), str(inventory.ssh.identity)],
        # Checked without SSH, so a no-op deploy touches no host.
        "uptodate": [lambda: steps.fleet_is_up(inventory)],
    }
    yield {
        "name": "down",
        "doc": "Stop every host of the local fleet",
        "actions": [action(steps.fleet_down, inventory)],
        "uptodate": [lambda: not steps.fleet_any_up(inventory)],
    }


def sync(inventory):
    for host in inventory.hosts:
        index = steps.repo_index(inventory, host.arch)
        yield {
            "name": host.name,
            "doc": f"Copy the {host.arch} repository and its public key to {host.name}",
            "actions": [action(steps.sync, inventory, host)],
            "file_dep": [str(index), str(inventory.repository.public_key)]
            + steps.host_marker(inventory, host),
            "uptodate": [config_changed(steps.sync_settings(inventory, host))],
            "task_dep": [f"bootstrap:{host.name}"],
        }


def upgrade(inventory):
    problem = steps.broken_template(inventory)
    if problem:
        # Hosts keep what they run; config, content and check go on for the current version.
        for host in inventory.hosts:
            yield {"name": host.name, "doc": f"Upgrade {host.name} (skipped: a template is broken)",
                   "actions": [action(steps.skip_upgrade, host, problem, read_only=True)],
                   "uptodate": [False]}
        return
    wanted = steps.wanted_versions(inventory)
    # Canary first, then batches: each host's upgrade waits for the batch before it, and a
    # host that fails the gate stops every upgrade after it (doit runs no task whose
    # task_dep failed). `doit info upgrade:<host>` shows whom it waits for.
    order = rollout.batches(inventory.hosts, inventory.canary, inventory.rollout.batch_size)
    for number, batch in enumerate(order):
        waits_for = [f"upgrade:{h.name}" for h in order[number - 1]] if number else []
        for host in batch:
            role = "the canary" if number == 0 else f"batch {number}"
            yield {
                "name": host.name,
                "doc": f"Upgrade {host.name} ({role}) and gate it on its health path",
                "actions": [action(steps.upgrade, inventory, host)],
                "file_dep": steps.host_marker(inventory, host),
                # Up to date when the host's record (written when it passed the gate) says
                # it runs the wanted versions: no connection, and a failed or reverted
                # host is tried again by the next run.
                "uptodate": [steps.HostRuns(inventory, host, wanted)],
                "task_dep": [f"sync:{host.name}"] + waits_for,
            }


def content(inventory):
    packages = content_step.packages(inventory)
    if not packages:
        return
    # The manifest of content/, made now: a link out of it stops the run before any host.
    for package in packages:
        content_step.manifest(inventory, package)
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Push the content to {host.name} as a new release and switch to it",
            "actions": [action(steps.push_content, inventory, host)],
            "file_dep": steps.host_marker(inventory, host),
            "uptodate": [config_changed({"address": host.address,
                                         "dest": [p.content_dir for p in packages]}),
                         functools.partial(steps.content_is_current, inventory, host)],
            "task_dep": [f"config:{host.name}"],
        }


def dns_tasks(inventory, host) -> list[str]:
    """What the check waits for on the DNS side (tasks/dns.py): the host's own nameserver, or
    the map on Gcore."""
    if inventory.dns is None:
        return []
    return [f"dns:{host.name}"] if inventory.dns.provider == "gdnsd" else ["dns:gcore"]



def check(inventory):
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Check over HTTPS that {host.name} serves the app and the pushed content",
            # No inputs: it always runs. It only reads, so a no-op deploy stays a no-op.
            "actions": [action(steps.check, inventory, host, read_only=True)],
            "task_dep": [f"content:{host.name}"] + dns_tasks(inventory, host),
            "verbosity": 2,
        }


def deploy(inventory):
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Run the whole pipeline for {host.name}",
            "actions": None,
            "task_dep": [f"check:{host.name}"],
        }
