"""The second half of the pipeline, one subtask per host:
fleet:up -> bootstrap:<host> -> sync:<host> -> upgrade:<host> -> config:<host>
-> content:<host> -> check:<host> -> deploy:<host>  (bootstrap and config: tasks/config.py).
And rollback:content:<host>, run only when asked for."""
import functools

from doit.tools import config_changed

from outpost import content as content_step
from outpost import steps
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
    wanted = steps.wanted_versions(inventory)
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Upgrade the packages on {host.name} and restart their services",
            "actions": [action(steps.upgrade, inventory, host)],
            "file_dep": steps.host_marker(inventory, host),
            # Runs when the version the host should have changed, not on every sync.
            "uptodate": [config_changed(wanted)],
            "task_dep": [f"sync:{host.name}"],
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


def rollback(inventory):
    """rollback:content:<host> switches a host's content back one release, rollback:content
    every host's; `doit rollback` rolls back every kind there is (so far, content)."""
    if not content_step.packages(inventory):
        return
    for host in inventory.hosts:
        yield {
            "name": f"content:{host.name}",
            "doc": f"Switch {host.name}'s content back to the release before (no transfer)",
            # No inputs: it runs whenever it is asked for, and deploy never asks.
            "actions": [action(steps.rollback_content, inventory, host)],
            "verbosity": 2,
        }
    yield {
        "name": "content",
        "doc": "Switch every host's content back to the release before",
        "actions": None,
        "task_dep": [f"rollback:content:{host.name}" for host in inventory.hosts],
    }


def check(inventory):
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Check over HTTPS that {host.name} serves the app and the pushed content",
            # No inputs: it always runs. It only reads, so a no-op deploy stays a no-op.
            "actions": [action(steps.check, inventory, host)],
            "task_dep": [f"content:{host.name}"],
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
