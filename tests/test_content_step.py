"""outpost.steps.content: the push and rollback of the content step, what it records about each host,
and when content:<host> is up to date. The "host" is a folder on this machine: SSH is replaced
by running the same stdin (script, mark, payload) through the same remote shell command with
/bin/sh here (LocalHost), so the real scripts, tar and mv do the work (the fleet tests add real SSH)."""
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from outpost import manifest, remote
from outpost.steps import content
from outpost.inventory import Host, Package, Ssh


class LocalHost:
    """remote.run_script's stand-in for these tests: the same stdin (script, mark, payload)
    through the same remote shell command, run here; logs each round trip."""
    trips: list = []

    @staticmethod
    def run_script(host, script, ssh, step=None, ok_exits=(0,), payload=None):
        LocalHost.trips.append((host.name, step))
        assert payload is not None or step == "rollback"
        stdin = script.encode() + f"\n{remote.PAYLOAD_MARK}\n".encode() + (payload or b"")
        proc = subprocess.run(["sh", "-c", remote.RUN_STDIN_THEN_PAYLOAD], input=stdin,
                              capture_output=True, timeout=60)
        if proc.returncode not in ok_exits:
            raise remote.ScriptFailed(f"{step} failed: {proc.stderr.decode()}",
                                      proc.returncode)
        return remote.Result(proc.stdout.decode(), proc.stderr.decode(), proc.returncode)


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.setattr(remote, "run_script", LocalHost.run_script)
    monkeypatch.setattr(remote, "connect_soon", lambda host, ssh, step=None: None)
    LocalHost.trips = []
    for cache in (content._scanned, content._payloads, content._parsed):
        cache.clear()
    tree = tmp_path / "content"
    (tree / "entries").mkdir(parents=True)
    for n in range(4):
        (tree / "entries" / f"e{n}.txt").write_text(f"entry {n}\n")
    (tmp_path / "host").mkdir()
    package = Package(name="linkedlist", category="user", service="linkedlist", content=tree,
                      content_dir=str(tmp_path / "host"), port=8080, root=tmp_path,
                      keep_releases=3)
    host = Host(name="au", address="198.18.0.11", user="deploy", port=22, arch="x86_64",
                region="oceania", groups=())
    ssh = Ssh(known_hosts=tmp_path / "known_hosts", identity=tmp_path / "key",
              connect_timeout=5, command_timeout=60)
    inventory = SimpleNamespace(root=tmp_path, packages=(package,), hosts=(host,), ssh=ssh)
    said = []
    return SimpleNamespace(inventory=inventory, package=package, host=host, tree=tree,
                           dir=tmp_path / "host", said=said, say=said.append)


def change(site, text):
    """Edit one entry and start a new run (the manifest is made once per run)."""
    (site.tree / "entries" / "e1.txt").write_text(text)
    content._scanned.clear()


def served_now(site) -> str:
    return manifest.scan(site.dir / "current").release


def test_a_push_sends_what_changed_and_records_what_the_host_serves(site):
    inv, host, package = site.inventory, site.host, site.package
    assert not content.is_current(inv, host)
    content.push(inv, host, site.say)
    first = content.served(inv, package, host)
    release = content.manifest(inv, package)
    assert (first.release, first.digest, first.kept) == (release.release, release.digest,
                                                         (first.folder,))
    assert site.said == [f"au: linkedlist content {first.folder}: 4 of 4 files sent (all); "
                         "keeps 1 releases"]
    assert served_now(site) == release.release and content.is_current(inv, host)

    change(site, "entry 1, edited\n")
    assert not content.is_current(inv, host)
    content.push(inv, host, site.say)
    second = content.served(inv, package, host)
    assert site.said[-1] == (f"au: linkedlist content {second.folder}: 1 of 4 files sent; "
                             "keeps 2 releases")
    assert second.kept == (second.folder, first.folder)
    assert served_now(site) == content.manifest(inv, package).release
    assert LocalHost.trips == [("au", "content")] * 2


def test_a_base_gone_from_the_host_is_sent_whole_in_a_second_round_trip(site):
    inv, host, package = site.inventory, site.host, site.package
    content.push(inv, host, site.say)
    folder = content.served(inv, package, host).folder
    subprocess.run(["rm", "-rf", str(site.dir / "releases" / folder)], check=True)
    change(site, "entry 1, edited\n")
    content.push(inv, host, site.say)
    assert site.said[-1].endswith("4 of 4 files sent (all); keeps 1 releases")
    assert LocalHost.trips == [("au", "content")] * 3
    assert served_now(site) == content.manifest(inv, package).release


def test_a_drifted_host_gets_every_file_again_in_a_new_folder(site):
    inv, host, package = site.inventory, site.host, site.package
    content.push(inv, host, site.say)
    before = content.served(inv, package, host)
    with (site.dir / "current" / "entries" / "e2.txt").open("a") as f:
        f.write("edited on the host\n")  # in place: the inode every linked release shares
    content.mark_drift(inv, package, host, "release x with content y")
    assert not content.is_current(inv, host)
    content.push(inv, host, site.say)
    after = content.served(inv, package, host)
    assert after.folder == f"{before.folder}.1" and after.drift is None
    assert site.said[-1].startswith(f"au: linkedlist content {after.folder}: 4 of 4 files sent")
    assert (site.dir / "current" / "entries" / "e2.txt").read_text() == "entry 2\n"
    assert content.is_current(inv, host)


