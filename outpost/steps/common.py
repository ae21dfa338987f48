"""What every step shares: its output line, a signed bundle applied on a host, and the file
that marks a fleet host made afresh."""
from __future__ import annotations

import sys
import time

from outpost import remote
from outpost.commands import bundle
from outpost.errors import OutpostError
from outpost.terminal import visible


def say(line: str):
    """One line of a step's output. Not print(): doit swaps sys.stdout for each action, in
    every thread, and print() on CPython 3.11 holds the stream without a reference while it
    writes (CPython gh-130163), which crashes parallel runs now and then. A single write of
    the whole line also keeps hosts' lines from running into each other. Control characters
    and escape sequences are shown, not sent to the terminal (outpost.terminal): a line often
    holds a host's output."""
    sys.stdout.write(visible(line) + "\n")


def report(host, output: str):
    """A host's output, one line each, named by the host."""
    for line in output.splitlines():
        say(f"{host.name}: {line}")


def apply_bundle(inventory, host, b: bundle.Bundle, step: str, ok_exits=(0,),
                 then: str = "") -> remote.Result:
    """Sign the bundle here and have the host's helper apply it (commands.bundle); `then`:
    script lines run after it, in the same round trip."""
    signed = bundle.signed(b, inventory.repository.signing_key, time.time_ns())
    return remote.run_script(host, bundle.apply_script(signed) + then, inventory.ssh,
                             step=step, ok_exits=ok_exits)


def host_marker(inventory, host) -> list[str]:
    """A file that changes when a fleet host is made afresh (its pinned host key), so every step
    runs again for a host that lost its state. Real hosts have none."""
    if inventory.fleet is None:
        return []
    return [str(inventory.ssh.known_hosts)]


def fail(problem: str):
    """The action of a step that can't run: fails with the problem."""
    raise OutpostError(problem)
