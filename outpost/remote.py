"""Runs what outpost.commands builds: a script on a host over SSH, or a local program (rsync)
that talks to a host. Nothing here decides what to run.

One Fabric connection per host per run: the first step that needs a host opens it, later
steps reuse it, and it is closed when the process exits. Host keys are pinned to the
inventory's known_hosts; an unknown or changed key is refused before anything is sent.
Fabric and paramiko are imported only when a connection is opened, so a run that finds
everything up to date never loads them.

Every failure raises RemoteError, whose message names the host (and the step, when given).
"""
from __future__ import annotations

import atexit
import base64
import hashlib
import math
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass

from outpost.errors import OutpostError


class RemoteError(OutpostError):
    """A host could not be reached, was refused, or a step on it failed (then `exited` is the
    script's exit status)."""

    def __init__(self, message: str, exited: int | None = None):
        super().__init__(message)
        self.exited = exited


class ScriptFailed(RemoteError):
    """The host ran the script, and it exited non-zero (`exited`)."""

    def __init__(self, message: str, exited: int):
        super().__init__(message)
        self.exited = exited


@dataclass(frozen=True)
class Result:
    stdout: str
    stderr: str
    exited: int


# (host, ssh) -> open fabric Connection. Steps of one run share it; doit's thread mode may run
# steps for different hosts at once, so opening is locked per host, not globally.
_connections: dict = {}
_opening: dict = {}
_lock = threading.Lock()
# Local programs (rsync) running now, for stop_children.
_children: set = set()


# The command the host runs: it reads the script from stdin to its end, then runs it. The
# script never appears in a command line, where every user of the host could read it in
# /proc (config's scripts carry the site's TLS key), and the commands it runs see stdin at
# end-of-file rather than waiting for input.
RUN_STDIN = """sh -c 'eval "$(cat)"'"""

# The command a host runs for a script with a payload after it on the same stdin (SshSession):
# the shell reads the script line by line up to PAYLOAD_MARK (`read` takes a pipe one byte at
# a time, so it stops exactly there), then runs it, and the script's commands read the rest.
PAYLOAD_MARK = "# outpost: payload follows"
RUN_STDIN_THEN_PAYLOAD = (
    "sh -c 'script=; while IFS= read -r line; do "
    f"[ \"$line\" = \"{PAYLOAD_MARK}\" ] && break; script=\"$script$line\n\"; done; "
    "eval \"$script\"'")


# The programs Outpost starts here, and the folders they are looked up in besides where the
# operator's own were found.
LOCAL_PROGRAMS = ("rsync", "ssh", "ssh-keyscan")
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def program_environment(home: str, found) -> dict[str, str]:
    """The whole environment of the rsync and ssh Outpost starts: a PATH of the folders
    holding the programs `found` (their paths, None for one not found) and then the system's,
    the user's home, the C locale. Nothing is inherited, so RSYNC_OLD_ARGS, RSYNC_PROTECT_ARGS,
    RSYNC_RSH, SSH_AUTH_SOCK, LD_PRELOAD and the like in the operator's shell can't change
    what runs or how it reads its arguments."""
    folders = [os.path.dirname(path) for path in found if path]
    return {"PATH": ":".join(dict.fromkeys([*folders, *SYSTEM_PATH])), "HOME": home,
            "LANG": "C", "LC_ALL": "C"}


def _environment() -> dict[str, str]:
    try:
        home = pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:  # a uid without a passwd entry (some containers)
        home = "/"
    return program_environment(home, (shutil.which(name) for name in LOCAL_PROGRAMS))


