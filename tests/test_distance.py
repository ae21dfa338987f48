"""Distance on the local fleet (outpost/fleet/delay.py): a host with a round-trip time answers
every protocol one round trip later per round trip of the protocol, the TCP handshake included.

One host, its own bridge and /24, runs sshd, nginx on :80 and gdnsd on :53 (UDP). Each
protocol is timed against the same host started at rtt 0 in the same test. Lower bounds are
exact (the relay's waits can't end early); the upper bound allows a whole round trip of slack
over the fastest of a few tries, so a loaded machine does not fail it.
"""
import socket
import struct
import time
from pathlib import Path

import pytest

from fleet_helpers import require_fleet_machine, ssh
from helpers import wait_for
from outpost.fleet import Fleet, FleetHost, Provision, delay, from_inventory, packaged_files
from outpost.fleet.provision import Role
from outpost.inventory import load as load_inventory

REPO = Path(__file__).resolve().parents[1]
BRIDGE = "outpost-hd"
ADDRESS = "198.19.92.11"
NAME = "far"
RTT_MS = 500
TRIES = 3
ZONE = "distance.test"
GDNSD_CONFIG = f"options => {{ listen => [ {ADDRESS}:53 ] }}\n"
ZONE_FILE = f"""\
@ 300 SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 7200 1800 259200 300
@ NS ns1.{ZONE}.
ns1 A {ADDRESS}
www A {ADDRESS}
"""


def make_fleet(tmp: Path, rtt_ms: int) -> Fleet:
    gdnsd = packaged_files("gdnsd", REPO / "cports-overlay/user/gdnsd/files", "/usr/sbin/gdnsd")
    role = Role(files=(("/etc/gdnsd/config", GDNSD_CONFIG, 0o644, "root"),
                       (f"/etc/gdnsd/zones/{ZONE}", ZONE_FILE, 0o644, "root")),
                enabled=("nginx", "gdnsd"))
    return Fleet(state_dir=tmp / "state", hosts=[FleetHost(NAME, ADDRESS, "x86_64", rtt_ms)],
                 known_hosts=tmp / "state" / "known_hosts", identity=tmp / "keys" / "deploy_key",
                 provision=Provision(root_key=None, base_packages=(gdnsd,), roles={NAME: role}),
                 bridge=BRIDGE, private=(tmp / "keys", REPO))


# --- One exchange of each protocol, timed --------------------------------------------------

def http_exchange(fleet) -> float:
    start = time.perf_counter()
    with socket.create_connection((ADDRESS, 80), timeout=10) as conn:
        conn.sendall(b"HEAD / HTTP/1.0\r\nHost: far\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.1 200 ")
    return time.perf_counter() - start


def ssh_greeting(fleet) -> float:
    start = time.perf_counter()
    with socket.create_connection((ADDRESS, 22), timeout=10) as conn:
        assert conn.recv(64).startswith(b"SSH-2.0-")
    return time.perf_counter() - start


def dns_query(fleet) -> float:
    labels = b"".join(bytes([len(label)]) + label.encode() for label in f"www.{ZONE}".split("."))
    question = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + b"\0\0\1\0\1"
    start = time.perf_counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(question, (ADDRESS, 53))
        answer = sock.recv(512)
    elapsed = time.perf_counter() - start
    assert answer[:2] == b"\x12\x34" and socket.inet_aton(ADDRESS) in answer
    return elapsed


def ssh_command(fleet) -> float:
    start = time.perf_counter()
    result = ssh(fleet, NAME, "true")
    assert result.returncode == 0, result.stderr
    return time.perf_counter() - start


# Each exchange and its round trips on a real path.
EXCHANGES = {
    # TCP's handshake, then the request and its answer.
    "HTTP request": (http_exchange, 2),
    # TCP's handshake, then sshd's first words (the server speaks first).
    "SSH greeting": (ssh_greeting, 2),
    # One question, one answer, over UDP.
    "DNS query": (dns_query, 1),
    # OpenSSH 9.2's login and one command: TCP's handshake, the banners, the key exchange,
    # NEWKEYS with the service request, auth "none", the public key's query, its signature,
    # the session channel, the command with its exit status.
    "SSH command": (ssh_command, 9),
}


def answers(fleet) -> bool:
    try:
        http_exchange(fleet)
        dns_query(fleet)
    except (OSError, AssertionError):
        return False
    return True


@pytest.fixture(scope="module")
def far_and_near(tmp_path_factory):
    """The host at rtt 0, then at RTT_MS: for each, the fastest of TRIES of each exchange, and
    the host's nftables ruleset."""
    require_fleet_machine()
    tmp = tmp_path_factory.mktemp("distance")
    found = {}
    try:
        for rtt_ms in (0, RTT_MS):
            fleet = make_fleet(tmp, rtt_ms)
            assert fleet.up() == [NAME]
            wait_for(lambda: answers(fleet), "nginx and gdnsd on the host")
            found[rtt_ms] = {what: min(exchange(fleet) for _ in range(TRIES))
                             for what, (exchange, _) in EXCHANGES.items()}
            found[rtt_ms]["ruleset"] = fleet.run_on(NAME, ["nft", "list", "ruleset"]).stdout
            fleet.down()
        yield found
    finally:
        make_fleet(tmp, 0).down()


@pytest.mark.parametrize("what", EXCHANGES)
def test_each_round_trip_of_a_protocol_costs_the_hosts_round_trip(far_and_near, what):
    trips = EXCHANGES[what][1]
    near, far = far_and_near[0][what], far_and_near[RTT_MS][what]
    rtt = RTT_MS / 1000
    assert far >= trips * rtt, f"{what}: {far:.3f} s, less than {trips} round trips of {rtt} s"
    assert far - near < (trips + 1) * rtt, (
        f"{what}: {far:.3f} s at {RTT_MS} ms against {near:.3f} s at 0: "
        f"more than {trips} round trips added")


def test_a_host_at_rtt_0_has_nothing_in_front_of_its_services(far_and_near):
    assert far_and_near[0]["ruleset"] == ""
    assert f"redirect to :{delay.TCP_PORT}" in far_and_near[RTT_MS]["ruleset"]


# --- Pure parts ---------------------------------------------------------------------------

def test_the_inventory_gives_each_fleet_machine_its_round_trip(project):
    inventory = project / "inventory.toml"
    inventory.write_text(inventory.read_text().replace(
        'state = "build/fleet"', 'state = "build/fleet"\nrtt_ms = { ny = 200, home = 30 }'))
    fleet = from_inventory(load_inventory(inventory))
    assert {name: host.rtt_ms for name, host in fleet.hosts.items()} == {
        "au": 0, "ny": 200, "fr": 0, "home": 30, "acme": 0}


def test_a_host_at_rtt_0_boots_as_before():
    assert delay.boot_lines(0, ADDRESS, "/x/delay.py") == []
    redirect, relay = delay.boot_lines(280, ADDRESS, "/x/delay.py")
    assert redirect.endswith("| nft -f -") and delay.nft_rules() in redirect
    assert relay == (f"python3 -I /x/delay.py --rtt-ms 280 --address {ADDRESS} "
                     f"</dev/null >>{delay.LOG} 2>&1 &")
