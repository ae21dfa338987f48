"""Glue between doit and outpost: actions that report user errors cleanly."""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

from doit.exceptions import TaskFailed

from outpost import lock
from outpost.errors import OutpostError


def action(fn, *args, read_only=False, **kwargs):
    """A doit python-action calling fn(*args, **kwargs).

    Unless it is read_only, it first takes the project lock (outpost.lock): another run
    holding it stops this whole run at once, with one line naming the holder.
    An OutpostError becomes a task failure that shows only its message (it already names the
    file, key or host at fault), so a user error never prints a traceback.
    A dict result is kept by doit (for `getargs` and `result_dep`)."""

    @functools.wraps(fn)
    def run():
        if not read_only:
            _hold_lock()
        try:
            result = fn(*args, **kwargs)
        except OutpostError as err:
            return TaskFailed(str(err))
        return result if isinstance(result, dict) else None

    return (run,)


def _hold_lock():
    try:
        lock.hold()
    except lock.LockHeld as err:
        # SystemExit, not a task failure: doit hands it from the worker thread to its main
        # loop, which records what had finished and ends the run with this one line.
        raise SystemExit(f"outpost: {err}") from None


def remove(*paths: Path):
    """A doit clean action that removes files and folders, and ignores those already gone."""

    def clean():
        _hold_lock()
        for path in paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()

    return (clean,)


def files_under(folder: Path) -> list[str]:
    """Every file below folder, sorted: a file_dep that notices any change in a folder."""
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
