"""Content releases on a real local fleet (three hosts), driven by real `doit` runs: a reader
during a 3,000-file change, a push killed in the middle, drift repaired, an edit that keeps
size and mtime, links out of content/, and rollback. The content is a generated tree of 2,000
entries in the app's format (tests/content_tree.py).

The tests share one fleet and run in order; each leaves it deployed for the next."""
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from content_tree import add_entries, edit_all, entry_path, make_tree
from fleet_helpers import ssh
from helpers import deployed_site, ran_tasks, run_doit, wait_for
from outpost import manifest, probe

HOSTS = ("au", "fr", "ny")
ADDRESSES = {"au": "198.19.83.11", "ny": "198.19.83.12", "fr": "198.19.83.13"}
CONTENT_DIR = "/srv/linkedlist"
ENTRIES = 2000


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    def generated_content(project):
        subprocess.run(["rm", "-rf", str(project / "content")], check=True)
        make_tree(project / "content", entries=ENTRIES)
    return deployed_site(tmp_path_factory, request, "content", ADDRESSES, "outpost-t3",
                         generated_content)


def health(inv, host):
    return probe.health(inv, host)


def digest(project) -> str:
    return manifest.scan(project / "content").digest


def logins(hosts_fleet) -> dict:
    return {name: hosts_fleet.ssh_log(name).read_text().count("Accepted publickey")
            for name in HOSTS}


def content_tasks(output) -> list[str]:
    return sorted(t for t in ran_tasks(output) if t.startswith("content:"))


def serves(inv, digest_wanted):
    return all(health(inv, host).get("content") == digest_wanted for host in inv.hosts)


def change_3000_files(project, tag):
    """Every one of the 2,000 entries edited, and 1,000 added (or, the second time, removed)."""
    edit_all(project / "content", tag)
    extra = [entry_path(project / "content", n) for n in range(ENTRIES, ENTRIES + 1000)]
    if extra[0].exists():
        for path in extra:
            path.unlink()
    else:
        add_entries(project / "content", ENTRIES, 1000)


def test_a_reader_during_a_3000_file_change_sees_only_whole_releases(site):
    project, inv, _ = site
    old = digest(project)
    assert serves(inv, old)
    change_3000_files(project, " (edited)")
    new = digest(project)
    ny = inv.host("ny")
    seen, failures, done = [], [], threading.Event()

    def read_continuously():
        for _ in range(100_000):  # bounded; the deploy ends it long before
            answer = health(inv, ny)
            if isinstance(answer, dict):
                seen.append(answer["content"])
            else:
                failures.append(answer)
            if done.is_set():
                return

    reader = threading.Thread(target=read_continuously)
    before = logins(site[2])
    reader.start()
    try:
        proc = run_doit(project, "deploy")
    finally:
        done.set()
        reader.join()
    assert content_tasks(proc.stdout) == [f"content:{h}" for h in HOSTS]
    after = logins(site[2])  # the files and the switch in one SSH login per host
    assert {name: after[name] - before[name] for name in HOSTS} == {h: 1 for h in HOSTS}
    mixed = [d for d in seen if d not in (old, new)]
    assert mixed == [] and failures == []
    assert seen[0] == old and seen[-1] == new  # the reader saw the switch happen
    assert serves(inv, new)


