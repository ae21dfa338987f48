"""Distance for the local fleet: a host with a round-trip time (`rtt_ms` > 0) answers as if it
were that far away. The kernel here has no netem (FACTS.md, "Emulating distance"), so:

- nftables in the host's network namespace redirects what arrives on its eth0 (every TCP port,
  and UDP port 53, DNS) to a relay inside the host (nft_rules);
- the relay (this file, run by the host's system python3, stdlib only) accepts, waits, connects
  to the real service on the host's own address (a connection to its own address skips
  prerouting: no loop) and carries the bytes each way half a round trip late.

What it honours, per connection accepted at t0, with d = rtt/2 (the tests check each):
- the TCP handshake: a real client could send its first byte at t0 + 2d, and the server
  accepts at t0 + 3d, so the relay connects upstream at t0 + 3d and delivers nothing from the
  client before then: connect + one exchange costs 2 round trips, whichever side speaks first;
- every later chunk arrives d after it was sent, in both directions; EOF too;
- UDP (DNS): each datagram, both ways, d late: a question costs one round trip.
Not emulated: bandwidth, loss, TCP's slow start. Services see the host's own address as the
client's (nothing in the pipeline tells clients apart by address: DNS answers per continent go by
EDNS Client Subnet).
"""
from __future__ import annotations

import argparse
import asyncio
import shlex
import socket
import struct
import sys
from pathlib import PurePosixPath

# The relay's ports on the host: one for every TCP port, one for DNS over UDP.
TCP_PORT = 64999
UDP_PORT = 64953
DNS_PORT = 53
LOG = PurePosixPath("/var/log/outpost-delay.log")
# linux/netfilter_ipv4.h: the address a connection was sent to before the redirect.
SO_ORIGINAL_DST = 80
CHUNK = 65536
# A UDP client's upstream socket is closed after this long without a datagram.
UDP_IDLE = 30.0


# --- Pure: what a host runs at boot ---------------------------------------------------------

def nft_rules() -> str:
    """The redirect to the relay, in the host's namespace: only what arrives on eth0, so the
    relay's own upstream connections (to the host's address, over lo) reach the services."""
    return f"""\
table ip outpost_delay {{
    chain prerouting {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "eth0" ip protocol tcp redirect to :{TCP_PORT}
        iifname "eth0" udp dport {DNS_PORT} redirect to :{UDP_PORT}
    }}
}}
"""


def boot_lines(rtt_ms: int, address: str, program: str) -> list[str]:
    """Boot script lines that put a host at `rtt_ms` (none for 0): the redirect, then the relay
    (`program`: this file on the host) in the background, logging to LOG."""
    if not rtt_ms:
        return []
    q = shlex.quote
    return [f"printf '%s' {q(nft_rules())} | nft -f -",
            f"python3 -I {q(program)} --rtt-ms {int(rtt_ms)} --address {q(address)} "
            f"</dev/null >>{LOG} 2>&1 &"]


# --- The relay ------------------------------------------------------------------------------

def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where the client sent a redirected connection (struct sockaddr_in)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, = struct.unpack("!H", raw[2:4])
    return socket.inet_ntoa(raw[4:8]), port


class _Direction:
    """One direction of a connection: chunks read at once, each stamped with when it is due
    (half a round trip after it was read, never before `not_before`), written when due."""

    def __init__(self, reader: asyncio.StreamReader, half: float, not_before: float):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.reading = asyncio.create_task(self._read(reader, half, not_before))

    async def _read(self, reader, half, not_before):
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await reader.read(CHUNK)
            except OSError:
                data = None  # reset: passed on as a reset
            self.queue.put_nowait((max(loop.time(), not_before) + half, data))
            if not data:
                return

    async def deliver(self, writer: asyncio.StreamWriter):
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await self.queue.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
                if data is None:
                    writer.transport.abort()
                    return
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except OSError:
            writer.transport.abort()

    def cancel(self):
        self.reading.cancel()


class Relay:
    def __init__(self, rtt: float, address: str):
        self.rtt = rtt
        self.address = address

    async def serve(self):
        loop = asyncio.get_running_loop()
        server = await asyncio.start_server(self.tcp, "0.0.0.0", TCP_PORT, reuse_address=True)
        await loop.create_datagram_endpoint(lambda: _DnsRelay(self), ("0.0.0.0", UDP_PORT))
        print(f"relaying at {self.rtt * 1000:.0f} ms round trip: tcp :{TCP_PORT}, "
              f"udp :{UDP_PORT} -> {self.address}:{DNS_PORT}", flush=True)
        async with server:
            await server.serve_forever()

    async def tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        half = self.rtt / 2
        target = original_destination(writer.get_extra_info("socket"))
        if target[1] == TCP_PORT:  # sent to the relay itself: it would relay to itself forever
            writer.transport.abort()
            return
        # The client's first byte, had it waited for the SYN-ACK, would leave a round trip in.
        to_server = _Direction(reader, half, not_before=accepted + self.rtt)
        # The server accepts when the client's ACK arrives: 1.5 round trips in.
        await asyncio.sleep(3 * half)
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            to_server.cancel()
            writer.transport.abort()
            return
        to_client = _Direction(up_reader, half, not_before=0.0)
        try:
            await asyncio.gather(to_server.deliver(up_writer), to_client.deliver(writer))
        finally:
            to_server.cancel()
            to_client.cancel()
            for end in (writer, up_writer):
                end.close()


class _DnsRelay(asyncio.DatagramProtocol):
    """DNS over UDP: each client (address, port) gets its own upstream socket, so answers find
    their way back; each datagram is sent half a round trip after it came."""

    def __init__(self, relay: Relay):
        self.relay = relay
        self.clients: dict[tuple, tuple[socket.socket, asyncio.TimerHandle]] = {}

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data: bytes, client: tuple):
        loop = asyncio.get_running_loop()
        if client in self.clients:
            upstream, idle = self.clients[client]
            idle.cancel()
        else:
            upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            upstream.setblocking(False)
            upstream.connect((self.relay.address, DNS_PORT))
            loop.add_reader(upstream.fileno(), self._answer, upstream, client)
        self.clients[client] = (upstream, loop.call_later(UDP_IDLE, self._close, client))
        loop.call_later(self.relay.rtt / 2, self._send, upstream, data)

    @staticmethod
    def _send(upstream: socket.socket, data: bytes):
        try:
            upstream.send(data)
        except OSError:
            pass  # closed, or nothing listens: the datagram is lost, as on a network

    def _answer(self, upstream: socket.socket, client: tuple):
        try:
            data = upstream.recv(CHUNK)
        except OSError:
            return
        asyncio.get_running_loop().call_later(self.relay.rtt / 2, self.transport.sendto,
                                              data, client)

    def _close(self, client: tuple):
        upstream, _ = self.clients.pop(client)
        asyncio.get_running_loop().remove_reader(upstream.fileno())
        upstream.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The local fleet's delaying relay (on a host).")
    parser.add_argument("--rtt-ms", type=int, required=True)
    parser.add_argument("--address", required=True, help="the host's own address")
    args = parser.parse_args(argv)
    asyncio.run(Relay(args.rtt_ms / 1000, args.address).serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
