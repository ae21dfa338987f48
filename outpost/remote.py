"""Runs what outpost.commands builds: a script on a host over SSH, or a local program (rsync)
that talks to a host. Nothing here decides what to run.

One SSH login per host per run: the first step that needs a host opens its link, and every
later step's script, payload and rsync runs on a channel of it:
- by default the link is this process's own Fabric connection (outpost.sshconnect: the host
  key pinned, refused before anything is sent when unknown or changed); rsync reaches it
  through a relay (outpost.relay) and a socket this process serves (outpost.channels), in a
  folder only this user can enter, removed when the run ends;
- with `[ssh] keep_connection` the connection lives in a keeper (outpost.keeper) that
  outlasts the run, and scripts go to it over the same socket protocol.
Fabric and paramiko are imported only when a connection is opened here, so a run that finds
everything up to date (or uses a keeper) never loads them.

Every failure raises RemoteError, whose message names the host (and the step, when given).
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass

from outpost import channels, keeper, relay
from outpost.openssh import environment, host_step, local_failure, tail
from outpost.sshconnect import RemoteError, ScriptFailed, connection_error, open_connection

__all__ = ["RemoteError", "ScriptFailed", "Result", "run_script", "run_local", "relay_command",
           "connect_soon", "stop_children", "close_all"]


@dataclass(frozen=True)
class Result:
    stdout: str
    stderr: str
    exited: int


# (host, ssh) -> its open link. Steps of one run share it; doit's thread mode may run steps
# for different hosts at once, so opening is per host (a Future the others wait on).
_links: dict = {}
_opening: dict = {}
_lock = threading.Lock()
# Local programs (rsync) running now, for stop_children.
_children: set = set()


# The command the host runs: it reads the script from stdin to its end, then runs it. The
# script never appears in a command line, where every user of the host could read it in
# /proc (config's scripts carry the site's TLS key), and the commands it runs see stdin at
# end-of-file rather than waiting for input.
RUN_STDIN = """sh -c 'eval "$(cat)"'"""

# The command a host runs for a script with a payload after it on the same stdin: the shell
# reads the script line by line up to PAYLOAD_MARK (`read` takes a pipe one byte at a time,
# so it stops exactly there), then runs it, and the script's commands read the rest.
PAYLOAD_MARK = "# outpost: payload follows"
RUN_STDIN_THEN_PAYLOAD = (
    "sh -c 'script=; while IFS= read -r line; do "
    f"[ \"$line\" = \"{PAYLOAD_MARK}\" ] && break; script=\"$script$line\n\"; done; "
    "eval \"$script\"'")


def run_script(host, script: str, ssh, step: str | None = None, ok_exits=(0,),
               payload: bytes | None = None) -> Result:
    """Run a POSIX sh script on host in one round trip and return its output; with a payload,
    the script's commands read it on their stdin. An exit status outside ok_exits raises
    ScriptFailed (a RemoteError with `exited`)."""
    where = host_step(host, step)
    if payload is None:
        command, stdin = RUN_STDIN, script.encode()
    else:
        command = RUN_STDIN_THEN_PAYLOAD
        stdin = script.encode() + f"\n{PAYLOAD_MARK}\n".encode() + payload
    for attempt in (1, 2):
        link = _link(host, ssh, where)
        try:
            stdout, stderr, exited = link.run(command, stdin, ssh.command_timeout)
            break
        except TimeoutError:
            _forget(host, ssh)
            raise RemoteError(f"{where}: did not finish within {ssh.command_timeout:g} s "
                              "(command_timeout in [ssh])") from None
        except relay.Lost as lost:
            _forget(host, ssh)
            if lost.started or attempt == 2:
                raise RemoteError(f"{where}: the connection was lost before the script "
                                  f"finished ({lost})") from None
            # Nothing ran: the keeper was going, or its connection had ended. A new one.
        except Exception as error:  # paramiko's or the socket's: translated, or re-raised
            _forget(host, ssh)
            raise connection_error(error, host, ssh, where) from None
    stdout, stderr = stdout.decode(errors="replace"), stderr.decode(errors="replace")
    if exited == -1:  # no exit status: the channel closed under the script
        _forget(host, ssh)
        raise RemoteError(f"{where}: the connection was lost before the script finished"
                          + tail(stderr))
    if exited not in ok_exits:
        raise ScriptFailed(f"{where} failed (exit {exited})" + tail(stderr), exited)
    return Result(stdout, stderr, exited)


def connect_soon(host, ssh, step: str | None = None) -> None:
    """Start logging in to host in the background, while the caller prepares what to send;
    the next run_script for it waits for that login (and raises its failure) instead of
    starting another."""
    key = (host, ssh)
    with _lock:
        if key in _links or key in _opening:
            return
        _opening[key] = Future()
    # Not a daemon: a run that ends meanwhile (the lock held elsewhere, a failure) waits for
    # the login to finish, then closes it (close_all at exit). A daemon thread killed inside
    # the key exchange's native code at the interpreter's end aborts the process ("FATAL:
    # exception not rethrown").
    threading.Thread(target=_open_link, args=(key, host_step(host, step))).start()


def relay_command(host, ssh, step: str | None = None) -> list[str]:
    """rsync's remote shell (`-e`) for host: the relay to this run's link, which it opens
    now if no step has (so a refused key or an unreachable host fails as run_script does)."""
    return [sys.executable, "-I", "-m", "outpost.relay",
            _link(host, ssh, host_step(host, step)).socket_path()]


def run_local(argv: list[str], host, ssh, step: str | None = None) -> Result:
    """Run a program on this machine that talks to host (rsync with relay_command), with the
    host and the step in its failure."""
    where = host_step(host, step)
    try:
        # A session of its own: stop_children() ends rsync and the relay it started together.
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
        raise RemoteError(f"{where}: " + local_failure(argv[0], proc))
    return Result(proc.stdout, proc.stderr, proc.returncode)


def stop_children() -> int:
    """End every local program run_local started that is still running (with its relay),
    and close the connections: what an interrupted run leaves behind. Returns how many it
    ended."""
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


def _signal(child: subprocess.Popen, sig: int):
    try:
        os.killpg(child.pid, sig)  # its session: rsync and the relay it started
    except ProcessLookupError:
        pass


def close_all() -> None:
    """Close every open link (registered with atexit; tests call it to start afresh). A
    keeper's connection stays for the next run."""
    with _lock:
        links = list(_links.values())
        _links.clear()
    for link in links:
        link.close()


