"""`doit deploy` end to end against a real local fleet: three hosts, each a real sshd in its own
namespaces, running the apk and dinit stand-ins. Real doit runs in a subprocess.

The tests share one fleet and run in order; each leaves the fleet deployed for the next."""
import json
import re
import subprocess
import time

import pytest

from helpers import fleet_project, ran_tasks, run_doit, template_version
from outpost import fleet, inventory, manifest, steps

HOSTS = ("au", "fr", "ny")
# Addresses apart from the default inventory's, so a developer's own fleet can keep running.
ADDRESSES = {"au": "198.19.77.11", "ny": "198.19.77.12", "fr": "198.19.77.13"}


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    project = fleet_project(tmp_path_factory.mktemp("deploy"), ADDRESSES, "outpost-t1")
    inv = inventory.load(project / "inventory.toml")
    assert {h.name: h.address for h in inv.hosts} == ADDRESSES
    request.addfinalizer(lambda: run_doit(project, "fleet:down", check=False))
    return project, inv, fleet.from_inventory(inv)


def health(inv, host):
    """The app's /_health through the host's nginx over HTTPS, trusting only the site's CA."""
    status, _, body = steps.site_request(inv, host, "/_health")
    assert status == 200, (host.name, status, body)
    return json.loads(body)


def connections(hosts_fleet):
    """SSH logins each host's sshd has logged: counted on the host side, not from doit."""
    counts = {}
    for name in HOSTS:
        log = hosts_fleet.ssh_log(name)
        counts[name] = log.read_text().count("Accepted publickey") if log.exists() else 0
    return counts


def assert_all_serve(project, inv):
    digest = manifest.scan(project / "content").digest
    for host in inv.hosts:
        h = health(inv, host)
        assert h["version"] == template_version(project), host.name
        assert h["content"] == digest, host.name


def host_tasks(ran):
    """The per-host steps that ran (sync:au, ...), leaving out deploy:<host>, which does nothing."""
    return sorted(t for t in ran
                  if t.partition(":")[2] in HOSTS and not t.startswith("deploy:"))


def test_fresh_deploy_brings_every_host_up(site):
    project, inv, hosts_fleet = site
    proc = run_doit(project, "deploy")
    ran = ran_tasks(proc.stdout)
    for step in ("fleet:up", "keygen", "build:noarch", "index:x86_64"):
        assert step in ran
    for name in HOSTS:
        for step in ("sync", "upgrade", "content", "check"):
            assert f"{step}:{name}" in ran
    assert_all_serve(project, inv)
    for name in HOSTS:
        # Installed by apk (the stand-in) and run by dinit (the stand-in), on that host only.
        info = hosts_fleet.run_on(name, ["apk", "info", "-e", "-v", "linkedlist"])
        assert info.stdout.strip() == f"linkedlist-{template_version(project)}"
        status = hosts_fleet.run_on(name, ["dinitctl", "status", "linkedlist"])
        assert "STARTED" in status.stdout.upper(), status.stdout
        # The private signing key never leaves this machine: no file any host wrote holds it
        # (a host's writes are its overlay's upper layer), and its path is hidden on the host.
        key_line = inv.repository.signing_key.read_text().splitlines()[5]
        upper = inv.fleet.state / "hosts" / name / "upper"
        found = subprocess.run(["grep", "-rlF", key_line, str(upper)], capture_output=True,
                               text=True)
        assert found.returncode == 1 and found.stdout == "", found.stdout
        assert hosts_fleet.run_on(name, ["cat", str(inv.repository.signing_key)],
                                  check=False).returncode != 0


def test_second_deploy_touches_no_host(site):
    project, inv, hosts_fleet = site
    before = connections(hosts_fleet)
    proc = run_doit(project, "deploy")
    # Only the read-only HTTP check may run.
    assert [t for t in host_tasks(ran_tasks(proc.stdout)) if not t.startswith("check:")] == []
    assert [t for t in ran_tasks(proc.stdout) if t.partition(":")[2] not in HOSTS] == []
    assert connections(hosts_fleet) == before


