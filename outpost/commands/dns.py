"""GeoDNS with gdnsd on every host: what each nameserver serves and the script that switches
it in, built by pure functions (outpost.steps.dns runs them).

    region_orders(dns, hosts)       each [dns.map] region's complete fallback order
    expected_host(dns, hosts, c)    the host a visitor on continent c should get
    dns_context(inventory, host)    everything templates/gdnsd/ reads (a config_changed value)
    dns_files(inventory, host, db)  the files a host gets: config, zone, country database
    dns_bundle(host, files)         what the helper does with them: stage, `gdnsd checkconf`,
                                    switch, apply (commands.bundle)
    ecs_query(name, network, id)    the check's DNS query, with EDNS Client Subnet

Applying a change (FACTS.md, gdnsd 3.8.1): a zone change is `gdnsdctl reload-zones` (about
30 ms, no query lost). A config or database change restarts the service under dinit.
`gdnsdctl replace` would hand the sockets to a new process that dinit did not start: dinit
supervises the PID it started, so it would see its service die and start another. A restart
leaves this one nameserver silent for a moment (gdnsd runs its first round of health checks
before it listens); resolvers ask the site's other nameservers meanwhile.
"""
from __future__ import annotations

import ipaddress
import struct
import zlib

from outpost import render
from outpost.commands import acme, bundle, gcore
from outpost.commands.bundle import HostFile

# Paths on the hosts, as the gdnsd package installs them (cports-overlay/user/gdnsd).
SERVICE = "gdnsd"
USER = "_gdnsd"
CONF_DIR = "/etc/gdnsd"
RUN_DIR = "/run/gdnsd"
STATE_DIR = "/var/lib/gdnsd"
# The country database has one name on every host, whatever the local file is called.
DATABASE_NAME = "country.mmdb"
CONFIG = f"{CONF_DIR}/config"
DATABASE = f"{CONF_DIR}/geoip/{DATABASE_NAME}"
# Exit statuses of the helper: gdnsd refused the staged files; the database was not sent and
# the host lacks it.
REFUSED = bundle.EXITS["refused"]
NEEDS_DATABASE = bundle.EXITS["needs"]
# The path nginx serves the app's health on over plain HTTP, for gdnsd's checker.
HEALTH_PATH = "/_health"

# One network on each continent that the check asks about (as an ECS client subnet): each
# continent's regional internet registry's own network, which country databases place there.
# The local fleet's generated database holds exactly these.
PROBE_NETWORKS = {
    "AF": ("MU", "196.216.2.0/24"),    # AFRINIC, Mauritius
    "AS": ("JP", "192.41.192.0/24"),   # JPNIC, Japan
    "EU": ("NL", "193.0.0.0/21"),      # RIPE NCC, Netherlands
    "NA": ("US", "192.149.252.0/24"),  # ARIN, United States
    "OC": ("AU", "202.12.28.0/22"),    # APNIC, Australia
    "SA": ("UY", "200.3.12.0/22"),     # LACNIC, Uruguay
}


# --- the map ----------------------------------------------------------------------------------
# gdnsd's rules, the one place they are written (outpost.latency.dnsmap routes by them too).

def complete(order, default: str, names: list[str]) -> list[str]:
    """An order made complete: its hosts, then the default, then every other host in inventory
    order. When every host of a list is down, gdnsd answers as if all were up; a complete list
    makes that "every host is down" rather than "this region's two hosts are"."""
    result = list(order)
    for name in [default, *names]:
        if name not in result:
            result.append(name)
    return result


def visitor_order(entries, default: str, names: list[str], continent: str,
                  country: str = "") -> list[str]:
    """The complete order for a visitor in `country` of `continent`: the country's entry
    ("EU/DE") beats its continent's ("EU"), which beats the default. `entries` are [dns.map]'s
    (region, hosts) pairs."""
    regions = dict(entries)
    order = regions.get(f"{continent}/{country}") if country else None
    return complete(regions.get(continent, ()) if order is None else order, default, names)


def first_healthy(order: list[str], healthy=None) -> str:
    """The host gdnsd answers with: the first of `order` among the `healthy` host names
    (default: all). With none healthy, gdnsd answers as if all were."""
    if healthy is not None:
        for name in order:
            if name in healthy:
                return name
    return order[0]


def default_order(dns, hosts) -> list[str]:
    return complete([], dns.default, [h.name for h in hosts])


