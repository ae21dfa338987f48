"""What each host step does, composed from outpost.commands (what to run) and outpost.remote
(running it). tasks/hosts.py calls these; every function takes the inventory and a host."""
from __future__ import annotations

import functools
import hashlib
import http.client
import json
import socket
import ssl
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from outpost import commands, content, remote, render, repo, tls
from outpost.errors import OutpostError
from outpost.template import load_template

# How long check waits for a host to serve what was just pushed or switched: the app sees a
# switched release on its next request, but a restarted service needs a moment to listen.
CHECK_WAIT = 20.0
# How long the content tasks' drift probe waits for a host's answer before trusting the record.
PROBE_TIMEOUT = 3.0


def say(line: str):
    """One line of a step's output. Not print(): doit swaps sys.stdout for each action, in
    every thread, and print() on CPython 3.11 holds the stream without a reference while it
    writes (CPython gh-130163), which crashes parallel runs now and then. A single write of
    the whole line also keeps hosts' lines from running into each other."""
    sys.stdout.write(line + "\n")


# --- the local fleet --------------------------------------------------------------------------

def _fleet(inventory):
    from outpost import fleet  # only the fleet tasks need it
    return fleet.from_inventory(inventory)


def fleet_up(inventory):
    started = _fleet(inventory).up()
    say(f"fleet: started {', '.join(started) or 'none (all up)'}")


def fleet_down(inventory):
    stopped = _fleet(inventory).down()
    say(f"fleet: stopped {', '.join(stopped) or 'none (all down)'}")


def _hosts_up(inventory) -> list[bool]:
    from outpost.fleet import running_pid
    state = inventory.fleet.state.resolve()
    return [running_pid(state, host.name) is not None for host in inventory.hosts]


def fleet_is_up(inventory) -> bool:
    return all(_hosts_up(inventory))


def fleet_any_up(inventory) -> bool:
    return any(_hosts_up(inventory))


def host_marker(inventory, host) -> list[str]:
    """A file that changes when a fleet host is made afresh (its pinned host key), so every step
    runs again for a host that lost its state. Real hosts have none."""
    if inventory.fleet is None:
        return []
    return [str(inventory.ssh.known_hosts)]


# --- the site certificate (local CA until real certificates exist) ---------------------------

def certificate(inventory):
    """Make or renew the site certificate (tls.ensure_site_certificate decides which), and
    record what it was made from for certificate_is_current."""
    site = inventory.site
    tls.ensure_site_certificate(site.ca, site.certificates, site.name)
    say(f"certificate for {site.name}: {site.certificates}")
    return {"made_from": _certificate_inputs(inventory),
            "renew_after": tls.renew_after(site.certificates)}


def _certificate_inputs(inventory) -> dict:
    """The site's name and the sha256 of the CA certificate, site certificate and key."""
    site = inventory.site
    paths = [tls.ca_paths(site.ca)[0], *tls.site_paths(site.certificates)]
    return {"name": site.name,
            **{str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None
               for p in paths}}


def certificate_is_current(inventory, values: dict) -> bool:
    """doit uptodate: the files and name are those the certificate was last made from, and it
    is not yet due for renewal. Compares hashes only, so a no-op run never parses a certificate
    (nor loads cryptography); any change sends it to tls.ensure_site_certificate's full check."""
    return (values.get("made_from") == _certificate_inputs(inventory)
            and time.time() < values.get("renew_after", 0))


# --- bootstrap --------------------------------------------------------------------------------

def _report(host, output: str):
    for line in output.splitlines():
        say(f"{host.name}: {line}")


def bootstrap(inventory, host):
    """Base packages, nginx enabled, folders, repository key and list: idempotent."""
    script = commands.bootstrap_script(**_trust_settings(inventory, host))
    _report(host, remote.run_script(host, script, inventory.ssh, step="bootstrap").stdout)


def bootstrap_settings(inventory, host) -> dict:
    return {**sync_settings(inventory, host), "packages": list(commands.BASE_PACKAGES)}


