"""The latency model: a round trip from distance, and a first visit from round trips.

Parameters come from published measurements, never from the seed's two averages:

- Light in fibre: c / 1.468, about 204 km/ms (the group index of standard single-mode fibre at
  1550 nm is about 1.468, e.g. Corning SMF-28).
- Path stretch 2.1: "multiply line-of-sight distance by 2.1, then divide by the speed of light
  in fiber" is the rule of thumb that earlier measurement campaigns give for Internet round
  trips (Bozkurt et al., "Dissecting Latency in the Internet's Fiber Infrastructure", 2018,
  summarising Singla et al., "The Internet at the Speed of Light", HotNets 2014, and Bozkurt et
  al., "Why Is the Internet so Slow?!", PAM 2017: ping times about 3.1-3.2x the c-latency,
  of which fibre's refractive index is 1.47x).
- DNS to an anycast service: 25 ms, the low end of the 25-32 ms median round trip that RIPE
  Atlas vantage points see to the anycast root letters (Schmidt, Heidemann, Kuipers, "Anycast
  Latency: How Many Sites Are Enough?", PAM 2017); the low end because a managed GeoDNS
  service such as Gcore's runs a large anycast network, like the letters with the most sites.
- Server time: 0.323 ms, the seed's own measurement of a cached render.

A first visit is a fresh HTTPS fetch (FACTS.md: about 3-4.5 round trips):
    DNS      one round trip from the visitor's resolver to the nearest nameserver (the resolver
             has the zone's NS records but not the answer; resolvers prefer the nameserver with
             the lowest round trip, as BIND's SRTT and Unbound's RTT banding do)
    TCP      one round trip (SYN, SYN-ACK; the request goes with the ACK)
    TLS 1.3  one round trip for a full handshake (RFC 8446, section 2); TLS 1.2 would take two
    request  one round trip plus the server time; a small page fits TCP's initial window of ten
             segments (RFC 6928), so no further round trips
This is also what updown.io's response time adds up: namelookup, connection, handshake, response.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

from outpost.errors import OutpostError
from outpost.latency.places import Place, place, country_code

EARTH_RADIUS_KM = 6371.0088     # the mean Earth radius (IUGG)


@dataclass(frozen=True)
class Model:
    fibre_km_per_ms: float = 299.792458 / 1.468
    stretch: float = 2.1
    tcp_round_trips: int = 1
    tls_round_trips: int = 1
    request_round_trips: int = 1
    anycast_dns_ms: float = 25.0
    server_ms: float = 0.323

    def rtt(self, a: Place, b: Place) -> float:
        return 2 * great_circle_km(a, b) * self.stretch / self.fibre_km_per_ms

    def first_visit(self, rtt: float, dns_rtt: float) -> float:
        rounds = self.tcp_round_trips + self.tls_round_trips + self.request_round_trips
        return dns_rtt + rounds * rtt + self.server_ms

    def describe(self) -> str:
        return (f"round trip = 2 x distance x {self.stretch} / {self.fibre_km_per_ms:.0f} km/ms; "
                f"first visit = DNS (1 round trip) + TCP ({self.tcp_round_trips}) + TLS 1.3 "
                f"({self.tls_round_trips}) + request ({self.request_round_trips}) + "
                f"{self.server_ms} ms server time")


def great_circle_km(a: Place, b: Place) -> float:
    """Haversine distance on a sphere of the mean Earth radius."""
    la1, lo1, la2, lo2 = map(math.radians, (a.lat, a.lon, b.lat, b.lon))
    h = (math.sin((la2 - la1) / 2) ** 2
         + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2)
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))


class Rtts:
    """Round trips between points: measured ones where given, the model's elsewhere."""

    def __init__(self, model: Model, measured: dict[frozenset, float] | None = None):
        self.model = model
        self.measured = measured or {}

    def __call__(self, a: Place, b: Place) -> float:
        found = self.measured.get(frozenset((a.key, b.key)))
        return found if found is not None else self.model.rtt(a, b)

    def is_measured(self, a: Place, b: Place) -> bool:
        return frozenset((a.key, b.key)) in self.measured


def _endpoint(text: str, where: str) -> str:
    """A CSV endpoint's key: a city, coordinates, or a country (its visitors' point)."""
    try:
        return place(text, where).key
    except OutpostError:
        pass
    try:
        return country_code(text, where)
    except OutpostError:
        raise OutpostError(f"{where}: {text!r} is neither a known city, coordinates nor a "
                           "country") from None


def parse_measured(text: str, path: str) -> dict[frozenset, float]:
    """Measured round trips, one pair a line: `a,b,rtt_ms`, each end a city, a country (code or
    name: its visitors' point) or quoted coordinates ("lat,lon"); a header line `a,b,rtt_ms`
    and # comments are allowed. A pair given twice keeps the lower round trip, as the minimum
    of several pings would."""
    result: dict[frozenset, float] = {}
    rows = csv.reader(io.StringIO(text))
    for number, row in enumerate(rows, start=1):
        where = f"{path}, line {number}"
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        if [c.casefold() for c in cells] == ["a", "b", "rtt_ms"]:
            continue
        if len(cells) != 3:
            raise OutpostError(f"{where}: expected 3 fields \"a,b,rtt_ms\", got {len(cells)}")
        try:
            rtt = float(cells[2])
        except ValueError:
            raise OutpostError(f"{where}: round trip {cells[2]!r} is not a number of ms") from None
        if not rtt > 0 or math.isinf(rtt):
            raise OutpostError(f"{where}: round trip {cells[2]!r} must be a positive number of ms")
        pair = frozenset((_endpoint(cells[0], where), _endpoint(cells[1], where)))
        result[pair] = min(rtt, result.get(pair, rtt))
    return result
