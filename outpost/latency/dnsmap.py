"""The GeoDNS map as plain data, as the inventory's [dns] holds it: a default host and
entries (region, [hosts]) where a region is a continent ("EU") or "CONTINENT/COUNTRY" ("EU/DE").
Routed by gdnsd's rules as outpost.commands.dns writes them (the one place they are): a country
entry beats its continent's, a continent's beats the default; each list is completed by the
default, then every other host in inventory order; a visitor gets the first healthy host of the
list, and when none is healthy gdnsd answers as if all were.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from outpost.commands import dns as gdnsd


@dataclass(frozen=True)
class DnsMap:
    default: str
    entries: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def of(cls, default: str, entries) -> "DnsMap":
        return cls(default, tuple((region, tuple(order)) for region, order in entries))


def order_for(dns: DnsMap, hosts: list[str], continent: str, country: str) -> list[str]:
    return gdnsd.visitor_order(dns.entries, dns.default, hosts, continent, country)


def route(dns: DnsMap, hosts: list[str], continent: str, country: str,
          healthy: set[str] | None = None) -> str:
    return gdnsd.first_healthy(order_for(dns, hosts, continent, country), healthy)


def suggest(dns: DnsMap, hosts: list[str], visitors: list[tuple[str, str, float]],
            cost) -> DnsMap:
    """The map that minimises the weighted mean: every visitor country sent to its fastest host.
    `visitors` are (continent, country, share); `cost(country, host)` is a first-visit time.
    A continent whose first host is not the fastest for its visitors (share-weighted) gets the
    hosts in that order; a country gets its own entry when its fastest host is not its
    continent's first. Entries whose first host is already right stay as they are, fallbacks
    included, and so do the default and the entries of places without visitors."""
    by_continent: dict[str, list[tuple[str, float]]] = {}
    for continent, country, share in visitors:
        by_continent.setdefault(continent, []).append((country, share))
    visited = {f"{c}/{k}" for c, k, _ in visitors}
    current = dict(dns.entries)
    result = {r: o for r, o in dns.entries
              if r.partition("/")[0] not in by_continent or ("/" in r and r not in visited)}
    for continent, members in by_continent.items():
        def weighted(host, members=members):
            return sum(share * cost(c, host) for c, share in members)
        best = sorted(hosts, key=lambda h: (weighted(h), hosts.index(h)))
        if order_for(dns, hosts, continent, "")[0] == best[0]:
            if continent in current:
                result[continent] = current[continent]
        else:
            result[continent] = tuple(best)
        for country, _ in members:
            region = f"{continent}/{country}"
            own = sorted(hosts, key=lambda h: (cost(country, h), hosts.index(h)))
            if own[0] == best[0]:
                continue
            if region in current and current[region][0] == own[0]:
                result[region] = current[region]
            else:
                result[region] = tuple(own)
    return DnsMap(dns.default, tuple(result.items()))


def changed_lines(current: DnsMap, suggested: DnsMap, hosts: list[str]) -> list[str]:
    """The [dns.map] lines that differ, as `+ KEY = [...]` (new or changed) and `- KEY` (gone),
    comparing complete orders, so a line that only spells out the fallback is no change."""
    def effective(dns, region):
        continent, _, country = region.partition("/")
        return order_for(dns, hosts, continent, country)

    def line(region, order):
        return f"{region} = {json.dumps(list(order), ensure_ascii=False)}"

    lines = []
    now = dict(current.entries)
    later = dict(suggested.entries)
    for region, order in suggested.entries:
        if effective(current, region) != effective(suggested, region) or (
                region not in now and "/" in region):
            lines.append("+ " + line(region, order))
    for region in now:
        if region not in later:
            lines.append(f"- {region}")
    return lines
