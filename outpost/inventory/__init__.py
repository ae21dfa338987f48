"""Load and validate inventory.toml: the hosts, the packages, the repository, the builder and
the site.

The schema is data (SCHEMA in schema.py, its value checks in checks.py). One validator walks it,
so every table gets the same checks and the same error shapes. A bad inventory raises one
InventoryError whose message names the file, the table and the key, e.g.

    inventory.toml: [[hosts]] #2 (ny): unknown key 'adress'; allowed: address, arch, ...

Relative local paths resolve against the inventory's folder; `~` means the user's home.
The model (model.py) is frozen dataclasses; this module re-exports them with `load`.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from outpost.inventory.checks import (
    BUILDER_KINDS, CHIMERA_ARCHES, CONTINENTS, DNS_PROVIDERS, FLEET_DATABASE)
from outpost.errors import OutpostError
from outpost.inventory.model import (
    Acme, Builder, Dns, DnsHealth, Fleet, Host, Inventory, InventoryError, Latency, Package,
    Repository, Rollout, Site, Ssh)
from outpost.latency import places, visitors
from outpost.inventory.schema import DNS_HEALTH, REQUIRED, SCHEMA, Table

__all__ = [
    "Acme", "Builder", "Dns", "DnsHealth", "Fleet", "Host", "Inventory", "InventoryError",
    "Latency", "Package", "Repository", "Rollout", "Site", "Ssh", "load", "BUILDER_KINDS",
    "CHIMERA_ARCHES", "CONTINENTS", "DNS_PROVIDERS", "FLEET_DATABASE", "SCHEMA",
]

# Keys of [builder] that only cbuild reads.
CBUILD_ONLY_KEYS = ("cports", "args", "config")


def _toml_type(value: Any) -> str:
    """What a TOML value is, in the words of the TOML spec."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _found(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return _toml_type(value)
    return f"{_toml_type(value)} ({value!r})"


def _check_table(data: dict, table: Table, where: str, root: Path) -> dict[str, Any]:
    """Check one table against its schema; return its values with defaults filled in."""
    allowed = {key.name for key in table.keys}
    for name in data:
        if name not in allowed:
            raise InventoryError(f"{where}: unknown key {name!r}; allowed: "
                                 + ", ".join(table.key_names()))
    values = {}
    for key in table.keys:
        if key.name not in data:
            if key.default is REQUIRED:
                raise InventoryError(f"{where}: missing key {key.name!r} ({key.type.name})")
            # A default is written as the TOML value would be (e.g. a relative path).
            values[key.name] = (key.default if key.default is None
                                else key.type.convert(key.default, root))
            continue
        value = data[key.name]
        if not key.type.accepts(value):
            raise InventoryError(f"{where}: key {key.name!r} must be {key.type.name}, "
                                 f"found {_found(value)}")
        problem = key.check(value) if key.check else None
        if problem:
            raise InventoryError(f"{where}: key {key.name!r}: {problem}")
        values[key.name] = key.type.convert(value, root)
    return values


def _check_document(document: dict, label: str, root: Path) -> dict[str, Any]:
    """Check every table; return {table: values} ({table: [values, ...]} for arrays)."""
    for name in document:
        if name not in SCHEMA:
            raise InventoryError(f"{label}: unknown table {name!r}; allowed: "
                                 + ", ".join(sorted(SCHEMA)))
    checked: dict[str, Any] = {}
    for name, table in SCHEMA.items():
        header = f"[[{name}]]" if table.array else f"[{name}]"
        data = document.get(name)
        if data is None:
            if table.required:
                raise InventoryError(f"{label}: missing table {header}")
            checked[name] = None
        elif not table.array:
            if not isinstance(data, dict):
                raise InventoryError(f"{label}: {name!r} must be a table ({header}), "
                                     f"found {_found(data)}")
            checked[name] = _check_table(data, table, f"{label}: {header}", root)
        else:
            if not isinstance(data, list) or not data:
                found = _found(data) if data != [] else "an empty array"
                raise InventoryError(f"{label}: {name!r} must be one or more {header} tables, "
                                     f"found {found}")
            entries = []
            for number, entry in enumerate(data, start=1):
                where = f"{label}: {header} #{number}"
                if not isinstance(entry, dict):
                    raise InventoryError(f"{where}: must be a table, found {_found(entry)}")
                if isinstance(entry.get("name"), str):
                    where += f" ({entry['name']})"
                entries.append((where, _check_table(entry, table, where, root)))
            _check_unique_names(entries, name)
            checked[name] = [values for _, values in entries]
    return checked


