"""The built-in local fleet: fleet:up starts its hosts that are down, fleet:down stops them all."""
from outpost.steps import fleet as fleet_step
from outpost.taskutil import action


def fleet(inventory):
    if inventory.fleet is None:
        return
    yield {
        "name": "up",
        "doc": "Start the local fleet's hosts that are down",
        "actions": [action(fleet_step.fleet_up, inventory)],
        # The pinned host keys and the deploy key: the host steps depend on them.
        "targets": [str(inventory.ssh.known_hosts), str(inventory.ssh.identity)],
        # Checked without SSH, so a no-op deploy touches no host.
        "uptodate": [lambda: fleet_step.fleet_is_up(inventory)],
    }
    yield {
        "name": "down",
        "doc": "Stop every host of the local fleet",
        "actions": [action(fleet_step.fleet_down, inventory)],
        "uptodate": [lambda: not fleet_step.fleet_any_left(inventory)],
    }
