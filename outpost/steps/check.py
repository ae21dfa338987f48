"""check: what each host serves, asked over HTTPS through nginx, as a visitor would be served
(outpost.probe asks): the wanted version, the content release last pushed, the response time,
the certificate's days, and the host's nameserver's answer for each continent. It only reads."""
from __future__ import annotations

import ssl
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from outpost import exchange, hoststate, probe
from outpost.commands import config as config_commands
from outpost.commands import dns as dns_commands
from outpost.errors import OutpostError
from outpost.latency import inputs
from outpost.steps import content
from outpost.steps.build import broken_template
from outpost.steps.common import say
from outpost.steps.upgrade import wanted_versions

# HEAD / requests per host for the response time; the median of these is reported.
CHECK_REQUESTS = 5


def _content_expected(inventory, package, host) -> tuple[str | None, str | None]:
    if package.content is None:
        return None, None
    return content.expected(inventory, package, host)


def _wanted_for_check(inventory, host) -> dict:
    """The versions the check expects: the template's, or with a broken template the ones the
    host last passed the gate with (what it should still serve); and any rollback hold."""
    problem = broken_template(inventory)
    if problem:
        wanted = {name: versions[-1] for name, versions
                  in hoststate.history(inventory, host).items() if versions}
        say(f"{host.name}: a template is broken, so the check expects the version the host "
            f"runs ({', '.join(f'{n} {v}' for n, v in wanted.items()) or 'none recorded'}): "
            f"{problem}")
    else:
        wanted = wanted_versions(inventory)
    for name, held in hoststate.hold(inventory).items():
        if wanted.get(name) == held["version"]:
            say(f"{host.name}: {name} held at {held['version']} by `doit rollback` instead of "
                f"{held['instead_of']}; a new version in its template ends the hold")
    return wanted


def check(inventory, host):
    """Wait until the host serves the wanted version and the content release last pushed or
    rolled back to (over HTTPS, through nginx), then time CHECK_REQUESTS requests. Fails naming
    the host and what it serves; a host whose release folder holds other files than it should
    fails at once and is marked, so the next run sends the release again. Then the certificate
    it serves, and its nameserver's answers (check_dns), asked meanwhile."""
    if inventory.dns is None or inventory.dns.provider != "gdnsd":
        return _serves(inventory, host)
    stop = threading.Event()  # the site's check failed: the nameserver's is not waited for
    with ThreadPoolExecutor(max_workers=1) as pool:
        dns = pool.submit(check_dns, inventory, host, stop)
        try:
            result = _serves(inventory, host)
        except BaseException:
            stop.set()
            raise
        return {**result, "dns": dns.result()}


def _serves(inventory, host) -> dict:
    """The check's HTTPS side: health, the time of `/`, the certificate (check's docstring).
    The HEAD / requests go in the same round trip as the health request that finds the host
    serving what it should (HTTP/1.1 pipelining), so they cost no round trip of their own.
    HEAD: the app renders the page and nginx passes the answer on, but the body (the size of
    the content, 8 MB for 2,000 entries) does not make the time."""
    wanted = _wanted_for_check(inventory, host)
    package = config_commands.served_package(inventory)
    folder, digest = _content_expected(inventory, package, host)
    health, answers, connection = probe.wait_for_health(
        inventory, host,
        good=lambda h: (h.get("version") == wanted.get(package.name)
                        and content.content_problem(h, folder, digest) is None),
        # Its folder is the right one but the files in it are not: waiting won't mend that.
        hopeless=lambda h: (folder is not None and h.get("release") == folder
                            and content.content_problem(h, folder, digest) is not None),
        after=[("HEAD", "/")] * CHECK_REQUESTS)
    problem = content.content_problem(health, folder, digest) if isinstance(health, dict) else None
    if not isinstance(health, dict) or health.get("version") != wanted.get(package.name) or problem:
        if problem:
            content.mark_drift(inventory, package, host, problem)
        seen = (f"it gives version {health.get('version')}, {content.served_text(health)}"
                if isinstance(health, dict) else health)
        raise OutpostError(f"host {host.name}, step check: https://{inventory.site.name}/_health "
                           f"at {host.address} does not serve {package.name} "
                           f"{wanted.get(package.name)} with release {folder or '-'} content "
                           f"{(digest or '-')[:12]}: {seen}"
                           + ("; the next deploy sends the release again" if problem else ""))
    for status, _, _ in answers:
        if status != 200:
            raise OutpostError(f"host {host.name}, step check: https://{inventory.site.name}/ "
                               f"at {host.address} answered HTTP {status}")
    # Pipelined, each answer's time runs from the moment they all left: the round trip and
    # the server's time of the answers before it.
    median = round(statistics.median(seconds * 1000 for _, _, seconds in answers), 1)
    # Kept for `doit latency`, which shows it beside the model's estimate.
    inputs.keep_check(inventory, host.name, median)
    return {"host": host.name, "region": host.region, "status": "ok",
            "version": health["version"], "release": health.get("release") or "-",
            "median_ms": median, "requests": CHECK_REQUESTS,
            "certificate_days": _certificate_days(connection)}


