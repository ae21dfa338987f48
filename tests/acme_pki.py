"""A small ACME server's PKI for tests that run the ACME scripts for real: a root, an
intermediate, and leaf certificates with the names, dates and key a test asks for (what
pebble makes, and what an attacker could make for itself)."""
from __future__ import annotations

import datetime
import http.server
import ssl
import threading

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


def new_key():
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def certificate(subject: str, key, issuer: x509.Name, issuer_key, ca: bool,
                names=(), not_before=None, days=90):
    """A certificate as an ACME server's are made (key identifiers, a CA's key usage), which
    cryptography's verifier asks for."""
    not_before = not_before or NOW - datetime.timedelta(minutes=5)
    builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before)
               .not_valid_after(not_before + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   issuer_key.public_key()), critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


class Ca:
    """A root and an intermediate, as pebble makes them at each start."""

    def __init__(self, label: str):
        self.root_key, self.intermediate_key = new_key(), new_key()
        self.root = certificate(f"{label} Root", self.root_key, name(f"{label} Root"),
                                 self.root_key, ca=True, days=3650)
        self.intermediate = certificate(f"{label} Intermediate", self.intermediate_key,
                                         self.root.subject, self.root_key, ca=True, days=3650)

    def leaf(self, names, key=None, not_before=None, days=90):
        """A leaf certificate for `names`, signed by the intermediate."""
        return certificate(names[0], key or new_key(), self.intermediate.subject,
                           self.intermediate_key, ca=False, names=names, not_before=not_before,
                           days=days)

    def chain(self, names, key=None, not_before=None, days=90) -> tuple[bytes, bytes]:
        """(leaf and intermediate, key) for `names`: what lego keeps as NAME.crt and NAME.key."""
        key = key or new_key()
        leaf = self.leaf(names, key, not_before, days)
        return pem(leaf) + pem(self.intermediate), key_pem(key)


def self_signed(names) -> tuple[bytes, bytes]:
    key = new_key()
    return pem(certificate(names[0], key, name(names[0]), key, ca=False, names=names)), \
        key_pem(key)


class RootsServer:
    """HTTPS on loopback that serves the current root at /roots/0, as pebble's management
    port does; its own certificate is for 127.0.0.1 from `cert` and `key` (PEM files)."""

    def __init__(self, cert, key):
        self.root = b""
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                found = self.path == "/roots/0"
                self.send_response(200 if found else 404)
                self.end_headers()
                if found:
                    self.wfile.write(server.root)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/roots/0"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
