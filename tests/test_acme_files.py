"""What the cert host and the web hosts get for ACME, without a network: the rendered scripts
parse as sh, say what the inventory says, and every doas command they run is permitted."""
import re
import subprocess
from pathlib import Path

import pytest

from outpost import inventory
from outpost.commands import acme
from outpost.commands import bundle
from outpost.commands import sync as sync_commands
from outpost.errors import OutpostError

REPO = Path(__file__).resolve().parents[1]


def load_in(tmp_path, text):
    """The inventory text in tmp_path, with a stand-in for the local CA's certificate that
    [acme] server_ca names (the files only carry its text)."""
    (tmp_path / "keys/ca").mkdir(parents=True, exist_ok=True)
    (tmp_path / "keys/ca/ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n"
                                             "-----END CERTIFICATE-----\n")
    (tmp_path / "inventory.toml").write_text(text)
    return inventory.load(tmp_path / "inventory.toml")


@pytest.fixture
def inv(tmp_path):
    return load_in(tmp_path, (REPO / "inventory.toml").read_text())


def files_by_path(inv):
    return {f.remote_path: f.content.decode() for f in acme.certhost_files(inv, "")}


def test_every_script_is_valid_sh(inv):
    scripts = {**files_by_path(inv),
               **{f.remote_path: f.content.decode() for f in acme.gate_files(inv, "ssh-ed25519 AAAA x")}}
    for path, text in scripts.items():
        if text.startswith("#!/bin/sh"):
            proc = subprocess.run(["sh", "-n"], input=text, capture_output=True, text=True)
            assert proc.returncode == 0, (path, proc.stderr)


def test_the_renew_hook_is_rendered_over_the_web_hosts(inv):
    hook = files_by_path(inv)[acme.HOOK]
    for host in inv.hosts:
        assert f"    {host.name}) {{ push {host.address} {host.port};" in hook
    assert "the certificate did not reach" in hook


def test_a_missing_server_ca_is_an_error_naming_it(tmp_path):
    inv = load_in(tmp_path, (REPO / "inventory.toml").read_text())
    (tmp_path / "keys/ca/ca.pem").unlink()
    with pytest.raises(OutpostError, match=r"keys/ca/ca\.pem: cannot read the ACME server's CA"):
        acme.certhost_files(inv, "")


def test_dns01_goes_to_every_nameserver_or_to_gcore(inv, tmp_path):
    files = files_by_path(inv)
    assert 'dns_options="--dns exec --dns.resolvers 198.18.0.11:53 --dns.disable-cp"' \
        in files[acme.DRIVER]
    for host in inv.hosts:
        assert f"lego@{host.address} challenge" in files[acme.DNS_EXEC]
    text = (REPO / "inventory.toml").read_text().replace(
        'default = "au"', 'default = "au"\nprovider = "gcore"')
    driver = files_by_path(load_in(tmp_path / "gcore", text))[acme.DRIVER]
    assert 'dns_options="--dns gcore --dns.resolvers ns1.gcorelabs.net:53"' in driver
    assert f"GCORE_PERMANENT_API_TOKEN=$(cat {acme.GCORE_TOKEN})" in driver


def test_the_cert_host_runs_only_permitted_doas_commands(inv):
    permitted = {" ".join(argv) for _, argv in acme.certhost_permits(inv)}
    script = bundle.apply_script(b"bundle") + acme.print_public_key()
    script += acme.driver_command("issue") + acme.driver_command("show")
    script += "".join(acme.driver_command("push", h.name) for h in inv.hosts)
    used = {c.strip().removeprefix("doas ") for c in re.findall(r"\bdoas [^\n;|&>)]*", script)}
    used = {u.replace("'", "") for u in used}
    for command in used:
        assert command in permitted, command
    # Its files come in a signed bundle: the helper, with no argument, is the only root rule.
    assert [argv for _, argv in acme.certhost_permits(inv) if "-u" not in argv] == [
        ["/usr/libexec/outpost/apply"]]
    # lego's work as lego, and nothing of a web host's.
    assert "-u lego /usr/libexec/outpost/acme issue" in permitted
    assert not any("nginx" in p for p in permitted)


