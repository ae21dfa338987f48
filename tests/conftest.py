import os
import shutil
import subprocess
import sys
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


@pytest.fixture
def project(tmp_path):
    """A fresh copy of the project in tmp_path, as a user's checkout would be."""
    dest = tmp_path / "project"
    dest.mkdir()
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, dest / name)
    return dest


def run_doit(project, *args, env=None, check=True):
    """Run real doit in a subprocess, in the project copy. Returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("OUTPOST_INVENTORY", None) if "OUTPOST_INVENTORY" not in (env or {}) else None
    proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=project, env=full_env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def ran_tasks(output: str) -> list[str]:
    """Task names doit ran (lines '.  name'), as opposed to up-to-date ones ('-- name')."""
    return [line[3:].strip() for line in output.splitlines() if line.startswith(".  ")]