def region_orders(dns, hosts) -> list[tuple[str, list[str]]]:
    """("NA", ["ny", "fr", "au"]) for each [dns.map] region, in the inventory's order."""
    names = [h.name for h in hosts]
    return [(region, complete(order, dns.default, names)) for region, order in dns.map]


def expected_host(dns, hosts, continent: str, healthy=None) -> str:
    """The host a visitor on `continent` gets (first_healthy of its order)."""
    return first_healthy(visitor_order(dns.map, dns.default, [h.name for h in hosts],
                                       continent), healthy)


def agreement_time(health) -> int:
    """Seconds a nameserver may take to act on what its health checks see, by gdnsd's own
    thresholds: a host that just came back is answered again after up_thresh good checks, one
    that just failed is passed over after down_thresh bad ones, each check an interval apart
    and up to a timeout long."""
    return max(health.up_thresh, health.down_thresh) * health.interval + health.timeout


def _map_regions(dns, hosts) -> list[dict]:
    """The map as gdnsd nests it: continent => [order], or continent => { default => [order],
    COUNTRY => [order] } when the inventory names countries of that continent."""
    regions: dict[str, dict] = {}
    for region, order in region_orders(dns, hosts):
        continent, _, country = region.partition("/")
        entry = regions.setdefault(continent, {"continent": continent, "order": [],
                                               "countries": []})
        if country:
            entry["countries"].append({"code": country, "order": order})
        else:
            entry["order"] = order
    return list(regions.values())


# --- what a host gets -------------------------------------------------------------------------

def nameserver_name(host, zone: str) -> str:
    return f"{host.name}.{zone}"


def dns_context(inventory, host) -> dict:
    """Everything templates/gdnsd/ reads for this host, as plain data: a doit config_changed
    value that changes exactly when the host's config or zone may."""
    dns, site = inventory.dns, inventory.site
    health = dns.health
    return {
        "host": {"name": host.name},
        "site": {"name": site.name},
        "dns": {
            "zone": site.name,
            "listen": [f"{host.address}:53"],
            "run_dir": RUN_DIR,
            "state_dir": STATE_DIR,
            "database": DATABASE_NAME,
            "hosts": [h.name for h in inventory.hosts],
            "addresses": {h.name: h.address for h in inventory.hosts},
            "default": default_order(dns, inventory.hosts),
            "regions": _map_regions(dns, inventory.hosts),
            "health": {"path": HEALTH_PATH, "interval": health.interval,
                       "timeout": health.timeout, "up_thresh": health.up_thresh,
                       "ok_thresh": health.ok_thresh, "down_thresh": health.down_thresh},
            "nameservers": [{"name": nameserver_name(h, site.name), "address": h.address}
                            for h in inventory.hosts],
            "ttl": dns.ttl,
            "min_ttl": min(10, dns.ttl),
            "caa": acme.caa_records(inventory),
        },
    }


def zone_serial(context: dict) -> int:
    """A serial that changes with what the zone holds (its name, nameservers, TTLs and CAA
    records), not with the map, which is gdnsd's config (never 0)."""
    dns = context["dns"]
    return zlib.crc32(repr([dns[k] for k in ("zone", "nameservers", "ttl", "min_ttl", "caa")])
                      .encode()) or 1


def zone_path(zone: str) -> str:
    return f"{CONF_DIR}/zones/{zone}"


def dns_files(inventory, host, database: bytes, send_database: bool = True) -> list[HostFile]:
    """The host's gdnsd config and zone, rendered from templates/gdnsd/, and the country
    database (by its hash only unless send_database)."""
    context = dns_context(inventory, host)
    context["dns"]["serial"] = zone_serial(context)
    database_file = HostFile(DATABASE, 0o644, database, SERVICE)
    return [
        HostFile(CONFIG, 0o644, render.render("gdnsd/config.j2", context).encode(), SERVICE),
        HostFile(zone_path(inventory.site.name), 0o644,
                 render.render("gdnsd/zone.j2", context).encode(), "zone"),
        database_file if send_database else database_file.by_hash(),
    ]


def on_hosts(inventory) -> bool:
    """Whether the web hosts run gdnsd (not Gcore, not no DNS at all)."""
    return inventory.dns is not None and inventory.dns.provider == "gdnsd"


# --- the bundle -------------------------------------------------------------------------------

