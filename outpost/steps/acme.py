"""Certificates from ACME (commands.acme builds what each machine gets): the cert host set up,
each web host's lego-gate, the certificate issued on the cert host, and each web host made to
serve the current one. The site's key never passes through this machine.

Nothing the cert host's sessions print decides what is trusted: its `deploy` user writes
their output (its ~/.ssh/rc runs at every login, and a process of its own can write into the
next session's stdout). lego's SSH key comes from a pin on this machine (lego_key_pin), and
every certificate read back is verified here before it is kept (tls.verified_site_chain)."""
from __future__ import annotations

import base64
import hashlib
import ssl
import time
from pathlib import Path

from outpost import lock, openssh, probe, remote, tls
from outpost.commands import acme
from outpost.errors import OutpostError
from outpost.files import write_if_changed
from outpost.steps.common import apply_bundle, report

# After a push, how long nginx may take to serve the new pair (a graceful reload).
SERVED_AFTER_PUSH = 10.0


def acme_dir(inventory) -> Path:
    """This machine's ACME files: the site's public certificate. The site's key is never here."""
    return inventory.root / "build" / "acme"


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


# --- lego's SSH key: pinned here, never taken from a session -----------------------------------

def pinned_lego_key(inventory) -> str:
    """The pinned line of lego's public key ("" when there is no pin yet)."""
    try:
        return acme.lego_key_pin(inventory).read_text().strip()
    except FileNotFoundError:
        return ""
    except OSError as error:
        raise OutpostError(f"{acme.lego_key_pin(inventory)}: cannot read lego's pinned key: "
                           f"{error.strerror}") from None


def lego_key_unchanged(inventory, values: dict) -> bool:
    """doit uptodate of acme:setup and gate: lego's pinned key is the one the step last ran
    with. Asked as the task is about to run, not at load: the local fleet pins it in fleet:up."""
    try:
        return values.get("lego_key") == pinned_lego_key(inventory)
    except OutpostError:
        return False  # the task runs, and its action says what is wrong


def _described(key_line: str) -> str:
    """A public key line as `ssh-keygen -l` shows it: its kind and fingerprint."""
    fields = key_line.split()
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (IndexError, ValueError):
        return f"something that is not a public key ({key_line[:60]!r})"
    return f"{openssh.key_kind(fields[0]).upper()} key {openssh.fingerprint(blob)}"


def _check_lego_key(inventory, told: list[str]):
    """Refuse unless every key the session reported is the pinned one: the first run (no
    pin) says how to pin it, a changed key names both."""
    cert_host = inventory.acme.cert_host
    pin, pinned = acme.lego_key_pin(inventory), pinned_lego_key(inventory)
    where = f"host {cert_host.name}, step acme:setup"
    check = (f"`ssh-keygen -lf {acme.SSH_KEY}.pub`, as root on {cert_host.name}'s console, "
             f"shows")
    said = ", ".join(_described(key) for key in told) or "nothing"
    if not pinned:
        line = f":\n  {told[0]}" if len(told) == 1 else ""
        raise OutpostError(
            f"{where}: lego's SSH key is not pinned: {pin} does not exist. The session said "
            f"{said} (its deploy user can write what a session prints: check it). If {check} "
            f"the same, write that key's line to {pin}{line}")
    wrong = [key for key in told if key.split()[:2] != pinned.split()[:2]]
    if wrong or not told:
        raise OutpostError(
            f"{where}: lego's SSH key is not the pinned one: the session said {said}; {pin} "
            f"pins the {_described(pinned)}. Nothing was given to the web hosts. If {check} "
            f"another key than the pinned one, lego's key was made anew: replace the line in "
            f"{pin}; if it shows the pinned one, something on {cert_host.name} forged it")


def acme_setup(inventory):
    """The cert host: lego, its scripts and daily renewal service, the web hosts' pinned keys;
    and lego's SSH key there must be the one pinned here (the key the web hosts get)."""
    cert_host = inventory.acme.cert_host
    files = acme.certhost_files(inventory, _web_known_hosts(inventory))
    output = apply_bundle(inventory, cert_host, acme.setup_bundle(inventory, files),
                          "acme:setup", then=acme.print_public_key()).stdout
    _check_lego_key(inventory, acme.public_keys(output))
    report(cert_host, "\n".join(line for line in output.splitlines()
                                 if not line.startswith(acme.PUBLIC_KEY_MARK)))
    return {"lego_key": pinned_lego_key(inventory)}


def gate(inventory, host):
    """The host's lego-gate, its challenge script and lego's key: what lets the cert host post
    DNS-01 challenges here and install certificates, and nothing else."""
    pinned = pinned_lego_key(inventory)
    if not pinned:
        raise OutpostError(f"host {host.name}, step gate: lego's SSH key is not pinned: "
                           f"{acme.lego_key_pin(inventory)} does not exist (acme:setup says how)")
    files = acme.gate_files(inventory, pinned)
    report(host, apply_bundle(inventory, host, acme.gate_bundle(host.name, files), "gate")
            .stdout)
    return {"lego_key": pinned}


