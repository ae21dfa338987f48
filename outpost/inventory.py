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
from pathlib import Path, PurePosixPath
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


@dataclass(frozen=True)
class Fleet:
    state: Path
    bridge: str


@dataclass(frozen=True)
class Site:
    name: str          # the site's DNS name: nginx server_name, the certificate's name, SNI
    ca: Path           # the local CA's folder (its key never leaves this machine)
    certificates: Path  # where the site's certificate and key are made before going to hosts


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

    @property
    def root(self) -> Path:
        return self.path.parent

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


def _remote_path(value: str) -> str | None:
    # A path on the hosts: relative would depend on the ssh user's working directory.
    return None if PurePosixPath(value).is_absolute() else f"{value!r} must be an absolute path"


HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def _host_name(value: str) -> str | None:
    if HOST_NAME.fullmatch(value):
        return None
    return (f"{value!r} is not a usable host name; use lowercase letters, digits and '-'"
            " (it names tasks such as sync:<host>)")


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
    )),
    "builder": Table((
        Key("kind", STRING, "local", _builder_kind),
        Key("cports", LOCAL_PATH, None),
        Key("args", STRINGS, ()),
        Key("config", STRING, None, _not_empty),  # cbuild -c FILE, relative to the cports clone
    ), required=False),
    "ssh": Table((
        Key("user", STRING, check=_not_empty),
        Key("port", INTEGER, 22, _port),
        Key("known_hosts", LOCAL_PATH),
        Key("identity", LOCAL_PATH),
        Key("connect_timeout", NUMBER, 10.0, _positive),
        Key("command_timeout", NUMBER, 300.0, _positive),
    )),
    "fleet": Table((
        Key("state", LOCAL_PATH),
        Key("bridge", STRING, "outpost0", _bridge),
    ), required=False),
    "packages": Table((
        Key("name", STRING, check=_package_name),
        Key("category", STRING, "user", _package_name),
        Key("service", STRING, None, _not_empty),
        Key("content", LOCAL_PATH, None),
        Key("content_dir", STRING, None, _remote_path),
        Key("port", INTEGER, None, _port),
        # Content releases each host keeps: the current one and those a rollback can reach.
        Key("keep_releases", INTEGER, 5, _positive),
    ), array=True),
    "hosts": Table((
        Key("name", STRING, check=_host_name),
        Key("address", STRING, check=_address),
        Key("user", STRING, None, _not_empty),  # default: [ssh] user
        Key("port", INTEGER, None, _port),  # default: [ssh] port
        Key("arch", STRING, check=_arch),
        Key("region", STRING, check=_not_empty),
        Key("groups", STRINGS, ()),
    ), array=True),
}


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

    ssh = checked["ssh"]
    return Inventory(
        path=inventory_path,
        site=Site(**checked["site"]),
        repository=Repository(**checked["repository"]),
        builder=Builder(**builder),
        ssh=Ssh(known_hosts=ssh["known_hosts"], identity=ssh["identity"],
                connect_timeout=ssh["connect_timeout"], command_timeout=ssh["command_timeout"]),
        fleet=Fleet(**checked["fleet"]) if checked["fleet"] else None,
        packages=tuple(Package(**values, root=root) for values in checked["packages"]),
        hosts=tuple(
            Host(**{**values,
                    "user": values["user"] if values["user"] is not None else ssh["user"],
                    "port": values["port"] if values["port"] is not None else ssh["port"]})
            for values in checked["hosts"]),
    )
