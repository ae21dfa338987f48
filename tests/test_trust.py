"""Nothing a host prints decides what this machine trusts (issue 17), played on a real fleet by
the cert host's `deploy` user, who writes what its sessions print: its ~/.ssh/rc runs at every
login, and a process of its own can write into the next session's stdout.

- lego's SSH key is pinned here (the fleet wrote the pin when it made the key): a forged
  `lego-public-key:` line, from an rc file or written by a background process into the
  session's SSH channel, is refused, naming both keys, and the web hosts keep the real key;
- every certificate read back (`acme show`, in acme:issue and certificate:<host>) is verified
  before it is kept: a self-signed one is refused and build/acme/site.crt stays as it was; one
  that is real but not the one the cert host holds is found by the handshake after the push;
- a host's escape sequences reach the terminal escaped.

The tests share one fleet, in order; each leaves it deployed, its attack removed."""
import base64
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from fleet_helpers import require_fleet_machine
from helpers import deployed_site, run_doit, wait_for
from outpost import openssh, probe, remote, tls
from outpost.commands import acme
from outpost.steps import acme as acme_step

HOSTS = ("au", "fr", "ny")
ADDRESSES = {"au": "198.19.97.11", "ny": "198.19.97.12", "fr": "198.19.97.13"}
CERT_HOST = "home"
DEPLOY_HOME = "/home/deploy"
ATTACKER_KEY = f"{DEPLOY_HOME}/attacker"
RC = f"{DEPLOY_HOME}/.ssh/rc"
INJECTED = f"{DEPLOY_HOME}/injected"  # the injector's log: a line per session it wrote into
HELD = f"{DEPLOY_HOME}/held"  # while it exists, the test's own session waits

# The deploy user's background process on the cert host: it writes the line into the stdout of
# each later session of deploy's, once. The SSH channel's stdout is that of the session's
# outermost shell, sshd's child (deploy's login shell, which runs remote.RUN_STDIN); a subshell
# of the script may have another (the pipe to the bundle helper, which then refuses the
# bundle). sshd's child is taken once it runs the shell (before, it is still sshd); sessions
# older than the injector (the one that started it) are left alone.
INJECTOR = r"""
import os, sys, time
line, log = sys.argv[1].encode() + b"\n", sys.argv[2]
me, older, done = os.getuid(), set(os.listdir("/proc")), set()

def read(path):
    with open(path, "rb") as file:
        return file.read()

with open(log + ".pid", "w") as out:
    out.write(str(os.getpid()))
while True:
    for pid in set(os.listdir("/proc")) - older:
        try:
            if not pid.isdigit() or os.stat(f"/proc/{pid}").st_uid != me:
                continue
            parent = read(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()[1].decode()
            if (read(f"/proc/{pid}/cmdline").startswith(b"sshd")
                    or not read(f"/proc/{parent}/cmdline").startswith(b"sshd")):
                continue
            pipe = os.readlink(f"/proc/{pid}/fd/1")
            if pipe in done or not pipe.startswith("pipe:"):
                continue
            with open(f"/proc/{pid}/fd/1", "wb") as stdout:
                stdout.write(line)
            done.add(pipe)
            with open(log, "a") as out:
                out.write(f"{pid} {parent} {pipe}\n")
        except OSError:  # gone meanwhile
            continue
    time.sleep(0.001)
"""

# The attacker's ~/.ssh/rc for the race: the session waits (before its command runs) until the
# injector has logged the session's channel pipe, its own stdout.
WAIT_FOR_INJECTOR = f"""pipe=$(readlink /proc/$$/fd/1); i=0
while ! grep -qF "$pipe" {INJECTED} 2>/dev/null && [ $i -lt 1000 ]; do
    sleep 0.01; i=$((i + 1))
done
"""


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


def injections(hosts_fleet) -> list[list[str]]:
    """What the injector logged: (pid, its parent's pid, the pipe) per session written into."""
    logged = hosts_fleet.run_on(CERT_HOST, ["cat", INJECTED]).stdout
    return [line.split() for line in logged.splitlines()]


