"""The local fleet: real sshd hosts in their own network, mount and PID namespaces.

The fleet tests start a two-host fleet once per module on a private bridge and /24 (so they
can run beside the default fleet) and talk to it with the real `ssh` client, as the pipeline
does. They need root and openssh; without them they fail, never skip.
"""
import errno
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from fleet_helpers import accepted_connections, require_fleet_machine, ssh
from helpers import wait_for
from outpost.errors import OutpostError
from outpost.fleet import (Fleet, FleetHost, Provision, address_clashes, find_chimera_tools,
                           fleet_network, from_inventory, known_hosts_text,
                           veth_name, with_user)
from outpost.inventory import load as load_inventory

REPO = Path(__file__).resolve().parents[1]
# One /24 and one bridge per test session, so parallel sessions don't meet.
SUBNET = f"198.19.{1 + os.getpid() % 250}"
BRIDGE = f"otest{os.getpid()}"[:15]
REPOSITORY = SimpleNamespace(path="/var/lib/outpost/repo", key_name="outpost.rsa.pub")
PACKAGES = [SimpleNamespace(name="linkedlist", service="linkedlist",
                            content_dir="/srv/linkedlist")]
# No root login: these fleets are never bootstrapped (tests/test_privilege.py's are).
PROVISION = Provision(root_key=None)


def make_fleet(tmp: Path, hosts: list[tuple[str, str]], bridge: str = BRIDGE) -> Fleet:
    return Fleet(state_dir=tmp / "state", hosts=[FleetHost(n, a, "x86_64") for n, a in hosts],
                 known_hosts=tmp / "state" / "known_hosts", identity=tmp / "keys" / "deploy_key",
                 provision=PROVISION, bridge=bridge, private=(tmp / "keys", REPO))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    require_fleet_machine()
    fleet = make_fleet(tmp_path_factory.mktemp("fleet"),
                       [("alpha", f"{SUBNET}.11"), ("beta", f"{SUBNET}.12")])
    try:
        assert fleet.up() == ["alpha", "beta"]
        yield fleet
    finally:
        fleet.down()


def namespace(pid: int, kind: str) -> int | None:
    """The inode of a process's namespace of `kind`; None if gone or not ours to see."""
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except (FileNotFoundError, PermissionError):
        return None


def pids_in(kind: str, inode: int) -> set[int]:
    """Every process on this machine in that namespace."""
    return {int(entry.name) for entry in Path("/proc").iterdir()
            if entry.name.isdigit() and namespace(int(entry.name), kind) == inode}


def host_pid1(fleet, name) -> int:
    return int((fleet.state_dir / "hosts" / name / "pid").read_text().split()[0])


# --- On a running fleet ----------------------------------------------------------------------

def test_ssh_with_the_deploy_key_and_pinned_host_keys_reaches_each_host(fleet):
    for name in ("alpha", "beta"):
        result = ssh(fleet, name, "hostname; id -un")
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [name, "deploy"]


def test_known_hosts_holds_each_hosts_own_key(fleet):
    pinned = dict(line.split(" ", 1) for line in fleet.known_hosts.read_text().splitlines())
    keys = {}
    for name, host in fleet.hosts.items():
        served = fleet.run_on(name, ["cat", "/etc/ssh/ssh_host_outpost_ed25519_key.pub"])
        keys[host.address] = " ".join(served.stdout.split()[:2])
    assert pinned == keys
    assert len(set(keys.values())) == 2


def test_a_file_written_on_one_host_is_on_no_other_host_nor_on_this_machine(fleet):
    path = f"/home/deploy/only-on-alpha-{uuid.uuid4().hex}"
    assert ssh(fleet, "alpha", f"echo hello > {path}").returncode == 0
    assert ssh(fleet, "alpha", f"cat {path}").stdout == "hello\n"
    assert ssh(fleet, "beta", f"test -e {path}").returncode == 1
    assert not Path(path).exists()


