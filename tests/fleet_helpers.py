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


# Counts the TCP connections a host accepts on 443 (a SYN without ACK is a connection's first
# packet), in its own network namespace: each HTTPS connection is one TLS handshake.
HTTPS_COUNTER = """table inet outpost_test_https {
    chain input {
        type filter hook input priority 0; policy accept;
        tcp dport 443 tcp flags & (syn | ack) == syn counter
    }
}
"""


def https_connections(fleet, name) -> int:
    """TCP connections the host has accepted on port 443 since this was first asked (the first
    call adds the counter and answers 0)."""
    import json

    listed = fleet.run_on(name, ["nft", "-j", "list", "table", "inet", "outpost_test_https"])
    if listed.returncode != 0:
        fleet.run_on(name, ["nft", "-f", "-"], input=HTTPS_COUNTER, check=True)
        return 0
    counters = [expression["counter"]["packets"]
                for item in json.loads(listed.stdout)["nftables"] if "rule" in item
                for expression in item["rule"]["expr"] if "counter" in expression]
    assert len(counters) == 1, listed.stdout
    return counters[0]