def _check_unique_names(entries: list[tuple[str, dict]], table: str) -> None:
    first_seen: dict[str, int] = {}
    for number, (where, values) in enumerate(entries, start=1):
        name = values["name"]
        if name in first_seen:
            kind = "host" if table == "hosts" else "package"
            raise InventoryError(f"{where}: duplicate {kind} name {name!r} "
                                 f"(also [[{table}]] #{first_seen[name]})")
        first_seen[name] = number


def _check_builder(builder: dict, label: str) -> None:
    where = f"{label}: [builder]"
    if builder["kind"] == "cbuild" and builder["cports"] is None:
        raise InventoryError(f"{where}: missing key 'cports' (the path of a cports git clone),"
                             " needed when kind = \"cbuild\"")
    if builder["kind"] == "local":
        # Silently ignoring these would build with the local builder when cbuild was meant.
        for name in CBUILD_ONLY_KEYS:
            if builder[name] not in (None, ()):
                raise InventoryError(f"{where}: key {name!r} is only used when kind = \"cbuild\""
                                     f" (kind is \"local\")")


def _check_package_content(packages: list[dict], label: str) -> None:
    for number, package in enumerate(packages, start=1):
        if (package["content"] is None) != (package["content_dir"] is None):
            where = f"{label}: [[packages]] #{number} ({package['name']})"
            raise InventoryError(f"{where}: keys 'content' and 'content_dir' go together"
                                 " (what to push and where hosts keep it); give both or neither")


def _nested(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer + "/")


def _check_remote_folders(repository: dict, packages: list[dict], label: str) -> None:
    """Each push owns its folder on the host (and deletes what it didn't send): no content_dir
    may be, hold or lie inside the repository path or another package's content_dir."""
    owners = [("[repository] path", repository["path"])]
    for number, package in enumerate(packages, start=1):
        path = package["content_dir"]
        if path is None:
            continue
        where = f"{label}: [[packages]] #{number} ({package['name']}): key 'content_dir'"
        for owner, other in owners:
            if _nested(path, other) or _nested(other, path):
                relation = ("is" if path == other else
                            "is inside" if _nested(path, other) else "holds")
                raise InventoryError(f"{where}: {path!r} {relation} {owner} {other!r}; each "
                                     "needs a folder of its own")
        owners.append((f"[[packages]] #{number} ({package['name']}) content_dir", path))


