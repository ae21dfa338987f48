"""The example app, linkedlistd, run as a real server process on 127.0.0.1.

Changes to the content are observed by polling /_health until the content digest changes;
nothing here waits a fixed time or measures time.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import load_app

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "cports-overlay/user/linkedlist/files/linkedlistd"
SITE_URL = "https://links.example"
STARTUP_LIMIT = 20  # seconds before a server that never comes up fails the test
CHANGE_LIMIT = 20  # seconds before a change that is never served fails the test


def entry_text(title, url, date, body=""):
    return f"title: {title}\nurl: {url}\ndate: {date}\n\n{body}\n"


def expected_digest(content_dir, links=True):
    """The digest as the app documents it, worked out independently of the app's code; with
    links=False, of the regular files only (what the app reads)."""
    lines = []
    for path in sorted(Path(content_dir).rglob("*")):
        rel = path.relative_to(content_dir).as_posix()
        if not links and path.is_symlink():
            continue
        if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            lines.append((rel, hashlib.sha256(path.read_bytes()).hexdigest()))
    lines.sort()
    return hashlib.sha256("".join(f"{rel}\0{h}\n" for rel, h in lines).encode()).hexdigest()


class Server:
    def __init__(self, process, base, log_path):
        self.process = process
        self.base = base
        self.log_path = log_path

    def get(self, path):
        """(status, headers, body) without following redirects; 4xx/5xx are returned too."""
        request = urllib.request.Request(self.base + path)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def text(self, path):
        status, _, body = self.get(path)
        assert status == 200, f"GET {path} -> {status}"
        return body.decode()

    def health(self):
        return json.loads(self.text("/_health"))

    def wait_for_content(self, old_digest):
        """Poll /_health until the app reports a content digest other than old_digest."""
        deadline = time.monotonic() + CHANGE_LIMIT
        while time.monotonic() < deadline:
            health = self.health()
            if health["content"] != old_digest:
                return health
            time.sleep(0.05)
        pytest.fail(f"content digest still {old_digest} after {CHANGE_LIMIT}s")

    def log(self):
        return self.log_path.read_text()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def start(tmp_path, content_dir, version="1.2.3-r4", listen="127.0.0.1:0"):
    version_file = tmp_path / "version"
    if version is not None:
        version_file.write_text(version + "\n")
    log_path = tmp_path / "linkedlistd.log"
    env = dict(
        os.environ,
        LINKEDLIST_CONTENT=str(content_dir),
        LINKEDLIST_LISTEN=listen,
        LINKEDLIST_VERSION_FILE=str(version_file),
        LINKEDLIST_SITE_URL=SITE_URL + "/",
    )
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, str(APP)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    # Port 0 lets the kernel pick a free port; the app logs the address it got.
    deadline = time.monotonic() + STARTUP_LIMIT
    while time.monotonic() < deadline:
        found = re.search(r"serving .* on (http://127\.0\.0\.1:\d+)/", log_path.read_text())
        if found:
            return Server(process, found.group(1), log_path)
        if process.poll() is not None:
            pytest.fail(f"linkedlistd exited with {process.returncode}:\n{log_path.read_text()}")
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"linkedlistd did not start:\n{log_path.read_text()}")


@pytest.fixture
def content(tmp_path):
    content_dir = tmp_path / "content"
    (content_dir / "entries").mkdir(parents=True)
    (content_dir / "entries/older.txt").write_text(
        entry_text("Older link", "https://older.example/", "2024-12-01", "First words.")
    )
    (content_dir / "entries/newer.txt").write_text(
        entry_text(
            "Newer <script>alert(1)</script> & co",
            'https://newer.example/?a=1&b="2"',
            "2025-01-15",
            "Body with <b>tags</b> & ampersands.\n\n"
            "> quoted line one\n> quoted line two\n\n"
            "See https://see.example/path. Done.",
        )
    )
    return content_dir


@pytest.fixture
def server(tmp_path, content):
    server = start(tmp_path, content)
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def test_index_lists_entries_newest_first(server):
    status, headers, body = server.get("/")
    page = body.decode()
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["X-Linkedlist-Version"] == "1.2.3-r4"
    assert page.index("/entries/newer/") < page.index("/entries/older/")
    assert '<a href="https://older.example/">Older link</a>' in page


def test_entry_page_escapes_everything_from_content(server):
    page = server.text("/entries/newer/")
    assert "<script>" not in page and "<b>" not in page
    assert "Newer &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert '<a href="https://newer.example/?a=1&amp;b=&quot;2&quot;">' in page
    assert "Body with &lt;b&gt;tags&lt;/b&gt; &amp; ampersands." in page
    assert "<blockquote><p>quoted line one\nquoted line two</p></blockquote>" in page
    # A bare address becomes a link, without the sentence's full stop.
    assert '<a href="https://see.example/path">https://see.example/path</a>. Done.' in page
    assert "Older link" not in page


def test_entry_without_trailing_slash_redirects(server):
    status, headers, _ = server.get("/entries/older")
    assert (status, headers["Location"]) == (301, "/entries/older/")


def test_unknown_paths_are_404_with_version_header(server):
    for path in ("/entries/missing/", "/nope", "/static/none.css", "/entries/"):
        status, headers, _ = server.get(path)
        assert status == 404, path
        assert headers["X-Linkedlist-Version"] == "1.2.3-r4"


def test_feed_is_rss_with_absolute_permalinks(server):
    status, headers, body = server.get("/feed.xml")
    assert status == 200
    assert headers["Content-Type"] == "application/rss+xml; charset=utf-8"
    channel = ET.fromstring(body).find("channel")
    assert channel.findtext("link") == SITE_URL + "/"
    items = channel.findall("item")
    assert [i.findtext("guid") for i in items] == [
        SITE_URL + "/entries/newer/",
        SITE_URL + "/entries/older/",
    ]
    newer = items[0]
    assert newer.findtext("title") == "Newer <script>alert(1)</script> & co"
    assert newer.findtext("link") == 'https://newer.example/?a=1&b="2"'
    assert newer.findtext("pubDate") == "Wed, 15 Jan 2025 00:00:00 +0000"
    # The description is the entry's HTML, carried as text: its own markup stays escaped.
    assert "<p>Body with &lt;b&gt;tags&lt;/b&gt; &amp; ampersands.</p>" in newer.findtext(
        "description"
    )


def test_health_reports_version_entries_and_content_digest(server, content):
    status, headers, body = server.get("/_health")
    health = json.loads(body)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert health["status"] == "ok"
    assert health["version"] == "1.2.3-r4"
    assert (health["entries"], health["skipped"]) == (2, 0)
    assert health["content"] == expected_digest(content)


def test_version_is_unknown_without_version_file(tmp_path, content):
    server = start(tmp_path, content, version=None)
    try:
        status, headers, _ = server.get("/")
        assert status == 200
        assert headers["X-Linkedlist-Version"] == "unknown"
        assert server.health()["version"] == "unknown"
    finally:
        server.process.kill()
        server.process.wait()


def test_second_request_is_served_from_cache(server):
    before = server.health()["cache"]
    first = server.get("/entries/older/")
    after_first = server.health()["cache"]
    second = server.get("/entries/older/")
    after_second = server.health()["cache"]
    assert after_first == {"hits": before["hits"], "misses": before["misses"] + 1}
    assert after_second == {"hits": after_first["hits"] + 1, "misses": after_first["misses"]}
    assert first[2] == second[2]


def test_not_found_is_not_cached(server):
    before = server.health()["cache"]
    for _ in range(3):
        assert server.get("/entries/missing/")[0] == 404
    assert server.health()["cache"] == before


def test_edited_entry_is_served_and_cache_dropped(server, content):
    assert "Older link" in server.text("/entries/older/")
    old = server.health()
    (content / "entries/older.txt").write_text(
        entry_text("Edited older link", "https://older.example/", "2024-12-01", "New words.")
    )
    new = server.wait_for_content(old["content"])
    assert new["content"] == expected_digest(content)
    assert new["generation"] == old["generation"] + 1
    page = server.text("/entries/older/")
    assert "Edited older link" in page and "New words." in page
    # The first render after the change is a miss: the old render was dropped.
    assert server.health()["cache"]["misses"] == new["cache"]["misses"] + 1


def test_added_entry_is_served(server, content):
    old = server.health()
    (content / "entries/newest.txt").write_text(
        entry_text("Brand new", "https://new.example/", "2025-03-01", "Fresh.")
    )
    new = server.wait_for_content(old["content"])
    assert new["entries"] == 3
    assert "Brand new" in server.text("/entries/newest/")
    index = server.text("/")
    assert index.index("/entries/newest/") < index.index("/entries/newer/")
    assert "Brand new" in server.text("/feed.xml")


def test_removed_entry_is_gone(server, content):
    assert server.get("/entries/older/")[0] == 200
    old = server.health()
    (content / "entries/older.txt").unlink()
    new = server.wait_for_content(old["content"])
    assert new["entries"] == 1
    assert server.get("/entries/older/")[0] == 404
    assert "Older link" not in server.text("/")


def test_same_size_replacement_is_noticed(server, content):
    # rsync -a writes a temporary file, gives it the source's mtime and renames it over the
    # old one: here the size and mtime stay the same, and only the inode tells.
    old = server.health()
    entry = content / "entries/older.txt"
    replacement = content / "entries/.older.txt.XYZ123"
    replacement.write_text(entry.read_text().replace("First", "Fresh"))
    os.utime(replacement, ns=(entry.stat().st_atime_ns, entry.stat().st_mtime_ns))
    os.rename(replacement, entry)
    server.wait_for_content(old["content"])
    assert "Fresh words." in server.text("/entries/older/")


def edit_in_place_keeping_size_and_mtime(path, old, new):
    """Write the file's bytes in place, same size, and put its mtime back (as `touch -r`, an
    archive, or a disk's own damage would leave it): only the ctime tells."""
    before = path.stat()
    data = path.read_bytes()
    assert len(old) == len(new) and old in data
    with open(path, "r+b") as f:
        f.write(data.replace(old, new, 1))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size,
                                                                before.st_mtime_ns,
                                                                before.st_ino)


