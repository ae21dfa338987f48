"""content:<host>: a new release of content/ on the host, switched in (after config:<host>);
and rollback:content[:<host>], each host back one release, only when asked for."""
import functools

from doit.tools import config_changed

from outpost.steps import content as content_step
from outpost.steps.common import host_marker
from outpost.taskutil import action


def content(inventory):
    packages = content_step.packages(inventory)
    if not packages:
        return
    # The manifest of content/, made now: a link out of it stops the run before any host.
    for package in packages:
        content_step.manifest(inventory, package)
    # `doit content` logs in to every host to be pushed to first, all at once (login:<host>).
    yield {"name": None, "doc": "Push the content to each host as a new release, and switch to it.",
           "task_dep": ["login"]}
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Push the content to {host.name} as a new release and switch to it",
            "actions": [action(content_step.push_content, inventory, host)],
            "file_dep": host_marker(inventory, host),
            "uptodate": [config_changed({"address": host.address,
                                         "dest": [p.content_dir for p in packages]}),
                         functools.partial(content_step.content_is_current, inventory, host)],
            "task_dep": [f"login:{host.name}", f"config:{host.name}"],
        }


def rollback(inventory):
    """rollback:content:<host> switches a host's content back one release (no transfer),
    rollback:content every host's."""
    if not content_step.packages(inventory):
        return
    for host in inventory.hosts:
        yield {
            "name": f"content:{host.name}",
            "doc": f"Switch {host.name}'s content back to the release before (no transfer)",
            # No inputs: it runs whenever it is asked for, and deploy never asks.
            "actions": [action(content_step.rollback_content, inventory, host)],
            "verbosity": 2,
        }
    yield {
        "name": "content",
        "doc": "Switch every host's content back to the release before",
        "actions": None,
        "task_dep": [f"rollback:content:{host.name}" for host in inventory.hosts],
    }
