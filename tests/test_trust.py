"""Nothing a host prints decides what this machine trusts (issue 17), played on a real fleet by
the cert host's `deploy` user, who writes what its sessions print: its ~/.ssh/rc runs at every
login, and a process of its own can write into the next session's stdout.

- lego's SSH key is pinned here (the fleet wrote the pin when it made the key): a forged
  `lego-public-key:` line from an rc file is refused, naming both keys, and the web hosts keep
  the real key (the same check refuses a line written by a background process; its fleet
  test is not here yet: the injector hit a subshell's pipe to the bundle helper);
- every certificate read back (`acme show`, in acme:issue and certificate:<host>) is verified
  before it is kept: a self-signed one is refused and build/acme/site.crt stays as it was; one
  that is real but not the one the cert host holds is found by the handshake after the push;
- a host's escape sequences reach the terminal escaped.

The tests share one fleet, in order; each leaves it deployed, its attack removed."""
import base64
import re

import pytest

from fleet_helpers import require_fleet_machine
from helpers import deployed_site, run_doit, wait_for
from outpost import openssh, probe, tls
from outpost.commands import acme
from outpost.steps import acme as acme_step

HOSTS = ("au", "fr", "ny")
ADDRESSES = {"au": "198.19.97.11", "ny": "198.19.97.12", "fr": "198.19.97.13"}
CERT_HOST = "home"
DEPLOY_HOME = "/home/deploy"
ATTACKER_KEY = f"{DEPLOY_HOME}/attacker"
RC = f"{DEPLOY_HOME}/.ssh/rc"

@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    require_fleet_machine()
    return deployed_site(tmp_path_factory, request, "trust", ADDRESSES, "outpost-hg")


def as_deploy(hosts_fleet, name, command, **kwargs):
    """A shell command on a host as its deploy user (through the host's namespaces)."""
    return hosts_fleet.run_on(name, ["setpriv", "--reuid=deploy", "--regid=deploy",
                                     "--init-groups", "--", "sh", "-c", command], **kwargs)


def fingerprint(key_line: str) -> str:
    return openssh.fingerprint(base64.b64decode(key_line.split()[1]))


def attacker_key(hosts_fleet) -> str:
    """A key pair of the cert host's deploy user's own: what it would like lego's to be."""
    made = as_deploy(hosts_fleet, CERT_HOST, f"[ -f {ATTACKER_KEY} ] || ssh-keygen -q -t "
                     f"ed25519 -N '' -C attacker -f {ATTACKER_KEY}; cat {ATTACKER_KEY}.pub")
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def legos_key(hosts_fleet) -> str:
    """lego's public key as root on the cert host sees it: the real one."""
    return hosts_fleet.run_on(CERT_HOST, ["cat", f"{acme.SSH_KEY}.pub"],
                              check=True).stdout.strip()


def lego_keys(hosts_fleet) -> dict:
    return {name: hosts_fleet.run_on(name, ["cat", acme.LEGO_KEYS]).stdout for name in HOSTS}


def attacker_posts_a_challenge(hosts_fleet, inv) -> bool:
    """Whether the attacker's key, from the cert host, gets lego-gate on au to serve a
    challenge for the site (what the CA asks of whoever wants a certificate for it)."""
    result = as_deploy(hosts_fleet, CERT_HOST, " ".join([
        "ssh -F /dev/null", f"-i {ATTACKER_KEY}", "-o IdentitiesOnly=yes -o BatchMode=yes",
        "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5",
        f"lego@{ADDRESSES['au']}", f"challenge {inv.site.name} {'B' * 43}"]))
    return result.returncode == 0


def setup_again(project):
    """acme:setup and every gate:<host> run again (as a changed template would make them)."""
    run_doit(project, "forget", "acme:setup")
    return run_doit(project, "acme:setup", "gate", check=False)


@pytest.fixture
def rc_file(site):
    """Write the deploy user's ~/.ssh/rc on a host (it runs at every login, its output first
    in the session's); removed after the test, and the fleet deployed again."""
    project, _, hosts_fleet = site
    planted = []

    def plant(name, text):
        as_deploy(hosts_fleet, name, f"cat > {RC}", input=text, check=True)
        planted.append(name)

    yield plant
    for name in planted:
        as_deploy(hosts_fleet, name, f"rm -f {RC}", check=True)
    run_doit(project, "forget", "acme:setup")  # the key checked (or taken) again
    run_doit(project, "deploy")


def assert_key_refused(proc, forged: str, pinned: str):
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "lego's SSH key is not the pinned one" in out, out
    assert fingerprint(forged) in out and fingerprint(pinned) in out, out
    assert "Traceback" not in out


def test_a_key_line_forged_by_an_rc_file_reaches_no_web_host(site, rc_file):
    project, inv, hosts_fleet = site
    pinned = legos_key(hosts_fleet)
    before = lego_keys(hosts_fleet)
    assert all(pinned.split()[1] in text for text in before.values())
    forged = attacker_key(hosts_fleet)
    rc_file(CERT_HOST, f"echo '{acme.PUBLIC_KEY_MARK}{forged}'\n")

    proc = setup_again(project)
    assert not attacker_posts_a_challenge(hosts_fleet, inv)
    assert lego_keys(hosts_fleet) == before
    assert_key_refused(proc, forged, pinned)


