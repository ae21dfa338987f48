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
import os
import signal
import subprocess
import threading
from dataclasses import dataclass

from outpost.errors import OutpostError
from outpost.openssh import (auth_failed, changed_host_key, environment, fingerprint, host_step,
                             key_kind, local_failure, missing_identity, reason, tail,
                             unknown_host_key, unreachable)


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


def run_script(host, script: str, ssh, step: str | None = None, ok_exits=(0,)) -> Result:
    """Run a POSIX sh script on host in one round trip and return its output; an exit status
    outside ok_exits is a RemoteError."""
    where = host_step(host, step)
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
                          + tail(stderr))
    if exited not in ok_exits:
        raise RemoteError(f"{where} failed (exit {exited})" + tail(stderr), exited)
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
    where = host_step(host, step)
    try:
        # A session of its own: stop_children() ends rsync and the ssh it started together.
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                                 env=environment())
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
        raise RemoteError(f"{where}: " + local_failure(argv[0], proc, host, ssh))
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
        self.where = host_step(host, step)
        try:
            # In the run's own process group, so whatever ends the run's group ends it too (a
            # killed push must not go on behind the next run's back); known to stop_children.
            self.process = subprocess.Popen([*ssh_argv, RUN_STDIN_THEN_PAYLOAD],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, env=environment())
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
            raise RemoteError(f"{self.where}: " + local_failure("ssh", subprocess.CompletedProcess(
                self.argv, 255, result.stdout, result.stderr), self.host, self.ssh))
        if result.exited != 0:
            raise ScriptFailed(f"{self.where} failed (exit {result.exited})"
                               + tail(result.stderr), result.exited)
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


def _refusing_policy(host, ssh):
    """paramiko's RejectPolicy, refusing a host key that known_hosts doesn't pin with
    Outpost's message: the key the host presented, and how to check it on its console."""
    from paramiko import RejectPolicy

    class RefuseUnpinned(RejectPolicy):
        def missing_host_key(self, client, hostname, key):
            raise RemoteError(unknown_host_key(host, ssh, (key_kind(key.get_name()),
                                                            fingerprint(key.asbytes()))))

    return RefuseUnpinned()


def _pinned_connection(host, ssh, where):
    """A Fabric connection to host, not yet open, that accepts only the host key pinned in
    ssh.known_hosts: its client's policy refuses any other by itself."""
    from fabric import Config, Connection
    from paramiko import SSHConfig
    from paramiko.hostkeys import InvalidHostKey

    if not ssh.identity.is_file():
        raise RemoteError(f"{where}: {missing_identity(ssh)}")
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
        return RemoteError(changed_host_key(host, ssh, (key_kind(error.key.get_name()),
                                                         fingerprint(error.key.asbytes()))))
    if isinstance(error, AuthenticationException):
        return RemoteError(f"{where}: " + auth_failed(host, ssh))
    if isinstance(error, (socket.timeout, TimeoutError)):
        return RemoteError(f"{where}: " + unreachable(host, f"no answer within "
                                                             f"{ssh.connect_timeout:g} s"))
    if isinstance(error, SSHException):
        # A silent or slow server: paramiko either times out reading the banner or, when
        # start_client gives up first, fails the next call with "No existing session".
        if "banner" in str(error) or str(error) == "No existing session":
            return RemoteError(f"{where}: " + unreachable(
                host, f"no SSH handshake within {ssh.connect_timeout:g} s"))
        return RemoteError(f"{where}: SSH failed: {error}")
    if isinstance(error, (OSError, EOFError)):
        # NoValidConnectionsError (refused, no route) is an OSError holding one per address.
        causes = getattr(error, "errors", None)
        first = next(iter(causes.values())) if causes else error
        return RemoteError(f"{where}: " + unreachable(host, reason(first)))
    return error