# --- links ------------------------------------------------------------------------------------

class _Own:
    """This process's Fabric connection to a host, and (once rsync needs it) the socket that
    serves it to rsync's relay."""

    def __init__(self, connection, ssh):
        self.connection, self.ssh = connection, ssh
        self._server = None
        self._folder = None

    def run(self, command: str, stdin: bytes, timeout: float):
        return _exec(self.connection, command, stdin, timeout)

    def socket_path(self) -> str:
        with _lock:
            if self._server is None:
                self._folder = tempfile.mkdtemp(prefix="outpost-ssh-")  # mode 700, ours
                self._server = channels.Server(
                    os.path.join(self._folder, "s"), self.connection.client.get_transport,
                    self.ssh.connect_timeout)
            return self._server.path

    def close(self):
        if self._server is not None:
            self._server.close()
            shutil.rmtree(self._folder, ignore_errors=True)
        self.connection.close()


class _Kept:
    """A keeper's connection (outpost.keeper), held open for this run by `hold`."""

    def __init__(self, path: str, hold):
        self.path, self._hold = path, hold

    def run(self, command: str, stdin: bytes, timeout: float):
        return relay.exchange(self.path, command, stdin, timeout)

    def socket_path(self) -> str:
        return self.path

    def close(self):
        self._hold.close()


def _link(host, ssh, where):
    key = (host, ssh)
    with _lock:
        if key in _links:
            return _links[key]
        future = _opening.get(key)
        if future is None:
            future = _opening[key] = Future()
            mine = True
        else:
            mine = False
    if mine:
        _open_link(key, where)
    try:
        return future.result()
    except BaseException:
        with _lock:  # a failed login is raised once; the next step tries again
            if _opening.get(key) is future:
                del _opening[key]
        raise


def _open_link(key, where):
    """Open the link for key and settle its Future. A failure stays in the Future for the
    step that waits on it, so a login started by connect_soon is never made twice."""
    host, ssh = key
    future = _opening[key]
    try:
        if ssh.keep_connection:
            link = _Kept(*keeper.attach(host, ssh, where))
        else:
            link = _Own(open_connection(host, ssh, where), ssh)
    except BaseException as error:
        future.set_exception(error)
        return
    with _lock:
        if not _links:
            atexit.register(close_all)  # harmless if registered twice: close_all is idempotent
        _links[key] = link
        del _opening[key]
    future.set_result(link)


def _forget(host, ssh) -> None:
    with _lock:
        link = _links.pop((host, ssh), None)
    if link is not None:
        link.close()


def _exec(connection, command: str, stdin: bytes, timeout: float) -> tuple[bytes, bytes, int]:
    """One SSH channel: the command, stdin sent to it, then its stdout and stderr to their ends
    (each read in a thread while stdin goes out, so none can fill up and stall the others).
    Straight on the paramiko channel of Fabric's connection: Fabric's own stdin feeding sends
    a byte per 10 ms."""
    channel = connection.client.get_transport().open_session(timeout=timeout)
    try:
        channel.settimeout(timeout)  # no data for this long: socket.timeout (a TimeoutError)
        channel.exec_command(command)
        out, err = [], []
        readers = [threading.Thread(target=lambda: out.append(_read_all(channel.recv))),
                   threading.Thread(target=lambda: err.append(_read_all(channel.recv_stderr)))]
        for reader in readers:
            reader.start()
        try:
            channel.sendall(stdin)
            channel.shutdown_write()
        except OSError:
            pass  # the command ended without reading it all: its status says what happened
        for reader in readers:
            reader.join()
        for result in (out[0], err[0]):
            if isinstance(result, Exception):
                raise result
        return out[0], err[0], channel.recv_exit_status()
    finally:
        channel.close()


def _read_all(receive) -> bytes | Exception:
    chunks = []
    try:
        while data := receive(1 << 16):
            chunks.append(data)
    except Exception as error:  # handed to the caller's thread
        return error
    return b"".join(chunks)
