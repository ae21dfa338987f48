"""The site's GeoDNS map as Gcore Managed DNS records, for `[dns] provider = "gcore"`.

Untested against the real Gcore service: no Gcore server is reachable from here. The tests
check the request Outpost sends (against a local HTTP server that records it) and the errors,
not what Gcore does with it.

The API, as Gcore documents it:
- One request creates or replaces the rrset: `PUT /dns/v2/zones/{zone}/{name}/{type}` on
  https://api.gcore.com, body `{"ttl", "resource_records", "pickers", "meta"}` ("Create/update
  RRset", https://gcore.com/docs/api-reference/dns/rrsets/update-rrset).
- Header `Authorization: APIKey <token>` (same page; the Go SDK sends exactly "APIKey ...").
- Pickers, record meta `continents` / `countries` / `default`, and how `geodns`, `default` and
  `first_n` behave: https://gcore.com/docs/api-reference/dns/rrsets/create-rrset . Codes are
  lowercase: continents "af an as eu na oc sa", countries ISO 3166 alpha-2 ("de").
- Health checks, "Healthchecks":
  https://gcore.com/docs/dns/dns-failover/configure-and-use-dns-failover . The rrset meta
  `failover` {protocol, port, frequency (10-3600 s), timeout (1-10 s), method, url, tls,
  http_status_code, host} (ranges from the API's schema, DNSOutputRrset.meta in Gcore's
  generated SDKs; Gcore calls it a beta feature) and the `healthcheck` picker (the name
  octoDNS and DNSControl send; the SDKs' picker list omits it and Gcore's Terraform example
  uses the older "is_healthy": a first real run should confirm which one). Each record
  (address) is checked from all of Gcore's locations: up when 85% of them get an answer in
  time, down when 20% don't. When every record is down, all are answered.

How the map becomes records. Gcore allows each address once per rrset, so there is one record
per host. A host's record carries, in `continents` and `countries`, the regions it is the FIRST
choice for; the default host's record also carries `"default": true`. The pickers run in order:

    healthcheck (strict false)  drop the hosts that fail their check
    geodns      (strict false)  keep the records whose country matches the visitor, else whose
                                continent matches (ECS subnet if the resolver sends one, else
                                the resolver's address); no match: keep them all
    default                     of those, the default host's record if it is there
    first_n     (limit 1)       one address in the answer, as gdnsd gives

So with the seed's map a North American visitor gets ny; with ny down, nothing matches "na",
and the visitor gets the default host au (or, au down too, the first healthy record in the
rrset's order: hosts in order of first appearance in the map, default first).

What this can't express: the second and later hosts of a region's list. gdnsd answers the next
host of the region's own list; Gcore answers the default host (a country's visitor first gets
its continent's first host, if that one is up). `unexpressed_fallbacks` lists the regions where
the two differ. Also: Gcore checks no more often than every 10 s (gdnsd's 2 s interval becomes
10 s) and has no up/down thresholds to set.

    geodns_requests(site_name, routes, default, addresses, health, ttl) -> [Request]

The requests go out through outpost.gcore.apply (the runner).
"""
from __future__ import annotations

import ipaddress
import math
import urllib.parse
from dataclasses import dataclass

from outpost.errors import OutpostError

API_URL = "https://api.gcore.com"
TOKEN_ENV = "GCORE_API_TOKEN"
CONTINENTS = ("AF", "AN", "AS", "EU", "NA", "OC", "SA")  # MaxMind's codes, as the map uses them
FREQUENCY_RANGE = (10, 3600)  # seconds between checks Gcore accepts
TIMEOUT_RANGE = (1, 10)       # seconds a check may take
REQUEST_TIMEOUT = 30.0        # seconds for each API request
WHERE = '[dns] provider = "gcore"'
TOKEN_HELP = ("create a permanent API token in the Gcore Customer Portal (Profile > API tokens, "
              "with access to DNS) and export it in the environment that runs Outpost; never "
              "put it in a file in git")


@dataclass(frozen=True)
class Health:
    """The HTTP health check of each host, the one gdnsd's http_status plugin also runs."""
    interval: float  # seconds between checks
    timeout: float   # seconds a check may take
    path: str        # "/_health"
    port: int        # 80: plain HTTP (nginx serves the health path without TLS)
    vhost: str       # the Host header: the site's name


@dataclass(frozen=True)
class Request:
    method: str
    path: str    # below the API's URL: "/dns/v2/zones/..."
    body: dict


# --- Pure builders ------------------------------------------------------------------------------

def geodns_requests(site_name: str, routes, default: str, addresses: dict[str, str],
                    health: Health, ttl: int) -> list[Request]:
    """Everything that puts the map on Gcore: one PUT that creates or replaces the A rrset of
    the zone's apex (the zone is the site's name; there is no www record)."""
    return [Request("PUT", rrset_path(site_name, site_name, "A"),
                    rrset_body(routes, default, addresses, health, ttl))]