def test_an_edit_in_place_that_keeps_size_and_mtime_is_served(server, content):
    assert "First words." in server.text("/entries/older/")
    old = server.health()
    edit_in_place_keeping_size_and_mtime(content / "entries/older.txt", b"First", b"Fresh")
    new = server.wait_for_content(old["content"])
    assert new["content"] == expected_digest(content)
    assert "Fresh words." in server.text("/entries/older/")


def test_a_new_hard_link_reads_the_file_again_but_keeps_what_is_served(tmp_path):
    # The next release links every unchanged file: their ctime moves, their bytes do not.
    app = load_app()
    one = release(tmp_path, "one", {f"e{n}": f"entry {n}" for n in range(5)})
    before = app.load(str(one))
    two = tmp_path / "releases" / "two" / "entries"
    two.mkdir(parents=True)
    for n in range(5):
        os.link(one / "entries" / f"e{n}.txt", two / f"e{n}.txt")
    signature, files, _ = app.read_tree(str(one), before.files)
    assert signature == before.signature
    for path, file in files.items():
        assert file is not before.files[path] and file.key != before.files[path].key
        assert file.entry is before.files[path].entry  # not parsed again
    again = app.read_tree(str(one), files)[1]
    assert all(again[path] is files[path] for path in files)  # and read once only


