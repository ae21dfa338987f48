"""SSH's and rsync's failures said so that a person can act on them (the host, the step, the
key's fingerprint, the command that checks it), for outpost.remote and outpost.sshconnect; and
the fixed environment of the programs Outpost starts here (rsync, its relay, a keeper)."""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import pwd
import shutil
import subprocess

from outpost.fleet.network import FLEET_RANGE

from outpost.terminal import visible

# The programs Outpost starts here, and the folders they are looked up in besides where the
# operator's own were found.
LOCAL_PROGRAMS = ("rsync",)
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def program_environment(home: str, found) -> dict[str, str]:
    """The whole environment of the programs Outpost starts (rsync and its relay, a keeper): a
    PATH of the folders holding the programs `found` (their paths, None for one not found) and then the system's,
    the user's home, the C locale. Nothing is inherited, so RSYNC_OLD_ARGS, RSYNC_PROTECT_ARGS,
    RSYNC_RSH, SSH_AUTH_SOCK, LD_PRELOAD and the like in the operator's shell can't change
    what runs or how it reads its arguments."""
    folders = [os.path.dirname(path) for path in found if path]
    return {"PATH": ":".join(dict.fromkeys([*folders, *SYSTEM_PATH])), "HOME": home,
            "LANG": "C", "LC_ALL": "C"}


def environment() -> dict[str, str]:
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:  # a uid without a passwd entry (some containers)
        home = "/"
    return program_environment(home, (shutil.which(name) for name in LOCAL_PROGRAMS))


def reason(error: Exception) -> str:
    return (getattr(error, "strerror", None) or str(error) or type(error).__name__).lower()


# --- messages shared by both runners ----------------------------------------------------------

def host_step(host, step) -> str:
    name = f"host {host.name} ({host.address})"
    return f"{step} on {name}" if step else name


def fingerprint(key_blob: bytes) -> str:
    """A public key's fingerprint as OpenSSH shows it (ssh-keygen -l): SHA256:<base64>."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")


def key_kind(key_type: str) -> str:
    """A host key's kind as sshd names its key file (/etc/ssh/ssh_host_<kind>_key.pub), from
    its type in a known_hosts line ("ssh-ed25519", "ecdsa-sha2-nistp256", "ssh-rsa") or in
    OpenSSH's messages ("ED25519", "ECDSA", "RSA")."""
    kind = key_type.lower().removeprefix("ssh-")
    if kind.startswith("ecdsa"):
        return "ecdsa"
    if kind.startswith("rsa"):  # rsa-sha2-256/512 name signatures made with an RSA key
        return "rsa"
    return "dsa" if kind == "dss" else kind


def _presented(presented, then: str) -> str:
    """The key the host presents (a (kind, fingerprint) pair, or None when unknown) and the
    console command that shows whether it is the host's own; `then` is what to do if so. The
    kind in capitals, as `ssh-keygen -l` shows it."""
    if presented is None:
        return (f"Check the host's key on its console (ssh-keygen -lf "
                f"/etc/ssh/ssh_host_<type>_key.pub); if it is right, {then}")
    kind, key_fingerprint = presented
    return (f"It presents the {kind.upper()} key {key_fingerprint}; if `ssh-keygen -lf "
            f"/etc/ssh/ssh_host_{kind}_key.pub` on the host's console shows the same, {then}")


def changed_host_key(host, ssh, presented=None) -> str:
    return (f"host key for {host.name} ({host.address}) does not match the pinned key in "
            f"{ssh.known_hosts}; nothing was sent to it. "
            + _presented(presented, f"the host was rebuilt: replace its line in "
                                    f"{ssh.known_hosts}"))


def unknown_host_key(host, ssh, presented=None) -> str:
    return (f"host key for {host.name} ({host.address}) is unknown: {ssh.known_hosts} has no "
            f"line for {known_hosts_name(host)}; nothing was sent to it. "
            + _presented(presented, f"add the host's line to {ssh.known_hosts}"))


def missing_identity(ssh) -> str:
    return f"the SSH identity {ssh.identity} does not exist (identity in [ssh])"


def auth_failed(host, ssh) -> str:
    return (f"{host.user}@{host.address} port {host.port} refused the key {ssh.identity} "
            "(authentication failed)")


def unreachable(host, reason: str) -> str:
    said = f"cannot reach {host.address} port {host.port}: {reason}"
    try:
        fleet = ipaddress.ip_address(host.address) in FLEET_RANGE
    except ValueError:
        fleet = False
    if fleet and "no route to host" in reason.lower():
        # The fleet's guard route answers for its whole range while no fleet bridge is up.
        said += "; the local fleet is down: run `doit fleet:up`"
    return said


def tail(stderr: str, lines: int = 10) -> str:
    """The last lines of a host's stderr for a message, made visible (outpost.terminal)
    wherever the message is shown."""
    kept = [visible(line) for line in stderr.strip().splitlines() if line.strip()][-lines:]
    return (":\n  " + "\n  ".join(kept)) if kept else ""


# rsync(1), EXIT VALUES.
RSYNC_EXIT = {
    1: "syntax or usage error", 2: "protocol incompatibility",
    3: "errors selecting input/output files or folders", 5: "error starting the protocol",
    10: "error in socket I/O", 11: "error in file I/O",
    12: "error in the rsync protocol data stream (is rsync installed on the host?)",
    23: "partial transfer due to an error", 24: "some source files vanished",
    30: "timeout in data send/receive (command_timeout in [ssh])",
    255: "the connection to the host failed",
}


def local_failure(program: str, proc: subprocess.CompletedProcess) -> str:
    """What a local program's failure means. The login itself is not among them: rsync runs
    on the run's connection (outpost.remote), whose failures say so before rsync starts."""
    meaning = RSYNC_EXIT.get(proc.returncode, "failed") if program == "rsync" else "failed"
    return f"{program} exited {proc.returncode} ({meaning})" + tail(proc.stderr)


def known_hosts_name(host) -> str:
    # How OpenSSH and paramiko name a host in known_hosts.
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"
