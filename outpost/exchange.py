"""A question's exchange with a host, in as few round trips as it takes: HTTPS through nginx, as
a visitor sent there by DNS is served (the site's name as SNI and Host, on the host's own
address), and plain HTTP on port 80, as gdnsd's health checker asks, with several requests on
one connection at once (HTTP/1.1 pipelining: nginx answers them in order); and DNS questions
to a nameserver, all at once on one socket. A runner: outpost.probe keeps the run's
connections to each host and asks through them."""
from __future__ import annotations

import http.client
import os
import socket
import ssl
import time

from outpost.commands import dns


class SiteConnection(http.client.HTTPSConnection):
    """HTTPS to one host's address, with the site's name as SNI (and Host): what a visitor
    sent to this host by DNS gets. Keeps what its handshake saw: the leaf certificate (DER)
    and, verified, its fields."""

    def __init__(self, address: str, site_name: str, context: ssl.SSLContext, timeout: float):
        super().__init__(site_name, 443, context=context, timeout=timeout)
        self.address = address
        self.certificate: bytes | None = None
        self.peer: dict = {}

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        self.certificate = self.sock.getpeercert(binary_form=True)
        self.peer = self.sock.getpeercert()


class PlainSiteConnection(http.client.HTTPConnection):
    """HTTP on port 80 to one host's address, with the site's name as Host (gdnsd's `vhost`:
    nginx closes the connection for any other)."""

    def __init__(self, address: str, site_name: str, timeout: float):
        super().__init__(site_name, 80, timeout=timeout)
        self.address = address

    def connect(self):
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _Answers:
    """One buffered reader of a connection under several http.client responses (pipelined
    answers): each reads its own bytes off it and leaves the next one's; closing one of them
    leaves it open."""

    def __init__(self, sock):
        self.reader = sock.makefile("rb")

    def makefile(self, mode):
        return self

    def close(self):
        pass

    def __getattr__(self, name):
        return getattr(self.reader, name)


def exchange(connection: http.client.HTTPConnection, requests) -> tuple[list, bool]:
    """Send every request at once, then read the answers in order: [(status, body, seconds
    from sending to that answer's head)], and whether the connection may be kept."""
    if connection.sock is None:
        connection.connect()
    data = "".join(f"{method} {path} HTTP/1.1\r\nHost: {connection.host}\r\n"
                   "Accept-Encoding: identity\r\n\r\n" for method, path in requests).encode()
    answers_in = _Answers(connection.sock)
    try:
        start = time.perf_counter()
        connection.sock.sendall(data)
        answers = []
        for method, _ in requests:
            response = http.client.HTTPResponse(answers_in, method=method)
            response.begin()
            seconds = time.perf_counter() - start
            answers.append((response.status, response.read(), seconds))
            if response.will_close and len(answers) < len(requests):
                raise http.client.RemoteDisconnected(f"the server closed the connection "
                                                     f"after {len(answers)} answers")
        return answers, not response.will_close
    finally:
        answers_in.reader.close()


def ask_nameserver(address: str, name: str, networks, timeout: float = 2.0) -> dict:
    """The A addresses a nameserver gives a visitor in each of `networks` (a UDP query with
    ECS each, all sent at once: one round trip), or the error that came instead."""
    ids = {}
    while len(ids) < len(networks):
        ids.setdefault(int.from_bytes(os.urandom(2), "big"), networks[len(ids)])
    answers, deadline = {}, time.monotonic() + timeout
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((address, 53))
            for query_id, network in ids.items():
                sock.send(dns.ecs_query(name, network, query_id))
            while len(answers) < len(ids):
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                reply = sock.recv(4096)
                query_id = int.from_bytes(reply[:2], "big")
                network = ids.get(query_id)
                if network is not None and network not in answers:
                    try:
                        answers[network] = dns.answer_addresses(reply, query_id)
                    except dns.DnsReplyError as error:
                        answers[network] = error
        except OSError as error:  # a timeout, or refused (ICMP): for every question left
            return {network: answers.get(network, error) for network in networks}
    return answers
