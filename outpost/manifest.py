"""The content manifest: one pass over a content folder gives each file the app will serve,
with its path, size, mode and sha256. The sha256 of the manifest's text is the release id.

    manifest = scan(Path("content"), cache=Path("build/content/linkedlist/hashes.json"))
    manifest.release   # the release id: changes when any path, size, mode or byte changes
    manifest.digest    # what linkedlistd reports as "content" in /_health for this tree

Hashes are cached by (inode, size, mtime_ns, ctime_ns), so an unchanged file is not read
again. ctime can't be set by a user: an edit that restores the size and mtime (`touch -r`,
`cp -p`, an archive with fixed mtimes) still changes it, and a file replaced by rename has
another inode. A file changed less than RACY_NS before the scan is hashed but not cached:
two writes within the file system's timestamp granularity can leave all four equal.

What is in a release (what the app reads, linkedlistd's module docstring):
- Names starting with "." are left out, as the app ignores them (rsync's temporary files, an
  editor's swap files, a .git folder). Nothing under them is read.
- A link to a file inside the folder is deployed as that file: hosts get regular files only,
  so the app can refuse to follow any link there and never serve outside its content root.
- Any other link (one that points outside the folder, to a folder, or to nothing) is refused
  before anything is pushed, every such link named in one error. So is a name the digest
  can't hold (a control character, bytes that are not UTF-8) and anything that is not a
  regular file (a FIFO would block the app's reader).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import OutpostError
from outpost.files import write_atomic

RACY_NS = 2_000_000_000
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Entry:
    path: str    # relative, "/"-separated
    size: int
    mode: int    # 0o644, or 0o755 for a file its owner may run (as git keeps modes)
    sha256: str


class Manifest:
    """The files of one release, sorted by path, with the release id and the app's digest.
    `sources` maps each path to the local file to read it from (for a link: the link)."""

    def __init__(self, entries, sources: dict[str, str] | None = None):
        self.entries = tuple(sorted(entries, key=lambda e: e.path))
        self.sources = sources or {}
        self.text = "".join(f"{e.sha256} {e.size} {e.mode:o} {e.path}\n" for e in self.entries)
        self.release = hashlib.sha256(self.text.encode()).hexdigest()
        self.digest = content_digest((e.path, e.sha256) for e in self.entries)
        self.by_path = {e.path: e for e in self.entries}

    @classmethod
    def parse(cls, text: str) -> Manifest:
        """The manifest whose `text` this is (as stored for a release pushed earlier)."""
        entries = []
        for line in text.splitlines():
            sha, size, mode, path = line.split(" ", 3)
            entries.append(Entry(path, int(size), int(mode, 8), sha))
        return cls(entries)


def content_digest(files) -> str:
    """linkedlistd's content digest (its module docstring defines it): sha256 over
    "<path>\\0<sha256 of the file>\\n" for each (path, sha256 hex), in sorted path order."""
    state = hashlib.sha256()
    for path, sha in sorted(files):
        state.update(f"{path}\0{sha}\n".encode())
    return state.hexdigest()


def scan(content: Path, cache: Path | None = None) -> Manifest:
    """The manifest of the folder `content`; reads the hash cache and writes it back when it
    changed. Raises OutpostError naming every link, name or file that can't be deployed."""
    content = Path(content)
    if not content.is_dir():
        raise OutpostError(f"{content}: the content folder does not exist")
    root = os.path.realpath(content)
    started = time.time_ns()
    known = _read_cache(cache)
    fresh: dict[str, list] = {}
    entries, sources, refused = [], {}, []
    for relpath, path, link, st in _walk(content, refused):
        if link is not None:
            try:
                st = os.stat(path)  # the link's target
            except OSError:
                refused.append(f"{relpath} -> {link} (it points to nothing)")
                continue
            target = os.path.realpath(path)
            if os.path.commonpath([root, target]) != root:
                refused.append(f"{relpath} -> {link} (it points outside {content})")
                continue
            if not stat.S_ISREG(st.st_mode):
                refused.append(f"{relpath} -> {link} (only links to files are deployed)")
                continue
        key = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        cached = known.get(relpath)
        sha = cached[4] if cached is not None and cached[:4] == key else _sha256(path)
        if st.st_ctime_ns < started - RACY_NS:
            fresh[relpath] = key + [sha]
        mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
        entries.append(Entry(relpath, st.st_size, mode, sha))
        sources[relpath] = path
    if refused:
        raise OutpostError(f"{content}: cannot deploy (nothing was pushed):\n  "
                           + "\n  ".join(refused))
    if cache is not None and fresh != known:
        _write_cache(cache, fresh)
    return Manifest(entries, sources)


def _walk(content: Path, refused: list):
    """(relative path, path, link text, stat) of every file to deploy: for a link, its text
    and no stat. Hidden names are left out, links to folders not entered; what can't be
    deployed goes to `refused`."""
    stack = [(str(content), "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as listing:
            for entry in listing:
                name = entry.name
                if name.startswith("."):
                    continue
                relpath = prefix + name
                problem = _bad_name(name)
                if problem:
                    refused.append(f"{relpath!r} ({problem})")
                    continue
                if entry.is_symlink():
                    yield relpath, entry.path, os.readlink(entry.path), None
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, relpath + "/"))
                elif entry.is_file(follow_symlinks=False):
                    yield relpath, entry.path, None, entry.stat(follow_symlinks=False)
                else:
                    refused.append(f"{relpath} (not a regular file, a folder or a link)")


CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _bad_name(name: str) -> str | None:
    if CONTROL.search(name):
        return "the name holds a control character"
    if not name.isascii():
        try:
            name.encode()
        except UnicodeEncodeError:  # os.fsdecode's surrogates: bytes that are not UTF-8
            return "the name is not UTF-8"
    return None


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _read_cache(cache: Path | None) -> dict:
    if cache is None:
        return {}
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: every file is hashed again
    return data.get("files", {}) if data.get("format") == CACHE_FORMAT else {}


def _write_cache(cache: Path, files: dict):
    write_atomic(cache, json.dumps({"format": CACHE_FORMAT, "files": files},
                                   separators=(",", ":")).encode())