def _check_dns(dns: dict, hosts: list[dict], fleet, label: str, root: Path) -> Dns:
    where = f"{label}: [dns]"
    health = _check_table(dns["health"], DNS_HEALTH, f"{label}: [dns.health]", root)
    if health["timeout"] is None:
        health["timeout"] = max(1, health["interval"] // 2)
    if health["timeout"] >= health["interval"]:
        raise InventoryError(f"{label}: [dns.health]: key 'timeout' ({health['timeout']}) must "
                             f"be less than 'interval' ({health['interval']})")
    names = [host["name"] for host in hosts]
    if dns["default"] not in names:
        raise InventoryError(f"{where}: key 'default': no host named {dns['default']!r}; "
                             f"hosts: {', '.join(names)}")
    for region, region_hosts in dns["map"]:
        for name in region_hosts:
            if name not in names:
                raise InventoryError(f"{label}: [dns.map]: {region}: no host named {name!r}; "
                                     f"hosts: {', '.join(names)}")
    database = None
    if dns["database"] == FLEET_DATABASE:
        if fleet is None and dns["provider"] == "gdnsd":
            raise InventoryError(f"{where}: key 'database': \"{FLEET_DATABASE}\" is the local "
                                 "fleet's test database; real hosts need a real one (the path "
                                 "of a DB-IP or GeoLite2 country .mmdb)")
    else:
        database = root / Path(dns["database"]).expanduser()
    return Dns(provider=dns["provider"], default=dns["default"], map=dns["map"],
               database=database, ttl=dns["ttl"], health=DnsHealth(**health), api=dns["api"])


def _check_acme(acme, cert_host, hosts, ssh, label: str):
    if (acme is None) != (cert_host is None):
        raise InventoryError(f"{label}: [acme] and [cert_host] go together (the ACME server, "
                             "and the machine that runs lego); give both or neither")
    if acme is None:
        return None
    for host in hosts:
        if host["name"] == cert_host["name"] or host["address"] == cert_host["address"]:
            raise InventoryError(f"{label}: [cert_host]: {cert_host['name']} "
                                 f"({cert_host['address']}) is also a web host ([[hosts]] "
                                 f"{host['name']}); the cert host must be another machine")
    host = Host(**{**cert_host, "groups": (),
                   "user": cert_host["user"] if cert_host["user"] is not None else ssh["user"],
                   "port": cert_host["port"] if cert_host["port"] is not None else ssh["port"]})
    return Acme(**acme, cert_host=host)


def _check_latency(latency: dict | None, dns: dict | None, label: str) -> Latency:
    """[latency]'s values, each checked as `doit latency` will read it."""
    if latency is None:
        return Latency()
    where = f"{label}: [latency]: key"
    try:
        if isinstance(latency["visitors"], str):
            if latency["visitors"] != visitors.LOGS:
                raise OutpostError(f"{where} 'visitors': must be \"{visitors.LOGS}\" or a table "
                                   f"of shares by country, found {latency['visitors']!r}")
            if dns is None or dns["provider"] != "gdnsd":
                raise OutpostError(f"{where} 'visitors': \"{visitors.LOGS}\" counts with the "
                                   "country database the hosts have for gdnsd ([dns] provider "
                                   "= \"gdnsd\"); without it, give shares by country")
        elif latency["visitors"] is not None:
            visitors.from_table(dict(latency["visitors"]), f"{where} 'visitors'")
        for text in latency["monitors"] or ():
            places.continent_of(places.place(text, f"{where} 'monitors':"),
                                f"{where} 'monitors':")
        for text in latency["candidates"] or ():
            places.place(text, f"{where} 'candidates':")
    except InventoryError:
        raise
    except OutpostError as error:
        raise InventoryError(str(error)) from None
    return Latency(**latency)


def _check_fleet_rtt(fleet: dict, hosts: list[dict], cert_host: dict | None, label: str):
    names = [host["name"] for host in hosts] + ([cert_host["name"]] if cert_host else [])
    for name, _ in fleet["rtt_ms"]:
        if name not in names:
            raise InventoryError(f"{label}: [fleet]: key 'rtt_ms': no host named {name!r}; "
                                 f"hosts: {', '.join(names)}")


def load(path: str | Path) -> Inventory:
    """Read and validate an inventory. Errors name the file as `path` gives it."""
    label = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InventoryError(f"{label}: cannot read the inventory: {error.strerror}") from None
    except UnicodeDecodeError:
        raise InventoryError(f"{label}: not valid TOML: the file is not UTF-8") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib's message ends with "(at line L, column C)".
        raise InventoryError(f"{label}: not valid TOML: {error}") from None

    inventory_path = Path(path).resolve()
    root = inventory_path.parent
    checked = _check_document(document, label, root)
    # An absent [builder] is an empty one: every key has a default (the local builder).
    builder = checked["builder"] or _check_table({}, SCHEMA["builder"], f"{label}: [builder]", root)
    _check_builder(builder, label)
    _check_package_content(checked["packages"], label)
    _check_remote_folders(checked["repository"], checked["packages"], label)

    rollout = checked["rollout"] or _check_table({}, SCHEMA["rollout"], f"{label}: [rollout]",
                                                 root)
    if rollout["canary"] is not None and rollout["canary"] not in {
            h["name"] for h in checked["hosts"]}:
        raise InventoryError(f"{label}: [rollout]: key 'canary': no host named "
                             f"{rollout['canary']!r}; hosts: "
                             + ", ".join(h["name"] for h in checked["hosts"]))
    if checked["fleet"]:
        _check_fleet_rtt(checked["fleet"], checked["hosts"], checked["cert_host"], label)
    ssh = checked["ssh"]
    return Inventory(
        path=inventory_path,
        site=Site(**checked["site"]),
        repository=Repository(**checked["repository"]),
        builder=Builder(**builder),
        ssh=Ssh(known_hosts=ssh["known_hosts"], identity=ssh["identity"],
                connect_timeout=ssh["connect_timeout"], command_timeout=ssh["command_timeout"],
                bootstrap_identity=ssh["bootstrap_identity"],
                keep_connection=ssh["keep_connection"]),
        fleet=Fleet(**checked["fleet"]) if checked["fleet"] else None,
        packages=tuple(Package(**values, root=root) for values in checked["packages"]),
        hosts=tuple(
            Host(**{**values,
                    "user": values["user"] if values["user"] is not None else ssh["user"],
                    "port": values["port"] if values["port"] is not None else ssh["port"]})
            for values in checked["hosts"]),
        dns=(_check_dns(checked["dns"], checked["hosts"], checked["fleet"], label, root)
             if checked["dns"] else None),
        rollout=Rollout(**rollout),
        acme=_check_acme(checked["acme"], checked["cert_host"], checked["hosts"], ssh, label),
        latency=_check_latency(checked["latency"], checked["dns"], label),
    )
