"""services:<host>: a service the host should run (the app, nginx, gdnsd) that is stopped is
started again, and the run says so. Whether each runs is asked the way a visitor asks, never
over SSH: HTTPS through nginx (the app behind it answers, or nginx says 502), port 80 when 443
refuses (nginx stopped, or only not yet given the site), and one DNS query (gdnsd), asked
beside the HTTPS one. A host that answers nothing at all is down or unreachable: nothing here
can start it, and the check says so. Only a host with a stopped service costs an SSH login
(commands.services builds it)."""
from __future__ import annotations

import http.client
import ssl
from concurrent.futures import ThreadPoolExecutor

from outpost import exchange, probe
from outpost.commands import dns as dns_commands
from outpost.commands import services as services_commands
from outpost.errors import OutpostError
from outpost.steps import content
from outpost.steps.common import apply_bundle, say

# Any continent's network will do: a running nameserver answers every one.
_NETWORK = next(iter(dns_commands.PROBE_NETWORKS.values()))[1]


def _https(inventory, host) -> int | Exception:
    """The status nginx gives /_health, or the error (OutpostError: no client certificate
    here yet, on a first deploy)."""
    try:
        answers, _ = probe.kept_requests(inventory, host, [("GET", "/_health")],
                                         timeout=probe.PROBE_TIMEOUT)
        return answers[0][0]
    except (OSError, ssl.SSLError, http.client.HTTPException, OutpostError) as error:
        return error


def _dns(inventory, host) -> list | Exception:
    """The host's nameserver's answer to one question, or the error that came instead."""
    return exchange.ask_nameserver(host.address, inventory.site.name, [_NETWORK],
                                   timeout=probe.PROBE_TIMEOUT)[_NETWORK]


def _port_80_refused(host) -> bool:
    connection = http.client.HTTPConnection(host.address, 80, timeout=probe.PROBE_TIMEOUT)
    try:
        connection.connect()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        connection.close()
    return False


def stopped(inventory, host, first_look: bool = False) -> dict[str, str]:
    """{service: what was seen} for each service the host should run that does not answer,
    asked now; {} when all do, or when nothing shows the host itself is up (no answer, no
    refusal: it is down or cut off, and nothing here can start it). At the run's first look,
    a health answer the drift probe had from the app through nginx stands for the HTTPS
    question (both run, no round trip of its own)."""
    found = {}
    app = services_commands.app_service(inventory)
    gdnsd = services_commands.gdnsd(inventory)
    with ThreadPoolExecutor(max_workers=1) as pool:  # both questions in one round trip
        dns_answer = pool.submit(_dns, inventory, host) if gdnsd else None
        seen = content.drift_probe(inventory, host) if first_look else None
        answer = 200 if isinstance(seen, dict) else _https(inventory, host)
    # An HTTP answer, a refused connection, a TLS or HTTP error: something on the host spoke.
    reachable = isinstance(answer, (int, ConnectionRefusedError, ConnectionResetError,
                                    ssl.SSLError, http.client.HTTPException))
    if answer == services_commands.APP_DOWN and app:
        found[app] = f"nginx answers HTTP {answer} for it"
    # Port 80 answers on a host whose nginx has not been given the site yet.
    if isinstance(answer, ConnectionRefusedError) and _port_80_refused(host):
        found[services_commands.NGINX] = "ports 443 and 80 refuse connections"
        if app:
            found[app] = "not to be seen behind a stopped nginx"
    if gdnsd:
        answer = dns_answer.result()
        if isinstance(answer, ConnectionRefusedError):
            reachable = True
            found[gdnsd] = "port 53 refuses queries"
        elif isinstance(answer, OSError) and reachable:  # a reply, even a DnsReplyError, is one
            found[gdnsd] = f"no answer on port 53 ({answer or type(answer).__name__})"
    return found if reachable else {}


def _stopped_at_first_look(inventory, host) -> dict[str, str]:
    """stopped(), asked of every host at once at the first call of the run: doit asks each
    task's uptodate in turn on one thread, so asked one host after another, the run would
    wait for the sum of their round trips. An answer may be older than the host's own
    upgrade:<host> and dns:<host> of this run; that is safe both ways: a service found stopped
    is asked again before anything is started (start_stopped), and one those steps restart is
    checked by them (the health gate) and by the check."""
    def ask_all():
        pool = ThreadPoolExecutor(max_workers=max(1, len(inventory.hosts)))
        answers = {h.name: pool.submit(stopped, inventory, h, True) for h in inventory.hosts}
        pool.shutdown(wait=False)  # the threads end with their questions
        return answers
    return probe.RUN.get(("services stopped", inventory.path), ask_all)[host.name].result()


class AllRunning:
    """doit uptodate of services:<host>: every service the host should run answers (or the
    host answers nothing: then only the check can say what is wrong). Named, so
    `doit info services:<host>` says what it found."""

    def __init__(self, inventory, host):
        self.inventory, self.host = inventory, host

    def __call__(self) -> bool:
        return not _stopped_at_first_look(self.inventory, self.host)

    def __repr__(self):
        found = stopped(self.inventory, self.host)
        return (f"{self.host.name}: " + (", ".join(f"{name} ({why})" for name, why in found.items())
                                         or "every service answers"))


def start_stopped(inventory, host):
    """Start each service the host should run that is stopped (asked again now), in one
    round trip, and say which and why."""
    found = stopped(inventory, host)
    if not found:
        say(f"{host.name}: every service answers now; nothing to start")
        return
    apply_bundle(inventory, host, services_commands.start_bundle(host, found), "services")
    for name, why in found.items():
        say(f"{host.name}: {name} was not running ({why}): started it")