# --- config -----------------------------------------------------------------------------------

def hosts_dir(inventory, host) -> Path:
    """Where a host's rendered files are kept here, at their paths on the host."""
    return inventory.root / "build" / "hosts" / host.name


@dataclass(frozen=True)
class _Pushed:
    remote_path: str
    mode: int
    content: bytes
    service: str | None
    action: str | None


def config(inventory, host):
    """Render the host's files, then stage, check (nginx -t), switch and reload in one round
    trip; see commands.config_script."""
    out_dir = hosts_dir(inventory, host)
    render.render_host(inventory, host, out_dir)
    files = [_Pushed(f.remote_path, f.mode, f.local_path(out_dir).read_bytes(), f.service,
                     f.action) for f in render.host_files(inventory, host)]
    _report(host, remote.run_script(host, commands.config_script(files), inventory.ssh,
                                    step="config").stdout)


# --- sync -------------------------------------------------------------------------------------

def repo_index(inventory, arch: str) -> Path:
    # v2 writes APKINDEX.tar.gz; cbuild's v3 Packages.adb has an APKINDEX.tar.gz hardlink too.
    return repo.repo_dir(inventory, arch) / repo.INDEX_V2


def _list_line(inventory, host) -> str:
    fmt = commands.index_format(repo.repo_dir(inventory, host.arch))
    return commands.repo_list_line(fmt, inventory.repository.path)


def _trust_settings(inventory, host) -> dict:
    """What sync_script and bootstrap_script take: the repository, its key and list line, and
    the folders the SSH user writes."""
    return {"repository": inventory.repository,
            "public_key_pem": inventory.repository.public_key.read_text(),
            "list_line": _list_line(inventory, host), "user": host.user,
            "content_dirs": [p.content_dir for p in inventory.packages if p.content_dir]}


def sync_settings(inventory, host) -> dict:
    return {"address": host.address, "port": host.port, "user": host.user,
            "repository": inventory.repository.path}


def sync(inventory, host):
    """Make the host trust the repository (key, list line, folders), then rsync its arch folder."""
    script = commands.sync_script(**_trust_settings(inventory, host))
    _report(host, remote.run_script(host, script, inventory.ssh, step="sync").stdout)
    remote.run_local(commands.repo_rsync_argv(repo.repo_dir(inventory, host.arch).parent, host,
                                              inventory.repository, inventory.ssh),
                     host, inventory.ssh, step="sync")


# --- upgrade ----------------------------------------------------------------------------------

def wanted_versions(inventory) -> dict[str, str]:
    """The version of each package that every host should run: what its template builds."""
    return {p.name: load_template(p.template_dir).version for p in inventory.packages}


def upgrade(inventory, host):
    """apk update + add -u + restart for every package, in one round trip; checks and reports
    the version now installed."""
    script = "".join(commands.upgrade_script(p.name, p.service) for p in inventory.packages)
    output = remote.run_script(host, script, inventory.ssh, step="upgrade").stdout
    wanted = wanted_versions(inventory)
    for package in inventory.packages:
        installed = commands.parse_installed_version(output, package.name)
        if installed != wanted[package.name]:
            raise OutpostError(f"host {host.name}, step upgrade: {package.name} {installed} is "
                               f"installed, but the repository should give {wanted[package.name]}")
        say(f"{host.name}: {package.name} {installed} installed")
    return {"installed": {p.name: wanted[p.name] for p in inventory.packages}}


# --- content ----------------------------------------------------------------------------------

def push_content(inventory, host):
    """A new release of each package's content on host, switched in (outpost.content)."""
    content.push(inventory, host, say)


