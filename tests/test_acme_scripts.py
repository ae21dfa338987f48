"""The ACME scripts run for real, in a temp folder: lego-gate's `install` and the cert host's
`acme issue-again`, rendered from templates/acme/ with the real /bin/sh and openssl, against
an ACME server's roots served over HTTPS on loopback (as pebble's management port serves
them). Each check gets the bad input it exists for and must refuse it, leaving the installed
pair as it was."""
import datetime
import subprocess

import pytest

from acme_pki import NOW, Ca, RootsServer, new_key, pem, self_signed
from outpost import inventory, render, tls
from outpost.commands import acme
from test_acme_files import REPO

SITE = "linkedlist.test"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The ACME server's roots endpoint, its HTTPS certificate from a CA of its own."""
    folder = tmp_path_factory.mktemp("server")
    cert, key = tls.address_certificate(folder / "ca", "127.0.0.1")
    (folder / "cert.pem").write_bytes(cert)
    (folder / "key.pem").write_bytes(key)
    roots = RootsServer(folder / "cert.pem", folder / "key.pem")
    roots.ca_file = tls.ca_paths(folder / "ca")[0]
    yield roots
    roots.close()


@pytest.fixture
def ca(server):
    """The server's root and intermediate, new for each test (a started pebble)."""
    current = Ca("Pebble")
    server.root = pem(current.root)
    return current


def script(tmp_path, server, name, roots_url=None):
    """templates/acme/<name>.j2 for the fleet's inventory, with its folders and the server's
    CA in tmp_path and its roots at the loopback server."""
    text = (REPO / "inventory.toml").read_text().replace(
        'roots = "https://198.18.0.30:15000/roots/0"', f'roots = "{roots_url or server.url}"')
    (tmp_path / "keys/ca").mkdir(parents=True)
    (tmp_path / "inventory.toml").write_text(text)
    (tmp_path / "keys/ca/ca.pem").write_text(server.ca_file.read_text())
    context = acme.acme_context(inventory.load(tmp_path / "inventory.toml"))
    context["acme"].update(home=str(tmp_path), site_pem=str(tmp_path / "site.pem"),
                           lego_path=str(tmp_path / "acme"),
                           server_ca=str(tmp_path / "keys/ca/ca.pem"))
    path = tmp_path / f"{name}.sh"
    path.write_text(render.render(f"acme/{name}.j2", context))
    return path


class Gate:
    """lego-gate in a temp folder; nginx's reload (doas dinitctl) is recorded in a file."""

    def __init__(self, tmp_path, server, roots_url=None):
        self.site_pem = tmp_path / "site.pem"
        self.reloads = tmp_path / "reloads"
        path = script(tmp_path, server, "lego-gate", roots_url)
        text = path.read_text()
        assert "doas dinitctl signal HUP nginx >/dev/null" in text
        path.write_text(text.replace("doas dinitctl signal HUP nginx >/dev/null",
                                     f"echo HUP >> {self.reloads}"))
        self.path = path

    def install(self, pair):
        chain, key = pair
        return subprocess.run(["sh", str(self.path)], input=chain + key, capture_output=True,
                              env={"SSH_ORIGINAL_COMMAND": "install"}, timeout=30)

    def state(self):
        """The installed pair and the reloads so far."""
        return (self.site_pem.read_bytes() if self.site_pem.exists() else None,
                self.reloads.read_text() if self.reloads.exists() else "")


@pytest.fixture
def gate(tmp_path, server):
    return Gate(tmp_path, server)


def refused(gate, pair, reason):
    before = gate.state()
    result = gate.install(pair)
    assert result.returncode == 1, result
    assert f"lego-gate: refused: {reason}" in result.stderr.decode(), result.stderr
    assert gate.state() == before  # the installed pair did not change, nginx not reloaded
    return result.stderr.decode()


