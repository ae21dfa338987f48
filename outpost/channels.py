"""The holder's side of outpost.frames: a Unix socket on which each client's command runs on a
session channel of one SSH connection, so that rsync (through outpost.relay) and a run using a
kept connection (outpost.keeper) log in no more than once. The run's own process serves its
connections this way (outpost.remote), and so does a keeper between runs.

The socket lives in a folder only this user can enter (mode 700): whoever connects to it runs
commands on the host as the SSH user. A client that goes away ends its channel (and so the
command on the host), as a killed ssh would.
"""
from __future__ import annotations

import os
import select
import socket
import threading
import time

from outpost import frames


class Server:
    """Serves `path` in threads of its own until close(). transport() gives the paramiko
    transport to open channels on (it may raise: the client is told why, and nothing ran)."""

    def __init__(self, path: str, transport, open_timeout: float):
        self.path, self._transport, self._timeout = path, transport, open_timeout
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(16)
        self._clients = 0
        self._closing = False
        self._since = time.monotonic()  # when the last client left (or the server began)
        self._changed = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way
        except OSError:
            pass
        self._listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def close_when_idle(self, seconds: float, stop=lambda: False) -> None:
        """Wait until no client has been connected for `seconds` (or stop() says so), then
        take on no client more, and close. A client greeted before is served to its end."""
        with self._changed:
            while not stop():
                idle = time.monotonic() - self._since
                if self._clients == 0 and idle >= seconds:
                    break
                self._changed.wait(min(1.0, seconds - idle) if self._clients == 0 else 1.0)
            self._closing = True
        self.close()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            with self._changed:
                if self._closing:  # not greeted: the client knows its command never ran
                    client.close()
                    continue
                self._clients += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket):
        try:
            client.sendall(frames.frame(frames.HELLO))
            serve(client, self._transport, self._timeout)
        except OSError:  # the client went away
            pass
        finally:
            client.close()
            with self._changed:
                self._clients -= 1
                self._since = time.monotonic()
                self._changed.notify_all()


def serve(client: socket.socket, transport, open_timeout: float) -> None:
    """One client: its COMMAND on a new channel, its INPUT to the channel's stdin, the
    channel's stdout and stderr back as they come, then its exit status. A client that
    connects and sends nothing (a run holding a keeper open) is served until it goes."""
    reader = frames.Reader()
    waiting: list = []
    command = None
    while command is None:
        data = client.recv(1 << 16)
        if not data:
            return
        for kind, payload in reader.feed(data):
            if command is None and kind == frames.COMMAND:
                command = payload.decode()
            elif command is not None:
                waiting.append((kind, payload))
    try:
        channel = transport().open_session(timeout=open_timeout)
        channel.exec_command(command)
    except Exception as error:  # paramiko's, a dead transport's, or the opener's RemoteError
        client.sendall(frames.frame(frames.FAILED, (str(error) or type(error).__name__)
                                    .encode()))
        return
    answered = threading.Event()
    threading.Thread(target=_input, args=(client, reader, waiting, channel, answered),
                     daemon=True).start()
    try:
        _output(channel, lambda kind, data: client.sendall(frames.frame(kind, data)))
        client.sendall(frames.status_frame(channel.recv_exit_status()))
        answered.set()
    except (OSError, ValueError):  # the client went away, and the input side closed the channel
        pass
    finally:
        channel.close()


def _output(channel, send):
    """The channel's stdout and stderr to the client in the order they came, stderr first
    when both wait: rsync ends (and ends its remote shell) as soon as the protocol says the
    host failed, so the host's words on stderr must be out before that. channel.fileno() is
    readable while either has data, and for good at the end."""
    while True:
        select.select([channel.fileno()], [], [])
        moved = False
        while channel.recv_stderr_ready():
            send(frames.ERRORS, channel.recv_stderr(frames.CHUNK))
            moved = True
        if channel.recv_ready():
            data = channel.recv(frames.CHUNK)
            if data:
                send(frames.OUTPUT, data)
                moved = True
        if not moved and (channel.eof_received or channel.closed):
            while data := channel.recv_stderr(frames.CHUNK):
                send(frames.ERRORS, data)
            return


def _input(client, reader, waiting, channel, answered):
    """The client's stdin to the channel. A client gone before its answer closes the channel,
    which ends the command on the host: a killed run's push must not go on behind its back."""
    try:
        for kind, payload in waiting:
            _to_channel(channel, kind, payload)
        while data := client.recv(1 << 16):
            for kind, payload in reader.feed(data):
                _to_channel(channel, kind, payload)
    except (OSError, ValueError):
        pass
    if not answered.is_set():
        channel.close()


def _to_channel(channel, kind, payload):
    if kind == frames.INPUT:
        channel.sendall(payload)
    elif kind == frames.END:
        channel.shutdown_write()
