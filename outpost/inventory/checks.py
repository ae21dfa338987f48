"""The value checks of the inventory's schema: each takes a well-typed value and returns what is
wrong with it, or None. Only the schema (schema.py) uses them."""
from __future__ import annotations

import ipaddress
import re

from outpost.errors import OutpostError
from outpost.latency import places

# The architectures Chimera Linux publishes repositories for (cports etc/build_profiles/).
CHIMERA_ARCHES = ("aarch64", "armv7", "loongarch64", "ppc", "ppc64", "ppc64le", "riscv64", "x86_64")
BUILDER_KINDS = ("cbuild", "local")


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


# A fleet host's round trip: no more than a path half way round the world and back, twice.
MAX_RTT_MS = 2000


def _rtt_ms(value: dict) -> str | None:
    for name, ms in value.items():
        if not 0 <= ms <= MAX_RTT_MS:
            return f"{name} = {ms}: a round trip is from 0 to {MAX_RTT_MS} ms"
    return None


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


def _location(value: str) -> str | None:
    """A city outpost.latency knows, or coordinates "lat,lon"."""
    try:
        places.place(value, "")
    except OutpostError as error:
        return str(error)
    return None