def run_script(host, script: str, ssh, step: str | None = None, ok_exits=(0,)) -> Result:
    """Run a POSIX sh script on host in one round trip and return its output; an exit status
    outside ok_exits is a RemoteError."""
    where = _where(host, step)
    connection = _connection(host, ssh, where)
    try:
        stdout, stderr, exited = _exec(connection, script, ssh.command_timeout)
    except TimeoutError:
        _forget(host, ssh)
        raise RemoteError(f"{where}: did not finish within {ssh.command_timeout:g} s "
                          "(command_timeout in [ssh])") from None
    except Exception as error:  # paramiko's or the socket's: translated, or re-raised
        _forget(host, ssh)
        raise _connection_error(error, host, ssh, where) from None
    if exited == -1:  # no exit status: the channel closed under the script
        _forget(host, ssh)
        raise RemoteError(f"{where}: the connection was lost before the script finished"
                          + _tail(stderr))
    if exited not in ok_exits:
        raise RemoteError(f"{where} failed (exit {exited})" + _tail(stderr), exited)
    return Result(stdout, stderr, exited)


def _exec(connection, script: str, timeout: float) -> tuple[str, str, int]:
    """One SSH channel: RUN_STDIN, the script on its stdin, then stdout and stderr to their
    ends (stderr in a thread, so neither can fill up and stall the other). Straight on the
    paramiko channel of Fabric's connection: Fabric's own stdin feeding sends a byte per 10 ms."""
    channel = connection.client.get_transport().open_session(timeout=timeout)
    try:
        channel.settimeout(timeout)  # no data for this long: socket.timeout (a TimeoutError)
        channel.exec_command(RUN_STDIN)
        channel.sendall(script.encode())
        channel.shutdown_write()
        stderr = []
        reader = threading.Thread(
            target=lambda: stderr.append(_read_all(channel.makefile_stderr("rb"))))
        reader.start()
        stdout = _read_all(channel.makefile("rb"))
        reader.join()
        for result in (stdout, stderr[0]):
            if isinstance(result, Exception):
                raise result
        return stdout, stderr[0], channel.recv_exit_status()
    finally:
        channel.close()


def _read_all(stream) -> str | Exception:
    try:
        return stream.read().decode(errors="replace")
    except Exception as error:  # handed to the caller's thread
        return error


def run_local(argv: list[str], host, ssh, step: str | None = None) -> Result:
    """Run a program on this machine that talks to host over ssh (rsync with
    commands.ssh_options), with the same error messages as run_script."""
    where = _where(host, step)
    try:
        # A session of its own: stop_children() ends rsync and the ssh it started together.
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                                 env=_environment())
    except FileNotFoundError:
        raise RemoteError(f"{where}: {argv[0]} is not installed on this machine "
                          f"(apt-get install {argv[0]})") from None
    with _lock:
        _children.add(child)
    try:
        stdout, stderr = child.communicate()
    finally:
        with _lock:
            _children.discard(child)
    proc = subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)
    if proc.returncode != 0:
        raise RemoteError(f"{where}: " + _local_failure(argv[0], proc, host, ssh))
    return Result(proc.stdout, proc.stderr, proc.returncode)


def _signal(child: subprocess.Popen, sig: int):
    """The child's whole session when it leads one (rsync and the ssh it starts), else the
    child alone (an SshSession's ssh, in the run's own group)."""
    try:
        if os.getpgid(child.pid) == child.pid:
            os.killpg(child.pid, sig)
        else:
            child.send_signal(sig)
    except ProcessLookupError:
        pass


