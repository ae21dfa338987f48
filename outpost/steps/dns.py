"""GeoDNS: the fleet's test country database, each host's gdnsd config, zone and database
switched in by its helper (commands.dns builds them), or the map on Gcore (commands.gcore
builds the requests, outpost.gcore sends them)."""
from __future__ import annotations

from outpost import gcore, geoip
from outpost.commands import gcore as gcore_commands
from outpost.commands import dns as dns_commands
from outpost.steps.common import apply_bundle, report, say


def fleet_database(inventory):
    """Write the local fleet's test country database (geoip.write_fleet_database)."""
    path = geoip.fleet_database_path(inventory)
    geoip.write_fleet_database(path)
    say(f"geoip: wrote the fleet's test database {path}")


def dns(inventory, host):
    """Put the host's gdnsd config, zone and country database in place, checked by gdnsd
    before they are switched in, and apply them (commands.dns.dns_bundle). The database goes only to
    a host that lacks it: the first try sends none, and the host says when it needs it."""
    database = geoip.read_database(geoip.database_path(inventory))
    for send in (False, True):
        files = dns_commands.dns_files(inventory, host, database, send_database=send)
        result = apply_bundle(inventory, host, dns_commands.dns_bundle(host.name, files), "dns",
                              ok_exits=(0,) if send else (0, dns_commands.NEEDS_DATABASE))
        if result.exited == 0:
            report(host, result.stdout)
            return


def dns_gcore(inventory):
    """Put the map on Gcore's managed DNS, with the API token from the environment."""
    dns = inventory.dns
    requests = dns_commands.gcore_requests(inventory)
    gcore.apply(dns.api, requests)
    say(f"gcore: {', '.join(f'{r.method} {r.path}' for r in requests)}: done")
    for region, ours, theirs in gcore_commands.unexpressed_fallbacks(
            dns_commands.region_orders(dns, inventory.hosts), dns.default):
        say(f"gcore: note: with {region}'s first host down, Gcore answers {theirs} "
            f"where the map says {ours} (Gcore falls back to the default host)")
