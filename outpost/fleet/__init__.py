"""The local fleet: N hosts on this machine, each a real OpenSSH sshd, for `doit deploy` and tests.

Each host is one process tree in its own namespaces. One module per concern:
- `host`       `FleetHost` (name, address, arch): what the others pass around
- `local`      what the fleet needs from this machine (root, programs, overlay, python3), and
               which real Chimera tools (apk, the dinit/dinitctl pair) it has on PATH
- `network`    addresses, the bridge and each host's veth pair
- `machine`    starting and stopping one host: namespaces, overlay root, PID 1, pid file
- `provision`  what goes into a host's upper layer before it boots: user, sshd, services,
               the stand-ins or links to the real apk/dinitctl, and what the real apk needs
- `keys`       the deploy key, host keys and their pins in known_hosts
- `delay`      a host's round-trip time (FleetHost.rtt_ms): a relay in front of its services
This module's `Fleet` composes them for a set of hosts; `from_inventory` makes it.

CLI: python -m outpost.fleet up|down|status [--inventory inventory.toml]
"""
from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from outpost import tls
from outpost.commands import acme
from outpost.commands import latency as latency_commands
from outpost.errors import OutpostError
from outpost.fleet import certhost, keys, local, machine, network, pebble, provision
from outpost.fleet.keys import known_hosts_text
from outpost.fleet.local import (HOST_ENVIRONMENT, PROGRAM_DIRS, REQUIRED_PROGRAMS, ChimeraTools,
                                 find_chimera_tools)
from outpost.fleet.host import FleetHost
from outpost.fleet.machine import READY_TIMEOUT, host_state, running_pid
from outpost.fleet.network import FLEET_RANGE, address_clashes, fleet_network, veth_name
from outpost.fleet.provision import (HOST_PACKAGE, SSH_PORT, SSHD_LOG, STANDINS, BasePackage,
                                      Provision, packaged_files, provision_host, with_user)
from outpost.inventory import Inventory

__all__ = [
    "Fleet", "FleetHost", "Provision", "from_inventory", "machines_up",
    "leftovers", "running_pid",
    "host_state", "fleet_network", "address_clashes", "veth_name", "with_user", "known_hosts_text",
    "FLEET_RANGE", "SSH_PORT", "READY_TIMEOUT", "STANDINS", "REQUIRED_PROGRAMS", "PROGRAM_DIRS",
    "HOST_ENVIRONMENT", "ChimeraTools", "find_chimera_tools",
]


