"""The report's input from the inventory and from what earlier runs kept in build/: used by
`doit latency` (outpost.steps.latency, which also asks the hosts) and by the deploy's one line
(outpost.report, which asks nothing). No SSH, no network here.

    build/latency/visitors.json   the last visitor counts of each host's nginx log
    build/check/<host>.json       the last check's median request time (outpost.steps.check)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from outpost.errors import OutpostError
from outpost.files import write_atomic
from outpost.latency import visitors as visitors_mod
from outpost.latency.dnsmap import DnsMap
from outpost.latency.model import parse_measured
from outpost.latency.report import Report, report

COUNTS = Path("build/latency/visitors.json")
CHECKS = Path("build/check")
PICTURE = Path("build/latency/map.svg")


def hosts(inventory) -> list[tuple[str, str]]:
    missing = [h.name for h in inventory.hosts if h.location is None]
    if missing:
        raise OutpostError(f"{inventory.path}: [[hosts]] {', '.join(missing)}: no key "
                           "'location' (a city or \"lat,lon\"), which the latency plan needs")
    return [(h.name, h.location) for h in inventory.hosts]


def dns_map(inventory) -> DnsMap:
    if inventory.dns is None:
        raise OutpostError(f"{inventory.path}: no [dns] table: the latency plan follows the "
                           "GeoDNS map that sends visitors to hosts")
    return DnsMap.of(inventory.dns.default, inventory.dns.map)


def nameservers(inventory) -> str:
    """gdnsd on the hosts: a visitor's resolver asks the nearest host; Gcore: anycast."""
    return "hosts" if inventory.dns.provider == "gdnsd" else "anycast"


def measured(inventory) -> dict | None:
    path = inventory.latency.measured
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise OutpostError(f"{path}: cannot read the measured round trips ([latency] "
                           f"measured in {inventory.path.name}): {reason}") from None
    return parse_measured(text, str(path))


# --- counts kept from the hosts' logs --------------------------------------------------------

def kept_counts(inventory) -> dict[str, dict]:
    """host -> {"counts": {country: n}, "unknown": n, "at": unix time}, as last counted."""
    path = inventory.root / COUNTS
    try:
        return json.loads(path.read_text())["hosts"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError):
        raise OutpostError(f"{path}: not the visitor counts `doit latency` keeps; remove it, "
                           "and the next `doit latency` counts again") from None


def keep_counts(inventory, counted: dict[str, dict]) -> None:
    path = inventory.root / COUNTS
    write_atomic(path, (json.dumps({"hosts": counted}, indent=1, sort_keys=True) + "\n").encode())


def counted_visitors(counted: dict[str, dict], fresh: list[str]) -> visitors_mod.Visitors:
    """Shares from the hosts' counts, summed; the source names the hosts counted now and those
    whose counts are the kept ones."""
    summed: dict[str, int] = {}
    for entry in counted.values():
        for code, n in entry["counts"].items():
            summed[code] = summed.get(code, 0) + n
    kept = sorted(set(counted) - set(fresh))
    where = "the nginx logs of " + ", ".join(sorted(counted))
    result = visitors_mod.from_counts(summed, where)
    unknown = sum(entry.get("unknown", 0) for entry in counted.values())
    notes = [f"{unknown} more the country database doesn't place"] if unknown else []
    if kept:
        when = min(counted[h]["at"] for h in kept)
        notes.append(f"{', '.join(kept)}: as counted on "
                     f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(when))}")
    source = result.source + (f" ({'; '.join(notes)})" if notes else "")
    return visitors_mod.Visitors(result.shares, source)


def visitors(inventory, counted: dict[str, dict] | None, fresh=()) -> visitors_mod.Visitors:
    """The inventory's shares, the hosts' counts (`counted`, or the kept ones), or the seed's
    top ten."""
    table = inventory.latency.visitors
    if table == visitors_mod.LOGS:
        counted = kept_counts(inventory) if counted is None else counted
        if not counted:
            raise OutpostError("no visitors counted yet ([latency] visitors = \"logs\"): "
                               "`doit latency` counts them")
        return counted_visitors(counted, list(fresh))
    if table is not None:
        return visitors_mod.from_table(dict(table), f"{inventory.path.name} [latency] visitors")
    return visitors_mod.seed_default()


# --- the check's timings ---------------------------------------------------------------------

def keep_check(inventory, host: str, median_ms: float) -> None:
    write_atomic(inventory.root / CHECKS / f"{host}.json",
                 (json.dumps({"median_ms": median_ms, "at": time.time()}) + "\n").encode())


def kept_checks(inventory) -> list[tuple[str, float]]:
    """(host, median ms) of each host's last check, where one is kept."""
    found = []
    for host in inventory.hosts:
        try:
            found.append((host.name, float(json.loads(
                (inventory.root / CHECKS / f"{host.name}.json").read_text())["median_ms"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue   # no check yet (or a damaged record): the report leaves the host out
    return found


# --- the report ------------------------------------------------------------------------------

def plan(inventory, healthy: set[str] | None, visitors_of: visitors_mod.Visitors,
         checks=()) -> Report:
    latency = inventory.latency
    return report(hosts(inventory), dns_map(inventory), visitors=visitors_of,
                  monitors=latency.monitors, candidates=latency.candidates,
                  measured=measured(inventory), healthy=healthy,
                  nameservers=nameservers(inventory), checks=checks, origin=latency.origin)


def mean_line(inventory, failed: set[str]) -> str | None:
    """The deploy's one line: the weighted mean first visit under the current map, hosts whose
    check failed left out, from the inventory and what `doit latency` kept. None when no host
    has a location (the plan is not set up)."""
    if inventory.dns is None or all(h.location is None for h in inventory.hosts):
        return None
    try:
        healthy = {h.name for h in inventory.hosts} - failed
        rep = plan(inventory, healthy, visitors(inventory, None))
    except OutpostError as error:
        return f"Latency: {error}"
    down = f", {', '.join(sorted(failed))} left out" if failed else ""
    return (f"Latency: {rep.mean:.0f} ms weighted mean first visit under the current map"
            f"{down}; visitors: {rep.visitors.source}. `doit latency` for the whole plan.")