def rrset_path(zone: str, name: str, rtype: str) -> str:
    def part(text):
        return urllib.parse.quote(text, safe="")
    return f"/dns/v2/zones/{part(zone)}/{part(name)}/{part(rtype)}"


def rrset_body(routes, default: str, addresses: dict[str, str], health: Health,
               ttl: int) -> dict:
    return {
        "ttl": ttl,
        "resource_records": resource_records(routes, default, addresses),
        "pickers": pickers(),
        "meta": {"failover": failover_meta(health)},
    }


def pickers() -> list[dict]:
    return [
        {"type": "healthcheck", "strict": False},
        {"type": "geodns", "strict": False},
        {"type": "default"},
        {"type": "first_n", "limit": 1},
    ]


def failover_meta(health: Health) -> dict:
    """The rrset's health check. Gcore wants whole seconds within its ranges: a shorter interval
    than it allows becomes its minimum, 10 s."""
    return {
        "protocol": "HTTP",
        "port": health.port,
        "frequency": _within(math.ceil(health.interval), FREQUENCY_RANGE),
        "timeout": _within(math.ceil(health.timeout), TIMEOUT_RANGE),
        "method": "GET",
        "url": health.path,
        "tls": False,
        "http_status_code": 200,
        "host": health.vhost,
    }


def resource_records(routes, default: str, addresses: dict[str, str]) -> list[dict]:
    """One record per host, default first, then in order of first appearance in the map."""
    _check_routes(routes, default)
    _check_addresses(hosts_in_order(routes, default), addresses)
    return [{"content": [addresses[host]], "enabled": True,
             "meta": geo_meta(host, routes, default)}
            for host in hosts_in_order(routes, default)]


def geo_meta(host: str, routes, default: str) -> dict:
    """The regions `host` is the first choice for, and whether it is the default."""
    meta: dict = {}
    for region, hosts in routes:
        if hosts[0] == host:
            key, code = _geo_key(region)
            meta.setdefault(key, []).append(code)
    if host == default:
        meta["default"] = True
    return meta


def hosts_in_order(routes, default: str) -> list[str]:
    order = [default]
    for _, hosts in routes:
        order += [host for host in hosts if host not in order]
    return order


def unexpressed_fallbacks(routes, default: str) -> list[tuple[str, str, str]]:
    """(region, the host gdnsd answers, the host Gcore answers) for each region whose first
    host is down (every other host up) and where the two answers differ."""
    _check_routes(routes, default)
    first_of = {region: hosts[0] for region, hosts in routes}
    differ = []
    for region, hosts in routes:
        if len(hosts) < 2:
            continue
        down = hosts[0]
        continent = region.partition("/")[0]
        if "/" in region and first_of.get(continent, down) != down:
            gcore = first_of[continent]
        elif default != down:
            gcore = default
        else:
            gcore = next(h for h in hosts_in_order(routes, default) if h != down)
        if gcore != hosts[1]:
            differ.append((region, hosts[1], gcore))
    return differ


def _geo_key(region: str) -> tuple[str, str]:
    continent, slash, country = region.partition("/")
    return ("countries", country.lower()) if slash else ("continents", continent.lower())


def _within(value: int, bounds: tuple[int, int]) -> int:
    low, high = bounds
    return min(max(value, low), high)


def _check_routes(routes, default: str) -> None:
    seen = set()
    for region, hosts in routes:
        continent, slash, country = region.partition("/")
        if continent not in CONTINENTS or (slash and not (
                len(country) == 2 and country.isascii() and country.isalpha()
                and country.isupper())):
            raise OutpostError(f"{WHERE}: region {region!r} is neither a continent code "
                               f"({', '.join(CONTINENTS)}) nor continent/country such as \"EU/DE\"")
        if region in seen:
            raise OutpostError(f"{WHERE}: region {region!r} appears twice in the map")
        if not hosts:
            raise OutpostError(f"{WHERE}: region {region!r} names no host")
        seen.add(region)
    if not default:
        raise OutpostError(f"{WHERE}: no default host")


def _check_addresses(hosts: list[str], addresses: dict[str, str]) -> None:
    owner: dict[str, str] = {}
    for host in hosts:
        address = addresses.get(host)
        if address is None:
            raise OutpostError(f"{WHERE}: host {host!r} is in the map but has no address")
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            raise OutpostError(f"{WHERE}: host {host!r}: {address!r} is not an IPv4 address "
                               "(the record is an A record)") from None
        if address in owner:
            # Gcore refuses the same content twice in one rrset.
            raise OutpostError(f"{WHERE}: hosts {owner[address]!r} and {host!r} have the same "
                               f"address {address}; Gcore needs one address per host")
        owner[address] = host
