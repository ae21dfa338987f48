"""Glue between doit and outpost: actions that report user errors cleanly."""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

from doit.exceptions import TaskFailed

from outpost.errors import OutpostError


def action(fn, *args, **kwargs):
    """A doit python-action calling fn(*args, **kwargs).

    An OutpostError becomes a task failure that shows only its message (it already names the
    file, key or host at fault), so a user error never prints a traceback.
    A dict result is kept by doit (for `getargs` and `result_dep`)."""

    @functools.wraps(fn)
    def run():
        try:
            result = fn(*args, **kwargs)
        except OutpostError as err:
            return TaskFailed(str(err))
        return result if isinstance(result, dict) else None

    return (run,)


def remove(*paths: Path):
    """A doit clean action that removes files and folders, and ignores those already gone."""

    def clean():
        for path in paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()

    return (clean,)


def files_under(folder: Path) -> list[str]:
    """Every file below folder, sorted: a file_dep that notices any change in a folder."""
    return sorted(str(p) for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