def test_a_push_whose_record_was_lost_after_the_switch_makes_no_new_folder(site):
    # A run killed after the host switched but before this machine wrote its record: the
    # record still names the release before. The next push finds `current` holding the
    # release: no new folder, no keep slot, and the record catches up.
    inv, host, package = site.inventory, site.host, site.package
    content.push(inv, host, site.say)
    record = content._record_path(inv, package, host)
    stale = record.read_text()
    change(site, "entry 1, edited\n")
    content.push(inv, host, site.say)
    pushed = content.served(inv, package, host)
    record.write_text(stale)
    content.push(inv, host, site.say)
    assert site.said[-1] == (f"au: linkedlist content {pushed.folder}: the host had it already; "
                             "nothing switched; keeps 2 releases")
    assert content.served(inv, package, host) == pushed
    assert sorted(p.name for p in (site.dir / "releases").iterdir()) == sorted(pushed.kept)


def test_a_release_the_host_is_confirmed_to_serve_is_not_sent_again(site):
    inv, host, package = site.inventory, site.host, site.package
    content.push(inv, host, site.say)
    pushed = content.served(inv, package, host)
    content.push(inv, host, site.say, confirmed={package.name: pushed.folder})
    assert site.said[-1] == (f"au: linkedlist content {pushed.folder}: the host serves it "
                             "already; nothing sent")
    assert LocalHost.trips == [("au", "content")]  # no second round trip
    assert content.served(inv, package, host) == pushed


def test_a_confirmed_release_whose_record_was_lost_is_recorded_without_a_round_trip(site):
    inv, host, package = site.inventory, site.host, site.package
    content.push(inv, host, site.say)
    first = content.served(inv, package, host)
    record = content._record_path(inv, package, host)
    stale = record.read_text()
    change(site, "entry 1, edited\n")
    content.push(inv, host, site.say)
    pushed = content.served(inv, package, host)
    record.write_text(stale)  # the run ended after the switch, before this record
    content.push(inv, host, site.say, confirmed={package.name: pushed.folder})
    assert LocalHost.trips == [("au", "content")] * 2
    now = content.served(inv, package, host)
    assert (now.release, now.folder, now.digest) == (pushed.release, pushed.folder,
                                                     pushed.digest)
    assert now.kept == (pushed.folder, first.folder) and content.is_current(inv, host)


def test_a_rollback_holds_until_content_changes(site):
    inv, host, package = site.inventory, site.host, site.package
    content.push(inv, host, site.say)
    first = content.served(inv, package, host)
    change(site, "entry 1, edited\n")
    content.push(inv, host, site.say)
    [(rolled, folder, digest)] = content.rollback(inv, host, site.say)
    assert (rolled, folder, digest) == (package, first.folder, first.digest)
    assert site.said[-1].startswith("au: linkedlist content rolled back from ")
    assert served_now(site) == first.release
    assert content.expected(inv, package, host) == (first.folder, first.digest)
    assert content.is_current(inv, host)  # content/ is as it was: deploy leaves the rollback
    change(site, "entry 1, edited again\n")
    assert not content.is_current(inv, host)


def test_manifests_are_kept_only_for_releases_a_host_keeps(site):
    inv, host, package = site.inventory, site.host, site.package
    for n in range(6):
        change(site, f"entry 1, edit {n}\n")
        content.push(inv, host, site.say)
    kept = content.served(inv, package, host).kept
    stored = sorted(p.name for p in (site.inventory.root / "build/content/linkedlist/manifests")
                    .iterdir())
    assert len(kept) == 3 and stored == sorted(kept)


def test_a_file_changed_after_the_scan_is_not_pushed(site):
    inv, host, package = site.inventory, site.host, site.package
    content.manifest(inv, package)
    (site.tree / "entries" / "e3.txt").write_text("changed behind the manifest's back\n")
    with pytest.raises(content.OutpostError, match=r"e3.txt changed while it was being deployed"):
        content.push(inv, host, site.say)
    assert not (site.dir / "current").exists()


def test_the_record_survives_a_new_process(site):
    content.push(site.inventory, site.host, site.say)
    record = Path(site.inventory.root / "build/content/linkedlist/hosts/au.json")
    assert record.exists()
    content._scanned.clear()
    assert content.is_current(site.inventory, site.host)


def test_hosts_pushed_at_once_share_one_payload_and_each_get_the_release(site):
    import threading

    hosts = [Host(name=f"h{n}", address=f"198.18.0.{20 + n}", user="deploy", port=22,
                  arch="x86_64", region="test", groups=()) for n in range(6)]
    folders = {}
    for host in hosts:
        folders[host.name] = site.dir.parent / f"host-{host.name}"
        folders[host.name].mkdir()
    packages = {h.name: Package(**{**vars(site.package), "content_dir": str(folders[h.name])})
                for h in hosts}
    built = []
    real = content.releases.payload
    content.releases.payload = lambda *a, **k: built.append(1) or real(*a, **k)
    try:
        threads = [threading.Thread(target=content.push, args=(
            SimpleNamespace(**{**vars(site.inventory), "packages": (packages[h.name],)}), h,
            site.say)) for h in hosts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        content.releases.payload = real
    release = content.manifest(site.inventory, site.package).release
    assert len(site.said) == len(hosts) and len(built) == 1
    for host in hosts:
        assert manifest.scan(folders[host.name] / "current").release == release


def test_storing_the_same_manifest_from_many_threads_at_once(site):
    import threading

    release = content.manifest(site.inventory, site.package)
    start, errors = threading.Barrier(16), []

    def store():
        start.wait()
        try:
            content._store_manifest(site.inventory, site.package, release)
        except OSError as error:
            errors.append(error)

    threads = [threading.Thread(target=store) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = content._stored_manifest(site.inventory, site.package, release.release[:16])
    assert stored.release == release.release
