"""The fleet's SSH keys: the deploy key, each host's host key, and their pins in known_hosts;
and the pin of a user's key that the fleet made (lego's, provision.make_user_key).

Host keys are pinned in a known_hosts file when the fleet makes them: at a host's first start,
or after its folder was deleted. A key that changes otherwise (`Fleet.rotate_host_key`) is NOT
re-pinned, so clients refuse it as they would a real server's; remove the host's line from
known_hosts to accept the new key at the next `up()`.
"""
from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from outpost.fleet.local import run
from outpost.fleet.host import FleetHost
from outpost.fleet.machine import on_host, upper_layer
from outpost.fleet.provision import HOST_KEY, no_links, upper_dir


def known_hosts_text(current: str, entries: dict[str, str], renew: set[str]) -> str:
    """`current` plus a line for each address (port 22) that has none. Existing pins are kept,
    except those of the addresses in `renew` (hosts the fleet has just made afresh)."""
    lines = [line for line in current.splitlines()
             if line.strip() and line.split()[0] not in renew]
    pinned = {line.split()[0] for line in lines}
    lines += [f"{address} {key}" for address, key in entries.items() if address not in pinned]
    return "".join(line + "\n" for line in lines)


def host_key(state_dir: Path, name: str) -> Path:
    """A host's private host key, in its upper layer."""
    return on_host(state_dir, name, HOST_KEY)


def make_host_key(state_dir: Path, name: str):
    key = host_key(state_dir, name)
    key.unlink(missing_ok=True)
    Path(f"{key}.pub").unlink(missing_ok=True)
    upper_dir(upper_layer(state_dir, name), str(HOST_KEY.parent))
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"outpost fleet host {name}",
         "-f", str(key)])


def ensure_key(identity: Path, comment: str = "outpost deploy key"):
    if not identity.exists():
        identity.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(identity)])


def pin_host_keys(known_hosts: Path, state_dir: Path, hosts: list[FleetHost],
                  made_afresh: set[str]):
    """Pin the host keys of `hosts` that have no pin yet, and those of the addresses in
    `made_afresh` anew."""
    entries = {}
    for host in hosts:
        public = Path(f"{host_key(state_dir, host.name)}.pub")
        if public.exists():
            key_type, key = public.read_text().split()[:2]
            entries[host.address] = f"{key_type} {key}"
    current = known_hosts.read_text() if known_hosts.exists() else ""
    text = known_hosts_text(current, entries, made_afresh)
    if text != current:
        known_hosts.parent.mkdir(parents=True, exist_ok=True)
        known_hosts.write_text(text)


def pin_user_keys(state_dir: Path, pins, made_afresh: set[str]):
    """For each (host, public key path on it, pin file) of `pins`: write the key's line to the
    pin when there is none yet, or anew when the host was made afresh (its name in
    `made_afresh`). Read from the host's disk here, as root: never from a session's output. A
    key that changes otherwise is not re-pinned: acme:setup refuses it, naming both."""
    for name, public, pin in pins:
        if pin.exists() and name not in made_afresh:
            continue
        upper = upper_layer(state_dir, name)
        no_links(upper, PurePosixPath(public))
        try:
            fd = os.open(upper / public.lstrip("/"), os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue
        with os.fdopen(fd) as key:
            line = key.read(4096).strip()
        pin.parent.mkdir(parents=True, exist_ok=True)
        pin.write_text(line + "\n")
