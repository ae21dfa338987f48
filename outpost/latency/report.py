"""The latency plan: what visitors wait for under the current map, and where the next host
should go. Pure: plain data in, a Report out (render() makes its text).

    report(hosts=[("au", "Sydney"), ...], dns_map=DnsMap.of("au", [("NA", ["ny"])]), ...)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from outpost.errors import OutpostError
from outpost.latency import dnsmap, visitors as visitors_mod
from outpost.latency.dnsmap import DnsMap
from outpost.latency.model import Model, Rtts
from outpost.latency.places import (Place, UPDOWN_MONITORS, VPS_CANDIDATES, continent_of, country,
                                    place)
from outpost.latency.visitors import Visitors

NAMESERVERS = ("hosts", "anycast")


@dataclass(frozen=True)
class Row:
    """One visitor country (share set) or one monitoring location (share None)."""
    key: str
    name: str
    continent: str
    share: float | None
    host: str
    rtt: float
    dns: float
    first_visit: float
    measured: bool


@dataclass(frozen=True)
class Candidate:
    city: str
    mean: float           # weighted mean first visit with a host added there
    gain: float           # ms saved against the current hosts, each visitor at its nearest
    gaining_share: float  # share of visitors whose first visit gets faster


@dataclass(frozen=True)
class Check:
    host: str
    measured_ms: float
    model_ms: float | None


@dataclass(frozen=True)
class Report:
    hosts: list[tuple[str, Place]]
    visitors: Visitors
    rows: list[Row]
    mean: float
    monitors: list[Row]
    monitor_mean: float | None
    nearest_mean: float
    candidates: list[Candidate]
    current_map: DnsMap
    suggested_map: DnsMap
    suggested_mean: float
    changes: list[str]
    checks: list[Check]
    model: Model
    nameservers: str
    unhealthy: list[str] = field(default_factory=list)


class _Costs:
    def __init__(self, model: Model, rtts: Rtts, nameservers: str):
        self.model, self.rtts, self.nameservers = model, rtts, nameservers

    def dns(self, point: Place, servers: list[Place]) -> float:
        if self.nameservers == "anycast":
            return self.model.anycast_dns_ms
        return min(self.rtts(point, s) for s in servers)

    def visit(self, point: Place, host: Place, servers: list[Place]) -> tuple[float, float, float]:
        """(round trip, dns, first visit) of `point` fetching from `host`."""
        rtt, dns = self.rtts(point, host), self.dns(point, servers)
        return rtt, dns, self.model.first_visit(rtt, dns)


def _hosts(hosts) -> list[tuple[str, Place]]:
    if not hosts:
        raise OutpostError("latency: no hosts")
    return [(name, loc if isinstance(loc, Place) else place(loc, f"host {name}: location"))
            for name, loc in hosts]


def _routed(costs, hosts, dns_map, healthy, point, key, name, continent, share) -> Row:
    names = [n for n, _ in hosts]
    chosen = dnsmap.route(dns_map, names, continent, point.country, healthy)
    where = dict(hosts)
    rtt, dns, visit = costs.visit(point, where[chosen], [p for _, p in hosts])
    return Row(key, name, continent, share, chosen, rtt, dns, visit,
               costs.rtts.is_measured(point, where[chosen]))


def _nearest(costs, hosts, point) -> float:
    servers = [p for _, p in hosts]
    return min(costs.visit(point, p, servers)[2] for _, p in hosts)


def report(hosts, dns_map: DnsMap, visitors: Visitors | None = None, monitors=None,
           candidates=None, measured=None, healthy: set[str] | None = None,
           nameservers: str = "hosts", checks=(), origin: str | None = None,
           model: Model = Model()) -> Report:
    if nameservers not in NAMESERVERS:
        raise OutpostError(f"latency: nameservers must be one of {', '.join(NAMESERVERS)}, "
                           f"not {nameservers!r}")
    hosts = _hosts(hosts)
    names = [n for n, _ in hosts]
    for name in [dns_map.default, *(h for _, order in dns_map.entries for h in order)]:
        if name not in names:
            raise OutpostError(f"[dns.map]: {name!r} is not a host")
    visitors = visitors or visitors_mod.seed_default()
    costs = _Costs(model, Rtts(model, measured), nameservers)

    points = []
    for code, share in sorted(visitors.shares.items(), key=lambda kv: -kv[1]):
        cname, continent, point = country(code)
        points.append((point, code, cname, continent, share))
    rows = [_routed(costs, hosts, dns_map, healthy, p, k, n, c, s) for p, k, n, c, s in points]
    mean = sum(r.share * r.first_visit for r in rows)

    monitor_rows = []
    for text in (UPDOWN_MONITORS if monitors is None else monitors):
        point = place(text, "monitoring location")
        continent = continent_of(point, "monitoring location")
        monitor_rows.append(_routed(costs, hosts, dns_map, healthy, point, point.key, point.key,
                                    continent, None))
    monitor_mean = (sum(r.first_visit for r in monitor_rows) / len(monitor_rows)
                    if monitor_rows else None)

    now = {k: _nearest(costs, hosts, p) for p, k, *_ in points}
    nearest_mean = sum(s * now[k] for _, k, _, _, s in points)
    ranked = []
    for text in (VPS_CANDIDATES if candidates is None else candidates):
        city = place(text, "candidate")
        grown = hosts + [(city.key, city)]
        after = {k: _nearest(costs, grown, p) for p, k, *_ in points}
        cmean = sum(s * after[k] for _, k, _, _, s in points)
        gaining = sum(s for _, k, _, _, s in points if after[k] < now[k] - 1e-9)
        ranked.append(Candidate(city.key, cmean, nearest_mean - cmean, gaining))
    ranked.sort(key=lambda c: (c.mean, c.city))

    where = dict(hosts)
    servers = [p for _, p in hosts]
    by_key = {k: p for p, k, *_ in points}

    def cost(code, host):
        return costs.visit(by_key[code], where[host], servers)[2]

    suggested = dnsmap.suggest(dns_map, names, [(c, k, s) for _, k, _, c, s in points], cost)
    suggested_rows = [_routed(costs, hosts, suggested, None, p, k, n, c, s)
                      for p, k, n, c, s in points]
    suggested_mean = sum(r.share * r.first_visit for r in suggested_rows)

    # The check times a request on a kept connection: one round trip plus the server's time.
    check_rows = []
    start = place(origin, "check origin") if origin else None
    for host, ms in checks:
        if host not in where:
            raise OutpostError(f"check timing for {host!r}: not a host")
        estimate = costs.rtts(start, where[host]) + model.server_ms if start else None
        check_rows.append(Check(host, ms, estimate))

    return Report(hosts, visitors, rows, mean, monitor_rows, monitor_mean, nearest_mean, ranked,
                  dns_map, suggested, suggested_mean, dnsmap.changed_lines(dns_map, suggested,
                                                                           names),
                  check_rows, model, nameservers,
                  sorted(set(names) - set(healthy)) if healthy is not None else [])


def _table(rows: list[Row], weighted: bool) -> list[str]:
    head = f"  {'':22}{'share':>7}  {'host':8}{'round trip':>11}{'first visit':>13}"
    out = [head if weighted else head.replace("share", "     ")]
    for r in rows:
        share = f"{r.share * 100:6.1f}%" if weighted else " " * 7
        mark = " (measured)" if r.measured else ""
        out.append(f"  {r.name[:22]:22}{share}  {r.host:8}{r.rtt:8.0f} ms{r.first_visit:10.0f} ms"
                   f"{mark}")
    return out


def render(rep: Report, picture: str | None = None) -> str:
    lines = ["Hosts: " + ", ".join(f"{n} ({p.key})" for n, p in rep.hosts)]
    if rep.unhealthy and len(rep.unhealthy) == len(rep.hosts):
        lines.append("No host is healthy: gdnsd answers as if all were, and so does this plan")
    elif rep.unhealthy:
        lines.append("Not healthy, left out of the map: " + ", ".join(rep.unhealthy))
    lines += [f"Visitors: {rep.visitors.source}.",
              f"Model: {rep.model.describe()}; nameservers: "
              + ("the hosts (DNS = round trip to the nearest)" if rep.nameservers == "hosts"
                 else f"anycast ({rep.model.anycast_dns_ms:g} ms)"),
              "", "What visitors wait for under the current map:"]
    lines += _table(rep.rows, True)
    lines.append(f"  weighted mean first visit: {rep.mean:.0f} ms")
    if rep.monitors:
        lines += ["", "Monitoring locations (unweighted):"] + _table(rep.monitors, False)
        lines.append(f"  mean first visit: {rep.monitor_mean:.0f} ms")
    lines += ["", f"Where the next host should go (each visitor at its nearest host; now "
                  f"{rep.nearest_mean:.0f} ms):"]
    for c in rep.candidates:
        lines.append(f"  {c.city:16}{c.mean:6.0f} ms  gain {c.gain:4.0f} ms  "
                     f"{c.gaining_share * 100:5.1f}% of visitors gain")
    lines += ["", f"The map for the current hosts: {rep.mean:.0f} ms now, "
                  f"{rep.suggested_mean:.0f} ms with"]
    lines += [f"  {line}" for line in rep.changes] or ["  (no change: the map is already best)"]
    if rep.checks:
        lines += ["", "The check's own timings from the deploy machine (the median request on a "
                      "kept connection: one round trip), beside the model's:"]
        for c in rep.checks:
            model = (f"{c.model_ms:.1f} ms" if c.model_ms is not None
                     else "unknown (set [latency] origin, where the deploy machine is)")
            lines.append(f"  {c.host:8} measured {c.measured_ms:.1f} ms, model {model}")
    lines += ["", "The model can't know peering, congestion, or a VPS provider's own routes: "
                  "give measured round trips where they matter."]
    if picture:
        lines.append(f"Picture: {picture}")
    return "\n".join(lines) + "\n"
