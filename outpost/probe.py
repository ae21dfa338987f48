"""The read-only runner: everything that asks a host something over HTTPS, TLS or DNS without
changing it (outpost.remote, beside it, is the runner that changes hosts, over SSH; the
exchanges themselves, and a nameserver's answers, are outpost.exchange's).

    site_context / check_context    what a visitor trusts; the same, with the check's client
                                    certificate
    site_request(inventory, host, path)   one HTTPS request through nginx, as a visitor sends it
    kept_requests(...)              requests pipelined on the run's one connection to a host
    health / ask_health             the app's /_health through nginx (dict, or why not), with
                                    more requests in the same round trip
    probe(inventory, host)          the drift probe: every host's /_health asked at once, once
    kept_certificate(s)             the certificate a host presents, from that connection
    served_certificate              the same on a handshake of its own, unverified
    healthy_hosts(inventory)        the hosts whose port-80 health gdnsd would see as up
    acme_roots(inventory)           the ACME server's root, fetched once per run

Answers that a run asks for more than once are kept in RUN, the one per-run cache, and so is
each host's connection: one TCP and TLS handshake per host per run.
"""
from __future__ import annotations

import functools
import http.client
import json
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from outpost import exchange, tls
from outpost.runcache import RunCache
from outpost.exchange import SiteConnection
from outpost.commands import dns
from outpost.errors import OutpostError

# How long the content tasks' drift probe waits for a host's answer before trusting the record.
PROBE_TIMEOUT = 3.0
# How long the check waits for a host to serve what was just pushed or switched: the app sees a
# switched release on its next request, but a restarted service needs a moment to listen.
WAIT = 20.0
# A server that refuses the connection may be starting (the fleet's pebble, just after
# fleet:up, listens a moment after its machine's sshd): asked again for this long.
ROOTS_STARTING = 15.0


RUN = RunCache()


# --- trust ------------------------------------------------------------------------------------

def acme_roots(inventory) -> str | None:
    """The ACME server's root certificate (PEM) from `[acme] roots`, fetched once per run and
    trusting only `[acme] server_ca` for that fetch; None when the roots are this machine's
    trust store (Let's Encrypt)."""
    acme_settings = inventory.acme
    if acme_settings is None or acme_settings.roots is None:
        return None
    return RUN.get(("acme roots", acme_settings.roots), lambda: _fetch_roots(inventory))


def _fetch_roots(inventory) -> str:
    import urllib.request
    acme_settings = inventory.acme
    cafile = str(acme_settings.server_ca) if acme_settings.server_ca else None
    context = ssl.create_default_context(cafile=cafile)
    deadline = time.monotonic() + ROOTS_STARTING
    while True:
        try:
            with urllib.request.urlopen(acme_settings.roots, context=context,
                                        timeout=10) as answer:
                return answer.read().decode()
        except (OSError, ValueError) as error:
            refused = isinstance(getattr(error, "reason", error), ConnectionRefusedError)
            if refused and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise OutpostError(f"{inventory.path}: [acme] roots: cannot fetch the ACME "
                               f"server's root from {acme_settings.roots}: {error}") from None


@functools.cache
def _context_of_file(ca: Path) -> ssl.SSLContext:
    # Made once: loading the CA file for every request is most of a request's own cost.
    return ssl.create_default_context(cafile=str(ca))


@functools.cache
def _context_of_roots(roots: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=roots) if roots else ssl.create_default_context()


def site_context(inventory) -> ssl.SSLContext:
    """What a visitor's browser trusts, for this site: the ACME server's root (pebble's), this
    machine's trust store (Let's Encrypt's), or the local CA when there is no [acme]."""
    if inventory.acme is None:
        return _context_of_file(tls.ca_paths(inventory.site.ca)[0])
    return _context_of_roots(acme_roots(inventory))


def check_context(inventory) -> ssl.SSLContext:
    """site_context's trust, presenting the check's client certificate (made by the
    client-certificate task): nginx gives /_health's details to this client only."""
    certificate, key = tls.client_paths(inventory.site.certificates)
    if inventory.acme is None:
        return _context_with_client(None, tls.ca_paths(inventory.site.ca)[0], certificate, key)
    return _context_with_client(acme_roots(inventory), None, certificate, key)


@functools.cache  # as _context_of_file: once per run (a failure is not kept)
def _context_with_client(roots: str | None, ca: Path | None, certificate: Path,
                         key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None, cadata=roots)
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as error:
        raise OutpostError(f"{certificate}: the check's client certificate can't be loaded "
                           f"({error}); `doit client-certificate` makes it") from None
    return context


# --- HTTPS through nginx ----------------------------------------------------------------------

def _site_connection(inventory, host, timeout: float) -> SiteConnection:
    return SiteConnection(host.address, inventory.site.name, check_context(inventory), timeout)


