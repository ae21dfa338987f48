"""outpost.tls: the local CA and the site's certificate, checked with openssl (apt: openssl)."""
import shutil
import stat
import subprocess

import pytest
from cryptography import x509

from outpost import tls
from outpost.errors import OutpostError

SITE = "linkedlist.test"


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def identity(path):
    """What changes when a file is written again (atomic replace: a new inode)."""
    st = path.stat()
    return st.st_ino, st.st_mtime_ns, path.read_bytes()


def san(cert_path):
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def openssl_verify(ca_cert, cert):
    assert shutil.which("openssl"), "this test needs openssl (apt-get install openssl)"
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca_cert), str(cert)],
                          capture_output=True, text=True)


def test_site_certificate_chains_to_the_ca_and_names_the_site(tmp_path):
    cert, key = tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    ca_cert, ca_key = tls.ca_paths(tmp_path / "ca")
    assert (cert, key) == tls.site_paths(tmp_path / "tls")
    result = openssl_verify(ca_cert, cert)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{cert}: OK"
    assert san(cert) == [SITE]
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    assert ca.subject.rfc4514_string() == "CN=Outpost local CA"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (mode(key), mode(ca_key), mode(tmp_path / "ca")) == (0o600, 0o600, 0o700)
    # openssl agrees that the key is the certificate's.
    pubkeys = [subprocess.run(argv, capture_output=True, check=True).stdout for argv in (
        ["openssl", "x509", "-in", str(cert), "-noout", "-pubkey"],
        ["openssl", "pkey", "-in", str(key), "-pubout"])]
    assert pubkeys[0] == pubkeys[1]


def test_a_certificate_from_another_ca_does_not_verify(tmp_path):
    cert, _ = tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    other_ca, _ = tls.ensure_ca(tmp_path / "other-ca")
    assert openssl_verify(other_ca, cert).returncode != 0


def test_ensure_ca_never_overwrites(tmp_path):
    ca_cert, ca_key = tls.ensure_ca(tmp_path / "ca")
    before = identity(ca_cert), identity(ca_key)
    assert tls.ensure_ca(tmp_path / "ca") == (ca_cert, ca_key)
    tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", "other.test")
    assert (identity(ca_cert), identity(ca_key)) == before


@pytest.mark.parametrize("kept", ["ca.pem", "ca.key"])
def test_half_a_ca_is_refused_not_replaced(tmp_path, kept):
    ca_dir = tmp_path / "ca"
    tls.ensure_ca(ca_dir)
    (ca_dir / ({"ca.pem", "ca.key"} - {kept}).pop()).unlink()
    before = identity(ca_dir / kept)
    with pytest.raises(OutpostError, match=f"{ca_dir}: half a CA: {kept} is there"):
        tls.ensure_site_certificate(ca_dir, tmp_path / "tls", SITE)
    assert identity(ca_dir / kept) == before


def test_a_current_certificate_is_kept(tmp_path):
    cert, key = tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    before = identity(cert), identity(key)
    assert tls.renewal_reason(tmp_path / "ca", tmp_path / "tls", SITE) is None
    tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    assert (identity(cert), identity(key)) == before


def test_renewed_when_the_site_name_changes(tmp_path):
    cert, key = tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    old_key = key.read_bytes()
    assert (tls.renewal_reason(tmp_path / "ca", tmp_path / "tls", "linkedlist.org")
            == "it is for linkedlist.test, not linkedlist.org")
    assert tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls",
                                       "linkedlist.org") == (cert, key)
    assert san(cert) == ["linkedlist.org"]
    assert key.read_bytes() != old_key
    assert openssl_verify(tls.ca_paths(tmp_path / "ca")[0], cert).returncode == 0


def test_renewed_when_the_ca_changes(tmp_path):
    cert, _ = tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    (tmp_path / "ca").rename(tmp_path / "old-ca")
    assert tls.renewal_reason(tmp_path / "ca", tmp_path / "tls", SITE) == "there is no CA yet"
    tls.ensure_ca(tmp_path / "ca")
    assert (tls.renewal_reason(tmp_path / "ca", tmp_path / "tls", SITE)
            == f"it is not signed by the CA in {tmp_path / 'ca'}")
    tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    assert openssl_verify(tls.ca_paths(tmp_path / "ca")[0], cert).returncode == 0
    assert openssl_verify(tls.ca_paths(tmp_path / "old-ca")[0], cert).returncode != 0


