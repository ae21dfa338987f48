"""The inventory as the rest of Outpost reads it: frozen dataclasses, made by `load`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from outpost.errors import OutpostError


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
    location: str | None = None  # a city or "lat,lon", for `doit latency`


@dataclass(frozen=True)
class Package:
    name: str
    category: str
    service: str | None
    content: Path | None
    content_dir: str | None
    port: int | None
    root: Path  # the inventory's folder, where cports-overlay/ lives
    keep_releases: int = 5  # content releases each host keeps (outpost.commands.content)

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
    # Seconds a host's SSH connection outlives a run for the next one (outpost.keeper); 0:
    # it ends with the run.
    keep_connection: int = 0


@dataclass(frozen=True)
class Fleet:
    state: Path
    bridge: str
    acme_server: str | None = None  # the fleet's ACME server (pebble) runs at this address
    rtt_ms: tuple[tuple[str, int], ...] = ()  # (host, round trip): its distance emulated

    def rtt(self, host: str) -> int:
        """The round trip a fleet host's services answer at, in ms (0: none added)."""
        return dict(self.rtt_ms).get(host, 0)


@dataclass(frozen=True)
class Rollout:
    canary: str | None     # the host that gets a new version first; None: the first host
    batch_size: int | None  # hosts upgraded together after the canary; None: a quarter
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
class Latency:
    """[latency]: who visits and from where it is watched, for `doit latency` and the deploy's
    line (outpost.latency.inputs turns it into the report's input). Checked on load."""
    visitors: tuple[tuple[str, float], ...] | str | None = None  # shares, "logs", None: seed's
    monitors: tuple[str, ...] | None = None    # None: updown.io's nine of the seed's time
    candidates: tuple[str, ...] | None = None  # None: outpost.latency.places.VPS_CANDIDATES
    measured: Path | None = None               # a CSV of measured round trips
    origin: str | None = None                  # where the deploy machine is


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
    rollout: Rollout = Rollout(None, None, 30.0)
    acme: Acme | None = None
    latency: Latency = Latency()

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
