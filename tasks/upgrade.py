"""upgrade:<host>: the canary, then the batches, each host gated on its health path (after
sync:<host>); and rollback:app, every host back on the versions it ran before, only when
asked for (`doit rollback`; see steps.upgrade.rollback_app)."""
from outpost.commands import upgrade as upgrade_commands
from outpost.steps import upgrade as upgrade_step
from outpost.steps.build import broken_template
from outpost.steps.common import host_marker
from outpost.taskutil import action


def upgrade(inventory):
    problem = broken_template(inventory)
    if problem:
        # Hosts keep what they run; config, content and check go on for the current version.
        for host in inventory.hosts:
            yield {"name": host.name, "doc": f"Upgrade {host.name} (skipped: a template is broken)",
                   "actions": [action(upgrade_step.skip_upgrade, host, problem, read_only=True)],
                   "uptodate": [False]}
        return
    wanted = upgrade_step.wanted_versions(inventory)
    # Canary first, then batches: each host's upgrade waits for the whole batch before it
    # (doit's threads run a batch at once), and a host that fails the gate stops every batch
    # after its own (doit runs no task whose task_dep failed). `doit info upgrade:<host>`
    # shows whom it waits for.
    order = upgrade_commands.batches(inventory.hosts, inventory.canary, inventory.rollout.batch_size)
    for number, batch in enumerate(order):
        waits_for = [f"upgrade:{h.name}" for h in order[number - 1]] if number else []
        for host in batch:
            role = "the canary" if number == 0 else f"batch {number}"
            yield {
                "name": host.name,
                "doc": f"Upgrade {host.name} ({role}) and gate it on its health path",
                "actions": [action(upgrade_step.upgrade, inventory, host)],
                "file_dep": host_marker(inventory, host),
                # Up to date when the host's record (written when it passed the gate) says
                # it runs the wanted versions: no connection, and a failed or reverted
                # host is tried again by the next run.
                "uptodate": [upgrade_step.HostRuns(inventory, host, wanted)],
                "task_dep": [f"sync:{host.name}"] + waits_for,
            }


def rollback_app(inventory):
    yield {
        "name": "app",
        "doc": "Put every host back on the app version it ran before (canary first, gated)",
        "actions": [action(upgrade_step.rollback_app, inventory)],
        # Always runs when asked for; `doit deploy` never asks for it.
        "uptodate": [False],
        "verbosity": 2,
    }
