"""What the local fleet needs from this machine, and how it runs this machine's programs."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

from outpost.errors import OutpostError

# What each host needs from this machine: program -> the Debian package that has it.
REQUIRED_PROGRAMS = {
    "sshd": "openssh-server", "ssh-keygen": "openssh-client", "ip": "iproute2",
    "unshare": "util-linux", "nsenter": "util-linux", "mount": "mount", "doas": "doas",
    "nginx": "nginx", "gdnsd": "gdnsd", "gdnsdctl": "gdnsd",
    # The stand-in dinit starts a service with `capabilities` through setpriv; at boot, the
    # packages' users and folders come from the real sysusers and tmpfiles tools.
    "setpriv": "util-linux", "systemd-sysusers": "systemd", "systemd-tmpfiles": "systemd",
    # The cert host's ACME client and the fleet's ACME server.
    "lego": "lego", "pebble": "pebble", "openssl": "openssl",
}
PROGRAM_DIRS = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A host starts with a clean environment, as after a boot; nothing of the caller's leaks in.
HOST_ENVIRONMENT = {"PATH": PROGRAM_DIRS, "LANG": "C.UTF-8"}


def check_machine(names: str) -> str:
    """Fail unless this machine can run fleet hosts (`names`, for the error). Returns the
    version of the hosts' python3."""
    if os.geteuid() != 0:
        raise OutpostError(f"fleet hosts {names}: the local fleet needs root "
                           "(namespaces, mounts, a bridge); run it as root")
    for program, package in REQUIRED_PROGRAMS.items():
        if not shutil.which(program, path=PROGRAM_DIRS):
            raise OutpostError(f"fleet hosts {names}: `{program}` is missing on this "
                               f"machine; install it: apt-get install {package}")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise OutpostError(f"fleet hosts {names}: this kernel has no overlay filesystem; "
                           "load it: modprobe overlay")
    # The stand-ins run on the hosts' python3, which must check signatures by itself: the
    # project's venv is hidden from the hosts with the rest of the project.
    probe = subprocess.run(["python3", "-c", "import cryptography, platform; "
                            "print(platform.python_version())"],
                           capture_output=True, text=True, env=HOST_ENVIRONMENT)
    if probe.returncode != 0:
        raise OutpostError(f"fleet hosts {names}: the hosts' python3 can't import "
                           "cryptography (the apk stand-in checks signatures with it); "
                           "install it: apt-get install python3-cryptography")
    return probe.stdout.strip()


def run(argv: list[str], input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise OutpostError(f"local fleet: `{shlex.join(argv)}` failed: {detail}")
    return proc