def content_is_current(inventory, host) -> bool:
    """doit uptodate of content:<host>: this machine's record says the host has the release of
    content/ now (content.is_current), and the host, asked over HTTPS (never SSH), serves that
    release whole. A host seen serving anything else (a file changed or removed there by hand,
    `current` switched) is marked as drifted, so this very run repairs it; a host that doesn't
    answer is taken at its record, and the check will say what is wrong with it."""
    if not content.is_current(inventory, host):
        return False
    package = render.served_package(inventory)
    health = _probe(inventory, host) if package.content is not None else None
    if not isinstance(health, dict):
        return True
    problem = _content_problem(health, *content.expected(inventory, package, host))
    if problem:
        content.mark_drift(inventory, package, host, problem)
    return problem is None


_probes: dict = {}  # inventory path -> {host name: Future of its /_health}
_probe_lock = threading.Lock()


def _probe(inventory, host) -> dict | str | None:
    """The host's /_health, asked once per run. doit asks for each task's status in turn on
    one thread, so the first call asks every host whose record is current at once, and each
    call waits for its own host's answer only."""
    with _probe_lock:
        if inventory.path not in _probes:
            hosts = [h for h in inventory.hosts if content.is_current(inventory, h)]
            pool = ThreadPoolExecutor(max_workers=max(1, len(hosts)))
            _probes[inventory.path] = {h.name: pool.submit(_health, inventory, h, PROBE_TIMEOUT)
                                       for h in hosts}
            pool.shutdown(wait=False)  # the threads end with their requests
        answer = _probes[inventory.path].get(host.name)
    return answer.result() if answer is not None else None


def _content_problem(health: dict, folder: str | None, digest: str | None) -> str | None:
    """What is wrong with the content a host's health reports, against the release folder and
    digest it should serve (either may be unknown: None); None when nothing is."""
    if folder is not None and health.get("release") != folder:
        return _served(health)
    if digest is not None and health.get("content") != digest:
        return _served(health)
    return None


def _served(health: dict) -> str:
    return f"release {health.get('release')} with content {str(health.get('content'))[:12]}"


def rollback_content(inventory, host):
    """Switch each package's content on host back one release (no transfer), then wait until
    the host serves it."""
    for package, folder, digest in content.rollback(inventory, host, say):
        if package.port is None:
            continue  # not served over HTTPS: nothing to wait for
        health = _wait_for_health(inventory, host, lambda h: _content_problem(h, folder, digest)
                                  is None)
        if not isinstance(health, dict) or _content_problem(health, folder, digest):
            seen = _served(health) if isinstance(health, dict) else health
            raise OutpostError(f"host {host.name}, step rollback: switched to {folder}, but the "
                               f"app does not serve it: it gives {seen}")


# --- check ---------------------------------------------------------------------------------

# HEAD / requests per host for the response time; the median of these is reported.
CHECK_REQUESTS = 5


class _SiteConnection(http.client.HTTPSConnection):
    """HTTPS to one host's address, with the site's name as SNI (and Host): what a visitor
    sent to this host by DNS gets."""

    def __init__(self, address: str, site_name: str, context: ssl.SSLContext, timeout: float):
        super().__init__(site_name, 443, context=context, timeout=timeout)
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


@functools.cache
def _site_context(ca: Path) -> ssl.SSLContext:
    # Made once: loading the CA file for every request is most of a request's own cost.
    return ssl.create_default_context(cafile=str(ca))


def _site_connection(inventory, host, timeout: float) -> _SiteConnection:
    return _SiteConnection(host.address, inventory.site.name,
                           _site_context(tls.ca_paths(inventory.site.ca)[0]), timeout)


