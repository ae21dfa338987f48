"""What the local fleet needs from this machine, and how it runs this machine's programs."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import OutpostError

# What each host needs from this machine: program -> the Debian package that has it.
REQUIRED_PROGRAMS = {
    "sshd": "openssh-server", "ssh-keygen": "openssh-client", "ip": "iproute2",
    "unshare": "util-linux", "nsenter": "util-linux", "mount": "mount", "doas": "doas",
    "nginx": "nginx", "gdnsd": "gdnsd", "gdnsdctl": "gdnsd",
    # `doit latency` counts a host's visitors by country with it (Chimera's libmaxminddb).
    "mmdblookup": "mmdb-bin",
    # The stand-in dinit starts a service with `capabilities` through setpriv; at boot, the
    # packages' users and folders come from the real sysusers and tmpfiles tools.
    "setpriv": "util-linux", "systemd-sysusers": "systemd", "systemd-tmpfiles": "systemd",
    # The cert host's ACME client and the fleet's ACME server.
    "lego": "lego", "pebble": "pebble", "openssl": "openssl",
}
PROGRAM_DIRS = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A host starts with a clean environment, as after a boot; nothing of the caller's leaks in.
HOST_ENVIRONMENT = {"PATH": PROGRAM_DIRS, "LANG": "C.UTF-8"}
# Outpost's stand-ins for Chimera's tools: never taken for the real ones, even when on PATH.
STANDINS_DIR = Path(__file__).resolve().parents[1] / "standins"


@dataclass(frozen=True)
class ChimeraTools:
    """The real Chimera tools this machine has for the hosts, each an absolute path, or None
    where the hosts run Outpost's stand-in. dinit and dinitctl come from one folder: they talk
    over dinit's own protocol, which the stand-ins don't speak."""
    apk: str | None = None
    dinit: str | None = None
    dinitctl: str | None = None


def find_chimera_tools(path: str | None = None) -> ChimeraTools:
    """The real `apk` (apk-tools 3) and the real `dinit`/`dinitctl` pair, looked up on `path`
    (default: the caller's PATH, as a shell would), leaving out Outpost's stand-ins folder.
    dinit and dinitctl must both be found, in the same folder, or neither: a real one beside
    a stand-in could not talk to it. An apk other than apk-tools 3 is refused (the hosts'
    repository lines are apk 3's)."""
    path = os.environ.get("PATH", os.defpath) if path is None else path
    folders = [os.path.abspath(folder) for folder in path.split(os.pathsep) if folder]
    search = os.pathsep.join(f for f in folders if Path(f).resolve() != STANDINS_DIR)

    def find(program):
        found = shutil.which(program, path=search)
        return os.path.abspath(found) if found else None

    apk, dinit, dinitctl = find("apk"), find("dinit"), find("dinitctl")
    if apk:
        probe = subprocess.run([apk, "--version"], capture_output=True, text=True)
        if not probe.stdout.startswith("apk-tools 3."):
            version = (probe.stdout or probe.stderr).strip().splitlines()[:1]
            raise OutpostError(f"`{apk}` (found on PATH) is not apk-tools 3 but "
                               f"{version[0] if version else 'unknown'!r}; the fleet needs "
                               "Chimera's apk 3, or none on PATH for the stand-in")
    if (dinit or dinitctl) and (dinit is None or dinitctl is None
                                or Path(dinit).parent != Path(dinitctl).parent):
        found = ", ".join(p for p in (dinit, dinitctl) if p)
        raise OutpostError(f"found {found} on PATH: the fleet takes real dinit and dinitctl as "
                           "a pair from one folder (they can't talk to the stand-ins); put "
                           "both in one folder on PATH, or neither")
    return ChimeraTools(apk=apk, dinit=dinit, dinitctl=dinitctl)


def check_machine(names: str) -> str:
    """Fail unless this machine can run fleet hosts (`names`, for the error). Returns the
    version of the hosts' python3."""
    if os.geteuid() != 0:
        raise OutpostError(f"fleet hosts {names}: the local fleet needs root "
                           "(namespaces, mounts, a bridge); run it as root")
    check_programs(names, REQUIRED_PROGRAMS)
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


def check_programs(names: str, programs: dict[str, str], why: str = ""):
    """Fail unless this machine has each program (program -> its Debian package)."""
    for program, package in programs.items():
        if not shutil.which(program, path=PROGRAM_DIRS):
            raise OutpostError(f"fleet hosts {names}: `{program}` is missing on this machine"
                               f"{f' ({why})' if why else ''}; install it: "
                               f"apt-get install {package}")


def run(argv: list[str], input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise OutpostError(f"local fleet: `{shlex.join(argv)}` failed: {detail}")
    return proc