def test_renewed_when_it_expires_within_30_days(tmp_path, monkeypatch):
    monkeypatch.setattr(tls, "SITE_VALIDITY", tls.RENEW_BEFORE - tls.datetime.timedelta(days=1))
    cert, _ = tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    first = cert.read_bytes()
    assert tls.renewal_reason(tmp_path / "ca", tmp_path / "tls", SITE).startswith("it expires on")
    tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    assert cert.read_bytes() != first


def test_renewed_when_the_key_does_not_match(tmp_path):
    cert, key = tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    other_cert, other_key = tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "other",
                                                        SITE)
    key.write_bytes(other_key.read_bytes())  # as a run cut short between key and certificate
    assert (tls.renewal_reason(tmp_path / "ca", tmp_path / "tls", SITE)
            == "site.key is not the key of site.pem")
    tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    assert tls.renewal_reason(tmp_path / "ca", tmp_path / "tls", SITE) is None
    assert key.read_bytes() != other_key.read_bytes()


def test_an_unreadable_certificate_is_renewed(tmp_path):
    cert, _ = tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    cert.write_text("not a certificate\n")
    assert tls.renewal_reason(tmp_path / "ca", tmp_path / "tls", SITE).startswith(
        f"{cert}: not a readable PEM certificate")
    tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    assert san(cert) == [SITE]


def test_client_certificate_is_for_client_authentication_from_the_same_ca(tmp_path):
    from cryptography.x509.oid import ExtendedKeyUsageOID

    site, _ = tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    cert, key = tls.ensure_client_certificate(tmp_path / "ca", tmp_path / "tls")
    assert (cert, key) == tls.client_paths(tmp_path / "tls")
    ca_cert, _ = tls.ca_paths(tmp_path / "ca")
    result = openssl_verify_purpose(ca_cert, cert, "sslclient")
    assert result.stdout.strip() == f"{cert}: OK", result.stdout + result.stderr
    # A client certificate only: it can't pass for the site.
    assert openssl_verify_purpose(ca_cert, cert, "sslserver").returncode != 0
    assert openssl_verify_purpose(ca_cert, site, "sslclient").returncode != 0
    parsed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert list(parsed.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert mode(key) == 0o600


def openssl_verify_purpose(ca_cert, cert, purpose):
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca_cert), "-purpose", purpose,
                           str(cert)], capture_output=True, text=True)


def test_client_certificate_is_kept_then_renewed_when_the_ca_changes(tmp_path):
    cert, key = tls.ensure_client_certificate(tmp_path / "ca", tmp_path / "tls")
    before = identity(cert), identity(key)
    assert tls.client_renewal_reason(tmp_path / "ca", tmp_path / "tls") is None
    tls.ensure_client_certificate(tmp_path / "ca", tmp_path / "tls")
    assert (identity(cert), identity(key)) == before
    (tmp_path / "ca").rename(tmp_path / "old-ca")
    tls.ensure_ca(tmp_path / "ca")
    assert (tls.client_renewal_reason(tmp_path / "ca", tmp_path / "tls")
            == f"it is not signed by the CA in {tmp_path / 'ca'}")
    tls.ensure_client_certificate(tmp_path / "ca", tmp_path / "tls")
    assert openssl_verify(tls.ca_paths(tmp_path / "ca")[0], cert).returncode == 0


def test_threads_that_need_the_ca_at_once_share_one(tmp_path):
    # As doit's threads: the site's certificate, the check's, the fleet's ACME server's.
    import concurrent.futures

    ca_dir = tmp_path / "ca"
    jobs = [lambda: tls.ensure_client_certificate(ca_dir, tmp_path / "client")[0],
            lambda: tls.ensure_site_certificate(ca_dir, tmp_path / "site", SITE)[0],
            lambda: tls.address_certificate(ca_dir, "198.18.0.30")[0]]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        made = list(pool.map(lambda job: job(), jobs))
    (tmp_path / "address.pem").write_bytes(made[2])
    for cert in (made[0], made[1], tmp_path / "address.pem"):
        assert openssl_verify(tls.ca_paths(ca_dir)[0], cert).returncode == 0, cert