def acme_issue(inventory) -> dict:
    """A certificate for the site's names from the ACME server, made by lego on the cert host
    unless it has one for them; keep its public certificate here, once verified."""
    cert_host = inventory.acme.cert_host
    status, shown = _issue(inventory, "issue")
    try:
        chain = _verified(inventory, shown)
    except tls.ChainRefused as refused:
        # The ACME server's root changed since (a restarted pebble makes a new one): the
        # certificate lego holds leads nowhere a client trusts.
        report(cert_host, status + f"{refused.short}: issuing again")
        try:
            status, shown = _issue(inventory, "issue-again")
        except remote.RemoteError as error:
            raise OutpostError(f"{_refusal(inventory, 'acme:issue', refused)}; issuing again "
                               f"failed: {error}") from None
        chain = _verified_or_refused(inventory, shown, "acme:issue")
    except tls.CertificateRefused as refused:
        raise OutpostError(_refusal(inventory, "acme:issue", refused)) from None
    report(cert_host, status)
    write_if_changed(issued_certificate(inventory), chain)
    return {"renew_by": _renew_by(inventory, chain), "roots": _roots_digest(inventory)}


def _issue(inventory, command: str) -> tuple[str, str]:
    """Run `acme COMMAND` then `acme show` on the cert host: (its status, the certificate)."""
    output = remote.run_script(inventory.acme.cert_host, acme.driver_command(command)
                               + acme.driver_command("show"), inventory.ssh,
                               step="acme:issue").stdout
    begin = output.find("-----BEGIN CERTIFICATE-----")
    return (output[:begin], output[begin:]) if begin >= 0 else (output, "")


def _verified(inventory, shown: str) -> str:
    """The chain `acme show` printed, verified: for exactly the site's names, valid now, its
    chain leading to the ACME server's roots. Raises tls.CertificateRefused."""
    return tls.verified_site_chain(shown, probe.acme_roots(inventory), acme.names(inventory))


def _refusal(inventory, step: str, refused: tls.CertificateRefused) -> str:
    return (f"host {inventory.acme.cert_host.name}, step {step}: the certificate `acme show` "
            f"printed is refused: {refused}; {issued_certificate(inventory)} is kept as it was")


def _verified_or_refused(inventory, shown: str, step: str) -> str:
    try:
        return _verified(inventory, shown)
    except tls.CertificateRefused as refused:
        raise OutpostError(_refusal(inventory, step, refused)) from None


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
    return _trusted_leaf(inventory, host) == served


def _trusted_leaf(inventory, host) -> bytes | None:
    """The leaf the host serves the site when it verifies as a visitor's browser would (the
    ACME server's root, the site's name, in date), else None."""
    connection = probe.SiteConnection(host.address, inventory.site.name,
                                      probe.site_context(inventory), probe.HANDSHAKE_TIMEOUT)
    try:
        connection.connect()
        return connection.sock.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    finally:
        connection.close()


def host_certificate(inventory, host):
    """Make the host serve the current certificate: if it serves another (a new host, one
    that was down at a renewal), the cert host pushes it there, key and all, through the
    host's lego-gate. Costs nothing of its own when all is well: the run's one connection to
    the host (the drift probe's, the check's) says what it serves; no SSH. A host that serves
    the newest certificate already is left alone; one that does not answer fails here, saying
    so, with nothing pushed."""
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
            write_if_changed(issued_certificate(inventory),
                             _verified_or_refused(inventory, output, step))
    probe.RUN.get(("certificate refreshed", inventory.path), refresh)
    current = tls.leaf_der(issued_certificate(inventory).read_text())
    if served == current:
        return
    lock.hold()  # read-only until here: a host that serves the current certificate needs none
    # A host whose nginx serves lego's pair (a trusted one) will serve what is pushed.
    confirmable = served is not None and _trusted_leaf(inventory, host) is not None
    output = remote.run_script(cert_host, acme.driver_command("push", host.name), inventory.ssh,
                               step=step).stdout
    # The host's lego-gate checked the pair and switched it in, or the push failed; its nginx
    # reloaded, so the run's connection to it (the old worker's) is dropped.
    probe.drop_connections(inventory, host)
    report(cert_host, output)
    if confirmable:
        _confirm_served(inventory, host, current)


def _confirm_served(inventory, host, current: bytes):
    """The host serves, after the push, the leaf `acme show` printed. lego-gate installs only
    a pair whose key is the certificate's, and the handshake proves the host holds that key:
    so the certificate kept here is the one the cert host holds, not merely one it printed.
    (A host whose nginx did not serve lego's pair before the push, such as one config has not
    yet given the site, is confirmed by the next run's push or handshake.)"""
    deadline = time.monotonic() + SERVED_AFTER_PUSH
    while (served := probe.served_certificate(inventory, host)) != current:
        if time.monotonic() > deadline:
            what = (tls.describe_certificate(served) if isinstance(served, bytes)
                    else f"no certificate ({served})" if served else "no certificate")
            raise OutpostError(
                f"host {host.name}, step certificate:{host.name}: after the cert host's push it "
                f"serves {what}, not the certificate `acme show` printed on "
                f"{inventory.acme.cert_host.name} ({tls.describe_certificate(current)}, kept "
                f"in {issued_certificate(inventory)}): the cert host holds another one")
        time.sleep(0.1)
