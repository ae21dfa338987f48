"""Certificates from ACME on a real fleet: real lego on the cert host, real pebble as the ACME
server, DNS-01 through the site's own gdnsd, the renew hook pushing to every web host through
its lego-gate. The tests share one fleet and run in order; each leaves it deployed.

The cert host is `home`, the ACME server `acme`; lego's SSH key is on `home` alone, so the
tests that play the lego user run ssh there, as that user (through the host's namespaces)."""
import hashlib
import re
import shlex
import socket
import ssl
import subprocess

import pytest

from acme_pki import self_signed
from fleet_helpers import accepted_connections, ssh
from helpers import fleet_project, ran_tasks, run_doit, wait_for
from outpost import fleet, inventory, probe
from outpost.commands import acme

HOSTS = ("au", "fr", "ny")
ADDRESSES = {"au": "198.19.81.11", "ny": "198.19.81.12", "fr": "198.19.81.13"}
CERT_HOST = "home"
CERTIFICATES = f"{acme.LEGO_PATH}/certificates/linkedlist.test"
KEY_ON_CERT_HOST = f"{CERTIFICATES}.key"
# Every doit run's output in this module: the site's key must be in none of them.
OUTPUTS = []


def doit(project, *args, **kwargs):
    proc = run_doit(project, *args, **kwargs)
    OUTPUTS.append(proc.stdout + proc.stderr)
    return proc


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    project = fleet_project(tmp_path_factory.mktemp("acme"), ADDRESSES, "outpost-t6")
    request.addfinalizer(lambda: run_doit(project, "fleet:down", check=False))
    doit(project, "deploy")
    inv = inventory.load(project / "inventory.toml")
    return project, inv, fleet.from_inventory(inv)


def served(inv, host) -> dict:
    """The certificate the host serves for the site's name, verified against the ACME
    server's root (pebble's, from its management port): serial, names, issuer."""
    connection = probe.SiteConnection(host.address, inv.site.name, probe.site_context(inv), 5)
    connection.connect()
    try:
        cert = connection.sock.getpeercert()
        der = connection.sock.getpeercert(binary_form=True)
    finally:
        connection.close()
    return {"serial": cert["serialNumber"], "names": [v for k, v in cert["subjectAltName"]],
            "issuer": dict(x[0] for x in cert["issuer"])["commonName"],
            "sha256": hashlib.sha256(der).hexdigest()}


def serials(inv) -> dict:
    return {host.name: served(inv, host)["serial"] for host in inv.hosts}


def as_lego(hosts_fleet, argv, **kwargs):
    """Run argv on the cert host as its lego user (the one whose key the web hosts accept)."""
    return hosts_fleet.run_on(CERT_HOST, ["setpriv", "--reuid=lego", "--regid=lego",
                                          "--init-groups", "--", *argv], **kwargs)


def lego_ssh(hosts_fleet, inv, host_name, command, stdin=None):
    """ssh from the cert host to a web host as lego, with lego's key and pinned host keys."""
    host = inv.host(host_name)
    return as_lego(hosts_fleet, ["ssh", *acme.ssh_options().split(), "-p", str(host.port),
                                 f"lego@{host.address}", command], input=stdin)


def test_every_host_serves_the_acme_certificate_for_the_sites_name(site):
    project, inv, _ = site
    certificates = [served(inv, host) for host in inv.hosts]
    assert {c["sha256"] for c in certificates} == {certificates[0]["sha256"]}
    assert certificates[0]["names"] == [inv.site.name]
    assert certificates[0]["issuer"].startswith("Pebble Intermediate CA")
    # Not the local CA's: that one would not verify against pebble's root.
    local = ssl.create_default_context(cafile=str(inv.site.ca / "ca.pem"))
    with pytest.raises(ssl.SSLCertVerificationError):
        connection = probe.SiteConnection(inv.hosts[0].address, inv.site.name, local, 5)
        connection.connect()
    proc = doit(project, "check")
    table = proc.stdout[proc.stdout.index("host "):].splitlines()
    assert table[0].split()[-1] == "certificate"
    assert all(re.search(r"\b(8[5-9]|90) days$", line) for line in table[1:4]), table


def test_the_deploy_machine_never_holds_the_site_key(site):
    project, _, hosts_fleet = site
    key = hosts_fleet.run_on(CERT_HOST, ["cat", KEY_ON_CERT_HOST]).stdout
    body = "".join(line for line in key.splitlines() if "PRIVATE KEY" not in line)
    assert "PRIVATE KEY" in key and len(body) > 40
    # The fleet's host layers are the hosts' own disks (under build/fleet/hosts/): the web
    # hosts do hold the key, as nginx needs it. Nothing else of the project does.
    layers = project / "build/fleet/hosts"
    for path in project.rglob("*"):
        if path.is_file() and layers not in path.parents:
            assert body[:40] not in path.read_text(errors="replace"), path
    assert all(body[:40] not in output for output in OUTPUTS)


