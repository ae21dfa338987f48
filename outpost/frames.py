"""The protocol between a program that needs a command run on a host (rsync's `-e` relay,
outpost.relay; a run using a kept connection) and the process that holds the host's SSH
connection (outpost.channels): frames on a Unix socket. Pure: nothing here does I/O.

A frame is one kind byte, the data's length (4 bytes, big-endian) and the data. The server
greets each client it takes on with HELLO (a client that meets the socket's end before it
knows that its command was never read: nothing ran). The client sends COMMAND once, then its
stdin as INPUT frames and END when stdin ends. The server answers with the command's OUTPUT
and ERRORS (its stdout and stderr) as they come, then STATUS (its exit status, in decimal);
or FAILED (why) when the connection could not start the command at all, so nothing ran.
"""
from __future__ import annotations

import struct

COMMAND, INPUT, END = b"C", b"I", b"E"
HELLO, OUTPUT, ERRORS, STATUS, FAILED = b"H", b"O", b"R", b"X", b"F"
KINDS = frozenset((COMMAND, INPUT, END, HELLO, OUTPUT, ERRORS, STATUS, FAILED))
MAX_DATA = 1 << 20  # a longer frame is a broken or foreign peer, not a big write
CHUNK = 1 << 15     # how much one frame of a stream carries

_HEADER = struct.Struct(">cI")


def frame(kind: bytes, data: bytes = b"") -> bytes:
    if kind not in KINDS:
        raise ValueError(f"unknown frame kind {kind!r}")
    if len(data) > MAX_DATA:
        raise ValueError(f"frame of {len(data)} bytes: at most {MAX_DATA}")
    return _HEADER.pack(kind, len(data)) + data


def frames(kind: bytes, data: bytes) -> list[bytes]:
    """data as frames of one kind, each at most CHUNK long."""
    return [frame(kind, data[at:at + CHUNK]) for at in range(0, len(data), CHUNK)]


class Reader:
    """Frames out of a byte stream that arrives in pieces of any size."""

    def __init__(self):
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes]]:
        """The whole frames that data completes, as (kind, data); a partial one waits for
        the next feed. ValueError for a stream that is not frames."""
        self._buffer += data
        done = []
        while len(self._buffer) >= _HEADER.size:
            kind, length = _HEADER.unpack_from(self._buffer)
            if kind not in KINDS or length > MAX_DATA:
                raise ValueError(f"not a frame: kind {kind!r}, length {length}")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                break
            done.append((kind, bytes(self._buffer[_HEADER.size:end])))
            del self._buffer[:end]
        return done

    @property
    def pending(self) -> bool:
        """A frame has begun but not ended (the stream stopped in the middle of one)."""
        return bool(self._buffer)


def status_frame(exited: int) -> bytes:
    return frame(STATUS, str(exited).encode())


def status_of(data: bytes) -> int:
    return int(data.decode())


def remote_command(rsh_args: list[str]) -> str:
    """The command line rsync (or anything that runs `ssh [options] host command...`) wants
    run, from the arguments it gives its remote shell: the options (`-l USER` takes a value),
    the host, then the command's words, joined by spaces as ssh joins them."""
    args = list(rsh_args)
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option in ("-l", "-p") and args:
            args.pop(0)
    if len(args) < 2:
        raise ValueError(f"expected [options] host command..., got {rsh_args!r}")
    return " ".join(args[1:])
