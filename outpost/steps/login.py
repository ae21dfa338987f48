"""login:<host>: the run's SSH login to a host, started as soon as this machine's records
show that content:<host> will push (content.is_current, no question to the host needed), so
that it does not wait for the drift probe's answer first."""
from __future__ import annotations

from outpost import remote


def log_in(inventory, host):
    remote.connect_soon(host, inventory.ssh, "content")
