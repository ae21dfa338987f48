"""Load and validate inventory.toml: the hosts, the packages, the repository, the builder and
the site.

The schema is data (SCHEMA below). One validator walks it, so every table gets the same checks
and the same error shapes. A bad inventory raises one InventoryError whose message names the
file, the table and the key, e.g.

    inventory.toml: [[hosts]] #2 (ny): unknown key 'adress'; allowed: address, arch, ...

Relative local paths resolve against the inventory's folder; `~` means the user's home.
"""
from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from outpost.errors import OutpostError

# The architectures Chimera Linux publishes repositories for (cports etc/build_profiles/).
CHIMERA_ARCHES = ("aarch64", "armv7", "loongarch64", "ppc", "ppc64", "ppc64le", "riscv64", "x86_64")
BUILDER_KINDS = ("cbuild", "local")
# Keys of [builder] that only cbuild reads.
CBUILD_ONLY_KEYS = ("cports", "args", "config")


class InventoryError(OutpostError):
    """inventory.toml is missing, unreadable or doesn't match the schema."""


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    user: str
    port: int
    arch: str
    region: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class Package:
    name: str
    category: str
    service: str | None
    content: Path | None
    content_dir: str | None
    port: int | None
    root: Path  # the inventory's folder, where cports-overlay/ lives
    keep_releases: int = 5  # content releases each host keeps (outpost.releases)

    @property
    def template_dir(self) -> Path:
        return self.root / "cports-overlay" / self.category / self.name


@dataclass(frozen=True)
class Repository:
    signing_key: Path
    path: str
    keep: int = 3  # versions of each package kept, so hosts can go back without a rebuild

    @property
    def public_key(self) -> Path:
        return self.signing_key.with_name(self.key_name)

    @property
    def key_name(self) -> str:
        # apk v2 finds the key by this file name in /etc/apk/keys.
        return self.signing_key.name + ".pub"


@dataclass(frozen=True)
class Builder:
    kind: str
    cports: Path | None
    args: tuple[str, ...]
    config: str | None


@dataclass(frozen=True)
class Ssh:
    known_hosts: Path
    identity: Path
    connect_timeout: float
    command_timeout: float
    # root's key for the bootstrap, the only step that logs in as root; None: the bootstrap
    # script is written for the operator to run (README.md, "Real servers").
    bootstrap_identity: Path | None = None


@dataclass(frozen=True)
class Fleet:
    state: Path
    bridge: str
    acme_server: str | None = None  # the fleet's ACME server (pebble) runs at this address


@dataclass(frozen=True)
class Rollout:
    canary: str | None     # the host that gets a new version first; None: the first host
    batch_size: int        # hosts upgraded together after the canary passed
    health_timeout: float  # seconds a host has to serve the new version before it goes back


@dataclass(frozen=True)
class Site:
    name: str          # the site's DNS name: nginx server_name, the certificate's name, SNI
    ca: Path           # the local CA's folder (its key never leaves this machine)
    certificates: Path  # where the site's certificate and key are made before going to hosts


@dataclass(frozen=True)
class DnsHealth:
    """gdnsd's http_status health check of each host (man gdnsd-plugin-http_status)."""
    interval: int       # seconds between checks (gdnsd refuses less than 2)
    timeout: int        # seconds per check; less than interval
    up_thresh: int      # good checks in a row before a down host is up again
    ok_thresh: int      # good checks in a row that clear a failing host's count of bad ones
    down_thresh: int    # bad checks in a row before an up host is down


@dataclass(frozen=True)
class Dns:
    """[dns]: which hosts answer for the site's name, per continent or country."""
    provider: str                           # "gdnsd" (every host a nameserver) or "gcore"
    default: str                            # the host for everywhere the map doesn't name
    map: tuple[tuple[str, tuple[str, ...]], ...]  # ("NA", ("ny", "fr")), ("EU/DE", ("fr",))
    database: Path | None                   # a MaxMind-format country database; None: the
                                            # local fleet's generated test database
    ttl: int                                # the answer's TTL: how long resolvers keep it
    health: DnsHealth
    api: str                                # Gcore's API, for provider = "gcore"


@dataclass(frozen=True)
class Acme:
    """[acme] and [cert_host]: certificates from an ACME server, made by lego on a cert host
    (not a web host) and pushed from there to every web host."""
    directory: str          # the ACME directory URL (Let's Encrypt's, or the fleet's pebble)
    email: str              # the ACME account's contact
    renew_days: int         # renew this many days before expiry
    server_ca: Path | None  # a CA certificate the ACME server's own HTTPS uses (pebble's),
                            # when it is not publicly trusted; installed on the cert host
    roots: str | None       # where the check gets the ACME server's root (pebble's
                            # management port); None: this machine's trust store
    cert_host: Host


