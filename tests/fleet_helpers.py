"""Helpers for tests that talk to local fleet hosts the way the pipeline does: real `ssh`."""
import os
import shutil
import subprocess

import pytest

from outpost import fleet as fleet_module


def require_fleet_machine():
    """Fail (never skip) when this machine can't run a local fleet, saying what to fix."""
    if os.geteuid() != 0:
        pytest.fail("the local fleet tests need root (namespaces, mounts, a bridge)")
    needs = {**fleet_module.REQUIRED_PROGRAMS, "ssh": "openssh-client"}
    missing = [f"{program} (apt-get install {package})" for program, package in needs.items()
               if not shutil.which(program, path=fleet_module.PROGRAM_DIRS)]
    if missing:
        pytest.fail("the local fleet tests need: " + ", ".join(missing))


def ssh(fleet, name, command, user=None, timeout=30):
    """Run `command` on a fleet host over real OpenSSH with the deploy key and pinned keys."""
    host = fleet.hosts[name]
    argv = ["ssh", "-F", "/dev/null", "-i", str(fleet.identity), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={fleet.known_hosts}", "-o", "ConnectTimeout=5",
            f"{user or fleet.user}@{host.address}", command]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def accepted_connections(fleet, name):
    """SSH logins the host's sshd accepted so far (it logs each at LogLevel VERBOSE)."""
    log = fleet.ssh_log(name)
    return log.read_text().count("Accepted publickey") if log.exists() else 0
