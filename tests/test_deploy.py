"""`doit deploy` end to end against a real local fleet: three hosts, each a real sshd in its own
namespaces, running the apk and dinit stand-ins. Real doit runs in a subprocess.

The tests share one fleet and run in order; each leaves the fleet deployed for the next."""
import json
import re
import subprocess
import time

import pytest

from fleet_helpers import https_connections
from helpers import fleet_project, ran_tasks, run_doit, template_version
from outpost import fleet, inventory, manifest, probe

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
    status, _, body = probe.site_request(inv, host, "/_health")
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
    """The per-host steps that ran (sync:au, ...), leaving out deploy:<host>, which does
    nothing, and certificate:<host>, which always runs: a TLS handshake that finds the host
    serving the current certificate (a push would show as an SSH login on the host)."""
    return sorted(t for t in ran if t.partition(":")[2] in HOSTS
                  and not t.startswith(("deploy:", "certificate:")))


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
    https_before = {name: https_connections(hosts_fleet, name) for name in HOSTS}
    proc = run_doit(project, "deploy")
    # Only the read-only HTTP check may run.
    assert [t for t in host_tasks(ran_tasks(proc.stdout)) if not t.startswith("check:")] == []
    assert [t for t in ran_tasks(proc.stdout) if t.partition(":")[2] not in HOSTS] == []
    assert connections(hosts_fleet) == before
    # One TLS handshake per host: the drift probe, certificate:<host> and the check share it.
    assert {name: https_connections(hosts_fleet, name) - https_before[name]
            for name in HOSTS} == {name: 1 for name in HOSTS}


def test_content_edit_pushes_content_only(site):
    project, inv, hosts_fleet = site
    entry = sorted((project / "content/entries").glob("*.txt"))[0]
    entry.write_text(entry.read_text() + "\nOne more line, pushed by the test.\n")
    before = connections(hosts_fleet)
    proc = run_doit(project, "deploy")
    # login:<host> starts each host's login at the run's start; content:<host> pushes on it.
    assert host_tasks(ran_tasks(proc.stdout)) == sorted(
        [f"{step}:{h}" for step in ("login", "content", "check") for h in HOSTS])
    assert_all_serve(project, inv)
    after = connections(hosts_fleet)
    assert {name: after[name] - before[name] for name in HOSTS} == {name: 1 for name in HOSTS}


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
    before = connections(hosts_fleet)
    proc = run_doit(project, "deploy")
    after = connections(hosts_fleet)
    # One login per host, shared by sync's bundle and rsync and the upgrade.
    assert {name: after[name] - before[name] for name in HOSTS} == {name: 1 for name in HOSTS}
    ran = ran_tasks(proc.stdout)
    assert "build:noarch" in ran and "index:x86_64" in ran
    assert host_tasks(ran) == sorted(f"{step}:{h}" for h in HOSTS
                                     for step in ("sync", "upgrade", "check"))
    assert template_version(project) != old_version
    for name in HOSTS:
        assert (f"{name}: linkedlist {template_version(project)} passed the health gate"
                in proc.stdout)
        # Restarted: dinit reports another process.
        assert hosts_fleet.run_on(name, ["dinitctl", "status", "linkedlist"]).stdout != pids[name]
    assert_all_serve(project, inv)


def change_service_file(project, old, new):
    service = project / "cports-overlay/user/linkedlist/files/linkedlist"
    assert old in service.read_text()
    service.write_text(service.read_text().replace(old, new))
    bump_app(project)


def test_a_changed_service_file_is_live_after_the_upgrade(site):
    # dinit reads a service file once, so the upgrade reloads it before the restart; without
    # the reload the app would still write to the old logfile.
    project, inv, hosts_fleet = site
    change_service_file(project, "logfile = /var/log/linkedlist.log",
                        "logfile = /var/log/linkedlistd.log")
    run_doit(project, "deploy")
    for name in HOSTS:
        log = hosts_fleet.run_on(name, ["cat", "/var/log/linkedlistd.log"])
        assert log.returncode == 0, (name, log.stderr)
        assert f"linkedlistd {template_version(project)} serving" in log.stdout, name
    assert_all_serve(project, inv)


def test_a_service_dinit_cannot_load_fails_the_canary_with_dinits_reason_and_it_goes_back(site):
    # dinitctl says only "could not reload service"; the step shows dinit's log. The canary
    # fails as a failed health gate does: it goes back, and no other host is touched.
    project, inv, hosts_fleet = site
    old = template_version(project)
    others = [n for n in HOSTS if n != "au"]  # au is the first host: the canary by default
    before = {n: hosts_fleet.run_on(n, ["dinitctl", "status", "linkedlist"]).stdout
              for n in others}
    change_service_file(project, "run-as = _linkedlist", "run-as = _nosuchuser")
    new = template_version(project)
    try:
        proc = run_doit(project, "deploy", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert re.findall(r"TaskFailed - taskid:(\S+)", out) == ["upgrade:au"], out
        assert (f"host au: linkedlist {new} was not loaded (dinit refused its new service "
                "file: dinitctl: could not reload service; service in wrong state, incompatible "
                f"change, or bad service description.); it is back on {old}") in out, out
        assert "dinit logged (/var/log/dinit.log):" in out, out
        assert 'specified user "_nosuchuser" does not exist in system database.' in out, out
        # au kept the old description through the refusal, then went back: it serves the old
        # version. The others were not even restarted.
        assert health(inv, inv.host("au"))["version"] == old
        for name in others:
            assert health(inv, inv.host(name))["version"] == old
            assert (hosts_fleet.run_on(name, ["dinitctl", "status", "linkedlist"]).stdout
                    == before[name])
    finally:
        # Back to a good service file (a new version): the next deploy reloads and restarts it.
        # (A host that rebooted with the refused file enabled would not boot: dinit stops at
        # its load error.)
        change_service_file(project, "run-as = _nosuchuser", "run-as = _linkedlist")
        run_doit(project, "deploy")
    assert_all_serve(project, inv)


def test_host_stopped_mid_deploy_fails_alone_and_rerun_finishes(site):
    import sys

    project, inv, hosts_fleet = site
    old_version = template_version(project)
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
    # The rollout goes au (the canary), ny, fr: au finished; fr, after the host that failed,
    # was not touched (the rollout stops at a failed host) and still serves the old version.
    assert health(inv, inv.host("au"))["version"] == template_version(project)
    assert health(inv, inv.host("fr"))["version"] == old_version
    assert "upgrade:fr" not in ran_tasks(output)

    # Bring ny back (deploy does it: fleet:up), run again: only ny's pending steps run.
    proc = run_doit(project, "deploy")
    ran = host_tasks(ran_tasks(proc.stdout))
    assert [t for t in ran if not t.startswith("check:") and not t.endswith((":ny", ":fr"))
            ] == [], ran
    assert "upgrade:ny" in ran and "upgrade:fr" in ran
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
