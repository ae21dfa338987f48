"""Outpost's pipeline, as doit tasks.

    cbuild/local build -> apk index + sign -> repo sync -> upgrade + restart -> content push

`doit deploy` runs it all; `doit list --status` shows what would run; `doit info TASK` says why.
The inventory is inventory.toml, or the file named by OUTPOST_INVENTORY.
"""
import os
import sys

from outpost import inventory as inventory_file
from outpost.errors import OutpostError
from tasks import build

DOIT_CONFIG = {
    "default_tasks": ["deploy"],
    "verbosity": 2,
}

try:
    INVENTORY = inventory_file.load(os.environ.get("OUTPOST_INVENTORY", "inventory.toml"))
except OutpostError as err:
    # One clear line instead of doit's "error loading dodo" traceback.
    sys.exit(f"outpost: {err}")


def task_keygen():
    """Make the repository signing key, only when none exists."""
    return build.keygen(INVENTORY)


def task_build():
    """Build the packages, once per target arch."""
    yield from build.packages(INVENTORY)


def task_index():
    """Put the packages in the repository and sign its index, per arch."""
    yield from build.index(INVENTORY)
