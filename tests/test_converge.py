"""A plain re-run brings every host back after a fault made for real (issue 18): a deploy
killed with SIGKILL while the canary's health gate fails (and the run after it, which forgets
every host's later steps), a canary that goes down mid-gate, a content push whose record this
machine could not keep, a nameserver and an app stopped on a host.

One three-host fleet for the module (its own addresses and bridge); the tests run in order
and each leaves it deployed and converged for the next."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from fleet_helpers import accepted_connections
from helpers import deployed_site, ran_tasks, run_doit, template_version, wait_for
from outpost import exchange, manifest, probe
from outpost.commands import hostjob

HOSTS = ("au", "fr", "ny")
ADDRESSES = {"au": "198.19.94.11", "ny": "198.19.94.12", "fr": "198.19.94.13"}
APP = "cports-overlay/user/linkedlist/files/linkedlistd"
TEMPLATE = "cports-overlay/user/linkedlist/template.py"
BROKEN = "linkedlistd: broken on purpose by the test, exiting at start-up"
JOBS = f"/home/deploy/{hostjob.JOBS}"
HEALTH_TIMEOUT = 10  # seconds a host has to pass the gate: short, so a failing gate ends soon
ORIGINAL = {}  # the app's files as deployed first: put back to revert


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    def short_gate(project):
        inventory = project / "inventory.toml"
        # A host stopped mid-step leaves doit's connection waiting for command_timeout.
        text = inventory.read_text().replace("command_timeout = 120", "command_timeout = 60")
        inventory.write_text(text + f"\n[rollout]\nhealth_timeout = {HEALTH_TIMEOUT}\n")
        for path in (APP, TEMPLATE):
            ORIGINAL[project / path] = (project / path).read_text()
    return deployed_site(tmp_path_factory, request, "converge", ADDRESSES, "outpost-e1",
                         short_gate)


def bump(project, by: int) -> str:
    """The app's pkgrel + by, its daemon exiting at start-up (a version that fails its gate)."""
    app = project / APP
    app.write_text(ORIGINAL[app].replace(
        "\ndef main():\n", f"\ndef main():\n    raise SystemExit({BROKEN!r})\n")
        + f"\n# bumped by the test at {time.time()}\n")
    template = project / TEMPLATE
    template.write_text(re.sub(r"^pkgrel = (\d+)", lambda m: f"pkgrel = {int(m.group(1)) + by}",
                               ORIGINAL[template], flags=re.M))
    return template_version(project)


def revert():
    for path, text in ORIGINAL.items():
        path.write_text(text)


def served_version(inv, name) -> str | None:
    health = probe.health(inv, inv.host(name))
    return health.get("version") if isinstance(health, dict) else None


def installed(hosts_fleet, name) -> str:
    return hosts_fleet.run_on(name, ["apk", "info", "-e", "-v", "linkedlist"]).stdout.strip() \
        .removeprefix("linkedlist-")


def gate_failing(hosts_fleet, inv, name, version) -> bool:
    """The host runs `version` and its health path fails: its gate is under way, failing."""
    return installed(hosts_fleet, name) == version and served_version(inv, name) is None


def doit_proc(project, *args):
    return subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def job_output(hosts_fleet, name) -> str:
    return hosts_fleet.run_on(name, ["sh", "-c", f"cat {JOBS}/upgrade.*.out 2>/dev/null"]).stdout


def releases(hosts_fleet, name) -> list[str]:
    return hosts_fleet.run_on(name, ["ls", "/srv/linkedlist/releases"]).stdout.split()


def record(project, name) -> str:
    path = project / "build/content/linkedlist/hosts" / f"{name}.json"
    return path.read_text() if path.exists() else ""