def site_request(inventory, host, path: str, timeout: float = 5.0,
                 context: ssl.SSLContext | None = None) -> tuple[int, dict, bytes]:
    """GET path from host through nginx as the check does: trusting only what site_context
    trusts, with the check's client certificate; or with `context` instead (a visitor's:
    site_context). (status, headers, body)."""
    connection = (_site_connection(inventory, host, timeout) if context is None
                  else SiteConnection(host.address, inventory.site.name, context, timeout))
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


# --- the run's one connection to each host ---------------------------------------------------

class _Kept:
    """The run's one connection to a host (None until made, or after it failed), used by one
    thread at a time: a connection answers one exchange at a time, and a thread that finds it
    in use waits for it rather than make a second one."""

    def __init__(self):
        self.lock = threading.Lock()
        self.connection: SiteConnection | None = None

    def drop(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def _kept(inventory, host, plain: bool = False) -> _Kept:
    return RUN.get(("connection", host.address, inventory.site.name, plain), _Kept)


def drop_connections(inventory, host):
    """Close the host's kept connections: its nginx was reloaded (config, a new certificate),
    and an old worker would go on answering them with the old files."""
    for plain in (False, True):
        kept = _kept(inventory, host, plain)
        with kept.lock:
            kept.drop()


def kept_requests(inventory, host, requests, timeout: float = 5.0,
                  plain: bool = False) -> tuple[list, SiteConnection]:
    """Requests ((method, path) pairs) to the host through nginx, as site_request sends them
    (plain: on port 80, as gdnsd asks), all at once on the run's connection to the host
    (HTTP/1.1 pipelining: one round trip; nginx answers them in order): [(status, body,
    seconds from sending to that answer)], and the connection (what its handshake saw). One
    TLS handshake per host per run: the drift probe, the certificate step and the check share
    it. A kept connection the server has closed meanwhile is replaced once."""
    kept = _kept(inventory, host, plain)
    with kept.lock:
        while True:
            reused = kept.connection is not None
            if not reused:
                kept.connection = (exchange.PlainSiteConnection(host.address, inventory.site.name,
                                                             timeout) if plain
                                   else _site_connection(inventory, host, timeout))
            connection = kept.connection
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            try:
                answers, reusable = exchange.exchange(connection, requests)
            except ConnectionError:
                kept.drop()
                if reused:
                    continue
                raise
            except BaseException:
                kept.drop()
                raise
            if not reusable:
                kept.drop()
            return answers, connection


def health_answer(status: int, body: bytes) -> dict | str:
    """An answer of the app's /_health as a dict, or why it is none."""
    if status == 403:
        return ("HTTP 403: nginx did not take the check's client certificate (was it signed "
                "by the CA in the host's client-ca.pem?)")
    if status != 200:
        return f"HTTP {status}"
    try:
        return json.loads(body)
    except ValueError:
        return "not JSON"


def ask_health(inventory, host, after=(), timeout: float = 5.0):
    """The app's /_health through nginx (health_answer's, or why it couldn't be had), with
    the requests `after` it pipelined on the same connection and round trip: (health, their
    answers as kept_requests gives them, the connection); None for both when none was had."""
    try:
        answers, connection = kept_requests(inventory, host, [("GET", "/_health"), *after],
                                            timeout)
    except ssl.SSLCertVerificationError as error:
        return untrusted(inventory, host, error), None, None
    except (OSError, ssl.SSLError, http.client.HTTPException) as error:
        return str(error), None, None
    return health_answer(*answers[0][:2]), answers[1:], connection


def health(inventory, host, timeout: float = 5.0) -> dict | str:
    """The app's /_health through nginx, as a dict, or why it couldn't be had."""
    return ask_health(inventory, host, timeout=timeout)[0]


def probe(inventory, host, hosts) -> dict | str | None:
    """The host's /_health, asked once per run (upgrade's and content's uptodate share it), or
    None for a host not among `hosts` (those the caller would otherwise take at their
    records). doit asks for each task's status in turn on one thread, so the first call asks
    all of `hosts` at once, and each call waits for its own host's answer only."""
    def ask_all():
        pool = ThreadPoolExecutor(max_workers=max(1, 2 * len(hosts)))
        answers = {h.name: pool.submit(health, inventory, h, PROBE_TIMEOUT) for h in hosts}
        if inventory.dns is not None and inventory.dns.provider == "gdnsd":
            for h in hosts:
                pool.submit(_open_plain, inventory, h)
        pool.shutdown(wait=False)  # the threads end with their requests
        return answers
    answer = RUN.get(("probe", inventory.path), ask_all).get(host.name)
    return answer.result() if answer is not None else None


def wait_for_health(inventory, host, good, hopeless=lambda health: False, after=()):
    """Ask the host's health (ask_health, with `after`) until good(health) or
    hopeless(health) (both given a dict), or WAIT has passed; returns the last ask_health."""
    deadline = time.monotonic() + WAIT
    while True:
        asked = ask_health(inventory, host, after)
        answer = asked[0]
        if isinstance(answer, dict) and (good(answer) or hopeless(answer)):
            return asked
        if time.monotonic() > deadline:
            return asked
        time.sleep(0.05)


# --- TLS: the certificate a host presents -----------------------------------------------------

def untrusted(inventory, host, error: ssl.SSLCertVerificationError) -> str:
    """Why the host's certificate is refused, and what it is: a wrong certificate is fixed on
    the host, so say which one the host serves (asked again without verifying it)."""
    served = served_certificate(inventory, host)
    what = (tls.describe_certificate(served) if isinstance(served, bytes)
            else served or "no certificate on a second handshake")
    return f"its certificate is refused ({error.verify_message}): it serves {what}"


HANDSHAKE_TIMEOUT = 5.0


def served_certificate(inventory, host) -> bytes | str | None:
    """The leaf certificate (DER) the host's nginx presents for the site's name now, on a
    handshake of its own, unverified; else _not_served's answer."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host.address, 443), timeout=HANDSHAKE_TIMEOUT) as sock:
            with context.wrap_socket(sock, server_hostname=inventory.site.name) as tls_sock:
                return tls_sock.getpeercert(binary_form=True)
    except OSError as error:
        return _not_served(host, error)


def _not_served(host, error: OSError) -> str | None:
    """None when the host serves no TLS there (refused, or a handshake refused); or, when it
    did not answer at all (down, black-holed), why, as a sentence: what it serves is then
    unknown."""
    if isinstance(error, TimeoutError):
        return (f"cannot reach {host.address} port 443: no answer within "
                f"{HANDSHAKE_TIMEOUT:g} s (timed out)")
    if isinstance(error, (ConnectionRefusedError, ConnectionResetError, ssl.SSLError)):
        return None
    return f"cannot reach {host.address} port 443: {error.strerror or error}"  # no route


def kept_certificate(inventory, host) -> bytes | str | None:
    """The leaf certificate the host presents, from the run's connection to it (its handshake
    verified it), made now if the run has none; a certificate that is refused is asked for on
    a handshake of its own (served_certificate); else _not_served's answer."""
    kept = _kept(inventory, host)
    with kept.lock:
        try:
            if kept.connection is None:
                kept.connection = _site_connection(inventory, host, HANDSHAKE_TIMEOUT)
            if kept.connection.sock is None:
                kept.connection.connect()
            return kept.connection.certificate
        except (OutpostError, ssl.SSLCertVerificationError):
            kept.drop()
        except OSError as error:
            kept.drop()
            return _not_served(host, error)
    return served_certificate(inventory, host)