MALFORMED = {
    "no-title.txt": "url: https://x.example/\ndate: 2025-01-01\n\nbody\n",
    "bad-date.txt": entry_text("Bad date", "https://x.example/", "2025-13-01"),
    "script-url.txt": entry_text("Script", "javascript:alert(1)", "2025-01-01"),
    "unknown-key.txt": "title: T\nurl: https://x.example/\ndate: 2025-01-01\nauthor: me\n\nb\n",
    "no-blank-line.txt": "title: T\nurl: https://x.example/\ndate: 2025-01-01\n",
    "Bad_Slug.txt": entry_text("Bad slug", "https://x.example/", "2025-01-01"),
    "notes.md": entry_text("Not txt", "https://x.example/", "2025-01-01"),
}


def test_malformed_entries_are_logged_and_skipped(tmp_path, content):
    for name, text in MALFORMED.items():
        (content / "entries" / name).write_text(text)
    (content / "entries/latin1.txt").write_bytes(
        entry_text("Caf\xe9", "https://x.example/", "2025-01-01").encode("latin-1")
    )
    server = start(tmp_path, content)
    try:
        health = server.health()
        assert (health["entries"], health["skipped"]) == (2, len(MALFORMED) + 1)
        assert health["content"] == expected_digest(content)
        log = server.log()
        for name in [*MALFORMED, "latin1.txt"]:
            assert f"skipping {content / 'entries' / name}: " in log, name
        assert "header is missing title" in log
        assert "date '2025-13-01' is not YYYY-MM-DD" in log
        assert "url 'javascript:alert(1)' is not http(s)" in log
        assert "unknown header key 'author'" in log
        assert "not UTF-8" in log
        assert server.get("/entries/bad-date/")[0] == 404
        assert "Older link" in server.text("/")
    finally:
        server.process.kill()
        server.process.wait()


