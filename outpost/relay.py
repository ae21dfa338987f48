"""The client's side of outpost.frames. As a program, rsync's remote shell:

    rsync -e "<python> -I -m outpost.relay <socket>" ...  ->  <relay> [-l user] host rsync --server ...

It sends the command to the socket's holder (outpost.channels, in the run's own process or a
keeper), which runs it on a channel of its SSH connection to the host: rsync logs in no more
than the run's steps already did. Its stdin goes to the command, the command's stdout and
stderr come back, and it exits with the command's status (255 when the connection failed,
as ssh does). Standard library only: it starts once per rsync, so it stays small and fast.
`exchange` is the same for a caller inside Python (a run using a kept connection).
"""
from __future__ import annotations

import os
import socket
import sys
import threading

from outpost import frames

LOST = 255  # what ssh exits with when the connection, not the command, failed


class Lost(Exception):
    """The holder could not run the command (`started` False: nothing ran), or went away
    before the command's exit status came."""

    def __init__(self, message: str, started: bool):
        super().__init__(message)
        self.started = started


def run(sock: socket.socket, command: str, chunks, write_out, write_err) -> int:
    """The command on the holder of sock: the byte strings of `chunks` as its stdin, its
    stdout and stderr to the two writers; its exit status."""
    sock.sendall(frames.frame(frames.COMMAND, command.encode()))
    threading.Thread(target=_send, args=(sock, chunks), daemon=True).start()
    reader = frames.Reader()
    greeted = False
    while True:
        try:
            data = sock.recv(1 << 16)
        except ConnectionError:
            data = b""
        if not data and not greeted:
            raise Lost("the holder of the connection to the host was closing", False)
        if not data:
            raise Lost("the connection to the host ended before the command did", True)
        for kind, payload in reader.feed(data):
            if kind == frames.HELLO:
                greeted = True
            elif kind == frames.OUTPUT:
                write_out(payload)
            elif kind == frames.ERRORS:
                write_err(payload)
            elif kind == frames.STATUS:
                return frames.status_of(payload)
            elif kind == frames.FAILED:
                raise Lost(payload.decode(errors="replace"), False)


def _send(sock, chunks):
    try:
        for chunk in chunks:
            for piece in frames.frames(frames.INPUT, chunk):
                sock.sendall(piece)
        sock.sendall(frames.frame(frames.END))
    except OSError:  # the holder went away: the reading side says so
        pass


def exchange(path: str, command: str, stdin: bytes, timeout: float) -> tuple[bytes, bytes, int]:
    """(stdout, stderr, exit status) of the command run by the holder of the socket at path.
    Lost, with `started` False when nothing holds the socket; TimeoutError when nothing came
    for `timeout` seconds."""
    out, err = bytearray(), bytearray()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as error:
            raise Lost(f"nothing holds the connection ({error.strerror or error})", False) \
                from None
        try:
            exited = run(sock, command, [stdin] if stdin else [], out.extend, err.extend)
        except TimeoutError:
            raise
        except OSError as error:  # the holder went away under the command
            raise Lost(f"the connection to the host ended ({error.strerror or error})",
                       True) from None
    return bytes(out), bytes(err), exited


def _write_all(fd: int, data: bytes):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: python -m outpost.relay SOCKET [options] HOST COMMAND...\n")
        return LOST
    try:
        command = frames.remote_command(argv[1:])
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(argv[0])
            return run(sock, command, iter(lambda: os.read(0, frames.CHUNK), b""),
                       lambda data: _write_all(1, data), lambda data: _write_all(2, data))
    except (Lost, OSError, ValueError) as error:
        sys.stderr.write(f"outpost relay: {error}\n")
        return LOST


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
