"""Certificates from ACME (commands.acme builds what each machine gets): the cert host set up,
each web host's lego-gate, the certificate issued on the cert host, and each web host made to
serve the current one. The site's key never passes through this machine."""
from __future__ import annotations

import hashlib
import ssl
import time
from pathlib import Path

from outpost import lock, openssh, probe, remote, tls
from outpost.commands import acme
from outpost.errors import OutpostError
from outpost.files import write_if_changed
from outpost.steps.common import apply_bundle, report


def acme_dir(inventory) -> Path:
    """This machine's ACME files: lego's public SSH key and the site's public certificate. The
    site's key is never here."""
    return inventory.root / "build" / "acme"


def lego_public_key(inventory) -> Path:
    return acme_dir(inventory) / "lego.pub"


def issued_certificate(inventory) -> Path:
    return acme_dir(inventory) / "site.crt"


def _web_known_hosts(inventory) -> str:
    """The pinned keys of the web hosts, for the cert host's lego (nothing else of ours)."""
    names = {openssh.known_hosts_name(host) for host in inventory.hosts}
    try:
        lines = inventory.ssh.known_hosts.read_text().splitlines()
    except OSError as error:
        raise OutpostError(f"{inventory.ssh.known_hosts}: cannot read the pinned host keys: "
                           f"{error.strerror}") from None
    return "".join(line + "\n" for line in lines
                   if line.split() and line.split()[0] in names)


def acme_setup(inventory):
    """The cert host: lego, its scripts and daily renewal service, the web hosts' pinned keys;
    keep lego's public SSH key here for the web hosts (gate)."""
    cert_host = inventory.acme.cert_host
    files = acme.certhost_files(inventory, _web_known_hosts(inventory))
    output = apply_bundle(inventory, cert_host, acme.setup_bundle(inventory, files),
                          "acme:setup", then=acme.print_public_key()).stdout
    key = acme.public_key(output)
    if not key:
        raise OutpostError(f"host {cert_host.name}, step acme:setup: lego's SSH key was not "
                           f"reported; the output was:\n{output.strip()}")
    report(cert_host, "\n".join(line for line in output.splitlines()
                                 if not line.startswith(acme.PUBLIC_KEY_MARK)))
    write_if_changed(lego_public_key(inventory), key + "\n")


def gate(inventory, host):
    """The host's lego-gate, its challenge script and lego's key: what lets the cert host post
    DNS-01 challenges here and install certificates, and nothing else."""
    files = acme.gate_files(inventory, lego_public_key(inventory).read_text())
    report(host, apply_bundle(inventory, host, acme.gate_bundle(host.name, files), "gate")
            .stdout)


def acme_issue(inventory) -> dict:
    """A certificate for the site's names from the ACME server, made by lego on the cert host
    unless it has one for them; keep its public certificate here."""
    cert_host = inventory.acme.cert_host
    status, certificate = _issue(inventory, "issue")
    roots = probe.acme_roots(inventory)
    if certificate and roots and not tls.chains_to(certificate, roots):
        # The ACME server's root changed since (a restarted pebble makes a new one): the
        # certificate lego holds leads nowhere a client trusts.
        report(cert_host, status + "its chain does not lead to the ACME server's root: "
                "issuing again")
        status, certificate = _issue(inventory, "issue-again")
    report(cert_host, status)
    _keep_issued(inventory, certificate)
    return {"renew_by": _renew_by(inventory, certificate), "roots": _roots_digest(inventory)}


def _issue(inventory, command: str) -> tuple[str, str]:
    """Run `acme COMMAND` then `acme show` on the cert host: (its status, the certificate)."""
    output = remote.run_script(inventory.acme.cert_host, acme.driver_command(command)
                               + acme.driver_command("show"), inventory.ssh,
                               step="acme:issue").stdout
    begin = output.find("-----BEGIN CERTIFICATE-----")
    return (output[:begin], output[begin:]) if begin >= 0 else (output, "")


def _keep_issued(inventory, certificate: str):
    certificate = certificate[certificate.find("-----BEGIN CERTIFICATE-----"):]
    if "BEGIN CERTIFICATE" not in certificate:
        raise OutpostError(f"host {inventory.acme.cert_host.name}, step acme:issue: no "
                           f"certificate came back: {certificate.strip()[:200]}")
    write_if_changed(issued_certificate(inventory), certificate)