def test_a_push_killed_midway_leaves_the_old_release_whole_and_the_rerun_converges(site):
    project, inv, hosts_fleet = site
    old = digest(project)
    before = hosts_fleet.run_on("au", ["readlink", f"{CONTENT_DIR}/current"]).stdout
    change_3000_files(project, " (edited again)")
    deploy = subprocess.Popen([sys.executable, "-m", "doit", "deploy"], cwd=project,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        # Kill doit and its ssh as soon as au has begun to unpack the new release.
        wait_for(lambda: hosts_fleet.run_on(
            "au", ["test", "-d", f"{CONTENT_DIR}/releases/.incoming"]).returncode == 0,
            "the push to au to begin", timeout=120)
        os.killpg(deploy.pid, signal.SIGKILL)
    finally:
        deploy.wait()
    assert hosts_fleet.run_on("au", ["readlink", f"{CONTENT_DIR}/current"]).stdout == before
    assert health(inv, inv.host("au"))["content"] == old

    proc = run_doit(project, "deploy")
    assert "content:au" in content_tasks(proc.stdout)
    assert serves(inv, digest(project))
    assert hosts_fleet.run_on("au", ["test", "-e", f"{CONTENT_DIR}/releases/.incoming"]
                              ).returncode == 1


def test_files_changed_or_removed_on_a_host_are_repaired_by_the_next_deploy(site):
    project, inv, hosts_fleet = site
    good = digest(project)
    # In place: the file's inode is shared by the releases it is linked into.
    assert ssh(hosts_fleet, "au", f"echo tampered >> {CONTENT_DIR}/current/entries/"
                                  "entry-00001.txt").returncode == 0
    assert ssh(hosts_fleet, "ny", f"rm {CONTENT_DIR}/current/entries/entry-00002.txt"
               ).returncode == 0
    for name in ("au", "ny"):
        wait_for(lambda: health(inv, inv.host(name))["content"] != good, f"{name} to drift")
    before = logins(hosts_fleet)
    proc = run_doit(project, "deploy")
    assert content_tasks(proc.stdout) == ["content:au", "content:ny"]
    assert re.search(r"au: linkedlist content \S+: \d+ of \d+ files sent \(all\)", proc.stdout)
    assert serves(inv, good)
    after = logins(hosts_fleet)
    assert {name: after[name] - before[name] for name in HOSTS} == {"au": 1, "fr": 0, "ny": 1}
    # A healthy no-op after the repair: nothing to push, no SSH login.
    proc = run_doit(project, "deploy")
    assert content_tasks(proc.stdout) == [] and logins(hosts_fleet) == after


def test_an_edit_on_a_host_that_keeps_the_size_and_mtime_is_seen_and_repaired(site):
    project, inv, hosts_fleet = site
    good = digest(project)
    path = f"{CONTENT_DIR}/current/entries/entry-00003.txt"
    # Bytes written in place, the size kept and the mtime put back (as by `touch -r`): the
    # inode, size and mtime are what they were, only the ctime moved.
    edit = ssh(hosts_fleet, "fr", f"stat -c '%s %.9Y %i' {path} && cp -p {path} /tmp/ref && "
                                  f"printf XXXX | dd of={path} bs=1 seek=7 conv=notrunc "
                                  f"2>/dev/null && touch -r /tmp/ref {path} && "
                                  f"stat -c '%s %.9Y %i' {path} && head -c 11 {path}")
    assert edit.returncode == 0, edit.stderr
    before, after, start = edit.stdout.splitlines()
    assert before == after and start == "title: XXXX"
    fr = inv.host("fr")
    # The app reads what it serves again, not only after a restart...
    wait_for(lambda: health(inv, fr)["content"] != good, "fr's app to see the edit")
    status, _, body = probe.site_request(inv, fr, "/entries/entry-00003/")
    assert status == 200 and b"XXXXrated entry 3" in body
    # ...so the drift probe sees it, and the repair links nothing to the edited file.
    proc = run_doit(project, "deploy")
    assert content_tasks(proc.stdout) == ["content:fr"]
    assert re.search(r"fr: linkedlist content \S+: \d+ of \d+ files sent \(all\)", proc.stdout)
    assert serves(inv, good)


def test_an_edit_that_keeps_the_size_and_mtime_is_deployed(site):
    project, inv, _ = site
    entry = entry_path(project / "content", 7)
    text = entry.read_text()
    before = entry.stat()
    edited = text.replace("title: Generated entry 7", "title: Generated entry ?", 1)
    assert len(edited) == len(text) and edited != text
    while entry.stat().st_ctime_ns == before.st_ctime_ns:
        entry.write_text(edited)
        os.utime(entry, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (entry.stat().st_size, entry.stat().st_mtime_ns) == (before.st_size,
                                                                 before.st_mtime_ns)
    proc = run_doit(project, "deploy")
    assert content_tasks(proc.stdout) == [f"content:{h}" for h in HOSTS]
    assert "1 of 2040 files sent" in proc.stdout
    assert serves(inv, digest(project))
    status, _, body = probe.site_request(inv, inv.host("fr"), "/entries/entry-00007/")
    assert status == 200 and b"Generated entry ?" in body


def test_links_out_of_content_are_refused_before_any_host_is_touched(site, tmp_path):
    project, inv, hosts_fleet = site
    (tmp_path / "outside.txt").write_text("not for the web")
    links = [project / "content/static/passwd.txt", project / "content/entries/outside.txt"]
    links[0].symlink_to("/etc/passwd")
    links[1].symlink_to(tmp_path / "outside.txt")
    before = logins(hosts_fleet)
    try:
        proc = run_doit(project, "deploy", check=False)
    finally:
        for link in links:
            link.unlink()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "cannot deploy (nothing was pushed)" in out
    assert "static/passwd.txt -> /etc/passwd (it points outside" in out
    assert f"entries/outside.txt -> {tmp_path}/outside.txt (it points outside" in out
    assert "Traceback" not in out and ran_tasks(proc.stdout) == []
    assert logins(hosts_fleet) == before


def test_the_app_serves_no_link_even_one_that_reached_the_host(site):
    project, inv, hosts_fleet = site
    fr = inv.host("fr")
    # A release made on the host by hand, with a link to /etc/passwd, switched in.
    made = ssh(hosts_fleet, "fr", f"cd {CONTENT_DIR} && cp -al current/. releases/by-hand && "
                                  "ln -s /etc/passwd releases/by-hand/static/passwd.txt && "
                                  "ln -sfn releases/by-hand current")
    assert made.returncode == 0, made.stderr
    wait_for(lambda: health(inv, fr)["release"] == "by-hand", "fr to serve the hand-made release")
    assert probe.site_request(inv, fr, "/static/passwd.txt")[0] == 404
    assert probe.site_request(inv, fr, "/static/style.css")[0] == 200
    assert health(inv, fr)["content"] == digest(project)  # the link is not part of it
    log = hosts_fleet.run_on("fr", ["cat", "/var/log/linkedlist.log"]).stdout
    assert f"not serving {CONTENT_DIR}/releases/by-hand/static/passwd.txt: a symlink" in log
    proc = run_doit(project, "deploy")  # fr serves another release than it was given
    assert content_tasks(proc.stdout) == ["content:fr"]
    assert health(inv, fr)["release"] != "by-hand"


def test_rollback_switches_every_host_back_and_the_check_sees_it(site):
    project, inv, hosts_fleet = site
    previous = {h.name: health(inv, h) for h in inv.hosts}
    (project / "content/static/style.css").write_text("body { color: navy; }\n")
    run_doit(project, "deploy")
    assert serves(inv, digest(project))
    before = logins(hosts_fleet)

    proc = run_doit(project, "rollback:content")
    assert ran_tasks(proc.stdout) == [f"rollback:content:{h}" for h in HOSTS]
    for host in inv.hosts:
        now = health(inv, host)
        assert (now["release"], now["content"]) == (previous[host.name]["release"],
                                                    previous[host.name]["content"])
        assert f"{host.name}: linkedlist content rolled back from" in proc.stdout
    after = logins(hosts_fleet)
    assert {name: after[name] - before[name] for name in HOSTS} == {h: 1 for h in HOSTS}

    check = run_doit(project, "check")
    table = check.stdout[check.stdout.index("host "):].splitlines()
    assert table[0].split()[:5] == ["host", "region", "status", "version", "release"]
    for line in table[1:4]:
        name, _, status, _, release = line.split()[:5]
        assert (status, release) == ("ok", previous[name]["release"])

    # The rollback holds until content/ changes; then the next deploy pushes it.
    assert content_tasks(run_doit(project, "deploy").stdout) == []
    (project / "content/static/style.css").write_text("body { color: teal; }\n")
    proc = run_doit(project, "deploy")
    assert content_tasks(proc.stdout) == [f"content:{h}" for h in HOSTS]
    assert serves(inv, digest(project))


def test_each_host_keeps_the_last_releases_the_inventory_says(site):
    project, inv, hosts_fleet = site
    text = (project / "inventory.toml").read_text()
    (project / "inventory.toml").write_text(
        text.replace("port = 8080\n", "port = 8080\nkeep_releases = 2\n"))
    (project / "content/README.md").write_text("a change for the prune\n")
    run_doit(project, "deploy")
    for name in HOSTS:
        listed = ssh(hosts_fleet, name, f"ls {CONTENT_DIR}/releases").stdout.split()
        history = ssh(hosts_fleet, name, f"cat {CONTENT_DIR}/history").stdout.split()
        assert len(history) == 2 and sorted(listed) == sorted(history)
        assert health(inv, inv.host(name))["release"] == history[-1]