def test_malformed_entry_added_while_running_is_skipped(server, content):
    old = server.health()
    (content / "entries/broken.txt").write_text("this is not a header\n\nbody\n")
    new = server.wait_for_content(old["content"])
    assert (new["entries"], new["skipped"]) == (2, 1)
    assert server.process.poll() is None
    assert "Older link" in server.text("/")
    assert f"skipping {content / 'entries/broken.txt'}: header line 1" in server.log()


def test_hidden_files_are_ignored(server, content):
    old = server.health()
    (content / "entries/.draft.txt").write_text(entry_text("Draft", "https://d.example/", "2025-05-05"))
    (content / "static").mkdir()
    (content / "static/.secret").write_text("hidden")
    (content / "static/app.css").write_text("body{}")
    new = server.wait_for_content(old["content"])
    assert new["content"] == expected_digest(content)  # which leaves hidden files out
    assert new["entries"] == 2
    assert server.get("/static/.secret")[0] == 404
    assert server.get("/entries/draft/")[0] == 404


def test_static_files_have_content_types_and_stay_inside(tmp_path, content):
    static = content / "static"
    (static / "img").mkdir(parents=True)
    (static / "style.css").write_text("body { color: black; }")
    (static / "img/dot.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (static / "blob").write_bytes(b"\x00\x01")
    server = start(tmp_path, content)
    try:
        status, headers, body = server.get("/static/style.css")
        assert (status, headers["Content-Type"], body) == (
            200, "text/css; charset=utf-8", b"body { color: black; }")
        status, headers, body = server.get("/static/img/dot.png")
        assert (status, headers["Content-Type"], body) == (200, "image/png", b"\x89PNG\r\n\x1a\nfake")
        assert server.get("/static/blob")[1]["Content-Type"] == "application/octet-stream"
        assert '<link rel="stylesheet" href="/static/style.css">' in server.text("/")
        for path in ("/static/../entries/older.txt", "/static/%2e%2e/entries/older.txt",
                     "/static/img/../../entries/older.txt", "/entries/older.txt"):
            assert server.get(path)[0] == 404, path
    finally:
        server.process.kill()
        server.process.wait()


def test_missing_content_directory_serves_empty_site(tmp_path):
    server = start(tmp_path, tmp_path / "absent")
    try:
        health = server.health()
        assert (health["entries"], health["skipped"]) == (0, 0)
        assert health["content"] == hashlib.sha256(b"").hexdigest()
        assert "No entries yet." in server.text("/")
        assert "does not exist" in server.log()
    finally:
        server.process.kill()
        server.process.wait()


def test_sigterm_exits_cleanly(server):
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=STARTUP_LIMIT) == 0
    assert "stopped" in server.log()


def test_bad_listen_address_is_an_error_naming_the_variable(tmp_path, content):
    env = dict(os.environ, LINKEDLIST_CONTENT=str(content), LINKEDLIST_LISTEN="8080")
    result = subprocess.run([sys.executable, str(APP)], env=env, capture_output=True, text=True,
                            timeout=STARTUP_LIMIT)
    assert result.returncode == 2
    assert "LINKEDLIST_LISTEN='8080' is not host:port" in result.stderr
    assert "Traceback" not in result.stderr


def test_example_content_is_all_valid(tmp_path):
    content_dir = REPO / "content"
    server = start(tmp_path, content_dir)
    try:
        health = server.health()
        assert health["skipped"] == 0, server.log()
        assert health["entries"] == len(list((content_dir / "entries").glob("*.txt")))
        assert health["content"] == expected_digest(content_dir)
    finally:
        server.process.kill()
        server.process.wait()


def test_app_is_an_executable_python3_script():
    assert APP.read_text().startswith("#!/usr/bin/python3\n")
    assert os.access(APP, os.X_OK)


# -- releases behind a `current` symlink, and links -------------------------------------------


def release(tmp_path, name, entries):
    """A release folder holding entries {slug: title}."""
    folder = tmp_path / "releases" / name
    (folder / "entries").mkdir(parents=True)
    for slug, title in entries.items():
        (folder / "entries" / f"{slug}.txt").write_text(
            entry_text(title, f"https://{slug}.example/", "2025-01-01"))
    return folder


def switch(tmp_path, name):
    """Point `current` at releases/<name> with one rename, as the deploy does."""
    (tmp_path / ".current.new").symlink_to(f"releases/{name}")
    os.replace(tmp_path / ".current.new", tmp_path / "current")