def test_a_no_op_deploy_opens_no_ssh_connection_anywhere(site):
    project, _, hosts_fleet = site
    machines = (*HOSTS, CERT_HOST)
    before = {name: accepted_connections(hosts_fleet, name) for name in machines}
    proc = doit(project, "deploy")
    assert [t for t in ran_tasks(proc.stdout)
            if not t.startswith(("check:", "certificate:", "deploy"))] == []
    assert {name: accepted_connections(hosts_fleet, name) for name in machines} == before


def test_the_daily_renewal_runs_on_the_cert_host_under_dinit(site):
    _, _, hosts_fleet = site
    status = hosts_fleet.run_on(CERT_HOST, ["dinitctl", "status", acme.SERVICE])
    assert "STARTED" in status.stdout.upper() or "started" in status.stdout, status.stdout
    log = wait_for(lambda: hosts_fleet.run_on(CERT_HOST, ["cat", "/var/log/outpost-renew.log"]
                                              ).stdout, "the renewal service's first check")
    assert "renewal check" in log
    # Not due: lego renews nothing until the last renew_days of the certificate.
    assert "renewal failed" not in log


def test_a_forced_renewal_reaches_every_host(site):
    _, inv, hosts_fleet = site
    before = serials(inv)
    # As the schedule runs it, with "renew when fewer than 100 days are left": always due.
    result = as_lego(hosts_fleet, [acme.DRIVER, "renew", "100"])
    assert result.returncode == 0, result.stdout + result.stderr
    after = wait_for(lambda: (s := serials(inv)) and all(s[h] != before[h] for h in s) and s,
                     "every host to serve the renewed certificate")
    assert len(set(after.values())) == 1
    for name in HOSTS:
        assert f"{name}: installed:" in result.stdout + result.stderr


def test_with_the_cert_host_unreachable_hosts_that_serve_the_newest_certificate_pass(site):
    # After the renewal above every host serves a certificate newer than the one kept here
    # (build/acme/site.crt): the cert host pushed it, no deploy asked for it. Now the cert
    # host can't be reached (its sshd stopped; the machine runs on, so fleet:up leaves it).
    project, inv, hosts_fleet = site
    newest = serials(inv)
    cert_host = inv.acme.cert_host
    stopped = hosts_fleet.run_on(CERT_HOST, ["dinitctl", "stop", "sshd"])
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    try:
        wait_for(lambda: not answers(cert_host.address, cert_host.port),
                 "the cert host's sshd to stop")
        proc = doit(project, "deploy")  # fails on any failed task
    finally:
        started = hosts_fleet.run_on(CERT_HOST, ["dinitctl", "start", "sshd"])
        assert started.returncode == 0, started.stdout + started.stderr
        wait_for(lambda: answers(cert_host.address, cert_host.port),
                 "the cert host's sshd to answer again")
    ran = ran_tasks(proc.stdout)
    assert {f"certificate:{h}" for h in HOSTS} | {f"check:{h}" for h in HOSTS} <= set(ran)
    assert "installed:" not in proc.stdout
    assert serials(inv) == newest


def answers(address, port) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_renewal_while_a_host_is_down_reaches_it_at_the_next_deploy(site):
    project, inv, hosts_fleet = site
    before = serials(inv)
    hosts_fleet.stop_host("ny")
    result = as_lego(hosts_fleet, [acme.DRIVER, "renew", "100"])
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "the certificate did not reach: ny" in output
    for name in ("au", "fr"):
        wait_for(lambda: served(inv, inv.host(name))["serial"] != before[name],
                 f"{name} to serve the renewed certificate")
    renewed = served(inv, inv.host("au"))["serial"]
    # The next deploy starts ny again (fleet:up) and gives it the certificate it missed.
    proc = doit(project, "deploy")
    assert "certificate:ny" in ran_tasks(proc.stdout)
    assert re.search(r"^home: ny: installed: serial=", proc.stdout, re.M), proc.stdout
    assert serials(inv) == {name: renewed for name in HOSTS}