def served_certificates(inventory) -> dict[str, bytes | str | None]:
    """What every web host serves (kept_certificate), asked once per run (the certificate
    tasks share it)."""
    def ask_all():
        with ThreadPoolExecutor(max_workers=16) as pool:
            return dict(zip([h.name for h in inventory.hosts],
                            pool.map(lambda h: kept_certificate(inventory, h), inventory.hosts)))
    return RUN.get(("served certificates", inventory.path), ask_all)


# --- GeoDNS: what gdnsd's checker sees, and what a nameserver answers -------------------------

def plain_health(inventory, host, timeout: float = 2.0) -> bool:
    """What gdnsd's checker asks each host: GET /_health on port 80 with the site's name as
    Host, HTTP 200 or not; on the run's port-80 connection to the host, asked again each
    interval."""
    try:
        answers, _ = kept_requests(inventory, host, [("GET", dns.HEALTH_PATH)], timeout,
                                   plain=True)
    except (OSError, http.client.HTTPException):
        return False
    return answers[0][0] == 200


def _open_plain(inventory, host):
    """Open the run's port-80 connection to the host (plain_health's) beside the drift
    probe's: the check asks gdnsd's view on it later in one round trip, not a new
    connection's two. A failure is left to plain_health, which tries again."""
    kept = _kept(inventory, host, plain=True)
    with kept.lock:
        if kept.connection is None:
            kept.connection = exchange.PlainSiteConnection(host.address, inventory.site.name,
                                                           PROBE_TIMEOUT)
        try:
            if kept.connection.sock is None:
                kept.connection.connect()
        except OSError:
            kept.drop()


def healthy_hosts(inventory) -> set[str]:
    """The hosts that pass the health check GeoDNS uses, asked at most once per interval and
    judged as gdnsd judges it: an answer later than its timeout is a failure."""
    timeout = inventory.dns.health.timeout
    def ask_all():
        with ThreadPoolExecutor(max_workers=16) as pool:
            up = dict(zip([h.name for h in inventory.hosts],
                          pool.map(lambda h: plain_health(inventory, h, timeout),
                                   inventory.hosts)))
        return {name for name, ok in up.items() if ok}
    return RUN.get(("healthy hosts", inventory.path), ask_all,
                   max_age=inventory.dns.health.interval)