def _certificate_days(connection) -> int:
    """Days left on the certificate the host serves: the one the connection's handshake
    verified, as check_context trusts it and for the site's name."""
    not_after = ssl.cert_time_to_seconds(connection.peer["notAfter"])
    return int((not_after - time.time()) // 86400)


def _dns_rows(inventory, host) -> list[dict]:
    """Ask the host's nameserver for the site's name once per continent, as a resolver would
    for a visitor there (EDNS Client Subnet from dns_commands.PROBE_NETWORKS), all at once. The
    expected answer is the first healthy host of the continent's order, as gdnsd's own checks
    see it."""
    by_address = {h.address: h.name for h in inventory.hosts}
    continents = sorted(dns_commands.PROBE_NETWORKS.items())
    networks = [network for _, (_, network) in continents]
    with ThreadPoolExecutor(max_workers=1) as pool:  # both at once: one round trip each
        healthy = pool.submit(probe.healthy_hosts, inventory)
        answers = exchange.ask_nameserver(host.address, inventory.site.name, networks)
        healthy = healthy.result()
    rows = []
    for continent, (_, network) in continents:
        expected = dns_commands.expected_host(inventory.dns, inventory.hosts, continent, healthy)
        addresses = answers[network]
        if isinstance(addresses, Exception):
            answer = f"no reply ({addresses or type(addresses).__name__})"
        else:
            answer = ", ".join(by_address.get(a, a) for a in addresses) or "no answer"
        rows.append({"nameserver": host.name, "continent": continent, "network": network,
                     "answer": answer, "expected": expected,
                     "first": dns_commands.expected_host(inventory.dns, inventory.hosts, continent)})
    return rows


def check_dns(inventory, host, stop: threading.Event | None = None) -> list[dict]:
    """Wait until the host's nameserver answers every continent with the host the map gives
    for the hosts that pass their health check now, then return the rows; or until `stop` is
    set. The nameserver acts on its own checks, which follow a host's change only after
    gdnsd's thresholds (a host restarted by this deploy, one that failed or came back a moment
    ago): so the wait lasts as long as those take (dns_commands.agreement_time), at least
    probe.WAIT. Fails naming the nameserver, the continent, the answer and the expected host."""
    stop = stop or threading.Event()
    patience = max(probe.WAIT, dns_commands.agreement_time(inventory.dns.health))
    deadline = time.monotonic() + patience
    told = False
    while True:
        rows = _dns_rows(inventory, host)
        wrong = [row for row in rows if row["answer"] != row["expected"]]
        if not wrong or time.monotonic() > deadline or stop.wait(0.5):
            break
        if not told and patience > probe.WAIT:
            told = True
            say(f"{host.name}: its nameserver answers {wrong[0]['continent']} with "
                f"{wrong[0]['answer']}, not {wrong[0]['expected']}: waiting up to "
                f"{patience:g} s for its health checks to agree ([dns.health] thresholds)")
    if wrong:
        raise OutpostError("; ".join(
            f"host {host.name}, step check: nameserver {host.address} answers {row['continent']}"
            f" ({row['network']}) with {row['answer']}, expected {row['expected']}"
            for row in wrong))
    return rows
