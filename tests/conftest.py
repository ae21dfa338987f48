import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_sessionfinish(session, exitstatus):
    # In CI (.ci/run) a skipped test is a failed test: the integration tests must really run.
    if os.environ.get("OUTPOST_REQUIRE_ALL") and exitstatus == 0:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        skipped = reporter.stats.get("skipped", []) if reporter else []
        if skipped:
            reporter.write_line(f"OUTPOST_REQUIRE_ALL: {len(skipped)} test(s) skipped; failing the run")
            session.exitstatus = 1


# What a working copy of the project needs to run doit; never the build output or the key.
PROJECT_FILES = ["dodo.py", "tasks", "outpost", "cports-overlay", "templates", "content",
                 "inventory.toml"]


def copy_project(parent):
    """A fresh copy of the project in parent/project, as a user's checkout would be."""
    dest = parent / "project"
    dest.mkdir()
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture
def project(tmp_path):
    return copy_project(tmp_path)