def test_a_pair_from_the_acme_server_is_installed_and_nginx_reloaded(gate, ca):
    pair = ca.chain([SITE])
    result = gate.install(pair)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith("installed: serial=")
    assert gate.state() == (pair[0] + pair[1], "HUP\n")
    assert list(gate.path.parent.glob(".gate.*")) == []  # nothing left behind


def test_a_self_signed_pair_for_the_sites_name_is_refused(gate, ca):
    gate.install(ca.chain([SITE]))
    message = refused(gate, self_signed([SITE]),
                      "the chain does not lead to the ACME server's root")
    assert "self-signed certificate" in message


def test_a_pair_older_than_the_installed_one_is_refused(gate, ca):
    older = ca.chain([SITE], not_before=NOW - datetime.timedelta(days=2))
    assert gate.install(ca.chain([SITE], not_before=NOW - datetime.timedelta(days=1))) \
        .returncode == 0
    message = refused(gate, older, "the certificate (")
    assert "is older than the installed one" in message
    # The same pair again is not older: a host that missed nothing may get it twice.
    same = ca.chain([SITE], not_before=NOW - datetime.timedelta(hours=1))
    assert gate.install(same).returncode == 0
    assert gate.install(same).returncode == 0


def test_a_key_that_is_not_the_certificates_is_refused(gate, ca):
    gate.install(ca.chain([SITE]))
    chain, _ = ca.chain([SITE])
    _, other_key = ca.chain([SITE], key=new_key())
    refused(gate, (chain, other_key), "the key is not the certificate's")


@pytest.mark.parametrize("names", [["example.org"], [SITE, f"*.{SITE}"], [f"*.{SITE}"],
                                   [SITE, "example.org"], [f"www.{SITE}"]])
def test_a_certificate_for_other_names_is_refused(gate, ca, names):
    gate.install(ca.chain([SITE]))
    refused(gate, ca.chain(names),
            f"the certificate is for DNS:{' DNS:'.join(sorted(names))}, not exactly {SITE}\n")


def test_an_expired_pair_is_refused(gate, ca):
    refused(gate, ca.chain([SITE], not_before=NOW - datetime.timedelta(days=91)),
            "the certificate has expired")


def test_a_pair_of_an_earlier_root_is_refused_and_a_later_roots_replaces_any(gate, ca, server):
    earlier = ca.chain([SITE])
    gate.install(earlier)
    restarted = Ca("Pebble")  # a restarted pebble: a new root
    server.root = pem(restarted.root)
    refused(gate, ca.chain([SITE]), "the chain does not lead to the ACME server's root")
    # The installed pair leads nowhere now: it is no reference, even for an earlier date.
    new = restarted.chain([SITE], not_before=NOW - datetime.timedelta(days=1))
    assert gate.install(new).returncode == 0
    assert gate.state()[0] == new[0] + new[1]


def test_without_the_acme_servers_root_nothing_is_installed(tmp_path, server, ca):
    # No server at that port: the roots can't be had.
    gate = Gate(tmp_path / "down", server, roots_url="https://127.0.0.1:9/roots/0")
    refused(gate, ca.chain([SITE]), "the ACME server's root can't be had")


def test_the_roots_come_only_over_tls_from_the_servers_own_ca(tmp_path, server, ca):
    # The same server, but the gate is told another CA: the TLS check fails, nothing is read.
    gate = Gate(tmp_path, server)
    tls.ensure_ca(tmp_path / "other-ca")
    (tmp_path / "keys/ca/ca.pem").write_text(tls.ca_paths(tmp_path / "other-ca")[0].read_text())
    refused(gate, ca.chain([SITE]), "the ACME server's root can't be had")


# --- acme issue-again on the cert host --------------------------------------------------------

def driver(tmp_path, server, pair):
    """The cert host's acme script with lego's certificate in place, lego itself replaced by
    an echo of its arguments (this test talks to no ACME server)."""
    path = script(tmp_path, server, "acme")
    text = path.read_text()
    assert "    lego --server " in text
    path.write_text(text.replace("    lego --server ", "    echo lego --server "))
    certificates = tmp_path / "acme/certificates"
    certificates.mkdir(parents=True)
    (certificates / f"{SITE}.crt").write_bytes(pair[0])
    (certificates / f"{SITE}.key").write_bytes(pair[1])
    return lambda *args: subprocess.run(["sh", str(path), *args], capture_output=True,
                                        text=True, timeout=30)


