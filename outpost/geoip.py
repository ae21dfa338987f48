"""The country database gdnsd's geoip plugin reads: the local fleet's generated test database,
and the check of a user's database before it goes to any host.

Real use needs a MaxMind-format country database the user supplies: DB-IP's free "IP to
Country Lite" (CC BY 4.0) or MaxMind's GeoLite2-Country. Its records need `continent.code`
(gdnsd maps continents) and `country.iso_code` (for country entries of the map).

mmdb-writer and maxminddb are imported only here, only when a database is written or checked.
"""
from __future__ import annotations

from pathlib import Path

from outpost.errors import OutpostError
from outpost.commands.dns import PROBE_NETWORKS

# Where the fleet's database is made, relative to the inventory's folder.
FLEET_DATABASE = Path("build/dns/fleet-country.mmdb")


def fleet_database_path(inventory) -> Path:
    return inventory.root / FLEET_DATABASE


def database_path(inventory) -> Path:
    """The database the hosts get: the inventory's, or the fleet's generated one."""
    return inventory.dns.database or fleet_database_path(inventory)


def write_fleet_database(path: Path):
    """A small GeoLite2-Country-shaped database placing each continent's probe network
    (geodns.PROBE_NETWORKS) on its continent and country: enough for the fleet's DNS tests and
    check, and nothing else. Any other address is unknown to it (gdnsd's map default)."""
    import netaddr
    from mmdb_writer import MMDBWriter

    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country",
                        languages=["en"],
                        description={"en": "Outpost local fleet test networks; not for real use"})
    for continent, (country, network) in sorted(PROBE_NETWORKS.items()):
        writer.insert_network(netaddr.IPSet([network]),
                              {"continent": {"code": continent}, "country": {"iso_code": country}})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    writer.to_db_file(str(tmp))
    tmp.replace(path)


def read_database(path: Path) -> bytes:
    """The database's bytes, once it is known to be one gdnsd can use: a MaxMind DB of the
    Country or City type whose records carry continent codes. Any problem is one error that
    names the file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise OutpostError(f"{path}: no such country database ([dns] database in the "
                           "inventory); see README.md, \"GeoDNS\", for where to get one") from None
    except OSError as error:
        raise OutpostError(f"{path}: cannot read the country database: {error.strerror}") \
            from None
    reader = _open(path)
    try:
        kind = reader.metadata().database_type
        if "Country" not in kind and "City" not in kind:
            raise OutpostError(f"{path}: a {kind!r} database; gdnsd needs a Country or City one"
                               " (DB-IP IP to Country Lite, GeoLite2-Country)")
        if not _has_continents(reader):
            raise OutpostError(f"{path}: its records have no continent.code, which gdnsd's "
                               "map needs")
    finally:
        reader.close()
    return data


def _open(path: Path):
    import maxminddb

    try:
        return maxminddb.open_database(str(path))
    except (maxminddb.InvalidDatabaseError, ValueError, OSError) as error:
        raise OutpostError(f"{path}: not a MaxMind-format (.mmdb) database: {error}") from None


def _has_continents(reader) -> bool:
    """True when the probe networks, or else the first records, carry a continent code."""
    for _, network in PROBE_NETWORKS.values():
        record = reader.get(network.split("/")[0])
        if isinstance(record, dict) and "code" in record.get("continent", {}):
            return True
    for _, record in zip(range(100), reader):
        if isinstance(record[1], dict) and "code" in record[1].get("continent", {}):
            return True
    return False