def test_hosts_do_not_see_private_paths_the_deploy_key_or_the_fleet_state(fleet):
    # The project (REPO, outside /tmp) is private here, as from_inventory makes it.
    assert (REPO / "inventory.toml").exists() and fleet.identity.exists()
    result = fleet.run_on("alpha", ["sh", "-c", f"ls -A {REPO} | wc -l; test -e {fleet.identity}; "
                                                f"echo $?; ls -A {fleet.state_dir} | wc -l"])
    assert result.stdout.split() == ["0", "1", "0"]


def test_hosts_have_no_route_off_their_own_network(fleet):
    routes = fleet.run_on("alpha", ["ip", "-4", "route"]).stdout.splitlines()
    assert routes == [f"{SUBNET}.0/24 dev eth0 proto kernel scope link src {SUBNET}.11 "]


def test_pid_1_is_the_service_manager_and_it_runs_sshd(fleet):
    result = fleet.run_on("alpha", ["ps", "-o", "pid=,args=", "-e"])
    lines = [line.split(None, 1) for line in result.stdout.splitlines()]
    assert lines[0][0] == "1" and "dinit" in lines[0][1]
    assert any("sshd_config_outpost" in args for pid, args in lines)
    # sshd runs because it is enabled, as `dinitctl enable sshd` does it on Chimera.
    assert fleet.run_on("alpha", ["readlink", "/etc/dinit.d/boot.d/sshd"]).stdout == "../sshd\n"


def service_pid(fleet, name, service):
    status = fleet.run_on(name, ["dinitctl", "status", service]).stdout
    fields = dict(line.strip().partition(": ")[::2] for line in status.splitlines())
    return fields.get("State") == "STARTED" and int(fields.get("Process ID", 0))


def test_an_enabled_service_runs_again_after_its_host_restarts(fleet):
    service = f"keepalive-{uuid.uuid4().hex[:8]}"
    fleet.run_on("alpha", ["sh", "-c", f"printf 'type = process\\ncommand = /bin/sleep 86400\\n' "
                                       f"> /etc/dinit.d/{service}"], check=True)
    enabled = fleet.run_on("alpha", ["dinitctl", "enable", service])
    assert (enabled.returncode, enabled.stdout) == (
        0, f"Service '{service}' has been enabled.\nService '{service}' started.\n")
    before = service_pid(fleet, "alpha", service)
    assert before

    fleet.stop_host("alpha")
    fleet.start_host("alpha")
    after = wait_for(lambda: service_pid(fleet, "alpha", service), f"{service} after the restart")
    assert after != before
    fleet.run_on("alpha", ["dinitctl", "disable", service], check=True)


