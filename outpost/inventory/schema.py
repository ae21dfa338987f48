"""The schema of inventory.toml, as data: each table's keys, their types, defaults and checks.
One validator (`load`, in __init__.py) walks it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from outpost.inventory.checks import (
    FLEET_DATABASE, _address, _arch, _at_least, _at_least_one, _bridge, _builder_kind,
    _dns_map, _dns_provider, _email, _health_interval, _host_name, _location, _not_empty,
    _package_name, _port, _positive, _region, _remote_path, _renew_days, _rtt_ms,
    _service_name, _site_name, _url, _user_name)


@dataclass(frozen=True)
class Type:
    """A value type: what the messages call it, which TOML values it accepts, and how a
    checked value becomes the Python value (`root` is the inventory's folder)."""
    name: str
    accepts: Callable[[Any], bool]
    convert: Callable[[Any, Path], Any] = lambda value, root: value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # bool is an int in Python


STRING = Type("a string", lambda v: isinstance(v, str))
INTEGER = Type("an integer", _is_int)
NUMBER = Type("a number", lambda v: _is_int(v) or isinstance(v, float), lambda v, root: float(v))
HOST_LISTS = Type("a table of arrays of host names",
                  lambda v: isinstance(v, dict) and all(
                      isinstance(hosts, list) and all(isinstance(h, str) for h in hosts)
                      for hosts in v.values()),
                  lambda v, root: tuple((region, tuple(hosts)) for region, hosts in v.items()))
STRINGS = Type("an array of strings",
               lambda v: isinstance(v, list) and all(isinstance(item, str) for item in v),
               lambda v, root: tuple(v))
SHARES_OR_LOGS = Type("a table of shares by country, or \"logs\"",
                      lambda v: isinstance(v, str) or (isinstance(v, dict) and all(
                          _is_int(n) or isinstance(n, float) for n in v.values())),
                      lambda v, root: v if isinstance(v, str) else tuple(v.items()))
MILLISECONDS_BY_HOST = Type("a table of integers (milliseconds by host name)",
                           lambda v: isinstance(v, dict) and all(map(_is_int, v.values())),
                           lambda v, root: tuple(v.items()))
LOCAL_PATH = Type("a string (a path on this machine)", lambda v: isinstance(v, str),
                  lambda v, root: root / Path(v).expanduser())

REQUIRED = object()  # the `default` of a key that must be given


@dataclass(frozen=True)
class Key:
    name: str
    type: Type
    default: Any = REQUIRED
    # Returns what is wrong with a well-typed value, or None when it is fine.
    check: Callable[[Any], str | None] | None = None


@dataclass(frozen=True)
class Table:
    keys: tuple[Key, ...]
    array: bool = False  # [[name]] (one or more) instead of [name]
    required: bool = True

    def key_names(self) -> list[str]:
        return sorted(key.name for key in self.keys)


SCHEMA: dict[str, Table] = {
    "site": Table((
        Key("name", STRING, check=_site_name),
        # Under keys/ (gitignored, never cleaned): losing the CA means every host's
        # certificate and every client's trust must be made again.
        Key("ca", LOCAL_PATH, "keys/ca"),
        Key("certificates", LOCAL_PATH, "build/tls"),
    )),
    "repository": Table((
        Key("signing_key", LOCAL_PATH),
        Key("path", STRING, check=_remote_path),
        # Going back one version needs the one before the current.
        Key("keep", INTEGER, 3, _at_least(2)),
    )),
    "builder": Table((
        Key("kind", STRING, "local", _builder_kind),
        Key("cports", LOCAL_PATH, None),
        Key("args", STRINGS, ()),
        Key("config", STRING, None, _not_empty),  # cbuild -c FILE, relative to the cports clone
    ), required=False),
    "ssh": Table((
        Key("user", STRING, check=_user_name),
        Key("port", INTEGER, 22, _port),
        Key("known_hosts", LOCAL_PATH),
        Key("identity", LOCAL_PATH),
        Key("bootstrap_identity", LOCAL_PATH, None),
        Key("connect_timeout", NUMBER, 10.0, _positive),
        Key("command_timeout", NUMBER, 300.0, _positive),
        # Seconds a host's connection is kept for the next run (outpost/keeper.py); 0: none.
        Key("keep_connection", INTEGER, 0, _at_least(0)),
    )),
    "fleet": Table((
        Key("state", LOCAL_PATH),
        Key("bridge", STRING, "outpost0", _bridge),
        # The address of the fleet's ACME server (pebble), when [acme] uses one.
        Key("acme_server", STRING, None, _address),
        # Distance for the local fleet: each named host's services answer this many ms of round
        # trip later (outpost/fleet/delay.py); hosts not named, none.
        Key("rtt_ms", MILLISECONDS_BY_HOST, {}, _rtt_ms),
    ), required=False),
    "acme": Table((
        Key("directory", STRING, check=_url),
        Key("email", STRING, check=_email),
        Key("renew_days", INTEGER, 30, _renew_days),
        Key("server_ca", LOCAL_PATH, None),
        Key("roots", STRING, None, _url),
    ), required=False),
    # The machine that runs lego: it is not a web host (a small box at home, in the seed).
    "cert_host": Table((
        Key("name", STRING, check=_host_name),
        Key("address", STRING, check=_address),
        Key("user", STRING, None, _user_name),
        Key("port", INTEGER, None, _port),
        Key("arch", STRING, check=_arch),
        Key("region", STRING, "home", _region),
    ), required=False),
    "packages": Table((
        Key("name", STRING, check=_package_name),
        Key("category", STRING, "user", _package_name),
        Key("service", STRING, None, _service_name),
        Key("content", LOCAL_PATH, None),
        Key("content_dir", STRING, None, _remote_path),
        Key("port", INTEGER, None, _port),
        # Content releases each host keeps: the current one and those a rollback can reach.
        Key("keep_releases", INTEGER, 5, _positive),
    ), array=True),
    "dns": Table((
        Key("provider", STRING, "gdnsd", _dns_provider),
        Key("default", STRING),
        Key("map", HOST_LISTS, {}, _dns_map),
        # "fleet", or the path of a MaxMind-format country database (DB-IP, GeoLite2).
        Key("database", STRING, FLEET_DATABASE, _not_empty),
        Key("ttl", INTEGER, 30, _at_least_one),
        Key("health", Type("a table ([dns.health])", lambda v: isinstance(v, dict)), {}),
        Key("api", STRING, "https://api.gcore.com", _url),
    ), required=False),
    "rollout": Table((
        Key("canary", STRING, None, _host_name),
        Key("batch_size", INTEGER, None, _at_least(1)),  # default: a quarter of the hosts
        Key("health_timeout", NUMBER, 30.0, _positive),
    ), required=False),
    "hosts": Table((
        Key("name", STRING, check=_host_name),
        Key("address", STRING, check=_address),
        Key("user", STRING, None, _user_name),  # default: [ssh] user
        Key("port", INTEGER, None, _port),  # default: [ssh] port
        Key("arch", STRING, check=_arch),
        Key("region", STRING, check=_region),
        Key("groups", STRINGS, ()),
        # Where the host is, for `doit latency`: a city or coordinates "lat,lon".
        Key("location", STRING, None, _location),
    ), array=True),
    # `doit latency`: who visits, from where it is watched, where a next host could go.
    "latency": Table((
        # Shares by country ({ AU = 40, US = 25, ... }, adding up to 1 or 100), or "logs":
        # counted in the hosts' nginx logs. Default: the seed's GoatCounter top ten.
        Key("visitors", SHARES_OR_LOGS, None),
        Key("monitors", STRINGS, None),      # monitoring locations; default: updown.io's nine
        Key("candidates", STRINGS, None),    # where a next host could go; default: VPS cities
        Key("measured", LOCAL_PATH, None),   # a CSV of measured round trips: a,b,rtt_ms
        Key("origin", STRING, None, _location),  # where the deploy machine is (the check's)
    ), required=False),
}


# [dns.health]: gdnsd's own defaults (man gdnsd.config, service_types), made for the internet:
# a host is out after 10 failed checks that no 10 good ones in a row cleared, back after 20
# good ones, a check every 10 s with 5 s for the answer (half the interval, as gdnsd has it).
# A lost SYN (a 1 s retransmit), or a few, never takes a host out; a dead host is out within
# about 100 s and back about 200 s after it returns. The local fleet sets its fast ones.
DNS_HEALTH = Table((
    # Whole seconds: gdnsd takes no fractions.
    Key("interval", INTEGER, 10, _health_interval),
    Key("timeout", INTEGER, None, _at_least_one),  # default: interval / 2, as gdnsd's
    Key("up_thresh", INTEGER, 20, _at_least_one),
    Key("ok_thresh", INTEGER, 10, _at_least_one),
    Key("down_thresh", INTEGER, 10, _at_least_one),
))
