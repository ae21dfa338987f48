"""Safe rollouts on a real local fleet: canary first and health-gated, then the other two hosts
at once (batch_size = 2), a failed host put back, convergence after a fix, the project lock,
rollback, Ctrl-C and SIGKILL mid-push.

One three-host fleet for the module; the tests run in order and each leaves it deployed."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from helpers import (fleet_project, ran_tasks, run_doit, stop_fleet_after, template_version,
                     wait_for)
from outpost import depfile, fleet, hoststate, inventory, manifest, probe

HOSTS = ("au", "fr", "ny")
ADDRESSES = {"au": "198.19.79.11", "ny": "198.19.79.12", "fr": "198.19.79.13"}
APP = "cports-overlay/user/linkedlist/files/linkedlistd"
TEMPLATE = "cports-overlay/user/linkedlist/template.py"
BROKEN = "linkedlistd: broken on purpose by the test, exiting at start-up"
ORIGINAL = {}  # the app's files before the test broke them: put back to revert


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    project = fleet_project(tmp_path_factory.mktemp("rollout"), ADDRESSES, "outpost-t4")
    # After the canary, ny and fr go at once: real hosts upgrade and roll back side by side
    # (tests/test_batches.py proves the order of the batches on nine stand-in hosts).
    with (project / "inventory.toml").open("a") as file:
        file.write("\n[rollout]\nbatch_size = 2\n")
    inv = inventory.load(project / "inventory.toml")
    stop_fleet_after(request, project)
    run_doit(project, "deploy")
    return project, inv, fleet.from_inventory(inv)


def served_version(inv, name):
    status, _, body = probe.site_request(inv, inv.host(name), "/_health")
    assert status == 200, (name, status)
    return re.search(r'"version": "([^"]+)"', body.decode()).group(1)


def bump(project, broken=False, by=1):
    """pkgrel + by of the app; broken: its daemon exits at start-up."""
    app = project / APP
    text = app.read_text()
    text = text.replace(f"\n    raise SystemExit({BROKEN!r})\n", "\n")
    if broken:
        text = text.replace("\ndef main():\n", f"\ndef main():\n    raise SystemExit({BROKEN!r})\n")
    app.write_text(text + f"\n# bumped by the test at {time.time()}\n")
    template = project / TEMPLATE
    template.write_text(re.sub(r"^pkgrel = (\d+)", lambda m: f"pkgrel = {int(m.group(1)) + by}",
                               template.read_text(), flags=re.M))
    return template_version(project)


class Poller(threading.Thread):
    """GET /_health through one host's nginx until stopped (at most `limit` requests),
    counting the requests that failed."""

    def __init__(self, inv, name, limit=5000):
        super().__init__(daemon=True)
        self.inv, self.name, self.limit = inv, name, limit
        self.ok = self.failed = 0
        self.errors = []
        self.stop = threading.Event()

    def run(self):
        for _ in range(self.limit):
            if self.stop.is_set():
                return
            try:
                status, _, _ = probe.site_request(self.inv, self.inv.host(self.name), "/_health",
                                                  timeout=3)
                if status == 200:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(f"HTTP {status}")
            except OSError as error:
                self.failed += 1
                self.errors.append(str(error))
            time.sleep(0.02)


def service_status(hosts_fleet, name):
    return hosts_fleet.run_on(name, ["dinitctl", "status", "linkedlist"]).stdout


def test_after_the_canary_the_other_hosts_go_in_one_batch(site):
    project, _, _ = site
    for name in ("ny", "fr"):
        info = run_doit(project, "info", f"upgrade:{name}").stdout
        waits = info[info.index("task_dep"):].split()
        assert f"Upgrade {name} (batch 1)" in info, info
        assert [w for w in waits if w.startswith(("sync:", "upgrade:"))] == [
            f"sync:{name}", "upgrade:au"], info


def test_a_daemon_that_exits_at_start_up_touches_only_the_canary_and_it_goes_back(site):
    project, inv, hosts_fleet = site
    old = template_version(project)
    others = [n for n in HOSTS if n != "au"]  # au is the first host: the canary by default
    before = {n: service_status(hosts_fleet, n) for n in others}
    ORIGINAL.update({project / APP: (project / APP).read_text(),
                     project / TEMPLATE: (project / TEMPLATE).read_text()})
    pollers = [Poller(inv, n) for n in others]
    for poller in pollers:
        poller.start()
    try:
        new = bump(project, broken=True)
        proc = run_doit(project, "deploy", check=False)
    finally:
        for poller in pollers:
            poller.stop.set()
            poller.join()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert (f"host au: linkedlist {new} failed the health gate (the health path does not "
            f"answer") in out, out
    assert f"it is back on {old}" in out, out
    assert BROKEN in out, out  # the service's own log line
    ran = ran_tasks(proc.stdout)
    assert "upgrade:au" in ran and not any(f"upgrade:{n}" in ran for n in others), ran
    assert served_version(inv, "au") == old
    for poller in pollers:
        assert poller.ok > 0 and poller.failed == 0, (poller.name, poller.errors[:3])
    for name in others:
        assert served_version(inv, name) == old
        assert service_status(hosts_fleet, name) == before[name]  # not even restarted


def test_reverting_the_template_converges_with_no_other_command(site):
    project, inv, _ = site
    for path, text in ORIGINAL.items():
        path.write_text(text)
    proc = run_doit(project, "deploy")
    # Every host already runs the reverted version (au went back): an upgrade that runs
    # (doit forgets the steps of a failed run) installs and restarts nothing, and the newer,
    # broken package left in the repository is never picked (exact versions).
    version = template_version(project)
    for task in ran_tasks(proc.stdout):
        if task.startswith("upgrade:"):
            name = task.partition(":")[2]
            assert f"{name}: linkedlist {version} passed the health gate (unchanged)" \
                in proc.stdout
    for name in HOSTS:
        assert served_version(inv, name) == version


def test_fixing_the_version_converges_with_no_other_command(site):
    project, inv, _ = site
    # A fix is a new version: the broken one's number stays taken (the repository never
    # holds two packages with one name and version).
    new = bump(project, by=2)
    proc = run_doit(project, "deploy")
    for name in HOSTS:
        assert f"{name}: linkedlist {new} passed the health gate" in proc.stdout
        assert served_version(inv, name) == new


def test_rollback_returns_every_host_to_the_previous_version_and_holds(site):
    project, inv, _ = site
    current = template_version(project)
    previous = hoststate.history(inv, inv.host("ny"))["linkedlist"][-2]
    proc = run_doit(project, "rollback:app")
    for name in HOSTS:
        assert f"{name}: linkedlist {previous} passed the health gate" in proc.stdout
        assert served_version(inv, name) == previous
    # The next deploy keeps the rollback: it upgrades nothing and checks the held version.
    again = run_doit(project, "deploy")
    assert not [t for t in ran_tasks(again.stdout) if t.startswith("upgrade:")]
    assert f"held at {previous}" in again.stdout + again.stderr
    # A new version ends the hold: it rolls out, canary first.
    new = bump(project)
    assert new != current
    run_doit(project, "deploy")
    for name in HOSTS:
        assert served_version(inv, name) == new


def change_content(project, tag):
    entry = sorted((project / "content/entries").glob("*.txt"))[0]
    entry.write_text(entry.read_text() + f"\nA change: {tag}.\n")


def doit_proc(project, *args):
    return subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_at_once_one_works_the_other_fails_at_once_with_the_lock(site):
    project, inv, _ = site
    for attempt in range(5):
        change_content(project, f"lock attempt {attempt}")
        first, second = doit_proc(project, "deploy"), doit_proc(project, "deploy")
        results = [(p, *p.communicate(timeout=300)) for p in (first, second)]
        winners = [r for r in results if r[0].returncode == 0]
        losers = [r for r in results if r[0].returncode != 0]
        assert len(winners) == 1 and len(losers) == 1, [(r[0].returncode, r[2][-500:])
                                                        for r in results]
        loser, winner = losers[0], winners[0]
        message = [line for line in loser[2].splitlines() if line.strip()]
        assert message[-1].startswith("outpost: another Outpost run holds the project lock"), \
            loser[2]
        assert f"process {winner[0].pid}" in message[-1]
        assert "Traceback" not in loser[2]
        depfile.check(project / depfile.NAME)  # never damaged
    for name in HOSTS:
        assert served_version(inv, name) == template_version(project)


def big_content_change(project, tag):
    folder = project / "content/static/blobs"
    folder.mkdir(exist_ok=True)
    for n in range(20):
        (folder / f"{tag}-{n}.bin").write_bytes(os.urandom(1 << 20))


def pushing(hosts_fleet) -> list[str]:
    """The hosts where a content push is unpacking (the push script's tar, as deploy): the
    push runs on a channel of the run's SSH connection, so the host is where it shows."""
    return [name for name in HOSTS
            if hosts_fleet.run_on(name, ["pgrep", "-u", "deploy", "-x", "tar"],
                                  capture_output=True).returncode == 0]


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_an_interrupt_mid_content_push_leaves_a_run_that_converges(site, how):
    project, inv, hosts_fleet = site
    big_content_change(project, how)
    doit = doit_proc(project, "deploy")
    wait_for(lambda: pushing(hosts_fleet), "a push of the content", timeout=120)
    os.kill(doit.pid, getattr(signal, how))
    out, err = doit.communicate(timeout=60)
    if how == "SIGINT":
        assert doit.returncode == 130, (out, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("outpost: interrupted"), err
        assert "Traceback" not in out + err
        # Nothing goes on behind the run's back: its connections closed, the pushes ended.
        wait_for(lambda: not pushing(hosts_fleet), "the pushes on the hosts to end", 10)
    else:
        assert doit.returncode == -signal.SIGKILL
    proc = run_doit(project, "deploy")
    assert "content:" in proc.stdout
    digest = manifest.scan(project / "content").digest
    for name in HOSTS:
        status, _, body = probe.site_request(inv, inv.host(name), "/_health")
        assert digest in body.decode(), name


def test_a_no_op_deploy_opens_no_ssh_connection(site):
    project, _, hosts_fleet = site
    run_doit(project, "deploy")
    before = {n: hosts_fleet.ssh_log(n).read_text().count("Accepted publickey") for n in HOSTS}
    proc = run_doit(project, "deploy")
    # check:<host> and certificate:<host> always run: they only read (HTTPS, a TLS handshake).
    assert [t for t in ran_tasks(proc.stdout)
            if not t.startswith(("check:", "certificate:"))] == []
    assert {n: hosts_fleet.ssh_log(n).read_text().count("Accepted publickey")
            for n in HOSTS} == before