def test_the_lego_user_may_post_a_challenge_for_the_site_and_nothing_else(site):
    _, inv, hosts_fleet = site
    value = "A" * 43
    ok = lego_ssh(hosts_fleet, inv, "au", f"challenge {inv.site.name} {value}")
    assert ok.returncode == 0, ok.stderr
    import dns.resolver
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [ADDRESSES["au"]]
    txt = wait_for(lambda: [r.to_text() for r in
                            resolver.resolve(f"_acme-challenge.{inv.site.name}", "TXT")],
                   "the challenge to be served")
    assert f'"{value}"' in txt
    refused = {
        "a shell command": "sh -c id",
        "any other program": "id",
        "a challenge for another name": f"challenge example.org {value}",
        "a challenge for a wildcard's name": f"challenge *.{inv.site.name} {value}",
        "a challenge for the TXT name": f"challenge _acme-challenge.{inv.site.name} {value}",
        "a value of the wrong shape": f"challenge {inv.site.name} short",
        "a value that is a command": f"challenge {inv.site.name} $(id)",
        "a file path for install": "install /etc/nginx/nginx.conf",
        "gdnsd's other commands": "stop",
    }
    for what, command in refused.items():
        result = lego_ssh(hosts_fleet, inv, "au", command)
        assert result.returncode != 0, what
        assert "refused" in result.stderr, (what, result.stderr)
    # Half a pair never replaces the certificate: a key alone, a certificate alone.
    chain = hosts_fleet.run_on(CERT_HOST, ["cat", f"{acme.LEGO_PATH}/certificates/"
                                                  f"{inv.site.name}.crt"]).stdout
    before = served(inv, inv.host("au"))["serial"]
    result = lego_ssh(hosts_fleet, inv, "au", "install", stdin=chain)
    assert result.returncode != 0 and "no private key" in result.stderr
    assert served(inv, inv.host("au"))["serial"] == before
    # No terminal, no forwarding, no file copy: sshd's settings and the key's restrict.
    scp = as_lego(hosts_fleet, ["scp", *acme.ssh_options().split(), "/etc/hostname",
                                f"lego@{ADDRESSES['au']}:/var/lib/lego/x"])
    assert scp.returncode != 0


def test_on_a_web_host_lego_may_reload_nginx_and_nothing_else_as_root(site):
    _, _, hosts_fleet = site

    def doas_as_lego(*argv):
        return hosts_fleet.run_on("au", ["setpriv", "--reuid=lego", "--regid=lego",
                                         "--init-groups", "--", "doas", "-n", *argv])

    assert doas_as_lego("dinitctl", "signal", "HUP", "nginx").returncode == 0
    for argv in (["dinitctl", "restart", "nginx"], ["dinitctl", "stop", "nginx"],
                 ["sh", "-c", "id"], ["-u", "_gdnsd", "gdnsdctl", "-c", "/etc/gdnsd", "stop"],
                 ["cat", "/etc/shadow"]):
        assert doas_as_lego(*argv).returncode != 0, argv


def installed(hosts_fleet, name) -> str:
    """The sha256 of the pair the host's lego-gate installed."""
    pair = hosts_fleet.run_on(name, ["cat", acme.SITE_PEM]).stdout
    return hashlib.sha256(pair.encode()).hexdigest()


def test_every_nameserver_says_which_ca_may_issue_and_that_none_may_issue_a_wildcard(site):
    _, inv, _ = site
    import dns.resolver
    for address in ADDRESSES.values():
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [address]
        records = sorted(r.to_text() for r in resolver.resolve(inv.site.name, "CAA"))
        assert records == ['0 issue "letsencrypt.org"', '0 issuewild ";"'], address


def test_lego_gate_installs_only_a_newer_pair_of_the_acme_servers_for_exactly_the_site(site):
    _, inv, hosts_fleet = site
    name = inv.site.name
    older = hosts_fleet.run_on(CERT_HOST, ["cat", f"{CERTIFICATES}.crt", KEY_ON_CERT_HOST]).stdout
    before = served(inv, inv.host("au"))["serial"]
    renewal = as_lego(hosts_fleet, [acme.DRIVER, "renew", "100"])
    assert renewal.returncode == 0, renewal.stdout + renewal.stderr  # every gate took it
    wait_for(lambda: served(inv, inv.host("au"))["serial"] != before, "the renewed certificate")
    chain = hosts_fleet.run_on(CERT_HOST, ["cat", f"{CERTIFICATES}.crt"]).stdout
    kept = (installed(hosts_fleet, "au"), served(inv, inv.host("au"))["sha256"])
    bad = {
        "the pair before the renewal": (older, "the certificate ("),
        "a self-signed pair for the site's name": (
            "".join(p.decode() for p in self_signed([name])),
            "the chain does not lead to the ACME server's root"),
        "a key that is not the certificate's": (chain + self_signed([name])[1].decode(),
                                                "the key is not the certificate's"),
        "a certificate for another name": ("".join(p.decode() for p in self_signed(["example.org"])),
                                           "the certificate is for DNS:example.org"),
        "a wildcard certificate": ("".join(p.decode() for p in self_signed([name, f"*.{name}"])),
                                   f"the certificate is for DNS:*.{name} DNS:{name}"),
    }
    for what, (pair, reason) in bad.items():
        result = lego_ssh(hosts_fleet, inv, "au", "install", stdin=pair)
        assert result.returncode != 0, what
        assert f"lego-gate: refused: {reason}" in result.stderr, (what, result.stderr)
        assert (installed(hosts_fleet, "au"), served(inv, inv.host("au"))["sha256"]) == kept, what
    assert "is older than the installed one" in lego_ssh(
        hosts_fleet, inv, "au", "install", stdin=older).stderr


