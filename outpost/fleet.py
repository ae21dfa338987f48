"""The local fleet: N hosts on this machine, each a real OpenSSH sshd, for `doit deploy` and tests.

Each host is one process tree started by `unshare` in its own network, mount, PID, UTS and IPC
namespaces:

- network: a veth pair, `eth0` inside with the host's address (a /24 of 198.18.0.0/15), the
  other end in a bridge (default `outpost0`) that holds the /24's first address on this
  machine. Hosts get no default route, so nothing they send can leave the machine.
- mount: an overlay whose lower layer is this machine's `/` and whose upper layer is the
  host's own folder, so a package installed on `au` is not on `ny`. The upper layer lives in
  the state folder and SURVIVES down/up: a host keeps what was installed on it, like a
  rebooted server. Delete `<state>/hosts/<name>` to reset a host. Fresh /proc, /run and /tmp;
  /dev is this machine's. The state folder and the other `private` paths (the project with
  its signing key) are hidden under an empty read-only tmpfs.
- PID: PID 1 is the service manager (real `dinit` if on PATH, else the stand-in in
  outpost/standins). It starts `boot`, which, as on Chimera, waits for every service enabled
  in /etc/dinit.d/boot.d (`dinitctl enable NAME` links it there): sshd is enabled so, and so is
  whatever the pipeline enables, so a restarted host runs them all again. Stopping a host kills
  PID 1, and the kernel then ends everything in its PID namespace; the network and mount
  namespaces (veth, overlay) go with it, so a host that died leaves nothing to clean up but
  its pid file.
- nginx: this machine's (Debian's) nginx, with Debian's /etc/nginx, as a service in
  /usr/lib/dinit.d/nginx like the one Chimera's nginx package ships. Not enabled: a fresh
  Chimera host doesn't run it until it is enabled. Each host listens on its own :80.

The stand-ins run on the hosts' own python3 from a copy of this package in each host's layer
(the project is hidden), so that python3 needs `cryptography` (apt: python3-cryptography).

Host keys are pinned in a known_hosts file when the fleet makes them: at a host's first start,
or after its folder was deleted. A key that changes otherwise (`rotate_host_key`) is NOT
re-pinned, so clients refuse it as they would a real server's; remove the host's line from
known_hosts to accept the new key at the next `up()`.

CLI: python -m outpost.fleet up|down|status [--inventory inventory.toml]
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from outpost import commands, render
from outpost.inventory import Inventory, load as load_inventory
from outpost.errors import OutpostError

# The range the fleet takes its addresses from: reserved for benchmarks (RFC 2544), never routed.
FLEET_RANGE = ipaddress.ip_network("198.18.0.0/15")
SSH_PORT = 22
STANDINS = Path(__file__).resolve().parent / "standins"
# Paths on the hosts.
HOST_KEY = PurePosixPath("/etc/ssh/ssh_host_outpost_ed25519_key")
SSHD_CONFIG = PurePosixPath("/etc/ssh/sshd_config_outpost")
SSHD_LOG = PurePosixPath("/var/log/sshd.log")
# The apk stand-in's list of what a host has without apk (outpost/standins/README.md).
APK_PROVIDED = PurePosixPath("/etc/apk/provided")
# The copy of this package on each host, for the stand-ins.
HOST_PACKAGE = PurePosixPath("/usr/local/lib/outpost/outpost")
# How long a host may take from launch to its sshd greeting.
READY_TIMEOUT = 15.0

# What each host needs from this machine: program -> the Debian package that has it.
REQUIRED_PROGRAMS = {
    "sshd": "openssh-server", "ssh-keygen": "openssh-client", "ip": "iproute2",
    "unshare": "util-linux", "nsenter": "util-linux", "mount": "mount", "doas": "doas",
    "nginx": "nginx",
}
PROGRAM_DIRS = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# A host starts with a clean environment, as after a boot; nothing of the caller's leaks in.
HOST_ENVIRONMENT = {"PATH": PROGRAM_DIRS, "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class FleetHost:
    name: str
    address: str
    arch: str


@dataclass(frozen=True)
class Provision:
    """What the pipeline needs on every host, from the inventory."""
    doas_rules: dict[str, str]  # host -> /etc/doas.conf: commands.doas_rules, the steps' root commands
    folders: tuple[str, ...]  # the repository path and content dirs: the user's, world-readable


# --- Pure builders: file contents, scripts and command lines --------------------------------

def fleet_network(hosts: list[FleetHost]) -> ipaddress.IPv4Network:
    """The /24 all hosts share. Its first address is this machine's, on the bridge."""
    if not hosts:
        raise OutpostError("the fleet has no hosts")
    networks = {}
    for host in hosts:
        try:
            address = ipaddress.IPv4Address(host.address)
        except ValueError:
            raise OutpostError(f"fleet host {host.name}: {host.address!r} is not an IPv4 address")
        if address not in FLEET_RANGE:
            raise OutpostError(f"fleet host {host.name}: {address} is outside {FLEET_RANGE}, "
                               "the only range the local fleet uses")
        network = ipaddress.IPv4Interface(f"{address}/24").network
        if address in (network[0], network[1], network[-1]):
            raise OutpostError(f"fleet host {host.name}: {address} is reserved in {network} "
                               f"(network, bridge or broadcast address); use .2 to .254")
        networks.setdefault(network, []).append(host.name)
    if len(networks) > 1:
        found = "; ".join(f"{net}: {', '.join(names)}" for net, names in networks.items())
        raise OutpostError(f"fleet hosts must share one /24, found {found}")
    seen = {}
    for host in hosts:
        if host.address in seen:
            raise OutpostError(f"fleet hosts {seen[host.address]} and {host.name} "
                               f"both have address {host.address}")
        seen[host.address] = host.name
    return next(iter(networks))