class Fleet:
    def __init__(self, state_dir: Path, hosts: list[FleetHost], known_hosts: Path,
                 identity: Path, provision: Provision, bridge: str = "outpost0",
                 user: str = "deploy", private: tuple[Path, ...] = (),
                 key_pins: tuple[tuple[str, str, Path], ...] = ()):
        self.state_dir = Path(state_dir).resolve()
        self.hosts = {host.name: host for host in hosts}
        self.known_hosts = Path(known_hosts)
        self.identity = Path(identity)
        self.provision = provision
        self.bridge = bridge
        self.user = user
        self.network = fleet_network(hosts)
        # (host, public key path on it, pin file here): user keys the fleet makes and pins.
        self.key_pins = key_pins
        # Hidden on every host: the hosts' own layers, the deploy key and whatever the caller
        # names (the project, with its signing key).
        self.private = sorted({self.state_dir, self.identity.resolve().parent,
                               *(Path(p).resolve() for p in private)})

    def ssh_log(self, name: str) -> Path:
        return machine.on_host(self.state_dir, self._host(name).name, SSHD_LOG)

    def _host(self, name: str) -> FleetHost:
        if name not in self.hosts:
            raise OutpostError(f"no fleet host named {name!r}; known: {', '.join(self.hosts)}")
        return self.hosts[name]

    def is_up(self, name: str) -> bool:
        return running_pid(self.state_dir, self._host(name).name) is not None

    # --- Start

    def up(self) -> list[str]:
        """Start the hosts that are down; running hosts are left alone. Returns those started."""
        down = [host for host in self.hosts.values() if not self.is_up(host.name)]
        self._start(down)
        return [host.name for host in down]

    def start_host(self, name: str) -> bool:
        """Start one host if it is down. True if it was started."""
        host = self._host(name)
        if self.is_up(name):
            return False
        self._start([host])
        return True

    def _start(self, hosts: list[FleetHost]):
        made_afresh = set()
        if hosts:
            python_version, tools = self._check_machine(hosts)
            keys.ensure_key(self.identity)
            network.guard_route()
            network.ensure_bridge(self.bridge, self.network)
            for host in hosts:
                if not keys.host_key(self.state_dir, host.name).exists():
                    keys.make_host_key(self.state_dir, host.name)
                    made_afresh.add(host.address)
            # All boot at once; then wait for each.
            launched = [(host, self._launch(host, python_version, tools)) for host in hosts]
            for host, process in launched:
                machine.wait_ready(self.state_dir, host, self.bridge, process)
        keys.pin_host_keys(self.known_hosts, self.state_dir, list(self.hosts.values()),
                           made_afresh)
        keys.pin_user_keys(self.state_dir, self.key_pins,
                           {host.name for host in hosts if host.address in made_afresh})

    def _check_machine(self, hosts: list[FleetHost]) -> tuple[str, ChimeraTools]:
        """Fail unless this machine can run `hosts`; returns the hosts' python3 version and
        the real Chimera tools found on PATH (the hosts run stand-ins for the others)."""
        names = ", ".join(host.name for host in hosts)
        python_version = local.check_machine(names)
        if any(host.rtt_ms for host in hosts):
            local.check_programs(names, {"nft": "nftables"}, "for the hosts' round-trip time")
        tools = local.find_chimera_tools()
        if not machine.init_command(tools):
            raise OutpostError(f"fleet hosts {names}: no service manager: neither `dinit` on "
                               f"PATH nor the stand-in {STANDINS / 'dinit'}")
        network.check_addresses(hosts, self.network, self.bridge)
        return python_version, tools

    def _launch(self, host: FleetHost, python_version: str, tools: ChimeraTools):
        role = provision.role_of(self.provision, host.name)
        provision_host(host, machine.upper_layer(self.state_dir, host.name), self.user,
                       self.identity, self.provision, python_version, tools, role)
        provided = provision.host_provided(python_version, self.provision, role)
        from outpost.fleet import delay  # its relay loads asyncio: not on the no-op's path
        setup = [*provision.apk_database_lines(provided, real_apk=tools.apk is not None),
                 *map(shlex.join, provision.boot_commands(self.provision.base_packages))]
        distance = delay.boot_lines(host.rtt_ms, host.address,
                                    str(HOST_PACKAGE / "fleet" / "delay.py"))
        return machine.launch(self.state_dir, host, self.bridge, self.private, tools, setup,
                              distance)

    # --- Stop

    def stop_host(self, name: str) -> bool:
        """Stop a host: kill its PID 1, so the kernel ends everything in its PID namespace.
        True if it was running."""
        return machine.stop(self.state_dir, self._host(name).name, self.bridge)

    def down(self) -> list[str]:
        """Stop every host, then remove the bridge if no other host uses it. Returns those
        stopped. All are killed at once, so one slow to die holds up no other; those still
        running at their deadline are named in one OutpostError, after the rest have stopped
        (the next down finishes the job)."""
        killed = {name: machine.kill(self.state_dir, name) for name in self.hosts}
        stopped, failed = [], []
        for name, pid in killed.items():
            try:
                machine.wait_stopped(self.state_dir, name, self.bridge, pid)
            except OutpostError as error:
                failed.append(str(error))
                continue
            if pid is not None:
                stopped.append(name)
        network.remove_bridge_if_unused(self.bridge)
        if failed:
            raise OutpostError(f"fleet: stopped {', '.join(stopped) or 'none'}, but not every "
                               f"host: {'; '.join(failed)}. Run `doit fleet:down` again to "
                               "finish")
        return stopped

    def rotate_host_key(self, name: str):
        """Give a host a new host key (not pinned). A running host restarts to serve it."""
        was_up = self.stop_host(name)
        keys.make_host_key(self.state_dir, name)
        if was_up:
            self.start_host(name)

    # --- For tests and bootstrap

    def run_on(self, name: str, argv: list[str], **kwargs):
        """Run argv as root inside a host, through its namespaces (no SSH)."""
        return machine.run_on(self.state_dir, self._host(name).name, argv, **kwargs)


def _base_packages(inventory: Inventory) -> tuple:
    """gdnsd when the hosts are the site's nameservers: Debian's, with the service, user and
    folders of the project's own cports template (cports-overlay/user/gdnsd); and
    libmaxminddb, whose mmdblookup (Debian's mmdb-bin) counts visitors in the same database."""
    if inventory.dns is None or inventory.dns.provider != "gdnsd":
        return ()
    program = shutil.which("gdnsd", path=PROGRAM_DIRS) or "/usr/sbin/gdnsd"
    return (packaged_files("gdnsd", inventory.root / "cports-overlay/user/gdnsd/files", program),
            BasePackage(latency_commands.LOOKUP_PACKAGE, ()))


