"""One run at a time: the project lock.

A run takes the lock the first time it is about to change something (a host, the
repository, the fleet, the build folder) and holds it until the process ends. A run that only
reads (`doit list`, `doit info`, a `doit check` whose steps are up to date) never takes it.

The lock is flock(2) on build/outpost.lock. The kernel drops it when the process ends, however
it ends (SIGKILL included), so there is never a stale lock to remove by hand. The holder writes
who it is into the file, so a run that finds the lock taken can say which process holds it,
since when, and what to do.
"""
from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from pathlib import Path

from outpost.errors import OutpostError


class LockHeld(OutpostError):
    """Another run holds the project lock."""


def holder_record(pid: int, since: float, argv: list[str]) -> str:
    return json.dumps({"pid": pid, "since": since, "command": " ".join(argv)}) + "\n"


def held_message(path: Path, text: str, now: float) -> str:
    """What a run that found the lock taken says: who holds it, since when, what to do."""
    try:
        holder = json.loads(text)
        pid, since, command = holder["pid"], float(holder["since"]), holder["command"]
    except (ValueError, KeyError, TypeError):
        return (f"another Outpost run holds the project lock {path} (it has not said who it is "
                "yet); wait for it to end, then run again")
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    return (f"another Outpost run holds the project lock {path}: process {pid} "
            f"(`{command}`), since {started} ({max(0, now - since):.0f} s ago). Wait for it to "
            f"end, or stop it (kill -INT {pid}: it stops its rsync and ssh and keeps what it "
            "finished), then run again")


class ProjectLock:
    """The lock of one project folder; `hold()` takes it once per process, from any thread."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._guard = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def hold(self) -> None:
        """Take the lock now (at once, never waiting) and keep it until the process ends;
        raise LockHeld naming the holder when another process has it."""
        with self._guard:
            if self._fd is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_CLOEXEC: rsync and ssh started by this run must not inherit the lock, or a
            # killed run's leftover children would keep it.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                text = _holder_text(fd)
                os.close(fd)
                raise LockHeld(held_message(self.path, text, time.time())) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, holder_record(os.getpid(), time.time(), _command()).encode(), 0)
            self._fd = fd


def _holder_text(fd: int, wait: float = 1.0) -> str:
    """The holder's record. It writes it just after it takes the lock, so for a moment the
    file can be empty or still name the run before it: read again until it names a live
    process, for at most `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        text = os.pread(fd, 4096, 0).decode(errors="replace")
        try:
            os.kill(int(json.loads(text)["pid"]), 0)
            return text
        except (ValueError, KeyError, TypeError, ProcessLookupError, PermissionError):
            if time.monotonic() > deadline:
                return text
        time.sleep(0.01)


def _command() -> list[str]:
    # "python -m doit deploy" shows as ".../doit/__main__.py deploy": name it as typed.
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("__main__.py", "doit"):
        argv[0] = "doit"
    return argv


# The lock of the project dodo.py loaded (set by use()); None in a process that has no project,
# such as a unit test calling a step directly.
_project: ProjectLock | None = None


def use(path: Path) -> ProjectLock:
    """Name the project's lock file; dodo.py calls this once, when it loads."""
    global _project
    if _project is None or _project.path != path:
        _project = ProjectLock(path)
    return _project


def hold() -> None:
    """Take the project's lock, if a project named one (see use())."""
    if _project is not None:
        _project.hold()