def address_clashes(hosts: list[FleetHost], network: ipaddress.IPv4Network, bridge: str,
                    machine_addresses: list[tuple[str, str]]) -> list[str]:
    """Why the fleet can't use its addresses, given this machine's (device, address/prefix)."""
    problems = []
    for device, cidr in machine_addresses:
        interface = ipaddress.ip_interface(cidr)
        if interface.version != 4:
            continue
        for host in hosts:
            if interface.ip == ipaddress.IPv4Address(host.address):
                problems.append(f"fleet host {host.name}: {host.address} is already on "
                                f"this machine's {device}; remove it (ip addr del {cidr} dev "
                                f"{device}) or give {host.name} another address")
        if device != bridge and interface.network.overlaps(network):
            names = ", ".join(host.name for host in hosts)
            problems.append(f"fleet hosts {names}: network {network} overlaps {cidr} on this "
                            f"machine's {device}; give them another /24 of {FLEET_RANGE}")
    return problems


def veth_name(bridge: str, host: str) -> str:
    """This machine's end of a host's veth pair. Interface names have at most 15 bytes."""
    return f"vo{zlib.crc32(f'{bridge}/{host}'.encode()):08x}"


def host_mac(address: str) -> str:
    """A fixed MAC for a host's eth0 (locally administered, from its address), so that
    this machine's ARP entry stays right when the host restarts."""
    return "02:00:" + ":".join(f"{octet:02x}" for octet in ipaddress.IPv4Address(address).packed)


def sshd_config(address: str, user: str) -> str:
    return f"""\
# The local fleet's sshd (outpost/fleet.py): keys only, one user, every connection logged.
ListenAddress {address}
Port {SSH_PORT}
HostKey {HOST_KEY}
PidFile /run/sshd.pid
LogLevel VERBOSE
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers {user}
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
Subsystem sftp /usr/lib/openssh/sftp-server
"""


def provided_packages(python_version: str) -> str:
    """The Chimera packages the Debian base provides: its python3 for `python`, its sshd for
    `openssh`, the fleet's own boot services for `dinit-chimera`'s, and its nginx and rsync."""
    return f"python={python_version}\nopenssh\ndinit-chimera\nnginx\nrsync\n"


# Where `dinitctl enable NAME` links NAME: the waits-for.d folder of Chimera's boot service.
BOOT_D = PurePosixPath(commands.BOOT_D)