def forged_certificate(hosts_fleet, inv) -> str:
    """A self-signed certificate for the site's name, made by the cert host's deploy user."""
    made = as_deploy(hosts_fleet, CERT_HOST, " ".join([
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90",
        f"-subj /CN={inv.site.name} -addext subjectAltName=DNS:{inv.site.name}",
        f"-keyout {DEPLOY_HOME}/forged.key -out {DEPLOY_HOME}/forged.pem 2>/dev/null",
        f"&& cat {DEPLOY_HOME}/forged.pem"]))
    assert made.returncode == 0, made.stderr
    return made.stdout


def test_a_forged_certificate_from_acme_issue_is_refused_and_not_kept(site, rc_file):
    project, inv, hosts_fleet = site
    kept = acme_step.issued_certificate(inv).read_bytes()
    rc_file(CERT_HOST, f"cat {DEPLOY_HOME}/forged.pem\n")
    forged_certificate(hosts_fleet, inv)

    run_doit(project, "forget", "acme:issue")
    proc = run_doit(project, "acme:issue", check=False)
    out = proc.stdout + proc.stderr
    assert acme_step.issued_certificate(inv).read_bytes() == kept
    assert proc.returncode != 0, out
    assert ("host home, step acme:issue: the certificate `acme show` printed is refused: its "
            "chain does not lead to the ACME server's root") in out, out
    assert f"{acme_step.issued_certificate(inv)} is kept as it was" in out


def renew_on_the_cert_host(hosts_fleet):
    """A renewal as the cert host's schedule runs it (always due: 100 days), pushed to every
    web host by the renew hook."""
    renewed = hosts_fleet.run_on(CERT_HOST, ["setpriv", "--reuid=lego", "--regid=lego",
                                             "--init-groups", "--", acme.DRIVER, "renew", "100"])
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr


def leave_au_behind(hosts_fleet, inv):
    """Two renewals that this machine does not see, and au back on the pair of the first: au
    serves an older certificate than fr and ny (as a host that was down at a renewal), and
    build/acme/site.crt is older still. certificate:au then asks the cert host for the
    current one (`acme show`) and has it pushed."""
    renew_on_the_cert_host(hosts_fleet)
    pair = hosts_fleet.run_on("au", ["cat", acme.SITE_PEM], text=False, check=True).stdout
    renew_on_the_cert_host(hosts_fleet)
    hosts_fleet.run_on("au", ["sh", "-c", f"cat > {acme.SITE_PEM}"], input=pair, text=False,
                       check=True)
    hosts_fleet.run_on("au", ["dinitctl", "signal", "HUP", "nginx"], check=True)
    leaf = tls.leaf_der(pair.decode())
    wait_for(lambda: probe.served_certificate(inv, inv.host("au")) == leaf,
             "au to serve the older pair")


def test_a_forged_certificate_read_back_by_certificate_is_refused_and_not_kept(site, rc_file):
    project, inv, hosts_fleet = site
    kept = acme_step.issued_certificate(inv).read_bytes()
    leave_au_behind(hosts_fleet, inv)
    forged_certificate(hosts_fleet, inv)
    rc_file(CERT_HOST, f"cat {DEPLOY_HOME}/forged.pem\n")

    proc = run_doit(project, "certificate:au", check=False)
    out = proc.stdout + proc.stderr
    assert acme_step.issued_certificate(inv).read_bytes() == kept
    assert proc.returncode != 0, out
    assert ("host home, step certificate:au: the certificate `acme show` printed is refused: "
            "its chain does not lead to the ACME server's root") in out, out


def test_a_real_certificate_the_cert_host_does_not_hold_is_found_after_the_push(site, rc_file):
    # The cert host's deploy user prints an older certificate before the current one: valid,
    # for the site, from the ACME server; but lego holds (and pushes) another.
    project, inv, hosts_fleet = site
    older = acme_step.issued_certificate(inv).read_text()
    leave_au_behind(hosts_fleet, inv)
    as_deploy(hosts_fleet, CERT_HOST, f"cat > {DEPLOY_HOME}/older.pem", input=older, check=True)
    rc_file(CERT_HOST, f"cat {DEPLOY_HOME}/older.pem\n")

    proc = run_doit(project, "certificate:au", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert re.search(r"host au, step certificate:au: after the cert host's push it serves a "
                     r"certificate for linkedlist\.test .*, serial [0-9a-f]+, not the "
                     r"certificate `acme show` printed on home \(.*\): the cert host holds "
                     r"another one", out), out


def test_escape_sequences_from_a_host_are_shown_escaped(site, rc_file):
    project, _, _ = site
    # A title, then a line erased: what arrived through `doit config:<host>`.
    rc_file("au", "printf '\\033]0;owned\\007\\033[2Kmoved\\n'\n")
    run_doit(project, "forget", "config:au")
    proc = run_doit(project, "config:au")
    assert "\x1b" not in proc.stdout + proc.stderr and "\x07" not in proc.stdout
    assert "au: \\x1b]0;owned\\x07\\x1b[2Kmoved\n" in proc.stdout, proc.stdout


def test_the_fleet_pins_the_key_lego_has(site):
    _, inv, hosts_fleet = site
    on_host = legos_key(hosts_fleet)
    assert on_host.startswith("ssh-ed25519 ")
    assert acme.lego_key_pin(inv).read_text().strip() == on_host
