"""The built-in local fleet (outpost.fleet): up, down, and whether its hosts run, known without
SSH so a no-op deploy touches no host."""
from __future__ import annotations

from outpost.steps.common import say


def _fleet(inventory):
    from outpost import fleet  # only the fleet tasks need it
    return fleet.from_inventory(inventory)


def fleet_up(inventory):
    started = _fleet(inventory).up()
    say(f"fleet: started {', '.join(started) or 'none (all up)'}")


def fleet_down(inventory):
    stopped = _fleet(inventory).down()
    say(f"fleet: stopped {', '.join(stopped) or 'none (all down)'}")


def fleet_is_up(inventory) -> bool:
    from outpost.fleet import machine_names, machines_up
    return len(machines_up(inventory)) == len(machine_names(inventory))


def fleet_any_left(inventory) -> bool:
    """Whether fleet:down has anything left to do: a machine, a veth or the bridge."""
    from outpost.fleet import leftovers
    return bool(leftovers(inventory))