def dinit_services() -> dict[PurePosixPath, str]:
    """The service files of every host: what dinit-chimera's boot graph needs, sshd and nginx."""
    return {
        # dinit-chimera's boot and system (chimera-linux/dinit-chimera services/): boot waits
        # for what the admin enabled, system for what packages enabled. The rest of Chimera's
        # early boot (login.target, network.target, ...) is the fleet's job, so it is left out.
        PurePosixPath("/etc/dinit.d/boot"): (
            f"type = internal\ndepends-on: system\nwaits-for.d: {BOOT_D}\n"),
        PurePosixPath("/etc/dinit.d/system"): (
            "type = internal\nwaits-for.d: /usr/lib/dinit.d/boot.d\n"),
        # dinit-chimera's local.target (packaged services depend on it), an empty milestone here.
        PurePosixPath("/etc/dinit.d/local.target"): "type = internal\n",
        PurePosixPath("/etc/dinit.d/sshd"): (
            "type = process\n"
            f"command = /usr/sbin/sshd -D -e -f {SSHD_CONFIG}\n"
            f"logfile = {SSHD_LOG}\n"),
        # cports main/nginx/files/nginx, with Debian's path to the binary.
        PurePosixPath("/usr/lib/dinit.d/nginx"): (
            "type = process\n"
            'command = /usr/sbin/nginx -g "daemon off;"\n'
            "smooth-recovery = true\n"
            "depends-on: local.target\n"),
    }


# Enabled on every host, as `dinitctl enable` links them: service -> link target.
ENABLED_SERVICES = {"sshd": "../sshd"}


def with_user(passwd: str, group: str, shadow: str, user: str, home: str) -> tuple[str, str, str, int]:
    """passwd, group and shadow with `user` added (unchanged if it exists), and its uid."""
    for line in passwd.splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return passwd, group, shadow, int(fields[2])
    taken = {int(line.split(":")[2]) for text in (passwd, group) for line in text.splitlines()
             if line.count(":") >= 2 and line.split(":")[2].isdigit()}
    uid = next(n for n in range(1000, 60000) if n not in taken)

    def add(text: str, line: str) -> str:
        return text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"

    # "*" (no password) rather than "!" (locked): sshd refuses locked accounts even for keys.
    return (add(passwd, f"{user}:x:{uid}:{uid}:Outpost deploy:{home}:/bin/sh"),
            add(group, f"{user}:x:{uid}:"),
            add(shadow, f"{user}:*:19000:0:99999:7:::"), uid)


def boot_script(host: FleetHost, upper: Path, work: Path, merged: Path,
                private: list[Path], init: list[str]) -> str:
    """PID 1's first act: build the host's root, wait for its veth, then exec the init."""
    q = shlex.quote
    hide = "\n".join(f"if [ -d {q(str(p))} ]; then mount -t tmpfs -o ro,size=4k,mode=0755 "
                     f"outpost-private {q(str(p))}; fi" for p in private)
    return f"""\
set -eu
mount -t overlay outpost-{q(host.name)} -o lowerdir=/,upperdir={q(str(upper))},workdir={q(str(work))} {q(str(merged))}
cd {q(str(merged))}
mount -t proc proc proc
mount --rbind /dev dev
mount -t tmpfs -o mode=0755 tmpfs run
mount -t tmpfs -o mode=1777 tmpfs tmp
pivot_root . .
umount -l .
cd /
{hide}
mkdir -m 0755 /run/sshd
hostname {q(host.name)}
# The fleet writes a line once this host's end of the veth pair is in place.
read -r ready
if [ -e /proc/sys/net/ipv6/conf/all/disable_ipv6 ]; then echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; fi
ip link set lo up
ip addr add {q(host.address)}/24 dev eth0
ip link set eth0 up
exec {shlex.join(init)} </dev/null
"""


def known_hosts_text(current: str, entries: dict[str, str], renew: set[str]) -> str:
    """`current` plus a line for each address (port 22) that has none. Existing pins are kept,
    except those of the addresses in `renew` (hosts the fleet has just made afresh)."""
    lines = [line for line in current.splitlines()
             if line.strip() and line.split()[0] not in renew]
    pinned = {line.split()[0] for line in lines}
    lines += [f"{address} {key}" for address, key in entries.items() if address not in pinned]
    return "".join(line + "\n" for line in lines)


# --- The runner -------------------------------------------------------------------------------

