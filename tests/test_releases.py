"""outpost.commands.content: the push and rollback scripts, run for real with /bin/sh, tar and mv on
this machine, fed as a host feeds them (outpost.remote's RUN_STDIN_THEN_PAYLOAD: the script,
the mark, the payload on one stdin). A folder here stands for a host's content_dir."""
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from outpost import manifest, remote
from outpost.commands import content as releases


class Host:
    """A content_dir and the releases pushed to it, as outpost.steps.content keeps track of them."""

    def __init__(self, folder: Path, keep: int = 3):
        self.dir = folder
        self.keep = keep
        self.serves = None  # (manifest, folder)

    def run(self, script: str, payload: bytes = b"") -> subprocess.CompletedProcess:
        stdin = script.encode() + f"\n{remote.PAYLOAD_MARK}\n".encode() + payload
        return subprocess.run(["sh", "-c", remote.RUN_STDIN_THEN_PAYLOAD], input=stdin,
                              capture_output=True, timeout=60)

    def current(self) -> str:
        return os.readlink(self.dir / "current")

    def folders(self) -> list[str]:
        return sorted(p.name for p in (self.dir / "releases").iterdir()
                      if not p.name.startswith("."))

    def history(self) -> list[str]:
        return (self.dir / "history").read_text().split()


@pytest.fixture
def host(tmp_path):
    (tmp_path / "host").mkdir()
    return Host(tmp_path / "host")


@pytest.fixture
def content(tmp_path):
    tree = tmp_path / "content"
    (tree / "entries").mkdir(parents=True)
    for n in range(5):
        (tree / "entries" / f"e{n}.txt").write_text(f"entry {n}\n")
    (tree / "README.md").write_text("readme\n")
    return tree


def reader(m):
    return lambda entry: (Path(m.sources[entry.path]).read_bytes(), 0)


def push(host, tree, linked=True, fresh=False):
    """Push the tree's release, linked to the one the host serves (as outpost.steps.content does)."""
    m = manifest.scan(tree)
    base, base_folder = host.serves if (linked and host.serves) else (None, None)
    data = releases.payload(m, reader(m), base, base_folder)
    proc = host.run(releases.push_script(str(host.dir), m.release, base_folder, host.keep,
                                         fresh=fresh), data)
    assert proc.returncode == 0, proc.stderr.decode()
    host.serves = (m, releases.parse_report(proc.stdout.decode())[0])
    return m, host.serves[1]


def test_a_first_push_makes_a_release_switches_current_and_reports(host, content):
    (host.dir / "old-file.txt").write_text("left by rsync")  # the layout before releases
    (host.dir / "entries").mkdir()
    m, folder = push(host, content)
    assert folder == m.release[:releases.FOLDER_CHARS]
    assert host.current() == f"releases/{folder}"
    assert sorted(p.name for p in host.dir.iterdir()) == ["current", "history", "releases"]
    assert host.history() == [folder]
    served = host.dir / "current"
    assert (served / "entries" / "e3.txt").read_text() == "entry 3\n"
    assert (served / ".release").read_text() == m.release + "\n"
    assert manifest.scan(served).release == m.release  # every file, and nothing else
    assert oct((served / "README.md").stat().st_mode & 0o777) == oct(0o644)


def test_a_second_push_sends_only_the_change_and_links_the_rest(host, content):
    first, old = push(host, content)
    (content / "entries" / "e1.txt").write_text("entry 1, edited\n")
    (content / "entries" / "e9.txt").write_text("new\n")
    (content / "entries" / "e4.txt").unlink()
    m = manifest.scan(content)
    data = releases.payload(m, reader(m), first, old)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {t.name: t for t in tar.getmembers()}
    sent = sorted(n for n, t in members.items() if t.isfile())
    assert sent == [".incoming/.release", ".incoming/entries/e1.txt", ".incoming/entries/e9.txt"]
    assert members[".incoming/entries/e2.txt"].linkname == f"{old}/entries/e2.txt"
    assert releases.changed_count(m, first) == 2

    _, new = push(host, content)
    assert host.current() == f"releases/{new}" and host.history() == [old, new]
    now, before = host.dir / "releases" / new, host.dir / "releases" / old
    assert (now / "entries/e2.txt").stat().st_ino == (before / "entries/e2.txt").stat().st_ino
    assert (now / "entries/e1.txt").stat().st_ino != (before / "entries/e1.txt").stat().st_ino
    assert not (now / "entries/e4.txt").exists() and (before / "entries/e4.txt").exists()
    assert (before / "entries/e1.txt").read_text() == "entry 1\n"  # the old release is intact
    assert manifest.scan(now).release == m.release


