"""One fleet host as the fleet's modules pass it around: its name, address and arch. Its own
module, so that `network`, `provision` and `machine` can all import it without importing
each other."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FleetHost:
    name: str
    address: str
    arch: str
