"""The check must be able to say no (issue 12): rollouts gate on it, so on a real local fleet,
each way a host can serve something else than it should makes it fail, naming the host and
what it saw: a certificate from another CA or for another name, another version, other
content (one a content file deleted here is still part of), an older package left on a host.

`doit check` runs the steps before the check first, and those repair what they can see: the
certificate step pushes the current certificate to a host that serves another, the content
step sends the release again to a host seen serving something else, and the upgrade installs
the wanted version on a host that serves another. So each test runs the check alone first
(`doit -s check`, doit's --single: the check tasks without their task_deps, what a gate sees
after the steps), which must fail; then the repair where there is one, with plain `doit check`
or `doit deploy`, which also puts the host back. The tests share one fleet, each leaves it as
it found it (deployed, every host ok), and any order works."""
import re
import ssl
import urllib.request

import pytest

from fleet_helpers import require_fleet_machine
from helpers import deployed_site, ran_tasks, run_doit, template_version, wait_for
from outpost import manifest, probe, tls
from outpost.commands import config as config_commands
from outpost.commands import content as releases
from outpost.steps import acme as acme_step

HOSTS = ("au", "fr", "ny")
ADDRESSES = {"au": "198.19.86.11", "ny": "198.19.86.12", "fr": "198.19.86.13"}
# What the linkedlist package installs and the app reports as its version (template.py).
VERSION_FILE = "/usr/share/linkedlist/version"


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    require_fleet_machine()
    return deployed_site(tmp_path_factory, request, "says-no", ADDRESSES, "outpost-t9")