def _renew_by(inventory, certificate: str) -> float:
    """When this machine should ask the cert host again: a day after the cert host's own daily
    renewal should have renewed it (so a renewal nobody saw is found)."""
    from cryptography import x509
    leaf = x509.load_der_x509_certificate(tls.leaf_der(certificate))
    return leaf.not_valid_after_utc.timestamp() - (inventory.acme.renew_days - 1) * 86400


def _roots_digest(inventory) -> str | None:
    roots = probe.acme_roots(inventory)
    return hashlib.sha256(roots.encode()).hexdigest() if roots else None


def acme_issue_is_current(inventory, values: dict) -> bool:
    """doit uptodate of acme:issue: a certificate is kept here, it is not yet time to look for
    its renewal, and the ACME server's root is the one it was issued under (pebble makes a new
    one at each start)."""
    try:
        return (issued_certificate(inventory).exists()
                and time.time() < values.get("renew_by", 0)
                and values.get("roots") == _roots_digest(inventory))
    except OutpostError:
        return False  # the task runs, and its action says what is wrong (no traceback)


def _issued_at(der: bytes):
    from cryptography import x509
    return x509.load_der_x509_certificate(der).not_valid_before_utc


def _newer_elsewhere(inventory, current: bytes) -> bool:
    """True when some host serves a certificate issued after the one kept here: the cert
    host renewed it since this machine last asked."""
    issued = _issued_at(current)
    return any(isinstance(der, bytes) and der != current and _issued_at(der) > issued
               for der in probe.served_certificates(inventory).values())


def _serves_the_newest(inventory, host, served: bytes, current: bytes) -> bool:
    """Whether the host serves a certificate newer than the one kept here and than any other
    host serves (the cert host's renewal reached it), which a visitor trusts: verified against
    the ACME server's root, for the site's name, in date. Such a host needs nothing from the
    cert host, which may well be down (it is at home, and needed only for a host that lacks
    the newest certificate)."""
    issued = _issued_at(served)
    if issued <= _issued_at(current) or any(
            isinstance(der, bytes) and _issued_at(der) > issued
            for der in probe.served_certificates(inventory).values()):
        return False
    connection = probe.SiteConnection(host.address, inventory.site.name,
                                      probe.site_context(inventory), probe.HANDSHAKE_TIMEOUT)
    try:
        connection.connect()
        return connection.sock.getpeercert(binary_form=True) == served
    except (OSError, ssl.SSLError):
        return False
    finally:
        connection.close()


def host_certificate(inventory, host):
    """Make the host serve the current certificate: if it serves another (a new host, one
    that was down at a renewal), the cert host pushes it there, key and all, through the
    host's lego-gate. Costs one TLS handshake per host when all is well: no SSH. A host that
    serves the newest certificate already is left alone; one that does not answer fails here,
    saying so, with nothing pushed."""
    cert_host = inventory.acme.cert_host
    step = f"certificate:{host.name}"
    current = tls.leaf_der(issued_certificate(inventory).read_text())
    served = probe.served_certificates(inventory).get(host.name)
    if isinstance(served, str):
        raise OutpostError(f"host {host.name}, step {step}: {served}; what it serves is "
                           f"unknown, so nothing was pushed")
    if served == current or (served is not None
                             and _serves_the_newest(inventory, host, served, current)):
        return
    def refresh():
        # Renewed on the cert host since this machine asked: ask once more, once per run.
        if _newer_elsewhere(inventory, current):
            output = remote.run_script(cert_host, acme.driver_command("show"), inventory.ssh,
                                       step=step).stdout
            _keep_issued(inventory, output)
    probe.RUN.get(("certificate refreshed", inventory.path), refresh)
    current = tls.leaf_der(issued_certificate(inventory).read_text())
    if served == current:
        return
    lock.hold()  # read-only until here: a host that serves the current certificate needs none
    output = remote.run_script(cert_host, acme.driver_command("push", host.name), inventory.ssh,
                               step=step).stdout
    # The host's lego-gate checked the pair and switched it in, or the push failed (nginx
    # serves it on 443 once config has given it the site; the check verifies that).
    report(cert_host, output)