def site_request(inventory, host, path: str, timeout: float = 5.0) -> tuple[int, dict, bytes]:
    """GET path from host through nginx, trusting only the site's CA. (status, headers, body)."""
    connection = _site_connection(inventory, host, timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


_kept: dict = {}  # (address, site name) -> an open _SiteConnection not in use
_kept_lock = threading.Lock()


def _kept_request(inventory, host, path: str, method: str = "GET",
                  timeout: float = 5.0) -> tuple[int, bytes]:
    """As site_request, on a connection kept open for the host's next request in this run
    (the drift probe's, the check's): one TLS handshake per host, not one per request. A kept
    connection the server has closed meanwhile is replaced once. (status, body)."""
    key = (host.address, inventory.site.name)
    with _kept_lock:
        connection = _kept.pop(key, None)
    while True:
        kept = connection is not None
        if not kept:
            connection = _site_connection(inventory, host, timeout)
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            answer = response.status, response.read()
        except ConnectionError:
            connection.close()
            connection = None
            if kept:
                continue
            raise
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            with _kept_lock:
                _kept[key] = connection
        return answer


def _health(inventory, host, timeout: float = 5.0) -> dict | str:
    """The app's /_health through nginx, as a dict, or why it couldn't be had."""
    try:
        status, body = _kept_request(inventory, host, "/_health", timeout=timeout)
    except (OSError, ssl.SSLError, http.client.HTTPException) as error:
        return str(error)
    if status != 200:
        return f"HTTP {status}"
    try:
        return json.loads(body)
    except ValueError:
        return "not JSON"


def _wait_for_health(inventory, host, good, hopeless=lambda health: False) -> dict | str:
    """Ask the host's health until good(health) or hopeless(health) (both given a dict), or
    CHECK_WAIT has passed; returns the last answer."""
    deadline = time.monotonic() + CHECK_WAIT
    while True:
        health = _health(inventory, host)
        if isinstance(health, dict) and (good(health) or hopeless(health)):
            return health
        if time.monotonic() > deadline:
            return health
        time.sleep(0.05)


def _content_expected(inventory, package, host) -> tuple[str | None, str | None]:
    if package.content is None:
        return None, None
    return content.expected(inventory, package, host)


def check(inventory, host):
    """Wait until the host serves the wanted version and the content release last pushed or
    rolled back to (over HTTPS, through nginx), then time CHECK_REQUESTS requests. Fails naming
    the host and what it serves; a host whose release folder holds other files than it should
    fails at once and is marked, so the next run sends the release again."""
    wanted = wanted_versions(inventory)
    package = render.served_package(inventory)
    folder, digest = _content_expected(inventory, package, host)
    health = _wait_for_health(
        inventory, host,
        good=lambda h: (h.get("version") == wanted[package.name]
                        and _content_problem(h, folder, digest) is None),
        # Its folder is the right one but the files in it are not: waiting won't mend that.
        hopeless=lambda h: (folder is not None and h.get("release") == folder
                            and _content_problem(h, folder, digest) is not None))
    problem = _content_problem(health, folder, digest) if isinstance(health, dict) else None
    if not isinstance(health, dict) or health.get("version") != wanted[package.name] or problem:
        if problem:
            content.mark_drift(inventory, package, host, problem)
        seen = (f"version {health.get('version')}, {_served(health)}"
                if isinstance(health, dict) else health)
        raise OutpostError(f"host {host.name}, step check: https://{inventory.site.name}/_health "
                           f"at {host.address} does not serve {package.name} "
                           f"{wanted[package.name]} with release {folder or '-'} content "
                           f"{(digest or '-')[:12]}: it gives {seen}"
                           + ("; the next deploy sends the release again" if problem else ""))
    times = []
    for _ in range(CHECK_REQUESTS):
        # HEAD: the app renders the page and nginx passes the answer on, but the body (the
        # size of the content, 8 MB for 2,000 entries) does not make the time. On the kept
        # connection: the time of a request, not of a TLS handshake.
        start = time.perf_counter()
        status, _ = _kept_request(inventory, host, "/", method="HEAD")
        times.append((time.perf_counter() - start) * 1000)
        if status != 200:
            raise OutpostError(f"host {host.name}, step check: https://{inventory.site.name}/ "
                               f"at {host.address} answered HTTP {status}")
    return {"host": host.name, "region": host.region, "status": "ok",
            "version": health["version"], "release": health.get("release") or "-",
            "median_ms": round(statistics.median(times), 1), "requests": CHECK_REQUESTS}