def http_get(address, port, path="/"):
    """(status, body) of a plain HTTP request from this machine; None if nothing answers."""
    connection = http.client.HTTPConnection(address, port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    except OSError:
        return None
    finally:
        connection.close()


def test_nginx_is_a_service_that_serves_on_the_hosts_port_80_and_reloads_on_hup(fleet):
    address = fleet.hosts["beta"].address
    # Not enabled (as on a fresh Chimera host), and nothing of this machine's leaks in.
    assert fleet.run_on("beta", ["test", "-e", "/etc/dinit.d/boot.d/nginx"]).returncode == 1
    assert fleet.run_on("beta", ["test", "-e", "/run/nginx.pid"]).returncode == 1
    assert http_get(address, 80) is None
    extra = "/etc/nginx/conf.d/outpost-fleet-test.conf"
    try:
        started = fleet.run_on("beta", ["dinitctl", "start", "nginx"])
        assert (started.returncode, started.stdout) == (0, "Service 'nginx' started.\n")
        status, body = wait_for(lambda: http_get(address, 80), "nginx on :80")
        assert status == 200 and "Welcome to nginx" in body
        master = service_pid(fleet, "beta", "nginx")

        fleet.run_on("beta", ["sh", "-c", f"echo 'server {{ listen 8080; "
                                          f"return 200 \"reloaded\\n\"; }}' > {extra}"], check=True)
        signalled = fleet.run_on("beta", ["dinitctl", "signal", "HUP", "nginx"])
        assert (signalled.returncode, signalled.stderr) == (0, "")
        assert wait_for(lambda: http_get(address, 8080), "the reloaded config") == (
            200, "reloaded\n")
        assert service_pid(fleet, "beta", "nginx") == master
    finally:
        fleet.run_on("beta", ["rm", "-f", extra])
        fleet.run_on("beta", ["dinitctl", "stop", "nginx"])


def test_sshd_log_counts_each_connection(fleet):
    before = accepted_connections(fleet, "beta")
    for _ in range(3):
        assert ssh(fleet, "beta", "true").returncode == 0
    assert accepted_connections(fleet, "beta") == before + 3


def test_root_login_is_refused_even_with_an_authorised_key(fleet):
    fleet.run_on("alpha", ["sh", "-c", "mkdir -p /root/.ssh && "
                          "cp /home/deploy/.ssh/authorized_keys /root/.ssh/"], check=True)
    before = accepted_connections(fleet, "alpha")
    result = ssh(fleet, "alpha", "true", user="root")
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    assert accepted_connections(fleet, "alpha") == before
    assert "User root from" in fleet.ssh_log("alpha").read_text()


def test_the_fleet_gives_the_deploy_user_no_root_command(fleet):
    # doas.conf is the bootstrap's to write, as root (outpost.commands.bootstrap): none before it.
    assert fleet.run_on("alpha", ["test", "-e", "/etc/doas.conf"]).returncode != 0
    refused = ssh(fleet, "alpha", "doas -n true")
    assert refused.returncode != 0


def test_dinit_finds_local_target_and_apk_knows_the_base_system(fleet):
    # linkedlist's service depends on local.target and its package on python.
    started = fleet.run_on("alpha", ["dinitctl", "start", "local.target"])
    assert started.returncode == 0, started.stderr
    python = fleet.run_on("alpha", ["python3", "-c", "import platform; print(platform.python_version())"])
    base = [f"python={python.stdout.strip()}", "openssh", "dinit-chimera", "nginx", "rsync",
            "curl", "openssl"]
    if find_chimera_tools().apk:
        # Real apk: an empty package for each (apk add --virtual), in its database.
        installed = fleet.run_on("alpha", ["apk", "info", "-e", "-v", "python", "openssh",
                                           "dinit-chimera", "nginx", "rsync", "curl", "openssl"])
        assert installed.returncode == 0, installed.stderr
        assert installed.stdout.split()[0] == f"python-{python.stdout.strip()}"
        assert len(installed.stdout.split()) == len(base)
    else:
        # The stand-in: its list of what the host has without apk.
        assert fleet.run_on("alpha", ["cat", "/etc/apk/provided"]).stdout.split() == base
    assert fleet.run_on("alpha", ["test", "-f", "/lib/apk/db/installed"]).returncode == 0


def test_a_host_runs_the_tools_this_machine_has_else_the_stand_ins(fleet):
    tools = find_chimera_tools()
    for tool, real in (("apk", tools.apk), ("dinitctl", tools.dinitctl)):
        link = fleet.run_on("alpha", ["readlink", f"/usr/local/bin/{tool}"]).stdout.strip()
        assert link == (real or f"/usr/local/lib/outpost/outpost/standins/{tool}")
    init = Path(f"/proc/{host_pid1(fleet, 'alpha')}/cmdline").read_bytes().split(b"\0")
    assert init[-4:-1] == [b"--container", b"--log-file", b"/var/log/dinit.log"]
    assert (init[0].decode() == tools.dinit if tools.dinit
            else init[1].decode().endswith("/standins/dinit"))


def test_the_apk_stand_in_runs_on_the_hosts_own_python(fleet):
    # The project (and its venv) is hidden from hosts: apk must work without it.
    result = ssh(fleet, "beta", "apk info -v")
    assert (result.returncode, result.stderr) == (0, "")


def test_the_host_knows_its_arch(fleet):
    assert fleet.run_on("beta", ["cat", "/etc/apk/arch"]).stdout == "x86_64\n"


def test_up_leaves_running_hosts_alone(fleet):
    pid = host_pid1(fleet, "alpha")
    assert fleet.up() == []
    assert host_pid1(fleet, "alpha") == pid


def cmdline(pid) -> bytes | None:
    """A process's command line, or None if it ended since it was listed (ssh's own
    short-lived processes on the host do)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None


def test_stop_host_ends_everything_on_it_and_start_brings_back_its_files(fleet):
    marker = f"/home/deploy/kept-{uuid.uuid4().hex}"
    seconds = random.randint(10_000, 99_999)  # tells our sleep from any other
    started = ssh(fleet, "beta", f"touch {marker}; nohup sleep {seconds} >/dev/null 2>&1 </dev/null &")
    assert started.returncode == 0, started.stderr

    def sleep_started():
        # ssh returns once the shell forked; the child becomes `sleep` when nohup execs it.
        on_host = pids_in("pid", namespace(host_pid1(fleet, "beta"), "pid"))
        sleeps = [pid for pid in on_host if cmdline(pid) == f"sleep\0{seconds}\0".encode()]
        return (on_host, sleeps) if sleeps else None

    on_host, sleeps = wait_for(sleep_started, f"`sleep {seconds}` on beta")
    assert len(sleeps) == 1

    assert fleet.stop_host("beta") is True
    assert not fleet.is_up("beta")
    assert not any(Path(f"/proc/{pid}").exists() for pid in on_host)  # sshd and the sleep too
    assert ssh(fleet, "alpha", "true").returncode == 0

    assert fleet.start_host("beta") is True
    assert ssh(fleet, "beta", f"test -e {marker}").returncode == 0


def test_up_restarts_a_host_whose_pid_1_died(fleet):
    pid1 = host_pid1(fleet, "alpha")
    os.kill(pid1, 9)
    # The kill takes effect asynchronously.
    wait_for(lambda: namespace(pid1, "pid") is None, "alpha's PID 1 to end")
    assert fleet.up() == ["alpha"]
    assert ssh(fleet, "alpha", "true").returncode == 0


def test_a_host_made_afresh_gets_a_new_key_and_pin(fleet):
    address = fleet.hosts["beta"].address
    old_pin = [line for line in fleet.known_hosts.read_text().splitlines()
               if line.startswith(f"{address} ")]
    fleet.stop_host("beta")
    shutil.rmtree(fleet.state_dir / "hosts" / "beta")
    assert fleet.up() == ["beta"]
    new_pin = [line for line in fleet.known_hosts.read_text().splitlines()
               if line.startswith(f"{address} ")]
    assert len(new_pin) == 1 and new_pin != old_pin
    assert ssh(fleet, "beta", "true").returncode == 0


def test_a_changed_host_key_is_refused_until_its_pin_is_removed(fleet):
    fleet.rotate_host_key("beta")
    refused = ssh(fleet, "beta", "true")
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr
    assert fleet.up() == []  # up() never re-pins a changed key by itself
    assert ssh(fleet, "beta", "true").returncode == 255

    address = fleet.hosts["beta"].address
    lines = fleet.known_hosts.read_text().splitlines()
    fleet.known_hosts.write_text("".join(f"{line}\n" for line in lines
                                         if not line.startswith(f"{address} ")))
    fleet.up()
    assert ssh(fleet, "beta", "true").returncode == 0


# --- Start and stop a fleet of its own --------------------------------------------------------

def test_down_leaves_no_process_namespace_link_or_mount(tmp_path):
    require_fleet_machine()
    bridge = f"odown{os.getpid()}"[:15]
    subnet = f"198.19.{1 + (os.getpid() + 1) % 250}"
    fleet = make_fleet(tmp_path, [("gamma", f"{subnet}.21")], bridge=bridge)
    try:
        fleet.up()
        pid1 = host_pid1(fleet, "gamma")
        namespaces = {kind: namespace(pid1, kind) for kind in ("net", "mnt", "pid")}
        veth = Path(f"/sys/class/net/{veth_name(bridge, 'gamma')}")
        assert veth.exists() and Path(f"/sys/class/net/{bridge}").exists()
    finally:
        assert fleet.down() == ["gamma"]
    assert not veth.exists()
    assert not Path(f"/sys/class/net/{bridge}").exists()
    for kind, inode in namespaces.items():
        assert pids_in(kind, inode) == set(), f"processes left in the host's {kind} namespace"
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
    assert not fleet.is_up("gamma")


# The cgroup v1 freezer: a frozen process ignores even SIGKILL until it is thawed, as one
# stuck in the kernel (or starved on a loaded machine) does.
FREEZER = Path("/sys/fs/cgroup/freezer")


def freeze(pid: int, tmp_path: Path) -> Path:
    if not (FREEZER / "cgroup.procs").exists():
        pytest.fail(f"this test needs the cgroup v1 freezer at {FREEZER} (mount -t cgroup "
                    f"-o freezer freezer {FREEZER})")
    group = FREEZER / f"outpost-test-{tmp_path.name}"
    group.mkdir()
    (group / "cgroup.procs").write_text(f"{pid}\n")
    (group / "freezer.state").write_text("FROZEN\n")
    wait_for(lambda: (group / "freezer.state").read_text() == "FROZEN\n", f"{pid} frozen")
    return group


def thaw(group: Path):
    (group / "freezer.state").write_text("THAWED\n")
    for pid in (group / "cgroup.procs").read_text().split():
        try:
            (FREEZER / "cgroup.procs").write_text(f"{pid}\n")
        except ProcessLookupError:  # it ended, as a killed process does once thawed
            pass
    wait_for(lambda: not (group / "cgroup.procs").read_text(), f"{group} empty")
    group.rmdir()


def test_down_stops_every_host_it_can_names_the_one_it_could_not_and_a_second_down_finishes(
        tmp_path):
    require_fleet_machine()
    bridge = f"ostuck{os.getpid()}"[:15]
    subnet = f"198.19.{1 + (os.getpid() + 2) % 250}"
    names = ("stuck", "after1", "after2")  # the slow host first: the others come after it
    fleet = make_fleet(tmp_path, [(name, f"{subnet}.{21 + n}") for n, name in enumerate(names)],
                       bridge=bridge)
    group = None
    try:
        assert fleet.up() == list(names)
        stuck = host_pid1(fleet, "stuck")
        stuck_pids = namespace(stuck, "pid")
        group = freeze(stuck, tmp_path)
        with pytest.raises(OutpostError) as refused:
            fleet.down()
        assert str(refused.value) == (
            f"fleet: stopped after1, after2, but not every host: fleet host stuck: PID 1 "
            f"({stuck}) still running 15 s after SIGKILL. Run `doit fleet:down` again to finish")
        for name in ("after1", "after2"):
            assert not fleet.is_up(name)
            assert not Path(f"/sys/class/net/{veth_name(bridge, name)}").exists()
        assert fleet.is_up("stuck")  # still there: the next down tries it again
        assert Path(f"/sys/class/net/{bridge}").exists()  # its veth still holds the bridge
    finally:
        if group is not None:
            thaw(group)
        second = fleet.down()
    assert set(second) <= {"stuck"}  # or the thawed PID 1 had died by itself already
    for name in names:
        assert not fleet.is_up(name)
        assert not Path(f"/sys/class/net/{veth_name(bridge, name)}").exists()
    assert not Path(f"/sys/class/net/{bridge}").exists()
    assert pids_in("pid", stuck_pids) == set()
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()


def route_to(address: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "-j", "route", "get", address], capture_output=True, text=True)


def test_with_the_fleet_down_a_fleet_address_has_no_route_off_this_machine(tmp_path):
    require_fleet_machine()
    bridge = f"oroute{os.getpid()}"[:15]
    address = f"198.19.{1 + (os.getpid() + 3) % 250}.21"
    fleet = make_fleet(tmp_path, [("theta", address)], bridge=bridge)
    try:
        fleet.up()
        # While the fleet is up its /24 on the bridge is the more specific route.
        up = route_to(address)
        assert up.returncode == 0 and json.loads(up.stdout)[0]["dev"] == bridge
    finally:
        fleet.down()
    # Down, the address is unreachable here, not sent to this machine's default gateway.
    down = route_to(address)
    assert (down.returncode, down.stderr) == (2, "RTNETLINK answers: No route to host\n")
    with pytest.raises(OSError) as refused:
        socket.create_connection((address, 22), timeout=5).close()
    assert refused.value.errno == errno.EHOSTUNREACH
    guard = json.loads(subprocess.run(["ip", "-j", "route", "show", "exact", "198.18.0.0/15"],
                                      capture_output=True, text=True, check=True).stdout)
    assert guard == [{"type": "unreachable", "dst": "198.18.0.0/15", "flags": []}]


def fleet_cli_in(netns: str, command: str, inventory: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m", "outpost.fleet",
                           command, "--inventory", str(inventory)],
                          cwd=REPO, capture_output=True, text=True)


def test_the_guard_route_refuses_a_route_this_machine_has_for_the_fleet_range(tmp_path):
    require_fleet_machine()
    inventory = one_host_inventory(tmp_path, "198.18.0.41")
    # In a network namespace of its own: this machine's routes stay as they are.
    netns = f"oguard{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "-n", netns, "route", "add", "198.18.0.0/15", "dev", "lo"],
                       check=True)
        result = fleet_cli_in(netns, "up", inventory)
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr == (
            "error: this machine routes 198.18.0.0/15, the local fleet's "
            "range, somewhere (dst 198.18.0.0/15 dev lo scope link); the fleet keeps that range "
            "unreachable so that its traffic never leaves this machine: remove the route "
            "(ip route del 198.18.0.0/15)\n")
        assert not (tmp_path / "build/fleet/hosts/epsilon").exists()  # refused before any host
    finally:
        fleet_cli_in(netns, "down", inventory)  # had the guard let epsilon start
        subprocess.run(["ip", "netns", "del", netns], check=True)


def test_an_address_already_on_this_machine_is_refused_with_the_host_named(fleet, tmp_path):
    # The module's fleet holds SUBNET.0/24 on its bridge; another bridge may not take it.
    other = make_fleet(tmp_path, [("delta", f"{SUBNET}.31")], bridge=f"oclash{os.getpid()}"[:15])
    with pytest.raises(OutpostError, match=f"delta.*{SUBNET}.0/24 .*{BRIDGE}"):
        other.up()
    assert not Path(f"/sys/class/net/{other.bridge}").exists()


def one_host_inventory(folder: Path, address: str) -> Path:
    """An inventory of one fleet host, epsilon, at `address`."""
    inventory = folder / "inventory.toml"
    inventory.write_text(f"""\
[repository]
signing_key = "keys/outpost.rsa"
path = "/var/lib/outpost/repo"
[site]
name = "linkedlist.test"

[ssh]
user = "deploy"
known_hosts = "build/fleet/known_hosts"
identity = "build/fleet/deploy_key"
[fleet]
state = "build/fleet"
[[packages]]
name = "linkedlist"
[[hosts]]
name = "epsilon"
address = "{address}"
arch = "x86_64"
region = "test"
""")
    return inventory


def test_cli_status_reads_the_inventory(tmp_path):
    inventory = one_host_inventory(tmp_path, f"{SUBNET}.41")
    result = subprocess.run([sys.executable, "-m", "outpost.fleet", "status", "--inventory",
                             str(inventory)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"epsilon\t{SUBNET}.41\tdown\n"


def test_from_inventory_hides_the_project_and_lets_root_in_with_the_bootstrap_key_only():
    inventory = load_inventory(REPO / "inventory.toml")
    fleet = from_inventory(inventory)
    # The web hosts, then the cert host and the ACME server (pebble).
    assert [(h.name, h.address) for h in fleet.hosts.values()] == [
        ("au", "198.18.0.11"), ("ny", "198.18.0.12"), ("fr", "198.18.0.13"),
        ("home", "198.18.0.20"), ("acme", "198.18.0.30")]
    assert fleet.bridge == inventory.fleet.bridge == "outpost0"
    assert REPO in fleet.private and inventory.repository.signing_key.parent in fleet.private
    # root's key is the bootstrap's own, not the deploy key.
    root_key = Path(f"{inventory.ssh.bootstrap_identity}.pub").read_text()
    assert fleet.provision.root_key == root_key
    assert inventory.ssh.bootstrap_identity != inventory.ssh.identity


def test_from_inventory_refuses_a_fleet_host_on_another_port(tmp_path):
    text = (REPO / "inventory.toml").read_text().replace(
        'address = "198.18.0.12"', 'address = "198.18.0.12"\nport = 2222')
    (tmp_path / "inventory.toml").write_text(text)
    with pytest.raises(OutpostError, match=r"\[\[hosts\]\] ny: fleet hosts listen on port 22, not 2222"):
        from_inventory(load_inventory(tmp_path / "inventory.toml"))


# --- Pure parts --------------------------------------------------------------------------------

def hosts(*pairs):
    return [FleetHost(name, address, "x86_64") for name, address in pairs]


@pytest.mark.parametrize("pairs, message", [
    ([("au", "10.0.0.5")], "fleet host au: 10.0.0.5 is outside 198.18.0.0/15"),
    ([("au", "198.18.0.1")], "fleet host au: 198.18.0.1 is reserved"),
    ([("au", "198.18.0.255")], "fleet host au: 198.18.0.255 is reserved"),
    ([("au", "198.18.0.11"), ("ny", "198.18.1.12")], "must share one /24"),
    ([("au", "198.18.0.11"), ("ny", "198.18.0.11")], "fleet hosts au and ny both have"),
    ([("au", "fleet.example")], "fleet host au: 'fleet.example' is not an IPv4 address"),
])
def test_fleet_network_names_the_host_at_fault(pairs, message):
    with pytest.raises(OutpostError, match=message):
        fleet_network(hosts(*pairs))


def test_fleet_network_is_the_hosts_slash_24():
    assert str(fleet_network(hosts(("au", "198.18.0.11"), ("ny", "198.18.0.12")))) == "198.18.0.0/24"


def test_address_clashes():
    fleet_hosts = hosts(("au", "198.18.0.11"))
    net = fleet_network(fleet_hosts)
    assert address_clashes(fleet_hosts, net, "outpost0",
                           [("outpost0", "198.18.0.1/24"), ("eth0", "10.0.0.2/8"),
                            ("eth0", "fe80::1/64")]) == []
    [taken] = address_clashes(fleet_hosts, net, "outpost0", [("outpost0", "198.18.0.11/32")])
    assert taken.startswith("fleet host au: 198.18.0.11 is already on this machine's outpost0")
    [overlap] = address_clashes(fleet_hosts, net, "outpost0", [("docker0", "198.18.0.0/16")])
    assert overlap.startswith("fleet hosts au: network 198.18.0.0/24 overlaps 198.18.0.0/16 on")


def test_with_user_adds_the_user_once_with_a_free_id_and_a_usable_shadow_entry():
    passwd = "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n"
    group = "root:x:0:\nalice:x:1000:\nstaff:x:1001:\n"
    new_passwd, new_group, shadow, uid = with_user(passwd, group, "root:*::::::\n", "deploy",
                                                   "/home/deploy")
    assert uid == 1002
    assert new_passwd.endswith("deploy:x:1002:1002:Outpost deploy:/home/deploy:/bin/sh\n")
    assert new_group.endswith("deploy:x:1002:\n")
    assert shadow.endswith("deploy:*:19000:0:99999:7:::\n")  # "*", not the locked "!"
    assert with_user(new_passwd, new_group, shadow, "deploy", "/home/deploy") == (
        new_passwd, new_group, shadow, 1002)


def test_known_hosts_text_adds_missing_pins_and_keeps_existing_ones_unless_renewed():
    current = "198.18.0.11 ssh-ed25519 OLD\n198.18.0.13 ssh-ed25519 C\n"
    entries = {"198.18.0.11": "ssh-ed25519 NEW", "198.18.0.12": "ssh-ed25519 B",
               "198.18.0.13": "ssh-ed25519 C"}
    assert known_hosts_text(current, entries, set()) == (
        "198.18.0.11 ssh-ed25519 OLD\n198.18.0.13 ssh-ed25519 C\n198.18.0.12 ssh-ed25519 B\n")
    assert known_hosts_text(current, entries, {"198.18.0.11"}) == (
        "198.18.0.13 ssh-ed25519 C\n198.18.0.11 ssh-ed25519 NEW\n198.18.0.12 ssh-ed25519 B\n")
