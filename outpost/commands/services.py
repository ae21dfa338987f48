"""services' builders, pure: which dinit services a web host should run, and the bundle that
has the host's helper start those that are stopped. The helper runs `dinitctl start` as root
for a `start` line of a signed bundle (commands.bundle), so this needs no doas rule of its own.
"""
from __future__ import annotations

from outpost.commands import bundle
from outpost.commands import config as config_commands
from outpost.commands import dns as dns_commands

NGINX = "nginx"  # the bootstrap enables it (commands.bootstrap)
# What nginx answers for /_health when nothing listens on the app's port (502 Bad Gateway; a
# hung app is a 504 after proxy_read_timeout, and starting it would change nothing).
APP_DOWN = 502


def app_service(inventory) -> str | None:
    """The service of the package nginx serves (the app), if it has one."""
    return config_commands.served_package(inventory).service


def gdnsd(inventory) -> str | None:
    """gdnsd's service, when the hosts are the site's nameservers."""
    dns = inventory.dns
    return dns_commands.SERVICE if dns is not None and dns.provider == "gdnsd" else None


def start_bundle(host, services) -> bundle.Bundle:
    """The helper's bundle that starts each of `services` (a no-op for one that runs)."""
    return bundle.Bundle(host.name, "services", start=tuple(services))
