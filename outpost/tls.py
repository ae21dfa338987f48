"""A local CA and the site's certificate, until real certificates exist.

    ensure_ca(ca_dir) -> (cert_path, key_path)
        <ca_dir>/ca.pem and ca.key, made once and never overwritten: every client that trusts
        the CA (the health check, a browser) would have to be told again.
    ensure_site_certificate(ca_dir, cert_dir, site_name) -> (cert_path, key_path)
        <cert_dir>/site.pem and site.key, signed by the CA, remade when renewal_reason says
        (fixed names: a new site name renews the same files, which stay the same doit targets).

Only the site's certificate and key go to hosts; the CA's key never leaves this machine.
Keys are written with mode 0600 before any byte of them is, and every file is replaced
atomically, so an interrupted run leaves either the old file or the new one.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path

from outpost.errors import OutpostError

# cryptography is imported by the functions that read or make keys and certificates, not at
# the top: the task definitions import this module for its paths only.

CA_NAME = "Outpost local CA"
CA_VALIDITY = datetime.timedelta(days=3650)
SITE_VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)


def ca_paths(ca_dir: Path) -> tuple[Path, Path]:
    return Path(ca_dir) / "ca.pem", Path(ca_dir) / "ca.key"


def site_paths(cert_dir: Path) -> tuple[Path, Path]:
    return Path(cert_dir) / "site.pem", Path(cert_dir) / "site.key"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    # The mode is set at creation, so a key is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.replace(tmp, path)


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


def ensure_ca(ca_dir: Path) -> tuple[Path, Path]:
    """The local CA's certificate and key, made only when neither exists."""
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
        # It signs site certificates only, never another CA.
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
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, _cert_pem(cert), 0o644)
    return cert_path, key_path


def renewal_reason(ca_dir: Path, cert_dir: Path, site_name: str) -> str | None:
    """Why the site's certificate must be (re)made, or None when it is fine: missing, another
    name, not signed by this CA, its key doesn't match, or it expires within RENEW_BEFORE.
    Reads only; a doit `uptodate` can call it."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    cert_path, key_path = site_paths(cert_dir)
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
    try:
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if names != [site_name]:
        return f"it is for {', '.join(names) or 'no name'}, not {site_name}"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return f"it is not signed by the CA in {ca_dir}"
    if key.public_key() != cert.public_key():
        return f"{key_path.name} is not the key of {cert_path.name}"
    if cert.not_valid_after_utc - _now() < RENEW_BEFORE:
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def renew_after(cert_dir: Path) -> float:
    """When (a Unix time) the site certificate enters its last RENEW_BEFORE and must be renewed."""
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(site_paths(cert_dir)[0].read_bytes())
    return (cert.not_valid_after_utc - RENEW_BEFORE).timestamp()


def ensure_site_certificate(ca_dir: Path, cert_dir: Path, site_name: str) -> tuple[Path, Path]:
    """The site's certificate and key, signed by the local CA (made if missing); kept as they
    are while renewal_reason finds nothing wrong, so their mtimes only change on renewal."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    cert_path, key_path = site_paths(cert_dir)
    ca_cert_path, ca_key_path = ensure_ca(ca_dir)
    if renewal_reason(ca_dir, cert_dir, site_name) is None:
        return cert_path, key_path

    ca_cert, ca_key = _load(ca_cert_path, ca_key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, site_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + SITE_VALIDITY, ca_cert.not_valid_after_utc))
        # Clients match the name against the SAN only (RFC 6125); the CN is for people.
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(site_name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # Key first: a run cut short between the two leaves a key that doesn't match the old
    # certificate, which renewal_reason notices next time.
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, _cert_pem(cert), 0o644)
    return cert_path, key_path


def address_certificate(ca_dir: Path, address: str, days: int = 30) -> tuple[bytes, bytes]:
    """A server certificate and key (PEM) for an IP address, from the local CA: for a service
    of the local fleet reached by its address (the ACME server's own HTTPS). Made in memory,
    afresh each time; the caller writes them where the service reads them."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert, ca_key = _load(*ensure_ca(ca_dir))
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _cert_pem(cert), _key_pem(key)
