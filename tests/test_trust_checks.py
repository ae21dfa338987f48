"""What this machine checks in what hosts say (issue 17), without a fleet: a certificate read
back (tls.verified_site_chain), lego's key against its pin, and hosts' output made visible."""
import datetime
import io
from pathlib import Path
from types import SimpleNamespace

import pytest

import acme_pki

from outpost import tls
from outpost.commands import acme
from outpost.errors import OutpostError
from outpost.report import OutpostReporter
from outpost.steps import acme as acme_step
from outpost.steps.common import say
from outpost.terminal import visible

NOW = acme_pki.NOW
SITE = "linkedlist.test"


def pem(*certificates) -> str:
    return "".join(acme_pki.pem(c).decode() for c in certificates)


@pytest.fixture(scope="module")
def ca():
    return acme_pki.Ca("ACME")


def refused(text, ca, names=(SITE,)) -> str:
    with pytest.raises(tls.CertificateRefused) as error:
        tls.verified_site_chain(text, pem(ca.root), list(names))
    return str(error.value)


def test_a_chain_to_the_root_for_exactly_the_names_is_kept_alone(ca):
    leaf = ca.leaf([SITE])
    # What a session prints around it (an rc file's words, another PEM block) is left out.
    shown = f"current: serial=1\n{pem(leaf, ca.intermediate)}-----BEGIN PRIVATE KEY-----\n" \
            "AAAA\n-----END PRIVATE KEY-----\nbye\n"
    assert tls.verified_site_chain(shown, pem(ca.root), [SITE]) == pem(leaf, ca.intermediate)


def test_a_self_signed_certificate_is_refused_for_its_chain(ca):
    key = acme_pki.new_key()
    forged = acme_pki.certificate(SITE, key, acme_pki.name(SITE), key, False, [SITE])
    with pytest.raises(tls.ChainRefused, match="its chain does not lead to the ACME server's"):
        tls.verified_site_chain(pem(forged, ca.intermediate), pem(ca.root), [SITE])


def test_a_leaf_that_names_the_intermediate_as_issuer_but_is_not_signed_by_it_is_refused(ca):
    # The real intermediate after it, and the issuer's name copied: only the signature differs.
    other = acme_pki.Ca("other")
    forged = acme_pki.certificate(SITE, acme_pki.new_key(), ca.intermediate.subject,
                                  other.intermediate_key, False, [SITE])
    assert "does not lead" in refused(pem(forged, ca.intermediate), ca)


def test_another_cas_chain_is_refused(ca):
    other = acme_pki.Ca("other")
    assert "does not lead" in refused(pem(other.leaf([SITE]), other.intermediate), ca)


def test_a_leaf_for_other_names_or_a_wildcard_too_is_refused(ca):
    assert refused(pem(ca.leaf(["elsewhere.test"]), ca.intermediate), ca) == \
        f"it is for elsewhere.test, not exactly {SITE}"
    assert refused(pem(ca.leaf([SITE, f"*.{SITE}"]), ca.intermediate), ca) == \
        f"it is for {SITE}, *.{SITE}, not exactly {SITE}"


def test_an_expired_or_not_yet_valid_leaf_is_refused(ca):
    expired = ca.leaf([SITE], not_before=NOW - datetime.timedelta(days=100), days=90)
    assert refused(pem(expired, ca.intermediate), ca).startswith("it expired on ")
    early = ca.leaf([SITE], not_before=NOW + datetime.timedelta(days=1))
    assert refused(pem(early, ca.intermediate), ca).startswith("it is not valid before ")


def test_nothing_or_garbage_is_refused(ca):
    assert refused("acme: no certificate yet\n", ca) == "no certificate came back"
    assert "not a readable PEM" in refused(
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", ca)


# --- lego's key against its pin -----------------------------------------------------------------

REAL = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBDNPnBsyTsPqlUOzlzKCOhZYa8QCtfF0kMYqvbPX0mI lego@home"
FORGED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJYDtbVCDAuKGiujEN5J8HCnBTA3Uj3IV4ntQ1SThiwe x"


def inventory(tmp_path: Path):
    return SimpleNamespace(ssh=SimpleNamespace(known_hosts=tmp_path / "known_hosts"),
                           acme=SimpleNamespace(cert_host=SimpleNamespace(name="home")))


def fingerprint(line):
    import base64
    from outpost.openssh import fingerprint
    return fingerprint(base64.b64decode(line.split()[1]))


def test_the_session_only_reports_lego_key_lines():
    output = f"changed: x\n{acme.PUBLIC_KEY_MARK}{FORGED}\n{acme.PUBLIC_KEY_MARK}{REAL}\n"
    assert acme.public_keys(output) == [FORGED, REAL]


def test_without_a_pin_setup_says_how_to_check_and_write_it(tmp_path):
    inv = inventory(tmp_path)
    with pytest.raises(OutpostError) as error:
        acme_step._check_lego_key(inv, [REAL])
    message = str(error.value)
    pin = tmp_path / "lego-home.pub"
    assert acme.lego_key_pin(inv) == pin
    assert f"{pin} does not exist" in message
    assert f"ED25519 key {fingerprint(REAL)}" in message
    assert f"`ssh-keygen -lf {acme.SSH_KEY}.pub`, as root on home's console" in message
    assert message.endswith(f"write that key's line to {pin}:\n  {REAL}")


def test_a_key_that_is_not_the_pinned_one_is_refused_naming_both(tmp_path):
    inv = inventory(tmp_path)
    acme.lego_key_pin(inv).write_text(REAL + "\n")
    acme_step._check_lego_key(inv, [REAL])
    acme_step._check_lego_key(inv, [REAL.rsplit(" ", 1)[0] + " another comment"])
    for told in ([FORGED], [FORGED, REAL], [REAL, FORGED], []):
        with pytest.raises(OutpostError, match="not the pinned one") as error:
            acme_step._check_lego_key(inv, told)
        assert f"pins the ED25519 key {fingerprint(REAL)}" in str(error.value)
        assert all(fingerprint(key) in str(error.value) for key in told)


# --- hosts' output, shown -----------------------------------------------------------------------

def test_control_characters_and_escape_sequences_are_made_visible():
    assert visible("\x1b]0;owned\x07\x1b[2Kline\r\x9b2J\u202eevil\x7f") == \
        "\\x1b]0;owned\\x07\\x1b[2Kline\\r\\x9b2J\\u202eevil\\x7f"
    assert visible("two\tcolumns\nand lines, é ü 中") == "two\tcolumns\nand lines, é ü 中"


def test_step_output_and_the_reporter_show_them_escaped(capsys):
    say("au: \x1b]0;owned\x07")
    assert capsys.readouterr().out == "au: \\x1b]0;owned\\x07\n"
    out = io.StringIO()
    OutpostReporter(out, {}).write("host au failed:\n  \x1b[2K\x1b[1Aerased\n")
    assert out.getvalue() == "host au failed:\n  \\x1b[2K\\x1b[1Aerased\n"


def test_a_remote_failure_shows_the_hosts_stderr_escaped():
    from outpost.openssh import tail
    assert tail("fine\n\x1b]0;owned\x07oops\n") == ":\n  fine\n  \\x1b]0;owned\\x07oops"
