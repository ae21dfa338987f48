"""outpost.exchange against a local HTTPS server on 127.0.0.1 (Python's own, HTTP/1.1 keep-alive,
a certificate from a throwaway local CA): requests pipelined on one connection come back in
order, in one TLS handshake, with what the handshake verified kept on the connection. And a
nameserver on a loopback address asked every question at once."""
import http.client
import http.server
import socket
import ssl
import struct
import threading

import pytest

from outpost import exchange, tls

SITE = "site.test"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: it reads the next request off the same socket

    def do_GET(self):
        Server.hosts.append(self.headers["Host"])
        if self.path == "/_health":
            # Pipelined, the next request is here before this one is answered; one by one, it
            # would come only after this answer, and the wait runs out.
            self.connection.settimeout(3)
            try:
                Server.waiting.append(len(self.rfile.peek(1)))
            except TimeoutError:
                Server.waiting.append(0)
        body = self.path.encode()
        self.send_response(404 if self.path == "/missing" else 200)
        self.send_header("Content-Length", str(len(body)))
        if self.path == "/last":
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")  # a HEAD answer has no body all the same
        self.end_headers()

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    connections = 0
    waiting: list = []  # bytes of requests already there when /_health was read
    hosts: list = []    # each request's Host header

    def get_request(self):
        sock, address = super().get_request()
        Server.connections += 1
        return sock, address


@pytest.fixture
def server(tmp_path):
    certificate, key = tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "site", SITE)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    Server.connections, Server.waiting, Server.hosts = 0, [], []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    trust = ssl.create_default_context(cafile=str(tls.ca_paths(tmp_path / "ca")[0]))
    httpd.certificate = ssl.PEM_cert_to_DER_cert(certificate.read_text())
    yield httpd, trust
    httpd.shutdown()
    httpd.server_close()


def connection(httpd, trust):
    made = exchange.SiteConnection("127.0.0.1", SITE, trust, 5)
    made.port = httpd.server_address[1]
    return made


def test_pipelined_requests_come_back_in_order_on_one_connection(server):
    httpd, trust = server
    site = connection(httpd, trust)
    requests = [("GET", "/_health"), ("HEAD", "/"), ("GET", "/missing"), ("HEAD", "/"),
                ("GET", "/a")]
    answers, reusable = exchange.exchange(site, requests)
    assert [(status, body) for status, body, _ in answers] == [
        (200, b"/_health"), (200, b""), (404, b"/missing"), (200, b""), (200, b"/a")]
    seconds = [s for _, _, s in answers]
    assert seconds == sorted(seconds)  # each from the moment they all left
    assert Server.waiting[0] > 0  # all sent at once: one round trip
    assert reusable
    # Again on the same connection: no second handshake.
    answers, _ = exchange.exchange(site, [("GET", "/b")])
    assert answers[0][:2] == (200, b"/b")
    assert Server.connections == 1
    # What the handshake verified: the site's certificate, for its name.
    assert site.peer["subject"] == ((("commonName", SITE),),)
    assert site.certificate == httpd.certificate
    site.close()


def test_a_server_that_closes_midway_is_a_lost_connection(server):
    httpd, trust = server
    site = connection(httpd, trust)
    answers, reusable = exchange.exchange(site, [("GET", "/last")])
    assert answers[0][:2] == (200, b"/last") and not reusable
    site.close()
    with pytest.raises(http.client.RemoteDisconnected, match="after 1 answers"):
        exchange.exchange(connection(httpd, trust), [("GET", "/last"), ("GET", "/never")])


def test_a_certificate_for_another_name_is_refused(server):
    httpd, trust = server
    other = exchange.SiteConnection("127.0.0.1", "elsewhere.test", trust, 5)
    other.port = httpd.server_address[1]
    with pytest.raises(ssl.SSLCertVerificationError):
        exchange.exchange(other, [("GET", "/")])


def test_plain_http_names_the_site_as_gdnsds_checker_does():
    # gdnsd's checker sends the site's name as Host (its vhost): nginx closes any other.
    httpd = Server(("127.0.0.1", 0), Handler)
    Server.hosts = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        plain = exchange.PlainSiteConnection("127.0.0.1", SITE, 5)
        plain.port = httpd.server_address[1]
        answers, _ = exchange.exchange(plain, [("GET", "/x"), ("GET", "/y")])
        assert [a[:2] for a in answers] == [(200, b"/x"), (200, b"/y")]
        assert Server.hosts == [SITE, SITE]
        plain.close()
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- DNS: every question at once ------------------------------------------------------------

NAMESERVER = "127.0.0.77"  # a loopback address of its own: port 53 there is free


def reply(query: bytes, address: str) -> bytes:
    """An authoritative answer to an A query: its question, one A record."""
    question_end = query.index(b"\0", 12) + 5
    header = query[:2] + struct.pack("!HHHHH", 0x8400, 1, 1, 0, 0)
    return (header + query[12:question_end] + struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4)
            + socket.inet_aton(address))


def test_a_nameserver_is_asked_every_question_at_once():
    networks = ["196.216.2.0/24", "193.0.0.0/21", "192.149.252.0/24"]
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind((NAMESERVER, 53))

    def answer():
        queries = [server.recvfrom(4096) for _ in networks]  # all of them before any answer
        for n, (query, client) in reversed(list(enumerate(queries))):  # out of order
            if n == 2:
                continue  # the last one gets no answer
            server.sendto(b"\0\0" + reply(query, "10.0.0.9")[2:], client)  # another query's id
            server.sendto(reply(query, f"10.0.0.{n + 1}"), client)

    thread = threading.Thread(target=answer)
    thread.start()
    try:
        answers = exchange.ask_nameserver(NAMESERVER, SITE, networks, timeout=1.0)
    finally:
        thread.join(timeout=5)
        server.close()
    assert answers[networks[0]] == ["10.0.0.1"] and answers[networks[1]] == ["10.0.0.2"]
    assert isinstance(answers[networks[2]], TimeoutError)