def test_issue_again_is_refused_while_the_chain_leads_to_the_current_root(tmp_path, server, ca):
    acme_ = driver(tmp_path, server, ca.chain([SITE]))
    result = acme_("issue-again")
    assert result.returncode == 1
    assert result.stderr == ("acme: refused: the certificate's chain leads to the ACME "
                             "server's current root: nothing to issue again\n")
    assert "lego" not in result.stdout  # lego never ran: nothing asked of the CA
    # An expired certificate is no cause either: that is a renewal's (lego renew).
    expired = driver(tmp_path / "expired", server,
                     ca.chain([SITE], not_before=NOW - datetime.timedelta(days=91)))
    assert expired("issue-again").returncode == 1


def test_issue_again_runs_when_the_server_has_another_root(tmp_path, server, ca):
    acme_ = driver(tmp_path, server, ca.chain([SITE]))
    server.root = pem(Ca("Pebble").root)
    result = acme_("issue-again")
    assert result.returncode == 0, result.stderr
    assert f"lego --server https://198.18.0.30:14000/dir --path {tmp_path}/acme" in result.stdout
    assert f" -d {SITE} run" in result.stdout


def test_issue_again_without_a_certificate_or_the_root_is_refused(tmp_path, server, ca):
    acme_ = driver(tmp_path, server, ca.chain([SITE]))
    (tmp_path / f"acme/certificates/{SITE}.crt").unlink()
    assert "refused: no certificate yet" in acme_("issue-again").stderr
    down = tmp_path / "down"
    path = script(down, server, "acme", roots_url="https://127.0.0.1:9/roots/0")
    (down / "acme/certificates").mkdir(parents=True)
    (down / "acme/certificates" / f"{SITE}.crt").write_bytes(ca.chain([SITE])[0])
    result = subprocess.run(["sh", str(path), "issue-again"], capture_output=True, text=True)
    assert result.returncode == 1
    assert "refused: the ACME server's root can't be had" in result.stderr


def test_with_the_servers_roots_the_hosts_trust_store_counts_for_nothing(tmp_path, server, ca):
    # openssl verify adds the default trust store to -CAfile unless told not to: a root that
    # store trusts (ISRG's, in Debian's ca-certificates) must not pass as the server's.
    check = tmp_path / "check.sh"
    text = script(tmp_path, server, "roots").read_text()
    check.write_text(text + 'leads_to_root "$1" "$2"\n')
    trusted = "/etc/ssl/certs/ISRG_Root_X1.pem"
    assert subprocess.run(["openssl", "verify", trusted], capture_output=True).returncode == 0
    (tmp_path / "work").mkdir()
    result = subprocess.run(["sh", str(check), str(tmp_path / "work"), trusted],
                            capture_output=True, text=True)
    assert result.returncode == 1, result
    (tmp_path / "chain.pem").write_bytes(ca.chain([SITE])[0])
    assert subprocess.run(["sh", str(check), str(tmp_path / "work"), str(tmp_path / "chain.pem")]
                          ).returncode == 0


def test_for_lets_encrypt_the_hosts_own_trust_store_holds_the_roots():
    inv = inventory.load(REPO / "inventory.example.toml")
    assert acme.roots_source(inv) == ""
    gate = next(f.content.decode() for f in acme.gate_files(inv, "k") if f.remote_path == acme.GATE)
    assert "s_client" not in gate and "-CAfile" not in gate
    assert 'openssl verify -untrusted "$dir/chain.pem" "$@" "$dir/chain.pem"' in gate
    assert acme.SERVER_CA not in {f.remote_path for f in acme.gate_files(inv, "k")}
    assert subprocess.run(["sh", "-n"], input=gate, text=True).returncode == 0
