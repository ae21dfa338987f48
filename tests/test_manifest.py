"""outpost.manifest: what a release holds, its id, the app's digest, the hash cache, and the
links that are refused before anything is pushed."""
import hashlib
import json
import os

import pytest

from helpers import load_app
from outpost import manifest
from outpost.errors import OutpostError


@pytest.fixture
def tree(tmp_path):
    tree = tmp_path / "content"
    (tree / "entries").mkdir(parents=True)
    (tree / "static" / "css").mkdir(parents=True)
    (tree / ".git").mkdir()
    (tree / "entries" / "a.txt").write_text("title: A\n")
    (tree / "entries" / ".a.txt.XyZ123").write_text("rsync temp file")
    (tree / "static" / "css" / "site.css").write_bytes(b"body{}\xff")
    (tree / ".git" / "config").write_text("ignored, and never read")
    (tree / "README.md").write_text("readme")
    return tree


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_entries_are_the_files_the_app_serves_with_size_mode_and_sha256(tree):
    (tree / "static" / "run.sh").write_text("#!/bin/sh\n")
    (tree / "static" / "run.sh").chmod(0o700)
    m = manifest.scan(tree)
    assert [(e.path, e.size, e.mode, e.sha256) for e in m.entries] == [
        ("README.md", 6, 0o644, sha(b"readme")),
        ("entries/a.txt", 9, 0o644, sha(b"title: A\n")),
        ("static/css/site.css", 7, 0o644, sha(b"body{}\xff")),
        ("static/run.sh", 10, 0o755, sha(b"#!/bin/sh\n")),
    ]
    assert m.sources["entries/a.txt"] == str(tree / "entries" / "a.txt")


def test_the_release_id_is_the_sha256_of_the_text_and_changes_with_path_mode_or_bytes(tree):
    first = manifest.scan(tree)
    assert first.release == sha(first.text.encode())
    assert manifest.Manifest.parse(first.text).release == first.release
    (tree / "README.md").chmod(0o755)
    by_mode = manifest.scan(tree)
    (tree / "README.md").rename(tree / "README.txt")
    by_path = manifest.scan(tree)
    (tree / "README.txt").write_text("Readme")
    by_byte = manifest.scan(tree)
    assert len({first.release, by_mode.release, by_path.release, by_byte.release}) == 4
    # The digest leaves modes out, as the app's does.
    assert by_mode.digest == first.digest != by_path.digest != by_byte.digest


def test_the_digest_is_the_apps_over_the_tree_as_a_host_gets_it(tree):
    (tree / "link.txt").symlink_to("README.md")
    app = load_app()
    m = manifest.scan(tree)
    # A host gets the link as a copy of its file; the app reads no link.
    (tree / "link.txt").unlink()
    (tree / "link.txt").write_text("readme")
    served = app.load(str(tree))
    assert m.digest == served.digest == manifest.content_digest(
        (path, f.sha256) for path, f in served.files.items())
    assert m.digest == manifest.content_digest(
        [("README.md", sha(b"readme")), ("entries/a.txt", sha(b"title: A\n")),
         ("link.txt", sha(b"readme")), ("static/css/site.css", sha(b"body{}\xff"))])


def test_a_link_to_a_file_inside_is_deployed_as_that_file(tree):
    (tree / "static" / "copy.css").symlink_to("css/site.css")
    m = manifest.scan(tree)
    assert m.by_path["static/copy.css"] == manifest.Entry(
        "static/copy.css", 7, 0o644, sha(b"body{}\xff"))
    assert m.sources["static/copy.css"] == str(tree / "static" / "copy.css")


def test_links_out_of_the_tree_to_folders_or_to_nothing_are_all_named(tree, tmp_path):
    (tmp_path / "secret").write_text("secret")
    (tree / "static" / "passwd.txt").symlink_to("/etc/passwd")
    (tree / "entries" / "up.txt").symlink_to("../../secret")
    (tree / "static" / "css-again").symlink_to("css")
    (tree / "gone.txt").symlink_to("nowhere.txt")
    (tree / ".hidden-link").symlink_to("/etc/shadow")  # hidden: never deployed, never read
    with pytest.raises(OutpostError) as refused:
        manifest.scan(tree)
    lines = str(refused.value).splitlines()
    assert lines[0] == f"{tree}: cannot deploy (nothing was pushed):"
    assert sorted(line.strip() for line in lines[1:]) == [
        "entries/up.txt -> ../../secret (it points outside " + str(tree) + ")",
        "gone.txt -> nowhere.txt (it points to nothing)",
        "static/css-again -> css (only links to files are deployed)",
        "static/passwd.txt -> /etc/passwd (it points outside " + str(tree) + ")",
    ]


def test_a_fifo_and_a_name_with_a_newline_are_refused(tree):
    os.mkfifo(tree / "entries" / "pipe")
    (tree / "entries" / "two\nlines.txt").write_text("x")
    with pytest.raises(OutpostError) as refused:
        manifest.scan(tree)
    assert "entries/pipe (not a regular file, a folder or a link)" in str(refused.value)
    assert "'entries/two\\nlines.txt' (the name holds a control character)" in str(refused.value)


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(OutpostError, match=f"^{tmp_path}/content: the content folder does not"):
        manifest.scan(tmp_path / "content")


@pytest.fixture
def hashed(monkeypatch):
    """The paths manifest hashes, in order."""
    seen = []
    real = manifest._sha256
    monkeypatch.setattr(manifest, "_sha256", lambda path: seen.append(path) or real(path))
    return seen


def test_the_cache_spares_unchanged_files_and_sees_an_edit_that_keeps_size_and_mtime(
        tree, tmp_path, hashed, monkeypatch):
    cache = tmp_path / "hashes.json"
    monkeypatch.setattr(manifest, "RACY_NS", -10**12)  # every file counts as settled
    first = manifest.scan(tree, cache)
    assert len(hashed) == 3 and cache.exists()
    hashed.clear()
    assert manifest.scan(tree, cache).release == first.release
    assert hashed == []

    # Same size, mtime put back (as `touch -r`, `cp -p` or an archive would): ctime still moves.
    entry = tree / "entries" / "a.txt"
    before = entry.stat()
    while entry.stat().st_ctime_ns == before.st_ctime_ns:
        entry.write_text("title: B\n")
        os.utime(entry, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = entry.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    changed = manifest.scan(tree, cache)
    assert hashed == [str(entry)]
    assert changed.release != first.release
    assert changed.by_path["entries/a.txt"].sha256 == sha(b"title: B\n")


def test_a_file_changed_within_racy_ns_of_the_scan_is_hashed_again_next_time(tree, tmp_path,
                                                                              hashed):
    cache = tmp_path / "hashes.json"
    manifest.scan(tree, cache)  # every file was written just now
    hashed.clear()
    manifest.scan(tree, cache)
    assert len(hashed) == 3


def test_a_cache_that_cannot_be_read_means_hashing_again(tree, tmp_path, hashed,
                                                         monkeypatch):
    monkeypatch.setattr(manifest, "RACY_NS", -10**12)
    cache = tmp_path / "hashes.json"
    cache.write_text("{not json")
    assert manifest.scan(tree, cache).release == manifest.scan(tree).release
    assert len(hashed) == 6
    assert sorted(json.loads(cache.read_text())["files"]) == [
        "README.md", "entries/a.txt", "static/css/site.css"]