def test_the_deploy_user_may_not_have_the_cert_host_issue_again_without_cause(site):
    _, _, hosts_fleet = site
    chain = hosts_fleet.run_on(CERT_HOST, ["cat", f"{CERTIFICATES}.crt"]).stdout
    result = ssh(hosts_fleet, CERT_HOST, shlex.join(["doas", "-u", "lego", acme.DRIVER,
                                                     "issue-again"]))
    assert result.returncode != 0
    assert result.stderr.endswith("acme: refused: the certificate's chain leads to the ACME "
                                  "server's current root: nothing to issue again\n"), result.stderr
    assert hosts_fleet.run_on(CERT_HOST, ["cat", f"{CERTIFICATES}.crt"]).stdout == chain


def test_the_cert_hosts_ssh_refuses_a_web_host_whose_key_is_not_the_pinned_one(site, tmp_path):
    _, inv, hosts_fleet = site
    au = inv.host("au")
    pinned = hosts_fleet.run_on(CERT_HOST, ["cat", acme.KNOWN_HOSTS]).stdout
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    other = (tmp_path / "k.pub").read_text().split()[:2]
    lines = pinned.splitlines()
    ours = [line for line in lines if line.split()[0] in (au.address, f"[{au.address}]:{au.port}")]
    assert ours, pinned
    changed = "".join((" ".join([line.split()[0], *other]) if line in ours else line) + "\n"
                      for line in lines)
    removed = "".join(line + "\n" for line in lines if line not in ours)

    def pin(text):
        hosts_fleet.run_on(CERT_HOST, ["sh", "-c", f"cat > {acme.KNOWN_HOSTS}"], input=text,
                           check=True)

    try:
        for what, text in (("another key pinned", changed), ("no key pinned", removed)):
            pin(text)
            kept = installed(hosts_fleet, "au")
            push = as_lego(hosts_fleet, [acme.DRIVER, "push", "au"])
            output = push.stdout + push.stderr
            assert push.returncode != 0, what
            assert "au: Host key verification failed." in output, (what, output)
            assert "the certificate did not reach: au" in output, what
            assert installed(hosts_fleet, "au") == kept, what
            challenge = as_lego(hosts_fleet, [acme.DNS_EXEC, "present",
                                              f"_acme-challenge.{inv.site.name}.", "C" * 43])
            assert challenge.returncode != 0, what
            assert challenge.stderr.endswith("dns-challenge: failed on: au\n"), challenge.stderr
    finally:
        pin(pinned)
    assert as_lego(hosts_fleet, [acme.DRIVER, "push", "au"]).returncode == 0


def test_a_host_added_to_the_inventory_gets_the_current_certificate(site):
    project, _, hosts_fleet = site
    inventory_file = project / "inventory.toml"
    text = inventory_file.read_text()
    text = text.replace('SA = ["fr", "ny"]', 'SA = ["fr", "ny"]\nAS = ["sg"]')
    text += ('\n[[hosts]]\nname = "sg"\naddress = "198.19.81.14"\narch = "x86_64"\n'
             'region = "asia"\ngroups = ["linkedlist_servers"]\n')
    inventory_file.write_text(text)
    proc = doit(project, "deploy")
    inv = inventory.load(inventory_file)
    assert re.search(r"^home: sg: installed: serial=", proc.stdout, re.M), proc.stdout
    current = served(inv, inv.host("au"))["serial"]
    assert serials(inv) == {name: current for name in (*HOSTS, "sg")}
    # And the renew hook knows it from now on.
    hook = hosts_fleet.run_on(CERT_HOST, ["cat", acme.HOOK]).stdout
    assert "sg) " in hook and "198.19.81.14" in hook



def test_a_restarted_acme_server_means_a_new_certificate_everywhere(site):
    # pebble makes a new root at each start: the certificate lego holds then leads nowhere.
    project, inv, hosts_fleet = site
    before = serials(inv)
    hosts_fleet.stop_host(fleet.ACME_SERVER)
    proc = doit(project, "deploy")  # fleet:up starts it again
    assert "its chain does not lead to the ACME server's root: issuing again" in proc.stdout
    probe.RUN.forget("acme roots")  # this process fetched the old root once: fetch the new one
    after = serials(inv)  # verified against the new root
    assert len(set(after.values())) == 1 and set(after.values()).isdisjoint(before.values())
    # And once is enough.
    again = doit(project, "deploy")
    assert "issuing again" not in again.stdout