def test_a_web_hosts_rules_for_lego_are_two(inv):
    rules = sync_commands.doas_conf(inv, inv.host("au"))
    lego = [line for line in rules.splitlines() if line.startswith("permit nopass lego")]
    assert lego == ["permit nopass lego as _gdnsd cmd /usr/libexec/outpost/acme-challenge args",
                    "permit nopass lego as root cmd dinitctl args signal HUP nginx"]


def test_lego_key_is_restricted_to_the_gate():
    line = acme.authorized_key("ssh-ed25519 AAAAC3Nz lego@home\n")
    assert line == 'restrict,command="/usr/libexec/outpost/lego-gate" ssh-ed25519 AAAAC3Nz lego@home\n'


def test_the_challenge_script_checks_name_and_value_itself(inv, tmp_path):
    text = next(f.content.decode() for f in acme.gate_files(inv, "k")
                if f.remote_path == acme.CHALLENGE)
    script = tmp_path / "acme-challenge"
    # The same script with gdnsdctl replaced by echo: what would reach gdnsd.
    script.write_text(text.replace("exec gdnsdctl", "exec echo gdnsdctl"))

    def run(line):
        return subprocess.run(["sh", str(script)], input=line, capture_output=True, text=True)

    ok = run(f"linkedlist.test {'b' * 43}\n")
    assert ok.returncode == 0 and ok.stdout.split()[-2:] == ["linkedlist.test", "b" * 43]
    for line in (f"example.org {'b' * 43}", "linkedlist.test short",
                 f"linkedlist.test {'b' * 42};", f"linkedlist.test {'b' * 43} extra",
                 f"linkedlist.test $({'b' * 40})",
                 # a wildcard's name, the TXT name itself, a subdomain, a trailing dot
                 f"*.linkedlist.test {'b' * 43}", f"_acme-challenge.linkedlist.test {'b' * 43}",
                 f"www.linkedlist.test {'b' * 43}", f"linkedlist.test. {'b' * 43}"):
        assert run(line + "\n").returncode != 0, line


def test_the_gate_gets_the_acme_servers_ca_and_where_its_roots_are(inv):
    files = {f.remote_path: f for f in acme.gate_files(inv, "k")}
    assert files[acme.SERVER_CA].content == (inv.root / "keys/ca/ca.pem").read_bytes()
    assert acme.roots_source(inv) == {
        "url": "https://198.18.0.30:15000/roots/0", "host": "198.18.0.30", "port": 15000,
        "path": "/roots/0", "verify": "-verify_ip 198.18.0.30"}
    gate = files[acme.GATE].content.decode()
    assert f"-CAfile {acme.SERVER_CA} -no-CApath -no-CAstore" in gate


def test_roots_over_plain_http_are_refused(tmp_path):
    text = (REPO / "inventory.toml").read_text().replace(
        'roots = "https://198.18.0.30:15000/roots/0"', 'roots = "http://198.18.0.30:15000/roots/0"')
    with pytest.raises(OutpostError, match=r"\[acme\] roots: http://198.18.0.30:15000/roots/0 "
                                           r"must be https"):
        acme.acme_context(load_in(tmp_path, text))


def test_a_nameserver_with_another_host_key_fails_the_challenge_one_that_is_down_does_not(inv,
                                                                                        tmp_path):
    text = files_by_path(inv)[acme.DNS_EXEC]
    assert text.count("{ ssh ") == len(inv.hosts)
    # ssh as it answers: au presents a key that is not the pinned one, ny is down, fr takes it.
    fake = ("fake_ssh() {\n    case \"$*\" in\n"
            "    *lego@198.18.0.11*) echo 'Host key verification failed.' >&2; return 255 ;;\n"
            "    *lego@198.18.0.12*) echo 'ssh: connect to host 198.18.0.12 port 22: No route "
            "to host' >&2; return 255 ;;\n    esac\n}\n")
    script = tmp_path / "dns-challenge"
    script.write_text(text.replace("set -u\n", "set -u\n" + fake, 1).replace("{ ssh ", "{ fake_ssh "))
    result = subprocess.run(["sh", str(script), "present", "_acme-challenge.linkedlist.test.",
                             "b" * 43], capture_output=True, text=True)
    assert result.returncode == 1
    assert "au: Host key verification failed." in result.stderr
    assert "dns-challenge: ny unreachable: ssh: connect to host" in result.stderr
    assert result.stderr.endswith("dns-challenge: failed on: au\n")
