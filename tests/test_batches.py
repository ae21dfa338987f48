"""The rollout's order: the canary alone, then the other hosts in batches that go at once (a
quarter of the hosts by default, at least one), each batch after the whole batch before it, so a
host that fails the gate stops every batch after its own (doit runs no task whose task_dep
failed). Pure: the order, and the task graph tasks/upgrade.py makes of it."""
from outpost.commands import upgrade as rollout
from outpost.inventory import load

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
