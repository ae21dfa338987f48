"""A kept connection between runs (`[ssh] keep_connection = <seconds>`): a detached process that
holds one host's Fabric connection (outpost.sshconnect: the same pinned host key) and serves
it on a Unix socket (outpost.channels), until no run has used it for that many seconds. A
run that finds it alive logs in no more: its scripts and rsync run on channels of the kept
connection. The trade-off is in README.md, "Security": whoever can connect to the socket
(this user, root) can run commands on the host as the SSH user without the key, until the
keeper idles out.

The sockets live in one folder of this user's (mode 700, refused when anyone else owns it or
can enter it). A socket's name is a digest of what the connection was made with (address,
port, user, identity, the pinned known_hosts) and how long it is kept, so a changed pin, key
or setting never meets an old keeper. `ps` shows each keeper's socket and user@host. A run
holds its keeper open with a connection that sends nothing: the keeper's idle time starts
when the run ends.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import select
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from outpost import frames
from outpost.openssh import environment, unreachable
from outpost.sshconnect import RemoteError


def folder() -> Path:
    """This user's folder for keepers' sockets, made if missing; RemoteError when it is not
    this user's alone."""
    path = Path(tempfile.gettempdir()) / f"outpost-keep-{os.getuid()}"
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
            or info.st_mode & 0o077):
        raise RemoteError(f"{path} (where kept connections live, keep_connection in [ssh]) "
                          "must be a folder of this user's that nobody else can enter "
                          "(mode 700); remove it and run again")
    return path


def socket_name(host, ssh) -> str:
    """A digest of everything the connection was made with, and of how long it is kept."""
    try:
        pins = Path(ssh.known_hosts).read_bytes()
    except OSError:
        pins = b""  # the connection will fail and say why
    made_with = json.dumps([host.address, host.port, host.user, str(ssh.identity),
                            ssh.keep_connection]).encode()
    return hashlib.sha256(made_with + b"\0" + pins).hexdigest()[:32]


def attach(host, ssh, where) -> tuple[str, socket.socket]:
    """(socket path, hold) of the host's keeper, started when none is alive; hold is a
    connection the keeper counts as a client until this run closes it."""
    base = folder()
    path = str(base / (socket_name(host, ssh) + ".sock"))
    with open(base / (socket_name(host, ssh) + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one run starts it; the others wait and use it
        hold = _hold(path)
        if hold is None:
            _start(host, ssh, where, path, base / (socket_name(host, ssh) + ".log"))
            hold = _hold(path)
        if hold is None:
            raise RemoteError(f"{where}: the kept connection's keeper went away at once "
                              f"(see {base / (socket_name(host, ssh) + '.log')})")
    return path, hold


def _hold(path: str) -> socket.socket | None:
    """A connection to the keeper at path that it greeted, or None when none is there."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(path)
        kind = frames.Reader().feed(sock.recv(16))
        if kind and kind[0][0] == frames.HELLO:
            sock.settimeout(None)
            return sock
    except OSError:
        pass
    sock.close()
    return None


def _start(host, ssh, where, path: str, log: Path):
    """Start a keeper for host and wait until it is connected, or say why it could not."""
    spec = {"host": {"name": host.name, "address": host.address, "port": host.port,
                     "user": host.user},
            "ssh": {"known_hosts": str(ssh.known_hosts), "identity": str(ssh.identity),
                    "connect_timeout": ssh.connect_timeout,
                    "command_timeout": ssh.command_timeout},
            "keep": ssh.keep_connection, "where": where, "path": path}
    with open(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as errors:
        # The socket and user@host on its command line: `ps` shows what each keeper holds.
        child = subprocess.Popen([sys.executable, "-I", "-m", "outpost.keeper", path,
                                  f"{host.user}@{host.address}:{host.port}"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors,
                                 start_new_session=True, cwd="/", env=environment())
    child.stdin.write(json.dumps(spec).encode())
    child.stdin.close()
    child.wait()  # it forks: the keeper goes on in its child, reparented away from this run
    # The login's own timeouts (connect, banner, auth) and starting Python.
    deadline = time.monotonic() + 3 * ssh.connect_timeout + 30
    said = b""
    while not said.endswith(b"\n"):
        ready, _, _ = select.select([child.stdout], [], [], max(0, deadline - time.monotonic()))
        data = os.read(child.stdout.fileno(), 4096) if ready else b""
        if not data:
            break
        said += data
    child.stdout.close()
    try:
        answer = json.loads(said)
    except ValueError:
        raise RemoteError(f"{where}: " + unreachable(
            host, f"the kept connection's keeper did not connect (see {log})")) from None
    if "error" in answer:
        raise RemoteError(answer["error"])


def main() -> int:
    spec = json.loads(sys.stdin.read())
    if os.fork():  # the starter waits for this one; the keeper is its child
        os._exit(0)
    from outpost.sshconnect import open_connection
    from outpost import channels

    host = SimpleNamespace(**spec["host"])
    ssh = SimpleNamespace(**{**spec["ssh"], "known_hosts": Path(spec["ssh"]["known_hosts"]),
                             "identity": Path(spec["ssh"]["identity"])})
    try:
        connection = open_connection(host, ssh, spec["where"])
    except RemoteError as error:
        _say({"error": str(error)})
        return 1
    transport = connection.client.get_transport()
    try:
        os.unlink(spec["path"])  # a keeper that was killed left it (the starter holds the lock)
    except FileNotFoundError:
        pass
    server = channels.Server(spec["path"], lambda: transport, ssh.connect_timeout)
    _say({"ready": True})
    try:
        server.close_when_idle(spec["keep"], stop=lambda: not transport.is_active())
    finally:
        connection.close()
    return 0


def _say(answer: dict):
    """The one line the starter reads; then stdout is no longer its pipe."""
    os.write(1, (json.dumps(answer) + "\n").encode())
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)


if __name__ == "__main__":
    sys.exit(main())