def test_a_deploy_killed_mid_gate_leaves_the_canary_to_go_back_by_itself(site):
    project, inv, hosts_fleet = site
    old = template_version(project)
    new = bump(project, by=1)
    doit = doit_proc(project, "deploy")
    try:
        wait_for(lambda: gate_failing(hosts_fleet, inv, "au", new), "au's gate to fail",
                 timeout=300)
        assert doit.poll() is None, doit.communicate()[0]
    finally:
        os.kill(doit.pid, signal.SIGKILL)  # doit alone: its SSH connection dies with it
        doit.communicate()
    logins = accepted_connections(hosts_fleet, "au")
    # Nobody is connected now: the host ends the gate and goes back by itself.
    wait_for(lambda: served_version(inv, "au") == old, f"au to serve {old} again by itself",
             timeout=HEALTH_TIMEOUT * 2 + 60)
    wait_for(lambda: "outpost: exit " in job_output(hosts_fleet, "au"), "au's job to end")
    report = job_output(hosts_fleet, "au")
    assert f"outpost: failed linkedlist {new}: the health path does not answer" in report
    assert f"outpost: back linkedlist {old}" in report
    assert accepted_connections(hosts_fleet, "au") == logins
    assert "State: STARTED" in hosts_fleet.run_on("au", ["dinitctl", "status", "linkedlist"]).stdout
    for name in ("fr", "ny"):  # the rollout never got past the canary
        assert installed(hosts_fleet, name) == old

    # A plain re-run: it says what the cut gate did, tries the version again (the template
    # still names it), and au goes back once more; no host is left on it.
    proc = run_doit(project, "deploy", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert (f"au: the gate of an interrupted run went on on the host, and it ended by itself: "
            f"linkedlist {new} failed the health gate (the health path does not answer") in out
    assert f"host au: linkedlist {new} failed the health gate" in out
    assert f"it is back on {old}" in out
    assert served_version(inv, "au") == old
    assert job_output(hosts_fleet, "au") == ""  # read, and removed
    # The template put back: the next run converges. doit forgot the steps after the failed
    # canary (a task whose task_dep failed loses its record), so they run again: each finds
    # its host as it should be. No upgrade restarts anything, no content is sent again.
    revert()
    proc = run_doit(project, "deploy")
    ran = ran_tasks(proc.stdout)
    for name in HOSTS:
        if f"upgrade:{name}" in ran:
            assert f"{name}: linkedlist {old} passed the health gate (unchanged)" in proc.stdout
        assert f"content:{name}" in ran
        assert re.search(rf"^{name}: linkedlist content \S+: the host serves it already; "
                         "nothing sent$", proc.stdout, re.M), proc.stdout
        assert not [f for f in releases(hosts_fleet, name) if "." in f], name  # no <id>.1
        assert served_version(inv, name) == old


def test_a_canary_that_went_down_mid_gate_is_taken_back_to_the_last_version_that_passed(site):
    project, inv, hosts_fleet = site
    old = template_version(project)
    new = bump(project, by=2)  # +1 is the first test's: a version number is never reused
    doit = doit_proc(project, "deploy")
    try:
        wait_for(lambda: gate_failing(hosts_fleet, inv, "au", new), "au's gate to fail",
                 timeout=300)
        hosts_fleet.stop_host("au")  # everything on it ends: the gate and its way back too
    finally:
        out = doit.communicate(timeout=300)[0]
    assert doit.returncode != 0, out
    # A plain re-run (deploy starts au again): au runs a version that never passed its gate,
    # and goes back to the last that did (build/rollout/au.json), not "what is installed".
    proc = run_doit(project, "deploy", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert ("au: the gate of an interrupted run went on on the host, and it ended by itself: "
            "it was cut short (the host went down, or the job was killed)") in out, out
    assert f"host au: linkedlist {new} failed the health gate" in out
    assert f"it is back on {old}" in out, out
    assert served_version(inv, "au") == old
    revert()
    run_doit(project, "deploy")
    for name in HOSTS:
        assert served_version(inv, name) == old


def test_a_push_whose_record_was_not_kept_is_not_sent_again(site):
    project, inv, hosts_fleet = site
    entry = sorted((project / "content/entries").glob("*.txt"))[0]
    entry.write_text(entry.read_text() + "\nA change whose record is not kept.\n")
    release = manifest.scan(project / "content")
    # au switches to the new release, but this machine cannot replace its record of au (an
    # immutable file: a disk that refuses the write), so the run fails after the switch.
    au_record = project / "build/content/linkedlist/hosts/au.json"
    subprocess.run(["chattr", "+i", str(au_record)], check=True)
    try:
        proc = run_doit(project, "deploy", check=False)
    finally:
        subprocess.run(["chattr", "-i", str(au_record)], check=True)
    assert proc.returncode != 0
    assert "TaskError - taskid:content:au" in proc.stdout + proc.stderr, proc.stdout
    assert release.release not in record(project, "au")
    assert probe.health(inv, inv.host("au"))["content"] == release.digest  # switched
    logins = accepted_connections(hosts_fleet, "au")
    proc = run_doit(project, "deploy")
    assert "content:au" in ran_tasks(proc.stdout)  # the failed step runs again
    assert re.search(r"^au: linkedlist content \S+: the host serves it already; nothing sent$",
                     proc.stdout, re.M), proc.stdout
    assert accepted_connections(hosts_fleet, "au") == logins  # not a byte, not a login
    assert release.release in record(project, "au")
    for name in HOSTS:
        assert probe.health(inv, inv.host(name))["content"] == release.digest
        assert not [f for f in releases(hosts_fleet, name) if "." in f], name  # no <id>.1


def test_a_stopped_nameserver_and_app_are_started_by_the_next_deploy(site):
    project, inv, hosts_fleet = site
    for service in ("gdnsd", "linkedlist"):
        result = hosts_fleet.run_on("au", ["dinitctl", "stop", service])
        assert result.returncode == 0, result.stderr
    wait_for(lambda: served_version(inv, "au") is None, "au's app to stop answering")
    proc = run_doit(project, "deploy")
    assert [t for t in ran_tasks(proc.stdout) if t.startswith("services:")] == ["services:au"]
    assert "au: linkedlist was not running (nginx answers HTTP 502 for it): started it" \
        in proc.stdout, proc.stdout
    assert "au: gdnsd was not running (port 53 refuses queries): started it" in proc.stdout
    for service in ("gdnsd", "linkedlist"):
        status = hosts_fleet.run_on("au", ["dinitctl", "status", service]).stdout
        assert "State: STARTED" in status, (service, status)
    assert served_version(inv, "au") == template_version(project)
    assert exchange.ask_nameserver(ADDRESSES["au"], inv.site.name, ["193.0.0.0/21"]) == {
        "193.0.0.0/21": [ADDRESSES["fr"]]}
    # All running again: the next deploy finds nothing to start, and opens no SSH connection.
    before = {name: accepted_connections(hosts_fleet, name) for name in HOSTS}
    proc = run_doit(project, "deploy")
    assert [t for t in ran_tasks(proc.stdout) if not t.startswith(("check:", "certificate:"))
            ] == []
    assert {name: accepted_connections(hosts_fleet, name) for name in HOSTS} == before
