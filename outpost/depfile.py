"""doit's dependency file (the record of what each task last did), and what to say when it is
damaged.

Outpost uses doit's sqlite3 backend. doit writes the whole record of a run at its end, in one
transaction: a run killed before or during that write leaves the file as it was (sqlite's
journal rolls a half-written transaction back), and two processes never write it at once
(sqlite locks the file; Outpost's project lock keeps a second run from starting work). The
default dbm backend (gdbm here) refuses a second open and can be left half-written; the json
backend rewrites the whole file in place, so a crash can leave it cut short.

A file damaged all the same (a full disk, a bad copy, a crash of the machine) would make every
doit command end in a traceback; check() finds that first and says what to do in one line.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from outpost.errors import OutpostError

BACKEND = "sqlite3"
NAME = ".doit.sqlite3"


class DamagedDepFile(OutpostError):
    """doit's dependency file can't be read."""


def check(path: Path) -> None:
    """Raise DamagedDepFile when path exists and is not a readable doit sqlite3 file whose
    every record is JSON. Read-only: opens the file as a reader, writes nothing."""
    if not path.exists():
        return
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            problem = connection.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(problem)
            tables = {row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if tables and "doit" not in tables:
                raise sqlite3.DatabaseError("it is not doit's (no table 'doit')")
            for task_id, data in (connection.execute("SELECT task_id, task_data FROM doit")
                                  if tables else ()):
                try:
                    json.loads(data)
                except (TypeError, ValueError):
                    raise sqlite3.DatabaseError(f"the record of task {task_id!r} is not JSON") \
                        from None
        finally:
            connection.close()
    except sqlite3.OperationalError as error:  # locked for long, unreadable: not damage
        raise OutpostError(f"cannot read doit's dependency file {path}: {error}") from None
    except sqlite3.DatabaseError as error:
        raise DamagedDepFile(
            f"doit's dependency file {path} is damaged ({error}); remove it (rm {path}) and "
            "run again: every step then runs once more, which is safe, since each one only "
            "makes the host what it should be") from None
