"""Going back on purpose: `doit rollback` runs every rollback:<part> subtask.

rollback:app puts every host back on the app version it ran before, canary first and gated
as an upgrade is, and holds it there (see steps.rollback_app). rollback:content switches every
host's content back one release. `doit rollback:app` or `doit rollback:content` does one alone."""
from outpost import content as content_step
from outpost import steps
from outpost.taskutil import action


def rollback(inventory):
    yield {
        "name": "app",
        "doc": "Put every host back on the app version it ran before (canary first, gated)",
        "actions": [action(steps.rollback_app, inventory)],
        # Always runs when asked for; `doit deploy` never asks for it.
        "uptodate": [False],
        "verbosity": 2,
    }
    yield from content(inventory)


def content(inventory):
    """rollback:content:<host> switches a host's content back one release (no transfer),
    rollback:content every host's."""
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