@pytest.fixture
def injector(site):
    """The deploy user's background process on the cert host, started in an SSH session of
    deploy's as the attacker would (setsid: it outlives that session); it writes `line` into
    the stdout of every later session, once each. Killed after the test, the fleet deployed
    again."""
    project, inv, hosts_fleet = site
    started = []

    def start(line):
        remote.run_script(inv.acme.cert_host, "\n".join([
            f"rm -f {INJECTED} {INJECTED}.pid",
            f"cat > {DEPLOY_HOME}/inject.py <<'OUTPOST_TEST'", INJECTOR + "OUTPOST_TEST",
            f"setsid -f python3 {DEPLOY_HOME}/inject.py '{line}' {INJECTED} "
            "</dev/null >/dev/null 2>&1", ""]), inv.ssh)
        started.append(wait_for(lambda: hosts_fleet.run_on(
            CERT_HOST, ["cat", f"{INJECTED}.pid"]).stdout.strip(), "the injector to start"))

    yield start
    for pid in started:
        hosts_fleet.run_on(CERT_HOST, ["kill", pid], check=True)
    as_deploy(hosts_fleet, CERT_HOST, f"rm -f {RC}", check=True)  # the race's helper, if planted
    remote.close_all()
    run_doit(project, "forget", "acme:setup")
    run_doit(project, "deploy")


def a_held_session(inv, hosts_fleet, pool):
    """A session of deploy's on the cert host, opened from here as the steps open theirs,
    that waits until HELD is removed: its output, when it ends, is what this machine saw."""
    as_deploy(hosts_fleet, CERT_HOST, f"touch {HELD}", check=True)
    # Bounded (about 20 s) only so that a test that failed to remove HELD does not hang.
    return pool.submit(remote.run_script, inv.acme.cert_host,
                       f"i=0; while [ -e {HELD} ] && [ $i -lt 2000 ]; do sleep 0.01; "
                       "i=$((i + 1)); done; echo released\n", inv.ssh)


def test_a_key_line_forged_by_a_background_process_reaches_no_web_host(site, injector):
    project, inv, hosts_fleet = site
    pinned = legos_key(hosts_fleet)
    pin = acme.lego_key_pin(inv).read_text()
    before = lego_keys(hosts_fleet)
    forged = attacker_key(hosts_fleet)
    forged_line = f"{acme.PUBLIC_KEY_MARK}{forged}"
    injector(forged_line)

    # The injector works: a session of deploy's that stays open until it has written gets
    # the line on its SSH channel (the pipe is one of sshd's), and this machine reads it.
    with ThreadPoolExecutor(1) as pool:
        try:
            held = a_held_session(inv, hosts_fleet, pool)
            logged = wait_for(lambda: injections(hosts_fleet),
                              "the injector to write into the held session")
            assert len(logged) == 1, logged  # that session alone, once
            ((_, sshd, pipe),) = logged
            named = hosts_fleet.run_on(CERT_HOST, ["cat", f"/proc/{sshd}/cmdline"]).stdout
            assert named.startswith("sshd") and "deploy" in named, named
            fds = hosts_fleet.run_on(CERT_HOST, ["sh", "-c", f"readlink /proc/{sshd}/fd/*"])
            assert pipe in fds.stdout.split(), (pipe, fds.stdout)
        finally:
            as_deploy(hosts_fleet, CERT_HOST, f"rm -f {HELD}", check=True)
        output = held.result(timeout=30).stdout
    assert output.splitlines().count(forged_line) == 1 and "released" in output, output

    # acme:setup's session must not end before the injector finds it: the attacker's rc file
    # (it runs at every login) waits until the injector has written into its channel (10 s at
    # most). It prints nothing: the line still comes from the background process.
    as_deploy(hosts_fleet, CERT_HOST, f"cat > {RC}", input=WAIT_FOR_INJECTOR, check=True)
    proc = setup_again(project)
    assert len(injections(hosts_fleet)) > 1  # it wrote into acme:setup's session too
    assert not attacker_posts_a_challenge(hosts_fleet, inv)
    assert lego_keys(hosts_fleet) == before
    assert acme.lego_key_pin(inv).read_text() == pin
    assert_key_refused(proc, forged, pinned)
    # The forged line came first: the one acme:setup took before lego's key was pinned.
    out = proc.stdout + proc.stderr
    assert out.index(fingerprint(forged)) < out.index(fingerprint(pinned)), out


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
