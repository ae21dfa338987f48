"""login:<host>: the run's SSH login to a host, started as soon as this machine's records
show that content:<host> will push (no question to the host needed), so that it does not
wait for the drift probe's answer first."""
from __future__ import annotations

from outpost import remote
from outpost.steps import content


def content_packages(inventory) -> list:
    return content.packages(inventory)


def nothing_to_push(inventory, host) -> bool:
    """doit uptodate: the host has the release of content/ by this machine's records
    (content.is_current); a drifted host is found by the probe, and content logs in then."""
    return content.is_current(inventory, host)


def log_in(inventory, host):
    remote.connect_soon(host, inventory.ssh, "content")
