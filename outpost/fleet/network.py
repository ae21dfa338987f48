"""The local fleet's network.

Each host has a veth pair: `eth0` inside with the host's address (a /24 of 198.18.0.0/15), the
other end in a bridge (default `outpost0`) that holds the /24's first address on this machine.
Hosts get no default route, so nothing they send can leave the machine. IPv6 is off on every
link. This machine keeps the whole range unreachable (guard_route), so that with the fleet down
nothing it sends to a fleet address leaves it either.
"""
from __future__ import annotations

import ipaddress
import json
import zlib
from pathlib import Path

from outpost.errors import OutpostError
from outpost.fleet.host import FleetHost
from outpost.fleet.local import run

# The range the fleet takes its addresses from: reserved for benchmarks (RFC 2544), never routed.
FLEET_RANGE = ipaddress.ip_network("198.18.0.0/15")


# --- Pure: addresses and names -----------------------------------------------------------------

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


# --- On this machine ---------------------------------------------------------------------------

def check_addresses(hosts: list[FleetHost], network: ipaddress.IPv4Network, bridge: str):
    """Fail if this machine already uses the hosts' addresses or their /24."""
    machine = [(dev["ifname"], f"{a['local']}/{a['prefixlen']}")
               for dev in json.loads(run(["ip", "-j", "addr", "show"]).stdout)
               for a in dev.get("addr_info", [])]
    problems = address_clashes(hosts, network, bridge, machine)
    if problems:
        raise OutpostError("; ".join(problems))


def guard_route():
    """An `unreachable` route for all of FLEET_RANGE in this machine's main table. A running
    fleet's /24 on its bridge is more specific and wins; with the fleet down, a packet to a
    fleet address fails here at once ("No route to host") instead of following the default
    route off this machine. It stays after fleet:down."""
    routes = json.loads(run(["ip", "-j", "-4", "route", "show", "table", "main", "exact",
                             str(FLEET_RANGE)]).stdout)
    others = [route for route in routes if route.get("type") != "unreachable"]
    if others:
        found = " ".join(f"{key} {value}" for key, value in others[0].items()
                         if isinstance(value, str))
        raise OutpostError(f"this machine routes {FLEET_RANGE}, the local fleet's range, "
                           f"somewhere ({found}); the fleet keeps that range unreachable so "
                           "that its traffic never leaves this machine: remove the route "
                           f"(ip route del {FLEET_RANGE})")
    if not routes:
        # replace, not add: another fleet starting at the same moment may add it too.
        ip_batch([f"route replace unreachable {FLEET_RANGE}"])


def ensure_bridge(bridge: str, network: ipaddress.IPv4Network):
    if not Path(f"/sys/class/net/{bridge}").exists():
        ip_batch([f"link add {bridge} type bridge"])
        disable_ipv6(bridge)
    # Another fleet may share the bridge with another /24: add ours if it's missing.
    gateway = f"{network[1]}/{network.prefixlen}"
    if f" {gateway} " not in run(["ip", "-o", "addr", "show", "dev", bridge]).stdout:
        ip_batch([f"addr add {gateway} dev {bridge}"])
    ip_batch([f"link set {bridge} up"])


def remove_bridge_if_unused(bridge: str):
    brif = Path(f"/sys/class/net/{bridge}/brif")
    if brif.exists() and not any(brif.iterdir()):
        ip_batch([f"link del {bridge}"])


def has_veth(bridge: str, host: str) -> bool:
    return Path(f"/sys/class/net/{veth_name(bridge, host)}").exists()


def remove_veth(bridge: str, host: str):
    """Delete this machine's end of a host's veth pair; the host's end goes with it."""
    try:
        ip_batch([f"link del {veth_name(bridge, host)}"])
    except OutpostError:
        if has_veth(bridge, host):  # else the kernel removed it at the same moment
            raise


def plug_in(bridge: str, host: FleetHost, pid: int):
    """Give the host whose network namespace PID 1 `pid` holds its eth0, on the bridge."""
    veth = veth_name(bridge, host.name)
    if has_veth(bridge, host.name):
        remove_veth(bridge, host.name)
    ip_batch([f"link add {veth} type veth peer name eth0 "
              f"address {host_mac(host.address)} netns {pid}"])
    disable_ipv6(veth)
    ip_batch([f"link set {veth} master {bridge}", f"link set {veth} up"])


def disable_ipv6(device: str):
    # Without IPv6 the fleet's links say nothing beyond the addresses the inventory gives.
    setting = Path(f"/proc/sys/net/ipv6/conf/{device}/disable_ipv6")
    if setting.exists():
        setting.write_text("1\n")


def ip_batch(commands: list[str]):
    run(["ip", "-batch", "-"], input="\n".join(commands) + "\n")
