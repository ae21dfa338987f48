"""A local CA and the site's certificate, until real certificates exist.

    ensure_ca(ca_dir) -> (cert_path, key_path)
        <ca_dir>/ca.pem and ca.key, made once and never overwritten: every client that trusts
        the CA (the health check, a browser) would have to be told again.
    ensure_site_certificate(ca_dir, cert_dir, site_name) -> (cert_path, key_path)
        <cert_dir>/site.pem and site.key, signed by the CA, remade when renewal_reason says
        (fixed names: a new site name renews the same files, which stay the same doit targets).
    ensure_client_certificate(ca_dir, cert_dir) -> (cert_path, key_path)
        <cert_dir>/client.pem and client.key: the check's client certificate, which nginx asks
        for before it shows /_health's details (templates/nginx/site.conf.j2). It stays here.

Only the site's certificate and key, and the CA's certificate (for nginx to verify the check's
client certificate with), go to hosts; the CA's key never leaves this machine.
Keys are written with mode 0600 before any byte of them is, and every file is replaced
atomically, so an interrupted run leaves either the old file or the new one.
"""
from __future__ import annotations

import datetime
import ssl
import threading
from pathlib import Path

from outpost.errors import OutpostError
from outpost.files import write_atomic

# cryptography is imported by the functions that read or make keys and certificates, not at
# the top: the task definitions import this module for its paths only.

CA_NAME = "Outpost local CA"
CLIENT_NAME = "Outpost check"
CA_VALIDITY = datetime.timedelta(days=3650)
SITE_VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)


def ca_paths(ca_dir: Path) -> tuple[Path, Path]:
    return Path(ca_dir) / "ca.pem", Path(ca_dir) / "ca.key"


def site_paths(cert_dir: Path) -> tuple[Path, Path]:
    return Path(cert_dir) / "site.pem", Path(cert_dir) / "site.key"


def client_paths(cert_dir: Path) -> tuple[Path, Path]:
    return Path(cert_dir) / "client.pem", Path(cert_dir) / "client.key"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    # Unencrypted: nginx reads it at start without anyone to type a passphrase.
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _load(cert_path: Path, key_path: Path):
    """(certificate, private key) from PEM files; OutpostError naming the file that's bad."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as error:
        raise OutpostError(f"{cert_path}: not a readable PEM certificate ({error})") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise OutpostError(f"{key_path}: not a readable unencrypted PEM key ({error})") from None
    return cert, key


# doit runs tasks in threads, and more than one task may be the first to need the CA (the
# site's certificate, the check's, the fleet's ACME server): one of them makes it.
_ca_lock = threading.Lock()


def ensure_ca(ca_dir: Path) -> tuple[Path, Path]:
    """The local CA's certificate and key, made only when neither exists."""
    with _ca_lock:
        return _ensure_ca(ca_dir)