def test_content_edit_pushes_content_only(site):
    project, inv, hosts_fleet = site
    entry = sorted((project / "content/entries").glob("*.txt"))[0]
    entry.write_text(entry.read_text() + "\nOne more line, pushed by the test.\n")
    proc = run_doit(project, "deploy")
    assert host_tasks(ran_tasks(proc.stdout)) == sorted(
        [f"content:{h}" for h in HOSTS] + [f"check:{h}" for h in HOSTS])
    assert_all_serve(project, inv)


def bump_app(project):
    app = project / "cports-overlay/user/linkedlist/files/linkedlistd"
    app.write_text(app.read_text() + "\n# changed by the test\n")
    template = project / "cports-overlay/user/linkedlist/template.py"
    template.write_text(re.sub(r"^pkgrel = (\d+)", lambda m: f"pkgrel = {int(m.group(1)) + 1}",
                               template.read_text(), flags=re.M))


def test_app_change_upgrades_and_restarts_every_host(site):
    project, inv, hosts_fleet = site
    old_version = template_version(project)
    pids = {name: hosts_fleet.run_on(name, ["dinitctl", "status", "linkedlist"]).stdout
            for name in HOSTS}
    bump_app(project)
    proc = run_doit(project, "deploy")
    ran = ran_tasks(proc.stdout)
    assert "build:noarch" in ran and "index:x86_64" in ran
    assert host_tasks(ran) == sorted(f"{step}:{h}" for h in HOSTS
                                     for step in ("sync", "upgrade", "check"))
    assert template_version(project) != old_version
    for name in HOSTS:
        assert f"{name}: linkedlist {template_version(project)} installed" in proc.stdout
        # Restarted: dinit reports another process.
        assert hosts_fleet.run_on(name, ["dinitctl", "status", "linkedlist"]).stdout != pids[name]
    assert_all_serve(project, inv)


def test_host_stopped_mid_deploy_fails_alone_and_rerun_finishes(site):
    import sys

    project, inv, hosts_fleet = site
    bump_app(project)
    entry = sorted((project / "content/entries").glob("*.txt"))[-1]
    entry.write_text(entry.read_text() + "\nAnother line.\n")
    before = connections(hosts_fleet)["ny"]
    deploy = subprocess.Popen([sys.executable, "-m", "doit", "deploy"], cwd=project,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Stop ny as soon as the deploy has logged in to it (its sync step has begun).
    deadline = time.monotonic() + 120
    while connections(hosts_fleet)["ny"] == before and deploy.poll() is None:
        assert time.monotonic() < deadline, "the deploy never reached ny"
        time.sleep(0.02)
    hosts_fleet.stop_host("ny")
    output, _ = deploy.communicate(timeout=300)
    assert deploy.returncode != 0, output
    failed = re.findall(r"TaskFailed - taskid:(\S+)", output)
    assert failed and all(t.endswith(":ny") for t in failed), output
    assert re.search(r"host ny|ny \(", output), output
    # The other hosts finished.
    for host in inv.hosts:
        if host.name != "ny":
            assert health(inv, host)["version"] == template_version(project)

    # Bring ny back (deploy does it: fleet:up), run again: only ny's pending steps run.
    proc = run_doit(project, "deploy")
    ran = host_tasks(ran_tasks(proc.stdout))
    assert [t for t in ran if not t.startswith("check:") and not t.endswith(":ny")] == [], ran
    assert "upgrade:ny" in ran
    assert_all_serve(project, inv)


def test_changed_host_key_is_refused_and_nothing_sent(site):
    project, inv, hosts_fleet = site
    entry = sorted((project / "content/entries").glob("*.txt"))[0]
    entry.write_text(entry.read_text() + "\nA change for the key test.\n")
    hosts_fleet.rotate_host_key("fr")
    log = hosts_fleet.ssh_log("fr")
    before = log.read_text()
    proc = run_doit(project, "deploy", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert re.search(r"host key for fr \(198\.19\.77\.13\)", out), out
    failed = re.findall(r"TaskFailed - taskid:(\S+)", out)
    assert failed == ["content:fr"], out
    # fr's sshd saw no login: nothing was sent to it.
    assert log.read_text().count("Accepted publickey") == before.count("Accepted publickey")
