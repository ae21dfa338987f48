"""Going back on purpose: `doit rollback` runs every rollback:<part> subtask.

rollback:app puts every host back on the app version it ran before, canary first and gated
as an upgrade is, and holds it there (see steps.rollback_app). Content releases may add
rollback:content beside it; `doit rollback:app` alone leaves the content as it is."""
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
