"""What this machine knows about each host without asking it: the versions a host ran, as
last confirmed by a passed health gate (build/rollout/<host>.json), and the hold a rollback
leaves (build/rollout/hold.json). Files are replaced by a rename, so a run killed at any point
leaves either the old record or the new one.

The upgrade of a host is up to date when its record says it runs the wanted versions: a no-op
deploy reads these files and opens no connection. A record that is lost only makes the next
upgrade ask the host again (it installs and restarts nothing that already runs).
"""
from __future__ import annotations

import json
from pathlib import Path

from outpost.files import write_atomic


def _dir(inventory) -> Path:
    return inventory.root / "build" / "rollout"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write(path: Path, data: dict) -> None:
    write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def history(inventory, host) -> dict[str, list[str]]:
    """{package: versions the host ran, oldest first; the last is what it runs now}."""
    return _read(_dir(inventory) / f"{host.name}.json")


def record(inventory, host, package: str, version: str) -> None:
    """The host runs `version` of `package` now (it passed the gate)."""
    ran = history(inventory, host)
    versions = [v for v in ran.get(package, []) if v != version] + [version]
    ran[package] = versions[-inventory.repository.keep * 2:]
    _write(_dir(inventory) / f"{host.name}.json", ran)


def went_back(inventory, host, package: str, version: str) -> None:
    """The host left its current version for `version` (a rollback, or a failed gate): the
    left version is dropped, so the next rollback goes further back."""
    ran = history(inventory, host)
    versions = ran.get(package, [])
    if versions and versions[-1] != version:
        versions = versions[:-1]
    ran[package] = [v for v in versions if v != version] + [version]
    _write(_dir(inventory) / f"{host.name}.json", ran)


def runs(inventory, host, wanted: dict[str, str]) -> bool:
    ran = history(inventory, host)
    return all(ran.get(name, [None])[-1] == version for name, version in wanted.items())


def last_passed(inventory, host, package: str) -> str | None:
    """The version of package that last passed the gate on host (or that it went back to)."""
    versions = history(inventory, host).get(package, [])
    return versions[-1] if versions else None


def previous(inventory, host, package: str) -> str | None:
    versions = history(inventory, host).get(package, [])
    return versions[-2] if len(versions) >= 2 else None


def hold(inventory) -> dict[str, dict[str, str]]:
    """{package: {"version": held at, "instead_of": the template's version when it was
    rolled back}}: what `doit rollback:app` left."""
    return _read(_dir(inventory) / "hold.json")


def set_hold(inventory, held: dict[str, dict[str, str]]) -> None:
    path = _dir(inventory) / "hold.json"
    if held:
        _write(path, held)
    else:
        path.unlink(missing_ok=True)
