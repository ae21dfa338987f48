"""The rollout's order: the canary alone, then the other hosts in batches that go at once (a
quarter of the hosts by default, at least one), each batch after the whole batch before it, so a
host that fails the gate stops every batch after its own (doit runs no task whose task_dep
failed). No host is touched: the order, the task graph tasks/upgrade.py makes of it, doit
running that graph in threads, and rollback:app's batches, each host's work a stand-in."""
import threading

import pytest

from outpost import hoststate
from outpost.commands import upgrade as rollout
from outpost.errors import OutpostError
from outpost.inventory import load
from outpost.steps import upgrade as upgrade_step

NAMES = ["au", "ny", "fr", "h4", "h5", "h6", "h7", "h8", "h9"]


def test_after_the_canary_a_quarter_of_the_hosts_go_at_once():
    assert rollout.batches(NAMES, "ny", None) == [
        ["ny"], ["au", "fr"], ["h4", "h5"], ["h6", "h7"], ["h8", "h9"]]  # 9 // 4 = 2 at once
    # Fewer than eight hosts: one at a time, never none.
    assert rollout.batches(NAMES[:3], "au", None) == [["au"], ["ny"], ["fr"]]
    assert rollout.batches(NAMES[:1], "au", None) == [["au"]]
    # batch_size in [rollout] says otherwise.
    assert rollout.batches(NAMES, "au", 4) == [["au"], ["ny", "fr", "h4", "h5"],
                                               ["h6", "h7", "h8", "h9"]]


def nine_hosts(project):
    inventory = project / "inventory.toml"
    inventory.write_text(inventory.read_text() + "".join(
        f'\n[[hosts]]\nname = "{name}"\naddress = "198.18.0.{10 + n}"\narch = "x86_64"\n'
        f'region = "oceania"\n' for n, name in enumerate(NAMES[3:], start=4)))
    return load(inventory)


def test_each_upgrade_waits_for_the_whole_batch_before_its_own(project):
    from tasks import upgrade as upgrade_tasks

    inv = nine_hosts(project)
    assert inv.rollout.batch_size is None  # the default
    waits = {task["name"]: sorted(d for d in task["task_dep"] if d.startswith("upgrade:"))
             for task in upgrade_tasks.upgrade(inv)}
    assert waits == {
        "au": [],  # the canary (the first host)
        "ny": ["upgrade:au"], "fr": ["upgrade:au"],
        "h4": ["upgrade:fr", "upgrade:ny"], "h5": ["upgrade:fr", "upgrade:ny"],
        "h6": ["upgrade:h4", "upgrade:h5"], "h7": ["upgrade:h4", "upgrade:h5"],
        "h8": ["upgrade:h6", "upgrade:h7"], "h9": ["upgrade:h6", "upgrade:h7"],
    }


class Batched:
    """A stand-in for a host's gated install that proves the batches: each host waits (with a
    deadline) until every host of its batch has begun, so hosts sent one at a time break the
    barrier; and each notes which hosts had finished when it began, so a batch sent before the
    one ahead of it finished shows."""

    def __init__(self, order, failing=()):
        self.batch_of = {host: number for number, batch in enumerate(order) for host in batch}
        self.barriers = [threading.Barrier(len(batch)) for batch in order]
        self.failing = set(failing)
        self.finished, self.began, self.broken = set(), {}, []
        self.guard = threading.Lock()

    def __call__(self, inventory, host, *args, **kwargs):
        with self.guard:
            self.began[host.name] = set(self.finished)
        try:
            self.barriers[self.batch_of[host.name]].wait(timeout=10)
        except threading.BrokenBarrierError:
            self.broken.append(host.name)
            raise
        with self.guard:
            self.finished.add(host.name)
        if host.name in self.failing:
            raise OutpostError(f"host {host.name} failed the gate (the test says so)")
        return {"installed": {}}

    def before(self, name):
        """The hosts of the batches before the host's own."""
        return {h for h, number in self.batch_of.items() if number < self.batch_of[name]}


BATCHES = [["au"], ["ny", "fr"], ["h4", "h5"], ["h6", "h7"], ["h8", "h9"]]


def run_upgrades(project, inv, fake, monkeypatch):
    """`doit upgrade` in this process, with dodo.py's parallel settings (threads, one per
    host, go on after a failure) and the real upgrade tasks; each host's upgrade is `fake`."""
    from doit.cmd_base import ModuleTaskLoader
    from doit.doit_cmd import DoitMain

    from tasks import upgrade as upgrade_tasks

    monkeypatch.setattr(upgrade_step, "upgrade", fake)
    inv.ssh.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    inv.ssh.known_hosts.touch()  # upgrade's file_dep on a fleet host
    namespace = {
        "DOIT_CONFIG": {"num_process": max(2, len(inv.hosts)), "par_type": "thread",
                        "continue": True, "backend": "json",
                        "dep_file": str(project / ".doit-test.json")},
        "task_sync": lambda: ({"name": h.name, "actions": []} for h in inv.hosts),
        "task_upgrade": lambda: upgrade_tasks.upgrade(inv),
    }
    return DoitMain(ModuleTaskLoader(namespace), config_filenames=()).run(["upgrade"])


def test_doit_runs_each_batch_at_once_after_the_whole_batch_before_it(project, monkeypatch):
    inv = nine_hosts(project)
    fake = Batched(BATCHES)
    assert run_upgrades(project, inv, fake, monkeypatch) == 0
    assert fake.broken == []  # no host waited alone for the rest of its batch
    assert fake.began == {name: fake.before(name) for name in NAMES}


def test_a_failed_host_lets_its_batch_finish_and_stops_the_batches_after_it(project,
                                                                              monkeypatch):
    inv = nine_hosts(project)
    fake = Batched(BATCHES, failing={"h4"})
    assert run_upgrades(project, inv, fake, monkeypatch) != 0
    assert fake.broken == []
    assert set(fake.began) == {"au", "ny", "fr", "h4", "h5"}  # h5: h4's batch
    assert fake.finished == {"au", "ny", "fr", "h4", "h5"}


def rollback(project, monkeypatch, fake):
    inv = nine_hosts(project)
    monkeypatch.setattr(upgrade_step, "rollback_targets", lambda inventory: {"linkedlist": "1-r0"})
    monkeypatch.setattr(upgrade_step, "template_versions",
                        lambda inventory: {"linkedlist": "2-r0"})
    monkeypatch.setattr(upgrade_step, "install_gated", fake)
    upgrade_step.rollback_app(inv)
    return inv


def test_rollback_runs_each_batch_at_once_after_the_whole_batch_before_it(project, monkeypatch):
    fake = Batched(BATCHES)
    inv = rollback(project, monkeypatch, fake)
    assert fake.broken == []
    assert fake.began == {name: fake.before(name) for name in NAMES}
    assert hoststate.hold(inv) == {"linkedlist": {"version": "1-r0", "instead_of": "2-r0"}}


def test_a_failed_rollback_host_lets_its_batch_finish_and_stops_there(project, monkeypatch):
    fake = Batched(BATCHES, failing={"h4", "h5"})
    with pytest.raises(OutpostError) as raised:
        rollback(project, monkeypatch, fake)
    assert str(raised.value) == (
        "host h4 failed the gate (the test says so)\n"
        "host h5 failed the gate (the test says so)\n"
        "rollback: stopped; not touched: h6, h7, h8, h9")
    assert fake.broken == []
    assert set(fake.began) == {"au", "ny", "fr", "h4", "h5"}
    assert hoststate.hold(load(project / "inventory.toml")) == {}  # no hold after a failure
