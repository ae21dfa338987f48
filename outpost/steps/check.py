"""check: what each host serves, asked over HTTPS through nginx, as a visitor would be served
(outpost.probe asks): the wanted version, the content release last pushed, the response time,
the certificate's days, and the host's nameserver's answer for each continent. It only reads."""
from __future__ import annotations

import ssl
import statistics
import time

from outpost import hoststate, probe
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
    it serves, and its nameserver's answers (check_dns)."""
    wanted = _wanted_for_check(inventory, host)
    package = config_commands.served_package(inventory)
    folder, digest = _content_expected(inventory, package, host)
    health = probe.wait_for_health(
        inventory, host,
        good=lambda h: (h.get("version") == wanted.get(package.name)
                        and content.content_problem(h, folder, digest) is None),
        # Its folder is the right one but the files in it are not: waiting won't mend that.
        hopeless=lambda h: (folder is not None and h.get("release") == folder
                            and content.content_problem(h, folder, digest) is not None))
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
    times = []
    for _ in range(CHECK_REQUESTS):
        # HEAD: the app renders the page and nginx passes the answer on, but the body (the
        # size of the content, 8 MB for 2,000 entries) does not make the time. On the kept
        # connection: the time of a request, not of a TLS handshake.
        start = time.perf_counter()
        status, _ = probe.kept_request(inventory, host, "/", method="HEAD")
        times.append((time.perf_counter() - start) * 1000)
        if status != 200:
            raise OutpostError(f"host {host.name}, step check: https://{inventory.site.name}/ "
                               f"at {host.address} answered HTTP {status}")
    median = round(statistics.median(times), 1)
    # Kept for `doit latency`, which shows it beside the model's estimate.
    inputs.keep_check(inventory, host.name, median)
    result = {"host": host.name, "region": host.region, "status": "ok",
              "version": health["version"], "release": health.get("release") or "-",
              "median_ms": median, "requests": CHECK_REQUESTS,
              "certificate_days": _certificate_days(inventory, host)}
    if inventory.dns is not None and inventory.dns.provider == "gdnsd":
        result["dns"] = check_dns(inventory, host)
    return result


def _certificate_days(inventory, host) -> int:
    """Days left on the certificate the host serves, verified as site_context trusts it and
    for the site's name (the handshake checks both)."""
    connection = probe.SiteConnection(host.address, inventory.site.name,
                                      probe.site_context(inventory), 5)
    try:
        connection.connect()
        not_after = ssl.cert_time_to_seconds(connection.sock.getpeercert()["notAfter"])
    except ssl.SSLCertVerificationError as error:
        raise OutpostError(f"host {host.name}, step check: its certificate for "
                           f"{inventory.site.name}: {probe.untrusted(inventory, host, error)}") from None
    except (OSError, ssl.SSLError) as error:
        raise OutpostError(f"host {host.name}, step check: its certificate for "
                           f"{inventory.site.name}: {error}") from None
    finally:
        connection.close()
    return int((not_after - time.time()) // 86400)


def _dns_rows(inventory, host) -> list[dict]:
    """Ask the host's nameserver for the site's name once per continent, as a resolver would
    for a visitor there (EDNS Client Subnet from dns_commands.PROBE_NETWORKS). The expected answer is
    the first healthy host of the continent's order, as gdnsd's own checks see it."""
    by_address = {h.address: h.name for h in inventory.hosts}
    healthy = probe.healthy_hosts(inventory)
    rows = []
    for continent, (_, network) in sorted(dns_commands.PROBE_NETWORKS.items()):
        expected = dns_commands.expected_host(inventory.dns, inventory.hosts, continent, healthy)
        try:
            addresses = probe.ask_nameserver(host.address, inventory.site.name, network)
            answer = ", ".join(by_address.get(a, a) for a in addresses) or "no answer"
        except (dns_commands.DnsReplyError, OSError) as error:
            answer = f"no reply ({error or type(error).__name__})"
        rows.append({"nameserver": host.name, "continent": continent, "network": network,
                     "answer": answer, "expected": expected,
                     "first": dns_commands.expected_host(inventory.dns, inventory.hosts, continent)})
    return rows


def check_dns(inventory, host) -> list[dict]:
    """Wait until the host's nameserver answers every continent with the host the map gives
    for the hosts that pass their health check now, then return the rows. The nameserver acts
    on its own checks, which follow a host's change only after gdnsd's thresholds (a host
    restarted by this deploy, one that failed or came back a moment ago): so the wait lasts
    as long as those take (dns_commands.agreement_time), at least probe.WAIT. Fails naming the
    nameserver, the continent, the answer and the expected host."""
    patience = max(probe.WAIT, dns_commands.agreement_time(inventory.dns.health))
    deadline = time.monotonic() + patience
    told = False
    while True:
        rows = _dns_rows(inventory, host)
        wrong = [row for row in rows if row["answer"] != row["expected"]]
        if not wrong or time.monotonic() > deadline:
            break
        if not told and patience > probe.WAIT:
            told = True
            say(f"{host.name}: its nameserver answers {wrong[0]['continent']} with "
                f"{wrong[0]['answer']}, not {wrong[0]['expected']}: waiting up to "
                f"{patience:g} s for its health checks to agree ([dns.health] thresholds)")
        time.sleep(0.5)
    if wrong:
        raise OutpostError("; ".join(
            f"host {host.name}, step check: nameserver {host.address} answers {row['continent']}"
            f" ({row['network']}) with {row['answer']}, expected {row['expected']}"
            for row in wrong))
    return rows