def check_alone_fails(project, name: str) -> str:
    """`doit -s check` fails for host `name` alone; its output (the failure and the table)."""
    proc = run_doit(project, "-s", "check", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out
    assert ran_tasks(proc.stdout) == [f"check:{h}" for h in HOSTS]  # the check, nothing else
    assert statuses(proc.stdout) == {h: "FAIL" if h == name else "ok" for h in HOSTS}, out
    return out


def check_passes(project, *args) -> str:
    proc = run_doit(project, *args)
    assert statuses(proc.stdout) == {h: "ok" for h in HOSTS}, proc.stdout
    return proc.stdout


def statuses(stdout: str) -> dict:
    """The status column of the check's table: {host: "ok" | "FAIL"}."""
    table = stdout[re.search(r"^host +region +status", stdout, re.M).start():].splitlines()
    rows = [line.split() for line in table[1:len(HOSTS) + 1]]
    return {row[0]: "FAIL" if "FAIL" in row else row[2] for row in rows}


def health(inv, name) -> dict:
    """The host's /_health as the check asks it ({} when it gives none)."""
    answer = probe.health(inv, inv.host(name))
    return answer if isinstance(answer, dict) else {}


def served_leaf(inv, name) -> bytes | None:
    return probe.served_certificate(inv, inv.host(name))


# --- certificates ------------------------------------------------------------------------------

def serve_certificate(hosts_fleet, inv, name, chain: bytes, key: bytes):
    """Put chain and key where the host's nginx reads the site's (as root, written in place: the
    file keeps its owner and mode), HUP nginx, and wait until the host serves that leaf."""
    paths = config_commands.tls_paths(inv)
    files = ({paths["certificate"]: chain + key} if paths["certificate"] == paths["key"]
             else {paths["certificate"]: chain, paths["key"]: key})
    for path, data in files.items():
        hosts_fleet.run_on(name, ["sh", "-c", 'cat > "$1"', "-", path], input=data, text=False,
                           check=True)
    hosts_fleet.run_on(name, ["dinitctl", "signal", "HUP", "nginx"], check=True)
    leaf = ssl.PEM_cert_to_DER_cert(chain.decode()[:chain.decode().index("-----END CERTIFICATE"
                                                                          "-----") + 25])
    wait_for(lambda: served_leaf(inv, name) == leaf, f"{name} to serve the certificate")


@pytest.fixture
def au_certificate(site):
    """au's certificate files as they are, put back after the test if it left another one
    served (the test's own repair, `doit check`, normally has)."""
    _, inv, hosts_fleet = site
    tls = config_commands.tls_paths(inv)
    paths = sorted({tls["certificate"], tls["key"]})
    kept = {p: hosts_fleet.run_on("au", ["cat", p], text=False, check=True).stdout for p in paths}
    served = served_leaf(inv, "au")
    yield
    if served_leaf(inv, "au") != served:
        for path, data in kept.items():
            hosts_fleet.run_on("au", ["sh", "-c", 'cat > "$1"', "-", path], input=data,
                               text=False, check=True)
        hosts_fleet.run_on("au", ["dinitctl", "signal", "HUP", "nginx"], check=True)
        wait_for(lambda: served_leaf(inv, "au") == served, "au to serve its certificate again")


def test_a_host_serving_a_certificate_from_another_ca_fails_the_check(site, au_certificate,
                                                                      tmp_path):
    project, inv, hosts_fleet = site
    # For the site's name, from a CA this machine has but the site's visitors don't trust: the
    # local CA (pebble's own HTTPS certificate is from it).
    certificate, key = tls.ensure_site_certificate(inv.site.ca, tmp_path, inv.site.name)
    serve_certificate(hosts_fleet, inv, "au", certificate.read_bytes(), key.read_bytes())

    out = check_alone_fails(project, "au")
    assert re.search(rf"host au, step check: https://{inv.site.name}/_health at "
                     rf"{ADDRESSES['au']} .*its certificate is refused \(.+\): it serves a "
                     rf"certificate for {inv.site.name} \(subject CN={inv.site.name}\), issued "
                     rf"by CN={tls.CA_NAME}, valid until ", out), out

    # The certificate step sees it too, and has the cert host push the site's certificate back.
    check_passes(project, "check")
    issued = tls.leaf_der(acme_step.issued_certificate(inv).read_text())
    assert served_leaf(inv, "au") == issued


def test_a_host_serving_a_certificate_for_another_name_fails_the_check(site, au_certificate,
                                                                       tmp_path):
    project, inv, hosts_fleet = site
    from cryptography import x509

    # From the ACME server's own intermediate (pebble hands out its key), used as a CA by the
    # local CA's helper: a chain the check trusts, for a name that is not the site's.
    trusted = ssl.create_default_context(cafile=str(inv.acme.server_ca))

    def fetch(path):
        url = inv.acme.roots.replace("/roots/0", path)
        with urllib.request.urlopen(url, context=trusted, timeout=10) as answer:
            return answer.read()

    intermediate_pem = fetch("/intermediates/0")
    intermediate_cert, intermediate_key = tls.ca_paths(tmp_path / "pebble")
    intermediate_cert.parent.mkdir()
    intermediate_cert.write_bytes(intermediate_pem)
    intermediate_key.write_bytes(fetch("/intermediate-keys/0"))
    certificate, key = tls.ensure_site_certificate(tmp_path / "pebble", tmp_path / "site",
                                                   "elsewhere.test")
    serve_certificate(hosts_fleet, inv, "au", certificate.read_bytes() + intermediate_pem,
                      key.read_bytes())
    intermediate = x509.load_pem_x509_certificate(intermediate_pem)

    out = check_alone_fails(project, "au")
    assert re.search(rf"host au, step check: .*its certificate is refused \(.+\): it serves a "
                     rf"certificate for elsewhere.test \(subject CN=elsewhere.test\), issued by "
                     rf"{re.escape(intermediate.subject.rfc4514_string())}, valid until ",
                     out), out

    check_passes(project, "check")
    assert served_leaf(inv, "au") == tls.leaf_der(acme_step.issued_certificate(inv).read_text())


# --- versions ----------------------------------------------------------------------------------

def restart_app(hosts_fleet, inv, name):
    service = config_commands.served_package(inv).service
    hosts_fleet.run_on(name, ["dinitctl", "restart", service], check=True)


def test_a_host_serving_another_version_fails_the_check(site):
    project, inv, hosts_fleet = site
    version = template_version(project)
    hosts_fleet.run_on("au", ["sh", "-c", f"echo 9.9.9-r0 > {VERSION_FILE}"], check=True)
    try:
        restart_app(hosts_fleet, inv, "au")
        wait_for(lambda: health(inv, "au").get("version") == "9.9.9-r0",
                 "au to serve version 9.9.9-r0")
        out = check_alone_fails(project, "au")
        assert re.search(rf"host au, step check: .* does not serve linkedlist {version} with "
                         rf"release \S+ content \S+: it gives version 9.9.9-r0, ", out), out
    finally:
        hosts_fleet.run_on("au", ["sh", "-c", f"echo {version} > {VERSION_FILE}"], check=True)
        restart_app(hosts_fleet, inv, "au")
        wait_for(lambda: health(inv, "au").get("version") == version,
                 f"au to serve {version} again")
    check_passes(project, "-s", "check")


def installed(hosts_fleet, name) -> str:
    return hosts_fleet.run_on(name, ["apk", "info", "-e", "-v", "linkedlist"]).stdout.strip()


def test_a_host_left_with_an_older_package_fails_the_check_and_the_next_deploy_upgrades_it(site):
    project, inv, hosts_fleet = site
    # A new release, so that the repository keeps an older one next to it.
    older = template_version(project)
    template = project / "cports-overlay/user/linkedlist/template.py"
    text = template.read_text()
    template.write_text(re.sub(r"^pkgrel = (\d+)$", lambda m: f"pkgrel = {int(m[1]) + 1}", text,
                               flags=re.M))
    newer = template_version(project)
    check_passes(project, "deploy")
    assert {name: installed(hosts_fleet, name) for name in HOSTS} == {
        name: f"linkedlist-{newer}" for name in HOSTS}

    # By hand on au, as root: the older package from the repository, and the service restarted.
    hosts_fleet.run_on("au", ["apk", "add", f"linkedlist={older}"], check=True)
    restart_app(hosts_fleet, inv, "au")
    assert installed(hosts_fleet, "au") == f"linkedlist-{older}"
    wait_for(lambda: health(inv, "au").get("version") == older, f"au to serve {older}")

    out = check_alone_fails(project, "au")
    assert re.search(rf"host au, step check: .* does not serve linkedlist {newer} with release "
                     rf"\S+ content \S+: it gives version {older}, ", out), out

    # Its record says it runs the newer one, but the upgrade asks what it serves: only au's runs.
    out = check_passes(project, "deploy")
    assert [t for t in ran_tasks(out) if t.startswith("upgrade:")] == ["upgrade:au"]
    assert f"au: linkedlist {newer} passed the health gate (was {older})" in out
    assert installed(hosts_fleet, "au") == f"linkedlist-{newer}"


# --- content -----------------------------------------------------------------------------------

def current_release(inv) -> str:
    """The folder the app serves on a host (the `current` link of the package's content_dir)."""
    return releases.current_path(config_commands.served_package(inv).content_dir)


def test_a_host_serving_other_content_fails_the_check(site):
    project, inv, hosts_fleet = site
    good = health(inv, "au")
    hosts_fleet.run_on("au", ["sh", "-c", f'echo tampered >> "{current_release(inv)}/README.md"'],
                       check=True)
    wait_for(lambda: health(inv, "au").get("content") != good["content"],
             "au to serve other content")
    seen = health(inv, "au")

    out = check_alone_fails(project, "au")
    assert re.search(rf"host au, step check: .* with release {good['release']} content "
                     rf"{good['content'][:12]}: it gives version \S+, release {seen['release']} "
                     rf"with content {seen['content'][:12]}", out), out

    # The content step sees it, and sends the release again.
    out = check_passes(project, "check")
    assert "content:au" in ran_tasks(out)
    assert health(inv, "au")["content"] == good["content"]


def test_a_content_file_deleted_here_but_still_served_fails_the_check(site):
    project, inv, hosts_fleet = site
    entry = project / "content/entries/doit.txt"
    text = entry.read_bytes()
    entry.unlink()
    try:
        check_passes(project, "deploy")
        without = manifest.scan(project / "content").digest
        assert health(inv, "au")["content"] == without
        assert probe.site_request(inv, inv.host("au"), "/entries/doit/")[0] == 404
        # The file is back in au's release, as a push that failed to delete it would leave it.
        hosts_fleet.run_on("au", ["sh", "-c", f'cat > "{current_release(inv)}/entries/doit.txt"'],
                           input=text, text=False, check=True)
        wait_for(lambda: probe.site_request(inv, inv.host("au"), "/entries/doit/")[0] == 200,
                 "au to serve the deleted entry")
        seen = health(inv, "au")

        out = check_alone_fails(project, "au")
        assert re.search(rf"host au, step check: .* content {without[:12]}: it gives version "
                         rf"\S+, release {seen['release']} with content {seen['content'][:12]}",
                         out), out

        check_passes(project, "check")
        assert probe.site_request(inv, inv.host("au"), "/entries/doit/")[0] == 404
    finally:
        entry.write_bytes(text)
    check_passes(project, "deploy")