@dataclass(frozen=True)
class Inventory:
    path: Path
    site: Site
    repository: Repository
    builder: Builder
    ssh: Ssh
    fleet: Fleet | None
    packages: tuple[Package, ...]
    hosts: tuple[Host, ...]
    dns: Dns | None = None
    rollout: Rollout = Rollout(None, 1, 30.0)
    acme: Acme | None = None

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def canary(self) -> Host:
        return self.host(self.rollout.canary) if self.rollout.canary else self.hosts[0]

    @property
    def arches(self) -> tuple[str, ...]:
        return tuple(sorted({host.arch for host in self.hosts}))

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(host.name for host in self.hosts)
        raise InventoryError(f"{self.path}: no host named {name!r}; known hosts: {known}")


# --- The schema --------------------------------------------------------------------------------

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


def _not_empty(value: str) -> str | None:
    return "must not be empty" if value == "" else None


def _port(value: int) -> str | None:
    return None if 1 <= value <= 65535 else f"port {value} is out of range (1-65535)"


def _positive(value: float) -> str | None:
    return None if value > 0 else f"must be more than 0, found {value}"


def _at_least(least: int):
    def check(value: int) -> str | None:
        return None if value >= least else f"must be {least} or more, found {value}"
    return check


# Remote paths are written unquoted into doas.conf rules, apk's repository list (where a
# space splits the path from its components), dinit env-files and the hosts' scripts: a
# narrow set of characters keeps each of those meaning exactly this one path.
REMOTE_PATH_CHARS = re.compile(r"[A-Za-z0-9._+/-]*")
# Folders a remote path may not be: chown'd to the deploy user, then filled with rsync
# --delete, each would break the host or hand it over. Data belongs in a folder of its own,
# under /srv or /var/lib.
SYSTEM_FOLDERS = frozenset((
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/media",
    "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr",
    "/var", "/var/cache", "/var/db", "/var/empty", "/var/lib", "/var/local", "/var/lock",
    "/var/log", "/var/mail", "/var/opt", "/var/run", "/var/spool", "/var/tmp", "/var/www",
))
# Trees that never hold a deploy's data: the system's own files, kernel views, runtime and
# world-writable scratch space, root's home. Nothing under them either.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/root",
                "/run", "/sbin", "/sys", "/tmp", "/usr", "/var/lock", "/var/log", "/var/run",
                "/var/tmp")


def _control_characters(value: str) -> str | None:
    # One line of text: a newline in a value would add a line to a host's env-file or script.
    if value.isprintable():
        return None
    return f"{value!r} contains a control character (a newline, tab or the like)"


def _remote_path(value: str) -> str | None:
    problem = _control_characters(value)
    if problem:
        return problem
    if not REMOTE_PATH_CHARS.fullmatch(value):
        return (f"{value!r} may contain only letters, digits and / . _ + - (it is written "
                "unquoted into the hosts' doas.conf, scripts and env-files)")
    # Relative would depend on the ssh user's working directory.
    if not value.startswith("/"):
        return f"{value!r} must be an absolute path"
    if value != "/" and (value.endswith("/") or "//" in value
                         or any(part in (".", "..") for part in value.split("/"))):
        return (f"{value!r} is not normalised: write it without '.' or '..' segments, '//' "
                "or a trailing '/'")
    if value in SYSTEM_FOLDERS:
        return (f"{value!r} is a system folder; give the data a folder of its own, "
                "e.g. under /srv or /var/lib")
    for tree in SYSTEM_TREES:
        if value.startswith(tree + "/"):
            return f"{value!r} is inside {tree}, which never holds a deploy's data"
    return None


HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def _host_name(value: str) -> str | None:
    if HOST_NAME.fullmatch(value):
        return None
    return (f"{value!r} is not a usable host name; use lowercase letters, digits and '-'"
            " (it names tasks such as sync:<host>)")


# User and service names go into doas rules, scripts and dinit commands as single words.
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # POSIX-portable, as useradd takes them
SERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*")  # dinit's names, with @ instances


def _user_name(value: str) -> str | None:
    if USER_NAME.fullmatch(value):
        return None
    return (f"{value!r} is not a usable user name; use up to 32 lowercase letters, digits, "
            "'_' and '-', starting with a letter or '_'")


def _service_name(value: str) -> str | None:
    if SERVICE_NAME.fullmatch(value):
        return None
    return (f"{value!r} is not a usable service name; use letters, digits and . _ @ -, "
            "starting with a letter or digit")


def _region(value: str) -> str | None:
    # Free text (shown in the X-Served-By header, quoted for nginx, and in the report), but
    # one line of it.
    return _not_empty(value) or _control_characters(value)


# Package names and categories become folders: cports-overlay/<category>/<name>.
PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9._+-]*")


def _package_name(value: str) -> str | None:
    if PACKAGE_NAME.fullmatch(value):
        return None
    return f"{value!r} is not a usable name; use lowercase letters, digits and . _ + -"


DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    # A name whose last label is a number was meant as an IP address (e.g. 192.0.2.300).
    if (len(value) <= 253 and all(DNS_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit()):
        return None
    return f"{value!r} is neither an IP address nor a DNS name"


def _site_name(value: str) -> str | None:
    # Lowercase only: the same string is nginx's server_name, the certificate's DNS name and
    # the Host a health check sends, and a case difference between them is a needless puzzle.
    labels = value.split(".")
    if (len(value) <= 253 and all(DNS_LABEL.fullmatch(label) for label in labels)
            and value == value.lower() and not labels[-1].isdigit()):
        return None
    return (f"{value!r} is not a DNS name; use lowercase letters, digits, '-' and '.',"
            " e.g. \"linkedlist.org\"")


def _arch(value: str) -> str | None:
    if value in CHIMERA_ARCHES:
        return None
    return (f"{value!r} is not an arch any builder can target; Chimera Linux arches: "
            + " ".join(CHIMERA_ARCHES))


def _bridge(value: str) -> str | None:
    # Linux interface names are at most 15 bytes; the fleet adds a host's name to it for
    # each veth, so keep it short.
    if re.fullmatch(r"[a-z][a-z0-9-]{0,9}", value):
        return None
    return f"{value!r} is not a usable bridge name; use up to 10 lowercase letters, digits and -"


# MaxMind's continent codes: the top level of a GeoIP2 database and of gdnsd's geoip map.
CONTINENTS = ("AF", "AN", "AS", "EU", "NA", "OC", "SA")
DNS_PROVIDERS = ("gdnsd", "gcore")
# [dns] database = "fleet": the local fleet's generated test database (never for real use).
FLEET_DATABASE = "fleet"


def _dns_region(key: str) -> str | None:
    """A [dns.map] key: a continent code ("NA") or continent/country ("EU/DE")."""
    continent, _, country = key.partition("/")
    if continent not in CONTINENTS:
        return (f"{key!r} is not a region; use a continent code ({', '.join(CONTINENTS)}) or "
                "continent/country with an ISO 3166 code, e.g. \"EU/DE\"")
    if "/" in key and not re.fullmatch(r"[A-Z]{2}", country):
        return f"{key!r}: {country!r} is not an ISO 3166 country code (two capital letters)"
    return None


def _dns_map(value: dict) -> str | None:
    for region, hosts in value.items():
        problem = _dns_region(region)
        if problem:
            return problem
        if not hosts:
            return f"{region!r} names no host"
        if len(set(hosts)) != len(hosts):
            return f"{region!r} names a host twice: {hosts}"
    return None


def _dns_provider(value: str) -> str | None:
    if value in DNS_PROVIDERS:
        return None
    return f"unknown DNS provider {value!r}; use one of: " + ", ".join(DNS_PROVIDERS)


def _health_interval(value: int) -> str | None:
    return None if value >= 2 else f"gdnsd checks at most every 2 seconds, found {value}"


def _at_least_one(value: int) -> str | None:
    return None if value >= 1 else f"must be 1 or more, found {value}"


# The ACME directory and email reach the cert host's lego script as plain words: neither
# may hold what a shell would act on ($, ;, quotes, spaces, globs) or a second line.
def _url(value: str) -> str | None:
    if re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]+)?(/[A-Za-z0-9._~/%+=,:@-]*)?", value):
        return None
    return (f"{value!r} is not a URL made of letters, digits and . _ ~ / % + = , : @ - "
            "(http:// or https://)")


def _email(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", value):
        return None
    return f"{value!r} is not an email address (letters, digits and . _ % + - around one @)"


def _renew_days(value: int) -> str | None:
    return None if 1 <= value <= 60 else f"must be from 1 to 60 days, found {value}"


def _builder_kind(value: str) -> str | None:
    if value in BUILDER_KINDS:
        return None
    return f"unknown builder kind {value!r}; use one of: " + ", ".join(BUILDER_KINDS)


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
    )),
    "fleet": Table((
        Key("state", LOCAL_PATH),
        Key("bridge", STRING, "outpost0", _bridge),
        # The address of the fleet's ACME server (pebble), when [acme] uses one.
        Key("acme_server", STRING, None, _address),
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
        Key("batch_size", INTEGER, 1, _at_least(1)),
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
    ), array=True),
}


# [dns.health]: defaults that fail over in seconds (gdnsd's own fail over in about 100 s).
DNS_HEALTH = Table((
    # Whole seconds: gdnsd takes no fractions.
    Key("interval", INTEGER, 2, _health_interval),
    Key("timeout", INTEGER, 1, _at_least_one),
    Key("up_thresh", INTEGER, 1, _at_least_one),
    Key("ok_thresh", INTEGER, 1, _at_least_one),
    Key("down_thresh", INTEGER, 1, _at_least_one),
))


# --- The validator -----------------------------------------------------------------------------

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
    ssh = checked["ssh"]
    return Inventory(
        path=inventory_path,
        site=Site(**checked["site"]),
        repository=Repository(**checked["repository"]),
        builder=Builder(**builder),
        ssh=Ssh(known_hosts=ssh["known_hosts"], identity=ssh["identity"],
                connect_timeout=ssh["connect_timeout"], command_timeout=ssh["command_timeout"],
                bootstrap_identity=ssh["bootstrap_identity"]),
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
    )