def test_a_switched_current_is_served_whole_on_the_next_request(tmp_path):
    release(tmp_path, "one", {"a": "A one", "b": "B one"})
    release(tmp_path, "two", {"a": "A two", "c": "C two"})
    switch(tmp_path, "one")
    server = start(tmp_path, tmp_path / "current")
    try:
        first = server.health()
        assert first["release"] == "one"
        assert first["content"] == expected_digest(tmp_path / "releases/one")
        switch(tmp_path, "two")
        # No waiting: the request after the switch resolves `current` again.
        second = server.health()
        assert (second["release"], second["generation"]) == ("two", first["generation"] + 1)
        assert second["content"] == expected_digest(tmp_path / "releases/two")
        assert "A two" in server.text("/") and server.get("/entries/b/")[0] == 404
    finally:
        server.process.kill()
        server.process.wait()


def test_readers_during_many_switches_see_one_release_at_a_time(tmp_path):
    digests = {}
    for name in ("one", "two"):
        folder = release(tmp_path, name, {f"e{n}": f"{name} {n}" for n in range(300)})
        digests[expected_digest(folder)] = name
    switch(tmp_path, "one")
    server = start(tmp_path, tmp_path / "current")
    answers, done = [], threading.Event()

    def read():
        while not done.is_set():
            health = server.health()
            answers.append((health["release"], health["content"]))

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    try:
        for n in range(60):
            switch(tmp_path, ("two", "one")[n % 2])
            server.health()
    finally:
        done.set()
        for reader in readers:
            reader.join()
        server.process.kill()
        server.process.wait()
    assert {digests.get(content) == name for name, content in answers} == {True}
    assert {name for name, _ in answers} == {"one", "two"}


def test_a_switch_reads_only_the_files_that_changed(tmp_path):
    app = load_app()
    one = release(tmp_path, "one", {f"e{n}": f"entry {n}" for n in range(5)})
    two = tmp_path / "releases" / "two"
    (two / "entries").mkdir(parents=True)
    for n in range(4):  # hard links, as a release links unchanged files to the one before
        os.link(one / "entries" / f"e{n}.txt", two / "entries" / f"e{n}.txt")
    (two / "entries" / "e4.txt").write_text(entry_text("entry 4, edited", "https://e.example/",
                                                       "2025-01-02"))
    before = app.load(str(one))
    _, files, _ = app.read_tree(str(two), before.files)
    assert sorted(p for p in files if files[p] is before.files[p]) == [
        f"entries/e{n}.txt" for n in range(4)]
    assert files["entries/e4.txt"].entry.title == "entry 4, edited"


def test_a_link_is_never_followed_wherever_it_points(tmp_path, content):
    (tmp_path / "secret.txt").write_text("the host's secret")
    (content / "static").mkdir()
    (content / "static" / "secret.txt").symlink_to(tmp_path / "secret.txt")
    (content / "static" / "inside.css").symlink_to("../entries/older.txt")
    (content / "static" / "elsewhere").symlink_to(tmp_path)
    (content / "static" / "real.css").write_text("body {}")
    server = start(tmp_path, content)
    try:
        for path in ("/static/secret.txt", "/static/inside.css", "/static/elsewhere/secret.txt"):
            assert server.get(path)[0] == 404, path
        assert server.get("/static/real.css")[0] == 200
        assert server.health()["content"] == expected_digest(content, links=False)
        log = server.log()
        for name in ("secret.txt", "inside.css"):
            assert f"not serving {content / 'static' / name}: a symlink" in log
    finally:
        server.process.kill()
        server.process.wait()


def test_after_a_change_the_index_renders_only_the_changed_article(tmp_path):
    app = load_app()
    one = release(tmp_path, "one", {f"e{n}": f"entry {n}" for n in range(50)})
    two = tmp_path / "releases" / "two"
    (two / "entries").mkdir(parents=True)
    for n in range(49):
        os.link(one / "entries" / f"e{n}.txt", two / "entries" / f"e{n}.txt")
    (two / "entries" / "e49.txt").write_text(entry_text("entry 49, edited",
                                                        "https://e.example/", "2025-01-02"))
    first = app.load(str(one))
    app.render(first, "/", SITE_URL)
    before = app.render_article.cache_info()
    _, page = app.render(app.load(str(two), first.files, 2), "/", SITE_URL)
    after = app.render_article.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 49)
    assert b"entry 49, edited" in page and b"entry 48" in page