class Fleet:
    def __init__(self, state_dir: Path, hosts: list[FleetHost], known_hosts: Path,
                 identity: Path, provision: Provision, bridge: str = "outpost0",
                 user: str = "deploy", private: tuple[Path, ...] = ()):
        self.state_dir = Path(state_dir).resolve()
        self.hosts = {host.name: host for host in hosts}
        self.known_hosts = Path(known_hosts)
        self.identity = Path(identity)
        self.provision = provision
        self.bridge = bridge
        self.user = user
        self.network = fleet_network(hosts)
        # Hidden on every host: the hosts' own layers, the deploy key and whatever the caller
        # names (the project, with its signing key).
        self.private = sorted({self.state_dir, self.identity.resolve().parent,
                               *(Path(p).resolve() for p in private)})

    # Paths of one host's state.
    def _dir(self, name: str) -> Path:
        return host_state(self.state_dir, name)

    def _upper(self, name: str) -> Path:
        return self._dir(name) / "upper"

    def _on_host(self, name: str, path: PurePosixPath) -> Path:
        """Where a file that the host wrote is, seen from this machine (its upper layer)."""
        return self._upper(name) / path.relative_to("/")

    def ssh_log(self, name: str) -> Path:
        return self._on_host(self._host(name).name, SSHD_LOG)

    def _host(self, name: str) -> FleetHost:
        if name not in self.hosts:
            raise OutpostError(f"no fleet host named {name!r}; known: {', '.join(self.hosts)}")
        return self.hosts[name]

    # --- Status

    def _pid(self, name: str) -> int | None:
        return running_pid(self.state_dir, name)

    def is_up(self, name: str) -> bool:
        return self._pid(self._host(name).name) is not None

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
            self._check_machine(hosts)
            self._ensure_deploy_key()
            self._ensure_bridge()
            for host in hosts:
                if not self._host_key(host.name).exists():
                    self._make_host_key(host.name)
                    made_afresh.add(host.address)
            # All boot at once; then wait for each.
            launched = [(host, self._launch(host)) for host in hosts]
            for host, process in launched:
                self._wait_ready(host, process)
        self._pin_host_keys(made_afresh)

    def _host_key(self, name: str) -> Path:
        return self._on_host(name, HOST_KEY)

    def _make_host_key(self, name: str):
        key = self._host_key(name)
        key.unlink(missing_ok=True)
        Path(f"{key}.pub").unlink(missing_ok=True)
        _upper_dir(self._upper(name), str(HOST_KEY.parent))
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"outpost fleet host {name}",
              "-f", str(key)])

    def _check_machine(self, hosts: list[FleetHost]):
        names = ", ".join(host.name for host in hosts)
        if os.geteuid() != 0:
            raise OutpostError(f"fleet hosts {names}: the local fleet needs root "
                               "(namespaces, mounts, a bridge); run it as root")
        for program, package in REQUIRED_PROGRAMS.items():
            if not shutil.which(program, path=PROGRAM_DIRS):
                raise OutpostError(f"fleet hosts {names}: `{program}` is missing on this "
                                   f"machine; install it: apt-get install {package}")
        if "overlay" not in Path("/proc/filesystems").read_text():
            raise OutpostError(f"fleet hosts {names}: this kernel has no overlay filesystem; "
                               "load it: modprobe overlay")
        # The stand-ins run on the hosts' python3, which must check signatures by itself: the
        # project's venv is hidden from the hosts with the rest of the project.
        probe = subprocess.run(["python3", "-c", "import cryptography, platform; "
                                "print(platform.python_version())"],
                               capture_output=True, text=True, env=HOST_ENVIRONMENT)
        if probe.returncode != 0:
            raise OutpostError(f"fleet hosts {names}: the hosts' python3 can't import "
                               "cryptography (the apk stand-in checks signatures with it); "
                               "install it: apt-get install python3-cryptography")
        self._python_version = probe.stdout.strip()
        if not _init_command():
            raise OutpostError(f"fleet hosts {names}: no service manager: neither `dinit` on "
                               f"PATH nor the stand-in {STANDINS / 'dinit'}")
        machine = [(dev["ifname"], f"{a['local']}/{a['prefixlen']}")
                   for dev in json.loads(_run(["ip", "-j", "addr", "show"]).stdout)
                   for a in dev.get("addr_info", [])]
        problems = address_clashes(hosts, self.network, self.bridge, machine)
        if problems:
            raise OutpostError("; ".join(problems))

    def _ensure_deploy_key(self):
        if not self.identity.exists():
            self.identity.parent.mkdir(parents=True, exist_ok=True)
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "outpost deploy key",
                  "-f", str(self.identity)])

    def _ensure_bridge(self):
        if not Path(f"/sys/class/net/{self.bridge}").exists():
            _ip_batch([f"link add {self.bridge} type bridge"])
            _disable_ipv6(self.bridge)
        # Another fleet may share the bridge with another /24: add ours if it's missing.
        gateway = f"{self.network[1]}/{self.network.prefixlen}"
        if f" {gateway} " not in _run(["ip", "-o", "addr", "show", "dev", self.bridge]).stdout:
            _ip_batch([f"addr add {gateway} dev {self.bridge}"])
        _ip_batch([f"link set {self.bridge} up"])

    def _launch(self, host: FleetHost) -> subprocess.Popen:
        """Start the host's namespaces and PID 1, and plug it into the bridge."""
        state = self._dir(host.name)
        (state / "pid").unlink(missing_ok=True)  # a stale one: its namespaces died with it
        for sub in ("upper", "work", "merged"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        self._provision(host)
        script = boot_script(host, state / "upper", state / "work", state / "merged",
                             self.private, _init_command())
        with open(state / "boot.log", "wb") as log:
            process = subprocess.Popen(
                ["unshare", "--fork", "--pid", "--mount", "--net", "--uts", "--ipc",
                 "--propagation", "private", "--", "sh", "-c", script],
                stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=HOST_ENVIRONMENT)
        try:
            pid = self._init_pid(host, process)
            (state / "pid").write_text(f"{pid} {_start_time(pid)}\n")
            veth = veth_name(self.bridge, host.name)
            if Path(f"/sys/class/net/{veth}").exists():
                _ip_batch([f"link del {veth}"])
            _ip_batch([f"link add {veth} type veth peer name eth0 "
                       f"address {host_mac(host.address)} netns {pid}"])
            _disable_ipv6(veth)
            _ip_batch([f"link set {veth} master {self.bridge}", f"link set {veth} up"])
            process.stdin.write(b"ready\n")
            process.stdin.close()
        except BaseException:
            # A half-started host would pass for a running one: end it.
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            (state / "pid").unlink(missing_ok=True)
            raise
        return process

    def _init_pid(self, host: FleetHost, process: subprocess.Popen) -> int:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise self._boot_failed(host, "its boot script exited")
            pids = children.read_text().split() if children.exists() else []
            if pids:
                return int(pids[0])
            time.sleep(0.005)
        raise self._boot_failed(host, "its PID 1 never appeared")

    def _wait_ready(self, host: FleetHost, process: subprocess.Popen):
        """Wait for the host's sshd greeting."""
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise self._boot_failed(host, "it stopped while booting")
            try:
                with socket.create_connection((host.address, SSH_PORT), timeout=1) as conn:
                    if conn.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.01)
        self.stop_host(host.name)
        raise self._boot_failed(host, f"sshd did not answer on {host.address}:{SSH_PORT}")

    def _boot_failed(self, host: FleetHost, why: str) -> OutpostError:
        logs = []
        for log in (self._dir(host.name) / "boot.log", self.ssh_log(host.name)):
            if log.exists():
                tail = log.read_text(errors="replace").strip().splitlines()[-15:]
                logs.append(f"--- {log}\n" + "\n".join(tail))
        return OutpostError(f"fleet host {host.name} did not start: {why}\n" + "\n".join(logs))

    def _provision(self, host: FleetHost):
        """Write what the host needs into its upper layer (the host is down, so this is safe).
        Every file is rewritten on each start, so a changed fleet setting takes effect."""
        upper = self._upper(host.name)
        home = f"/home/{self.user}"

        def lower_or_upper(path: str) -> str:
            mine = upper / path.lstrip("/")
            return (mine if mine.exists() else Path(path)).read_text()

        passwd, group, shadow, uid = with_user(lower_or_upper("/etc/passwd"),
                                               lower_or_upper("/etc/group"),
                                               lower_or_upper("/etc/shadow"), self.user, home)
        shadow_gid = _gid_of("shadow", group)
        files = {
            "/etc/passwd": (passwd, 0o644, 0, 0),
            "/etc/group": (group, 0o644, 0, 0),
            "/etc/shadow": (shadow, 0o640, 0, shadow_gid),
            "/etc/doas.conf": (self.provision.doas_rules[host.name], 0o400, 0, 0),
            str(SSHD_CONFIG): (sshd_config(host.address, self.user), 0o644, 0, 0),
            "/etc/apk/arch": (host.arch + "\n", 0o644, 0, 0),
            str(APK_PROVIDED): (provided_packages(self._python_version), 0o644, 0, 0),
            f"{home}/.ssh/authorized_keys": (
                Path(f"{self.identity}.pub").read_text(), 0o600, uid, uid),
            **{str(path): (text, 0o644, 0, 0) for path, text in dinit_services().items()},
        }
        dirs = {home: (0o755, uid), f"{home}/.ssh": (0o700, uid), str(BOOT_D): (0o755, 0),
                # Folders the sync step writes into with `doas tee`.
                commands.KEYS_DIR: (0o755, 0), commands.LISTS_DIR: (0o755, 0),
                **{folder: (0o755, uid) for folder in self.provision.folders}}
        for path, (mode, owner) in dirs.items():
            target = _upper_dir(upper, path)
            os.chown(target, owner, owner)
            target.chmod(mode)
        for path, (text, mode, owner, gid) in files.items():
            target = _upper_dir(upper, str(PurePosixPath(path).parent)) / PurePosixPath(path).name
            target.unlink(missing_ok=True)
            target.write_text(text)
            os.chown(target, owner, gid)
            target.chmod(mode)
        # Links only where missing: boot.d also holds what was enabled on the host since.
        for service, link_target in ENABLED_SERVICES.items():
            link = upper / BOOT_D.relative_to("/") / service
            if not os.path.lexists(link):
                link.symlink_to(link_target)
        self._install_standins(upper)

    def _install_standins(self, upper: Path):
        """Link the stand-ins for the tools this machine lacks. They import `outpost`, and the
        project is hidden on the host, so the package is copied into the host's layer."""
        package = _upper_dir(upper, str(HOST_PACKAGE.parent)) / "outpost"
        shutil.rmtree(package, ignore_errors=True)
        shutil.copytree(STANDINS.parent, package, ignore=shutil.ignore_patterns("__pycache__"))
        bin_dir = _upper_dir(upper, "/usr/local/bin")
        for tool in ("apk", "dinitctl"):
            link = bin_dir / tool
            link.unlink(missing_ok=True)
            if not shutil.which(tool, path=PROGRAM_DIRS):
                link.symlink_to(HOST_PACKAGE / "standins" / tool)

    def _pin_host_keys(self, made_afresh: set[str]):
        entries = {}
        for host in self.hosts.values():
            public = Path(f"{self._host_key(host.name)}.pub")
            if public.exists():
                key_type, key = public.read_text().split()[:2]
                entries[host.address] = f"{key_type} {key}"
        current = self.known_hosts.read_text() if self.known_hosts.exists() else ""
        text = known_hosts_text(current, entries, made_afresh)
        if text != current:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            self.known_hosts.write_text(text)

    # --- Stop

    def stop_host(self, name: str) -> bool:
        """Stop a host: kill its PID 1, so the kernel ends everything in its PID namespace.
        True if it was running."""
        pid = self._pid(self._host(name).name)
        stopped = pid is not None
        if stopped:
            os.kill(pid, signal.SIGKILL)
            self._wait_gone(name, pid)
        (self._dir(name) / "pid").unlink(missing_ok=True)
        return stopped

    def _wait_gone(self, name: str, pid: int):
        """Wait until PID 1 is reaped and the kernel has removed the host's veth pair."""
        veth = Path(f"/sys/class/net/{veth_name(self.bridge, name)}")
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if _start_time(pid) is None and not veth.exists():
                return
            time.sleep(0.005)
        raise OutpostError(f"fleet host {name}: still running after SIGKILL to its PID 1 ({pid})")

    def down(self) -> list[str]:
        """Stop every host, then remove the bridge if no other host uses it. Returns those stopped."""
        stopped = [name for name in self.hosts if self.stop_host(name)]
        brif = Path(f"/sys/class/net/{self.bridge}/brif")
        if brif.exists() and not any(brif.iterdir()):
            _ip_batch([f"link del {self.bridge}"])
        return stopped

    def rotate_host_key(self, name: str):
        """Give a host a new host key (not pinned). A running host restarts to serve it."""
        was_up = self.stop_host(name)
        self._make_host_key(name)
        if was_up:
            self.start_host(name)

    # --- For tests and bootstrap

    def run_on(self, name: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """Run argv as root inside a host, through its namespaces (no SSH)."""
        pid = self._pid(self._host(name).name)
        if pid is None:
            raise OutpostError(f"fleet host {name} is down; start it with `doit fleet:up`")
        kwargs.setdefault("env", HOST_ENVIRONMENT)
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(["nsenter", "-t", str(pid), "-a", "--", *argv], **kwargs)


def _init_command() -> list[str] | None:
    """PID 1 of a host: real dinit if this machine has it, else the stand-in."""
    if shutil.which("dinit", path=PROGRAM_DIRS):
        return ["dinit", "--container"]
    if (STANDINS / "dinit").exists():
        return [str(HOST_PACKAGE / "standins" / "dinit"), "--container"]
    return None


def _upper_dir(upper: Path, path: str) -> Path:
    """Make folder `path` in an upper layer. New parents copy the owner and mode of the same
    folder on this machine, since an upper folder's attributes hide the lower one's."""
    upper.mkdir(parents=True, exist_ok=True)
    target = upper
    for part in PurePosixPath(path).relative_to("/").parts:
        target = target / part
        if not target.exists():
            target.mkdir()
            lower = Path("/") / target.relative_to(upper)
            if lower.is_dir():
                info = lower.stat()
                os.chown(target, info.st_uid, info.st_gid)
                target.chmod(stat.S_IMODE(info.st_mode))
    return target


def _gid_of(name: str, group: str) -> int:
    for line in group.splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    return 0


def host_state(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / "hosts" / name


def running_pid(state_dir: Path, name: str) -> int | None:
    """PID 1 of a running fleet host (as this machine sees it), or None. Reads only its pid
    file and /proc, so the pipeline's no-op check that the fleet is up stays cheap."""
    try:
        pid, start = (host_state(state_dir, name) / "pid").read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    # The start time tells a reused pid from ours.
    return int(pid) if _start_time(int(pid)) == start else None


def _start_time(pid: int) -> str | None:
    """A live process's start time (field 22 of /proc/PID/stat); None if gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else fields[19]


def _disable_ipv6(device: str):
    # Without IPv6 the fleet's links say nothing beyond the addresses the inventory gives.
    setting = Path(f"/proc/sys/net/ipv6/conf/{device}/disable_ipv6")
    if setting.exists():
        setting.write_text("1\n")


def _ip_batch(commands: list[str]):
    _run(["ip", "-batch", "-"], input="\n".join(commands) + "\n")


def _run(argv: list[str], input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, input=input, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise OutpostError(f"local fleet: `{shlex.join(argv)}` failed: {detail}")
    return proc


# --- From the inventory, and the CLI ---------------------------------------------------------

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
    return Fleet(
        state_dir=inventory.fleet.state,
        hosts=[FleetHost(h.name, h.address, h.arch) for h in inventory.hosts],
        known_hosts=inventory.ssh.known_hosts,
        identity=inventory.ssh.identity,
        provision=Provision(
            # What the config step would push, so the steps it and bootstrap run are allowed.
            doas_rules={host.name: commands.doas_rules(user, inventory.repository,
                                                       inventory.packages,
                                                       render.host_files(inventory, host))
                        for host in inventory.hosts},
            folders=(inventory.repository.path,
                     *(p.content_dir for p in inventory.packages if p.content_dir))),
        user=user,
        bridge=inventory.fleet.bridge,
        # The project folder holds the signing key: no host may see it.
        private=(inventory.root, inventory.repository.signing_key.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m outpost.fleet",
                                     description="Start, stop or list the local fleet's hosts.")
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--inventory", type=Path,
                        default=Path(os.environ.get("OUTPOST_INVENTORY", "inventory.toml")))
    args = parser.parse_args(argv)
    try:
        fleet = from_inventory(load_inventory(args.inventory))
        if args.command == "up":
            started = fleet.up()
            print(f"started: {', '.join(started) or 'none (all up)'}")
        elif args.command == "down":
            stopped = fleet.down()
            print(f"stopped: {', '.join(stopped) or 'none (all down)'}")
        else:
            for host in fleet.hosts.values():
                print(f"{host.name}\t{host.address}\t{'up' if fleet.is_up(host.name) else 'down'}")
    except OutpostError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