def _ensure_ca(ca_dir: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = ca_paths(ca_dir)
    if cert_path.exists() and key_path.exists():
        cert, _ = _load(cert_path, key_path)
        if cert.not_valid_after_utc <= _now():
            raise OutpostError(f"{cert_path}: the local CA expired on "
                               f"{cert.not_valid_after_utc:%Y-%m-%d}; move {ca_dir} away to "
                               "make a new one (and trust the new one wherever the old was)")
        return cert_path, key_path
    if cert_path.exists() or key_path.exists():
        present, absent = (cert_path, key_path) if cert_path.exists() else (key_path, cert_path)
        raise OutpostError(f"{ca_dir}: half a CA: {present.name} is there but {absent.name} is "
                           f"not; restore {absent} or move {ca_dir} away to make a new CA")

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks differ a little
        .not_valid_after(now + CA_VALIDITY)
        # It signs site and client certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    Path(ca_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(key_path, _key_pem(key), 0o600)
    write_atomic(cert_path, _cert_pem(cert), 0o644)
    return cert_path, key_path


def _dns_names(cert) -> list[str]:
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        return []


def _renewal_reason(ca_dir: Path, cert_path: Path, key_path: Path, wrong_subject) -> str | None:
    """Why the certificate at cert_path (key at key_path) must be (re)made, or None: missing,
    wrong_subject(cert) says something, not signed by the CA in ca_dir, its key doesn't match,
    or it expires within RENEW_BEFORE."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    ca_cert_path, _ = ca_paths(ca_dir)
    if not cert_path.exists() or not key_path.exists():
        return "it does not exist"
    if not ca_cert_path.exists():
        return "there is no CA yet"
    try:
        cert, key = _load(cert_path, key_path)
    except OutpostError as error:
        return str(error)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
    subject_problem = wrong_subject(cert)
    if subject_problem:
        return subject_problem
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return f"it is not signed by the CA in {ca_dir}"
    if key.public_key() != cert.public_key():
        return f"{key_path.name} is not the key of {cert_path.name}"
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def renewal_reason(ca_dir: Path, cert_dir: Path, site_name: str) -> str | None:
    """Why the site's certificate must be (re)made, or None when it is fine: missing, another
    name, not signed by this CA, its key doesn't match, or it expires within RENEW_BEFORE.
    Reads only; a doit `uptodate` can call it."""
    def wrong_name(cert):
        names = _dns_names(cert)
        if names != [site_name]:
            return f"it is for {', '.join(names) or 'no name'}, not {site_name}"
        return None

    return _renewal_reason(ca_dir, *site_paths(cert_dir), wrong_name)


def client_renewal_reason(ca_dir: Path, cert_dir: Path) -> str | None:
    """As renewal_reason, for the check's client certificate (which names no site)."""
    return _renewal_reason(ca_dir, *client_paths(cert_dir), lambda cert: None)


def renew_after(cert_dir: Path) -> float:
    """When (a Unix time) the site certificate enters its last RENEW_BEFORE and must be renewed."""
    return _renew_after(site_paths(cert_dir)[0])


def client_renew_after(cert_dir: Path) -> float:
    """As renew_after, for the check's client certificate."""
    return _renew_after(client_paths(cert_dir)[0])


def _renew_after(cert_path: Path) -> float:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return (cert.not_valid_after_utc - RENEW_BEFORE).timestamp()


def _issue(ca_dir: Path, common_name: str, alternative_names: list, usage,
           validity: datetime.timedelta) -> tuple[bytes, bytes]:
    """A new key and a certificate for it (PEM, in memory) from the local CA (made if
    missing): subject common_name, SAN alternative_names (none when empty), extended key usage
    `usage` (an ExtendedKeyUsageOID), valid for `validity` but never beyond the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_cert, ca_key = _load(*ensure_ca(ca_dir))
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # An ECDSA key signs the handshake, and does nothing else.
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if alternative_names:
        # Clients match the name against the SAN only (RFC 6125); the CN is for people.
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative_names),
                                        critical=False)
    return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)


def _write_pair(cert_path: Path, key_path: Path, pair: tuple[bytes, bytes]) -> None:
    cert_pem, key_pem = pair
    # Key first: a run cut short between the two leaves a key that doesn't match the old
    # certificate, which the renewal check notices next time.
    write_atomic(key_path, key_pem, 0o600)
    write_atomic(cert_path, cert_pem, 0o644)


def ensure_site_certificate(ca_dir: Path, cert_dir: Path, site_name: str) -> tuple[Path, Path]:
    """The site's certificate and key, signed by the local CA (made if missing); kept as they
    are while renewal_reason finds nothing wrong, so their mtimes only change on renewal."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert_path, key_path = site_paths(cert_dir)
    ensure_ca(ca_dir)
    if renewal_reason(ca_dir, cert_dir, site_name) is not None:
        _write_pair(cert_path, key_path, _issue(ca_dir, site_name, [x509.DNSName(site_name)],
                                                ExtendedKeyUsageOID.SERVER_AUTH, SITE_VALIDITY))
    return cert_path, key_path


def ensure_client_certificate(ca_dir: Path, cert_dir: Path) -> tuple[Path, Path]:
    """The check's client certificate and key, signed by the local CA (made if missing); kept
    while client_renewal_reason finds nothing wrong. nginx shows /_health's details only to
    a client that presents it; it never leaves this machine."""
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert_path, key_path = client_paths(cert_dir)
    ensure_ca(ca_dir)
    if client_renewal_reason(ca_dir, cert_dir) is not None:
        _write_pair(cert_path, key_path, _issue(ca_dir, CLIENT_NAME, [],
                                                ExtendedKeyUsageOID.CLIENT_AUTH, SITE_VALIDITY))
    return cert_path, key_path


def address_certificate(ca_dir: Path, address: str, days: int = 30) -> tuple[bytes, bytes]:
    """A server certificate and key (PEM) for an IP address, from the local CA: for a service
    of the local fleet reached by its address (the ACME server's own HTTPS). Made in memory,
    afresh each time; the caller writes them where the service reads them."""
    import ipaddress

    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    return _issue(ca_dir, address, [x509.IPAddress(ipaddress.ip_address(address))],
                  ExtendedKeyUsageOID.SERVER_AUTH, datetime.timedelta(days=days))


# --- what a certificate is, and where its chain leads -------------------------------------------

def describe_certificate(der: bytes) -> str:
    """A certificate as a person checks it: the names it is for, who issued it, until when,
    and its serial (two certificates alike in all else differ there)."""
    from cryptography import x509
    certificate = x509.load_der_x509_certificate(der)
    return (f"a certificate for {', '.join(_dns_names(certificate)) or 'no DNS name'} "
            f"(subject {certificate.subject.rfc4514_string()}), issued by "
            f"{certificate.issuer.rfc4514_string()}, valid until "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}, serial {certificate.serial_number:x}")


class CertificateRefused(OutpostError):
    """A certificate chain that is not one to serve for the site: why, in a few words (the
    caller says where it came from)."""


class ChainRefused(CertificateRefused):
    """Refused only because its chain does not lead to the roots it must lead to; `short`
    says so without the validator's details."""

    def __init__(self, short: str, details: str):
        super().__init__(f"{short} ({details})")
        self.short = short


def verified_site_chain(text: str, roots_pem: str | None, names: list[str]) -> str:
    """The PEM chain (leaf first, then the intermediates that lead it to one of `roots_pem`,
    or to this machine's trust store when None) found in `text`, once it is verified: a
    leaf for exactly `names`, valid now, each link signed by the next (cryptography's path
    validation: signatures, validity, CA constraints, the server name). Anything else in
    `text` is left out. Raises CertificateRefused (ChainRefused when only the chain is wrong)."""
    from cryptography import x509
    from cryptography.x509 import verification

    begin = text.find("-----BEGIN CERTIFICATE-----")
    try:
        chain = x509.load_pem_x509_certificates(text[begin:].encode()) if begin >= 0 else []
    except ValueError as error:
        raise CertificateRefused(f"it is not a readable PEM certificate ({error})") from None
    if not chain:
        raise CertificateRefused("no certificate came back")
    leaf, now = chain[0], _now()
    if leaf.not_valid_after_utc <= now:
        raise CertificateRefused(f"it expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if leaf.not_valid_before_utc > now:
        raise CertificateRefused(f"it is not valid before "
                                 f"{leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if sorted(_dns_names(leaf)) != sorted(names):
        raise CertificateRefused(f"it is for {', '.join(_dns_names(leaf)) or 'no DNS name'}, "
                                 f"not exactly {', '.join(names)}")
    roots = x509.load_pem_x509_certificates(
        (roots_pem if roots_pem is not None else _trust_store()).encode())
    verifier = (verification.PolicyBuilder().store(verification.Store(roots)).time(now)
                .build_server_verifier(x509.DNSName(names[0])))
    try:
        path = verifier.verify(leaf, chain[1:])
    except verification.VerificationError as error:
        whose = "the ACME server's" if roots_pem is not None else "a trusted"
        raise ChainRefused(f"its chain does not lead to {whose} root", str(error)) from None
    return "".join(_cert_pem(certificate).decode() for certificate in path[:-1])


def _trust_store() -> str:
    """This machine's trusted roots (PEM), where OpenSSL finds them (Debian: ca-certificates)."""
    cafile = ssl.get_default_verify_paths().cafile
    try:
        return Path(cafile or "").read_text()
    except OSError as error:
        raise OutpostError(f"{cafile}: this machine's trusted roots can't be read "
                           f"({error.strerror}); install ca-certificates") from None


def leaf_der(pem: str) -> bytes:
    """The first certificate of a PEM chain (the leaf), as DER."""
    begin = pem.index("-----BEGIN CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(pem[begin:pem.index("-----END CERTIFICATE-----") + 25])
