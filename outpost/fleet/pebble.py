"""The local fleet's ACME server: pebble (Debian's), a real ACME server made for tests, in
place of Let's Encrypt. Its certificates are trusted by nobody. It runs on a machine of its
own, with its own HTTPS certificate from the local CA (lego and the check are told to trust
that CA), and it resolves names through the site's nameservers (`-dnsserver`), so DNS-01
challenges are checked against the site's own gdnsd.

pebble makes a new root and intermediate at every start and forgets its accounts; its
management port serves the current root at /roots/0 (the inventory's `[acme] roots`).
"""
from __future__ import annotations

import json

from outpost.fleet.provision import Role

SERVICE = "pebble"
CONFIG = "/etc/pebble/config.json"
CERTIFICATE = "/etc/pebble/cert.pem"
KEY = "/etc/pebble/key.pem"
ENV = "/etc/default/pebble"
ACME_PORT = 14000
MANAGEMENT_PORT = 15000
# 90 days, as Let's Encrypt's (pebble's default is 5 years).
VALIDITY = 90 * 24 * 3600


def config(address: str) -> str:
    return json.dumps({"pebble": {
        "listenAddress": f"{address}:{ACME_PORT}",
        "managementListenAddress": f"{address}:{MANAGEMENT_PORT}",
        "certificate": CERTIFICATE, "privateKey": KEY,
        # Ports for HTTP-01 and TLS-ALPN-01, which Outpost doesn't use (DNS-01 only).
        "httpPort": 5002, "tlsPort": 5001,
        "ocspResponderURL": "", "externalAccountBindingRequired": False,
        "certificateValidityPeriod": VALIDITY,
    }}, indent=2) + "\n"


def service(nameserver: str) -> str:
    return (f"# The local fleet's ACME server (outpost/fleet/pebble.py).\n"
            f"type = process\n"
            f"command = /usr/bin/pebble -config {CONFIG} -dnsserver {nameserver}:53\n"
            f"env-file = {ENV}\n"
            f"logfile = /var/log/pebble.log\n"
            f"depends-on: local.target\n")


# No waiting before validation, no rejected nonces, no reused authorizations: fast and
# deterministic for tests (FACTS.md).
ENVIRONMENT = "PEBBLE_VA_NOSLEEP=1\nPEBBLE_WFE_NONCEREJECT=0\nPEBBLE_AUTHZREUSE=0\n"


def role(address: str, nameserver: str, certificate: bytes, key: bytes) -> Role:
    return Role(files=((CONFIG, config(address), 0o644, "root"),
                       (CERTIFICATE, certificate.decode(), 0o644, "root"),
                       (KEY, key.decode(), 0o600, "root"),
                       (ENV, ENVIRONMENT, 0o644, "root"),
                       (f"/etc/dinit.d/{SERVICE}", service(nameserver), 0o644, "root")),
                enabled=(SERVICE,))