def stop_children() -> int:
    """End every local program run_local started that is still running (with its ssh), and
    close the connections: what an interrupted run leaves behind. Returns how many it ended."""
    with _lock:
        children = list(_children)
    for child in children:
        _signal(child, signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _signal(child, signal.SIGKILL)
    close_all()
    return len(children)


class SshSession:
    """OpenSSH to a host, started at once (so the login goes on while the caller prepares
    what to send), that runs one script with `payload` after it on its stdin: one login.
    ssh_argv is `ssh <options> <user>@<host>` (commands.ssh_argv). OpenSSH rather than a Fabric
    channel: no paramiko import (about 0.2 s) on this path, the transfer and its encryption
    run in their own process, not under this one's GIL, and a host pays the same login as
    for the seed's rsync. Use it as a context manager: leaving it unused ends the process."""

    def __init__(self, ssh_argv: list[str], host, ssh, step: str | None = None):
        self.host, self.ssh, self.argv = host, ssh, ssh_argv
        self.where = _where(host, step)
        try:
            # In the run's own process group, so whatever ends the run's group ends it too (a
            # killed push must not go on behind the next run's back); known to stop_children.
            self.process = subprocess.Popen([*ssh_argv, RUN_STDIN_THEN_PAYLOAD],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, env=_environment())
        except FileNotFoundError:
            raise RemoteError(f"{self.where}: ssh is not installed on this machine "
                              "(apt-get install openssh-client)") from None
        with _lock:
            _children.add(self.process)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.returncode is None:  # never given a script: end it, sending nothing
            self.process.kill()
            self.process.communicate()
        with _lock:
            _children.discard(self.process)

    def run(self, script: str, payload: bytes = b"") -> Result:
        """The script's output; a non-zero exit of the script raises ScriptFailed."""
        stdin = script.encode() + f"\n{PAYLOAD_MARK}\n".encode() + payload
        try:
            stdout, stderr = self.process.communicate(stdin, timeout=self.ssh.command_timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise RemoteError(f"{self.where}: did not finish within {self.ssh.command_timeout:g}"
                              " s (command_timeout in [ssh])") from None
        result = Result(stdout.decode(errors="replace"), stderr.decode(errors="replace"),
                        self.process.returncode)
        if result.exited == 255:  # ssh's own failure: the connection, the key, the login
            raise RemoteError(f"{self.where}: " + _local_failure("ssh", subprocess.CompletedProcess(
                self.argv, 255, result.stdout, result.stderr), self.host, self.ssh))
        if result.exited != 0:
            raise ScriptFailed(f"{self.where} failed (exit {result.exited})"
                               + _tail(result.stderr), result.exited)
        return result


def run_ssh(ssh_argv: list[str], host, ssh, script: str, payload: bytes = b"",
            step: str | None = None) -> Result:
    """Run a script on host with OpenSSH, payload after it, in one login (SshSession)."""
    with SshSession(ssh_argv, host, ssh, step) as session:
        return session.run(script, payload)


def close_all() -> None:
    """Close every open connection (registered with atexit; tests call it to start afresh)."""
    with _lock:
        connections = list(_connections.values())
        _connections.clear()
    for connection in connections:
        connection.close()


# --- connections ------------------------------------------------------------------------------

def _connection(host, ssh, where):
    key = (host, ssh)
    with _lock:
        if key in _connections:
            return _connections[key]
        opening = _opening.setdefault(key, threading.Lock())
    with opening:
        with _lock:
            if key in _connections:  # another thread opened it while we waited
                return _connections[key]
        connection = _open(host, ssh, where)
        with _lock:
            if not _connections:
                atexit.register(close_all)  # harmless if registered twice: close_all is idempotent
            _connections[key] = connection
    return connection


def _forget(host, ssh) -> None:
    with _lock:
        connection = _connections.pop((host, ssh), None)
    if connection is not None:
        connection.close()


def known_hosts_name(host) -> str:
    # How OpenSSH and paramiko name a host in known_hosts.
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


def _refusing_policy(host, ssh):
    """paramiko's RejectPolicy, refusing a host key that known_hosts doesn't pin with
    Outpost's message: the key the host presented, and how to check it on its console."""
    from paramiko import RejectPolicy

    class RefuseUnpinned(RejectPolicy):
        def missing_host_key(self, client, hostname, key):
            raise RemoteError(_unknown_host_key(host, ssh, (key_kind(key.get_name()),
                                                            fingerprint(key.asbytes()))))

    return RefuseUnpinned()


def _pinned_connection(host, ssh, where):
    """A Fabric connection to host, not yet open, that accepts only the host key pinned in
    ssh.known_hosts: its client's policy refuses any other by itself."""
    from fabric import Config, Connection
    from paramiko import SSHConfig
    from paramiko.hostkeys import InvalidHostKey

    if not ssh.identity.is_file():
        raise RemoteError(f"{where}: the SSH identity {ssh.identity} does not exist "
                          "(identity in [ssh])")
    timeout = ssh.connect_timeout
    connection = Connection(
        host.address, user=host.user, port=host.port,
        # An empty SSHConfig and lazy: no ~/.ssh/config and no fabric.yaml, so the inventory
        # alone says how to connect (the rsync side passes `-F /dev/null` likewise).
        config=Config(ssh_config=SSHConfig(), lazy=True),
        connect_kwargs={"key_filename": str(ssh.identity), "look_for_keys": False,
                        "allow_agent": False, "timeout": timeout, "banner_timeout": timeout,
                        "auth_timeout": timeout},
    )
    # Fabric's Connection.__init__ sets AutoAddPolicy and loads no known_hosts (fabric
    # connection.py), i.e. it accepts any key. Connection.open() doesn't touch the policy
    # again, so replacing it here holds.
    try:
        connection.client.load_host_keys(str(ssh.known_hosts))
    except OSError as error:
        raise RemoteError(f"{where}: cannot read the pinned host keys in {ssh.known_hosts}: "
                          f"{error.strerror or error}") from None
    except InvalidHostKey as error:
        raise RemoteError(f"{where}: {ssh.known_hosts}: not a valid known_hosts line: "
                          f"{error.line!r}") from None
    connection.client.set_missing_host_key_policy(_refusing_policy(host, ssh))
    return connection


def _open(host, ssh, where):
    connection = _pinned_connection(host, ssh, where)
    try:
        connection.open()
    except Exception as error:
        connection.close()
        raise _connection_error(error, host, ssh, where) from None
    return connection


def _connection_error(error: Exception, host, ssh, where) -> Exception:
    """The RemoteError for an exception from paramiko or the socket layer; anything else
    (a bug, not a host problem) is returned unchanged, to be raised with its traceback."""
    import socket

    from paramiko import AuthenticationException, BadHostKeyException, SSHException

    if isinstance(error, BadHostKeyException):
        return RemoteError(_changed_host_key(host, ssh, (key_kind(error.key.get_name()),
                                                         fingerprint(error.key.asbytes()))))
    if isinstance(error, AuthenticationException):
        return RemoteError(f"{where}: " + _auth_failed(host, ssh))
    if isinstance(error, (socket.timeout, TimeoutError)):
        return RemoteError(f"{where}: " + _unreachable(host, f"no answer within "
                                                             f"{ssh.connect_timeout:g} s"))
    if isinstance(error, SSHException):
        # A silent or slow server: paramiko either times out reading the banner or, when
        # start_client gives up first, fails the next call with "No existing session".
        if "banner" in str(error) or str(error) == "No existing session":
            return RemoteError(f"{where}: " + _unreachable(
                host, f"no SSH handshake within {ssh.connect_timeout:g} s"))
        return RemoteError(f"{where}: SSH failed: {error}")
    if isinstance(error, (OSError, EOFError)):
        # NoValidConnectionsError (refused, no route) is an OSError holding one per address.
        causes = getattr(error, "errors", None)
        first = next(iter(causes.values())) if causes else error
        return RemoteError(f"{where}: " + _unreachable(host, _reason(first)))
    return error


def _reason(error: Exception) -> str:
    return (getattr(error, "strerror", None) or str(error) or type(error).__name__).lower()


# --- messages shared by both runners ----------------------------------------------------------

def _where(host, step) -> str:
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


def _scanned_host_key(host, ssh, key_type: str):
    """(kind, fingerprint) of the host key of this type ("ED25519", as OpenSSH's messages
    name it) that host presents, asked with ssh-keyscan (OpenSSH won't show it for an unknown
    host under StrictHostKeyChecking); None when that fails too."""
    try:
        scan = subprocess.run(["ssh-keyscan", "-T", str(math.ceil(ssh.connect_timeout)),
                               "-t", key_kind(key_type), "-p", str(host.port), host.address],
                              capture_output=True, text=True, env=_environment(),
                              timeout=ssh.connect_timeout + 5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in scan.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            try:
                return key_kind(fields[1]), fingerprint(base64.b64decode(fields[2],
                                                                         validate=True))
            except ValueError:
                return None
    return None


def _openssh_presented(stderr: str, host, ssh):
    """The key an OpenSSH refusal is about: its fingerprint when OpenSSH printed it (a
    changed key), else the key ssh-keyscan gets for the type OpenSSH named."""
    changed = re.search(r"fingerprint for the (\w+) key sent by the remote host is\s+"
                        r"(SHA256:[A-Za-z0-9+/]+)", stderr)
    if changed:
        return key_kind(changed.group(1)), changed.group(2)
    unknown = re.search(r"No (\w+) host key is known for", stderr)
    return _scanned_host_key(host, ssh, unknown.group(1)) if unknown else None


def _changed_host_key(host, ssh, presented=None) -> str:
    return (f"host key for {host.name} ({host.address}) does not match the pinned key in "
            f"{ssh.known_hosts}; nothing was sent to it. "
            + _presented(presented, f"the host was rebuilt: replace its line in "
                                    f"{ssh.known_hosts}"))


def _unknown_host_key(host, ssh, presented=None) -> str:
    return (f"host key for {host.name} ({host.address}) is unknown: {ssh.known_hosts} has no "
            f"line for {known_hosts_name(host)}; nothing was sent to it. "
            + _presented(presented, f"add the host's line to {ssh.known_hosts}"))


def _auth_failed(host, ssh) -> str:
    return (f"{host.user}@{host.address} port {host.port} refused the key {ssh.identity} "
            "(authentication failed)")


def _unreachable(host, reason: str) -> str:
    return f"cannot reach {host.address} port {host.port}: {reason}"


def _tail(stderr: str, lines: int = 10) -> str:
    kept = [line for line in stderr.strip().splitlines() if line.strip()][-lines:]
    return (":\n  " + "\n  ".join(kept)) if kept else ""


# What OpenSSH prints (on stderr, through rsync) for each failure, most specific first.
SSH_FAILURES = (
    ("REMOTE HOST IDENTIFICATION HAS CHANGED", "changed"),
    ("host key is known for", "unknown"),  # "No ED25519 host key is known for [h]:p and ..."
    ("Host key verification failed", "unknown"),
    ("Permission denied (publickey", "auth"),
    ("Connection refused", "connection refused"),
    ("Connection timed out", "no answer within the connect timeout"),
    ("timed out", "no answer within the connect timeout"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network is unreachable"),
    ("Could not resolve hostname", "the address does not resolve"),
)

# rsync(1), EXIT VALUES.
RSYNC_EXIT = {
    1: "syntax or usage error", 2: "protocol incompatibility",
    3: "errors selecting input/output files or folders", 5: "error starting the protocol",
    10: "error in socket I/O", 11: "error in file I/O",
    12: "error in the rsync protocol data stream (is rsync installed on the host?)",
    23: "partial transfer due to an error", 24: "some source files vanished",
    30: "timeout in data send/receive (command_timeout in [ssh])",
    255: "the ssh connection failed",
}


def _local_failure(program: str, proc: subprocess.CompletedProcess, host, ssh) -> str:
    for marker, kind in SSH_FAILURES:
        if marker in proc.stderr:
            if kind == "changed":
                return _changed_host_key(host, ssh, _openssh_presented(proc.stderr, host, ssh))
            if kind == "unknown":
                return _unknown_host_key(host, ssh, _openssh_presented(proc.stderr, host, ssh))
            if kind == "auth":
                return _auth_failed(host, ssh)
            return _unreachable(host, kind)
    meaning = RSYNC_EXIT.get(proc.returncode, "failed") if program == "rsync" else "failed"
    return f"{program} exited {proc.returncode} ({meaning})" + _tail(proc.stderr)