# The name of the local fleet's ACME server machine (pebble), when [fleet] acme_server is set.
ACME_SERVER = "acme"


def machine_names(inventory: Inventory) -> list[str]:
    """Every machine of the fleet: the web hosts, the cert host and the ACME server."""
    names = [host.name for host in inventory.hosts]
    if inventory.acme is not None:
        names.append(inventory.acme.cert_host.name)
    if inventory.fleet is not None and inventory.fleet.acme_server is not None:
        names.append(ACME_SERVER)
    return names


def machines_up(inventory: Inventory) -> list[str]:
    """The fleet's machines that are running. Reads only their pid files and /proc."""
    state = inventory.fleet.state.resolve()
    return [name for name in machine_names(inventory) if running_pid(state, name) is not None]


def leftovers(inventory: Inventory) -> list[str]:
    """What `fleet:down` has yet to remove from this machine: running machines, their veths,
    and the bridge unless another fleet's host is plugged into it. Empty once the fleet is
    all gone. Reads only /proc and /sys, so an uptodate check may call it."""
    names, bridge = machine_names(inventory), inventory.fleet.bridge
    left = machines_up(inventory)
    ours = {veth_name(bridge, name): name for name in names}
    left += [f"veth {veth} ({name})" for veth, name in ours.items()
             if Path(f"/sys/class/net/{veth}").exists()]
    ports = Path(f"/sys/class/net/{bridge}/brif")
    if ports.exists() and {port.name for port in ports.iterdir()} <= set(ours):
        left.append(f"bridge {bridge}")
    return left


def _root_key(identity: Path | None) -> str | None:
    """root's public key for the hosts: the bootstrap's key, made here if missing (the
    fleet's root login; a real host's comes from its provider)."""
    if identity is None:
        return None
    keys.ensure_key(identity, "outpost fleet root key (bootstrap)")
    return Path(f"{identity}.pub").read_text()


def from_inventory(inventory: Inventory) -> Fleet:
    """The fleet an inventory describes (it must have a [fleet] table)."""
    if inventory.fleet is None:
        raise OutpostError(f"{inventory.path}: no [fleet] table: its hosts are not a local fleet")
    for host in inventory.hosts:
        if host.port != SSH_PORT:
            raise OutpostError(f"{inventory.path}: [[hosts]] {host.name}: fleet hosts listen on "
                               f"port {SSH_PORT}, not {host.port}")
    users = {host.user for host in inventory.hosts}
    if len(users) > 1:
        raise OutpostError(f"{inventory.path}: fleet hosts must share one ssh user, found "
                           + ", ".join(sorted(users)))
    user = users.pop() if users else "deploy"
    rtt = inventory.fleet.rtt
    hosts = [FleetHost(h.name, h.address, h.arch, rtt(h.name)) for h in inventory.hosts]
    roles, key_pins = {}, ()
    if inventory.acme is not None:
        cert_host = inventory.acme.cert_host
        hosts.append(FleetHost(cert_host.name, cert_host.address, cert_host.arch,
                               rtt(cert_host.name)))
        roles = {host.name: certhost.web_host_role() for host in inventory.hosts}
        roles[cert_host.name] = certhost.cert_host_role()
        key_pins = ((cert_host.name, f"{acme.SSH_KEY}.pub", acme.lego_key_pin(inventory)),)
    if inventory.fleet.acme_server is not None:
        address = inventory.fleet.acme_server
        hosts.append(FleetHost(ACME_SERVER, address, inventory.hosts[0].arch))
        # Made when the machine starts (the local CA signs its HTTPS certificate).
        roles[ACME_SERVER] = lambda: pebble.role(
            address, inventory.hosts[0].address,
            *tls.address_certificate(inventory.site.ca, address))
    return Fleet(
        state_dir=inventory.fleet.state,
        hosts=hosts,
        known_hosts=inventory.ssh.known_hosts,
        identity=inventory.ssh.identity,
        provision=Provision(
            root_key=_root_key(inventory.ssh.bootstrap_identity),
            base_packages=_base_packages(inventory),
            roles=roles),
        user=user,
        bridge=inventory.fleet.bridge,
        # The project folder holds the signing key: no host may see it.
        private=(inventory.root, inventory.repository.signing_key.parent),
        key_pins=key_pins)
