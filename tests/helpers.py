"""Helpers for tests that drive real doit runs in a subprocess."""
import os
import subprocess
import sys


def run_doit(project, *args, env=None, check=True):
    """Run real doit in a subprocess, in the project copy. Returns the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if k != "OUTPOST_INVENTORY"}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=project, env=full_env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def ran_tasks(output: str) -> list[str]:
    """Task names doit ran ('.  name' lines), as opposed to up-to-date ones ('-- name')."""
    return sorted(line[3:].strip() for line in output.splitlines() if line.startswith(".  "))
