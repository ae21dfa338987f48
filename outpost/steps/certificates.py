"""The site's certificate from the local CA (without [acme]) and the check's client
certificate (outpost.tls makes them; the ACME certificate is steps.acme's)."""
from __future__ import annotations

import hashlib
import time

from outpost import tls
from outpost.steps.common import say


def certificate(inventory):
    """Make or renew the site certificate (tls.ensure_site_certificate decides which), and
    record what it was made from for certificate_is_current."""
    site = inventory.site
    tls.ensure_site_certificate(site.ca, site.certificates, site.name)
    say(f"certificate for {site.name}: {site.certificates}")
    return {"made_from": _certificate_inputs(inventory),
            "renew_after": tls.renew_after(site.certificates)}


def _certificate_inputs(inventory) -> dict:
    """The site's name and the sha256 of the CA certificate, site certificate and key."""
    site = inventory.site
    return {"name": site.name,
            **_file_hashes([tls.ca_paths(site.ca)[0], *tls.site_paths(site.certificates)])}


def _file_hashes(paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None
            for p in paths}


def certificate_is_current(inventory, values: dict) -> bool:
    """doit uptodate: the files and name are those the certificate was last made from, and it
    is not yet due for renewal. Compares hashes only, so a no-op run never parses a certificate
    (nor loads cryptography); any change sends it to tls.ensure_site_certificate's full check."""
    return (values.get("made_from") == _certificate_inputs(inventory)
            and time.time() < values.get("renew_after", 0))


def client_certificate(inventory):
    """Make or renew the check's client certificate (tls.ensure_client_certificate), which
    nginx asks for before it shows /_health's details; record what it was made from."""
    site = inventory.site
    certificate, _ = tls.ensure_client_certificate(site.ca, site.certificates)
    say(f"the check's client certificate: {certificate}")
    return {"made_from": _client_certificate_inputs(inventory),
            "renew_after": tls.client_renew_after(site.certificates)}


def _client_certificate_inputs(inventory) -> dict:
    site = inventory.site
    return _file_hashes([tls.ca_paths(site.ca)[0], *tls.client_paths(site.certificates)])


def client_certificate_is_current(inventory, values: dict) -> bool:
    """doit uptodate, as certificate_is_current: hashes only, no cryptography."""
    return (values.get("made_from") == _client_certificate_inputs(inventory)
            and time.time() < values.get("renew_after", 0))