def dns_bundle(host: str, files: list[HostFile]) -> bundle.Bundle:
    """What the helper (commands.bundle) does with the host's gdnsd files:

    1. stage the files sent (the database, when not sent, must be on the host as its hash
       says, else the helper exits NEEDS_DATABASE so the step sends it);
    2. `gdnsd checkconf` on the staged folder; a refusal exits REFUSED with gdnsd's message,
       the old files still answering;
    3. install each file that differs;
    4. enable gdnsd once (that starts it), restart it for a config or database change, reload
       its zones for a zone change, and make sure it runs.
    Prints `changed: <path>`, `restarted: gdnsd`, `reloaded: zones`."""
    return bundle.Bundle(
        host, "dns",
        files=tuple(files),
        checks=(("gdnsd", CONF_DIR),),
        enable=(SERVICE,),
        actions=(bundle.Action(SERVICE, "restart", SERVICE),
                 bundle.Action("zone", "reload-zones", SERVICE)),
        start=(SERVICE,))


# --- Gcore, the managed alternative ----------------------------------------------------------

def gcore_requests(inventory) -> list:
    """The map as Gcore DNS API requests (commands.gcore): the same orders, health path and TTL
    as gdnsd's."""
    dns, site = inventory.dns, inventory.site
    health = gcore.Health(interval=dns.health.interval, timeout=dns.health.timeout,
                          path=HEALTH_PATH, port=80, vhost=site.name)
    return gcore.geodns_requests(site.name, region_orders(dns, inventory.hosts), dns.default,
                                 {h.name: h.address for h in inventory.hosts}, health, dns.ttl)


# --- the check's query ------------------------------------------------------------------------
# Written out here rather than with dnspython, whose import alone costs about 120 ms on every
# run's check (the tests check these bytes against dnspython both ways).

A, IN, OPT, ECS = 1, 1, 41, 8  # RFC 1035 type A and class IN, RFC 6891 OPT, RFC 7871 option
UDP_PAYLOAD = 1232  # the EDNS buffer size DNS flag day 2020 settled on


class DnsReplyError(ValueError):
    """A reply that isn't one to our query, or that says the query failed."""


def _name(name: str) -> bytes:
    return b"".join(bytes([len(label)]) + label.encode("ascii")
                    for label in name.rstrip(".").split(".")) + b"\0"


def ecs_query(name: str, network: str, query_id: int) -> bytes:
    """An A query for `name` carrying EDNS Client Subnet `network`: what a resolver sends on
    behalf of a visitor in that network (RFC 7871). No recursion wanted: the nameserver is
    authoritative."""
    net = ipaddress.ip_network(network)
    family = 1 if net.version == 4 else 2
    address = net.network_address.packed[:(net.prefixlen + 7) // 8]
    option = struct.pack("!HBB", family, net.prefixlen, 0) + address
    opt = b"\0" + struct.pack("!HHIH", OPT, UDP_PAYLOAD, 0, 4 + len(option)) \
        + struct.pack("!HH", ECS, len(option)) + option
    header = struct.pack("!HHHHHH", query_id, 0, 1, 0, 0, 1)
    return header + _name(name) + struct.pack("!HH", A, IN) + opt


def _skip_name(data: bytes, offset: int) -> int:
    """The offset after the (possibly compressed) name at `offset`."""
    while True:
        length = data[offset]
        if length & 0xC0 == 0xC0:  # a pointer ends the name
            return offset + 2
        offset += 1 + length
        if length == 0:
            return offset


def answer_addresses(reply: bytes, query_id: int) -> list[str]:
    """The IPv4 addresses of the A records in the reply's answer section, sorted."""
    try:
        rid, flags, qdcount, ancount = struct.unpack("!HHHH", reply[:8])
        if rid != query_id or not flags & 0x8000:
            raise DnsReplyError("a reply to another query")
        if flags & 0xF:
            raise DnsReplyError(f"rcode {flags & 0xF}")
        offset = 12
        for _ in range(qdcount):
            offset = _skip_name(reply, offset) + 4
        addresses = []
        for _ in range(ancount):
            offset = _skip_name(reply, offset)
            rtype, rclass, _, length = struct.unpack("!HHIH", reply[offset:offset + 10])
            offset += 10
            if rtype == A and rclass == IN and length == 4:
                addresses.append(str(ipaddress.IPv4Address(reply[offset:offset + 4])))
            offset += length
    except (struct.error, IndexError):
        raise DnsReplyError("a truncated reply") from None
    return sorted(addresses)