def test_a_payload_cut_short_switches_nothing(host, content):
    _, old = push(host, content)
    (content / "README.md").write_text("a new readme\n" * 1000)
    m = manifest.scan(content)
    data = releases.payload(m, reader(m), *host.serves)
    for cut in (len(data) // 2, len(data) - 30):
        proc = host.run(releases.push_script(str(host.dir), m.release, old, host.keep), data[:cut])
        assert proc.returncode != 0
        assert host.current() == f"releases/{old}" and host.history() == [old]
        assert host.folders() == [old]
    _, new = push(host, content)  # the next push clears what was left and converges
    assert host.current() == f"releases/{new}"


def test_a_missing_base_stops_before_reading_anything(host, content):
    m = manifest.scan(content)
    proc = host.run(releases.push_script(str(host.dir), m.release, "0123456789abcdef", 3),
                    b"not a tar")
    assert proc.returncode == releases.BASE_MISSING
    assert b"release 0123456789abcdef is not on this host" in proc.stderr
    assert not (host.dir / "current").exists()


def test_only_the_last_keep_releases_stay(host, content):
    folders = []
    for n in range(6):
        (content / "README.md").write_text(f"readme {n}\n")
        folders.append(push(host, content)[1])
    assert host.history() == folders[-3:]
    assert host.folders() == sorted(folders[-3:])
    # The release current holds, again into a new folder (as for a host that drifted).
    proc = host.run(releases.push_script(str(host.dir), host.serves[0].release,
                                         host.serves[1], host.keep, fresh=True),
                    releases.payload(host.serves[0], None, *host.serves))  # all links: no read
    assert releases.parse_report(proc.stdout.decode())[1][1:] == folders[-1:-3:-1]


def test_rollback_goes_back_one_release_at_a_time_without_a_transfer(host, content):
    folders = []
    for n in range(3):
        (content / "README.md").write_text(f"readme {n}\n")
        folders.append(push(host, content)[1])
    script = releases.rollback_script(str(host.dir), host.keep)
    proc = host.run(script)
    assert proc.returncode == 0, proc.stderr
    assert releases.parse_report(proc.stdout.decode()) == (folders[1], [folders[1], folders[0]])
    assert f"was {folders[2]}" in proc.stdout.decode()
    assert host.current() == f"releases/{folders[1]}"
    assert (host.dir / "current" / "README.md").read_text() == "readme 1\n"
    assert host.history() == folders[:2]
    assert host.run(script).returncode == 0
    assert host.current() == f"releases/{folders[0]}"
    refused = host.run(script)
    assert refused.returncode == releases.NOTHING_TO_ROLL_BACK
    assert f"no release before {folders[0]} to roll back to" in refused.stderr.decode()
    assert host.current() == f"releases/{folders[0]}"


def test_a_release_pushed_again_gets_a_new_folder(host, content):
    m, first = push(host, content)
    (content / "README.md").write_text("other\n")
    push(host, content)
    assert host.run(releases.rollback_script(str(host.dir), host.keep)).returncode == 0
    (content / "README.md").write_text("readme\n")  # back to the first release's content
    host.serves = (m, first)
    # All of it again, as for a host seen serving something else (fresh): its files may have
    # been edited in place, in every release that links them.
    m_again, again = push(host, content, linked=False, fresh=True)
    assert m_again.release == m.release and again == f"{first}.1"
    assert host.current() == f"releases/{first}.1"
    assert releases.release_of(again) == first


def test_the_release_current_holds_is_kept_and_nothing_is_read(host, content):
    # A run cut short after its switch, whose record was lost: the next push is of the release
    # `current` already holds. No folder is made, no keep slot taken, the payload is not read.
    m, first = push(host, content)
    (content / "README.md").write_text("other\n")
    _, second = push(host, content)
    proc = host.run(releases.push_script(str(host.dir), manifest.scan(content).release, first,
                                         host.keep), b"not a tar: never read")
    assert proc.returncode == 0, proc.stderr.decode()
    assert f"has {second}" in proc.stdout.decode().splitlines()
    assert releases.parse_report(proc.stdout.decode()) == (second, [second, first])
    assert host.current() == f"releases/{second}" and host.history() == [first, second]
    assert host.folders() == sorted([first, second])


def test_long_names_and_link_targets_arrive_whole(host, content):
    deep = content / ("a-long-folder-name-" * 4) / ("another-long-folder-name-" * 3)
    deep.mkdir(parents=True)
    (deep / "a file with spaces and ünïcode, long enough.txt").write_text("deep\n")
    first, old = push(host, content)
    long_paths = [e.path for e in first.entries if len(f".incoming/{e.path}") > 100]
    assert long_paths  # the names do need the pax header
    (content / "README.md").write_text("changed\n")
    m, new = push(host, content)
    for path in long_paths:
        now, before = host.dir / "releases" / new / path, host.dir / "releases" / old / path
        assert now.read_text() == "deep\n"
        assert now.stat().st_ino == before.stat().st_ino  # linked, by its long name
    assert manifest.scan(host.dir / "current").release == m.release
    with tarfile.open(fileobj=io.BytesIO(releases.payload(
            m, reader(m), first, old))) as tar:
        linked = {t.name: t.linkname for t in tar.getmembers() if t.islnk()}
    assert linked[f".incoming/{long_paths[0]}"] == f"{old}/{long_paths[0]}"


def test_a_report_naming_a_folder_no_push_made_is_refused():
    assert releases.parse_report("was x\ncurrent 0123456789abcdef.2\nkept 0123456789abcdef.2 "
                                 "fedcba9876543210\n") == (
        "0123456789abcdef.2", ["0123456789abcdef.2", "fedcba9876543210"])
    for output in ("current by-hand\nkept by-hand\n", "kept 0123456789abcdef\n",
                   "current 0123456789abcdef\nkept 0123456789abcdef ../../etc\n"):
        with pytest.raises(ValueError, match="which no push made"):
            releases.parse_report(output)
