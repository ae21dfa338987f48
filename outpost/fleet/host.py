"""One fleet host as the fleet's modules pass it around: its name, address, arch and
round-trip time. Its own module, so that `network`, `provision` and `machine` can all import
it without importing each other."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FleetHost:
    name: str
    address: str
    arch: str
    rtt_ms: int = 0  # the round trip its services answer at (delay.py); 0: none added
