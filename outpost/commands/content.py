"""Content releases on a host, built by pure functions: the layout, the script that puts a
release in place and switches to it, the rollback script, and the payload (a tar stream) the
push script reads. Nothing here runs anything; outpost.steps.content composes these with
outpost.remote.

Layout in a package's content_dir (the deploy user's folder; the app only reads it):

    releases/<folder>/...   one folder per release, never changed once switched in;
                            <folder> is the release id's first FOLDER_CHARS hex digits
                            (with ".<n>" added when a release is built again, see below)
    current -> releases/<folder>   what the app serves (its LINKEDLIST_CONTENT)
    history                 the folders `current` pointed to, oldest first, one a line

A push is one SSH session: the script, then the payload, on stdin. The payload is a tar of
the new release under releases/.incoming/: the files that changed as files, every other file
as a hard link to the same path in the release the host serves (the base), and last a
marker file holding the release id. So only changed files cross the network, and the host
needs no scan of its own to know what to link. The script checks the marker (a stream cut
short lacks it), renames .incoming to its folder, points a new symlink at it and renames
that over `current`: one rename(2), so a reader sees the old release or the new one, never a
mix. Releases beyond the last `keep` in history are moved aside at once and removed in the
background at the lowest priority, after the session has its answer.

A release whose folder already exists (rolled back, or rebuilt after a host drifted) gets a
new folder "<folder>.<n>": a folder `current` may point at is never written again.
"""
from __future__ import annotations

import re
import shlex
import zlib

FOLDER_CHARS = 16
RELEASES = "releases"
CURRENT = "current"
HISTORY = "history"
STAGE = ".incoming"
MARKER = ".release"  # hidden: the app neither serves nor counts it
# Exit status of a push script whose base release is not on the host: send it all instead.
BASE_MISSING = 75
# Exit status of a rollback with no earlier release on the host.
NOTHING_TO_ROLL_BACK = 76


def folder_of(release: str) -> str:
    return release[:FOLDER_CHARS]


def release_of(folder: str) -> str:
    """The release id prefix a folder holds ("<prefix>" or "<prefix>.<n>")."""
    return folder.partition(".")[0]


def current_path(content_dir: str) -> str:
    """What the app serves: the symlink the push switches."""
    return f"{content_dir.rstrip('/')}/{CURRENT}"


# --- the payload ------------------------------------------------------------------------------

def payload(manifest, read, base=None, base_folder: str | None = None) -> bytes:
    """The tar stream (gzip) of `manifest`'s release for a host that serves `base` (a
    Manifest) from releases/<base_folder>: files whose sha256 and mode are the base's are hard
    links to it, the rest are read with read(entry) -> (bytes, mtime). The marker comes last.
    The headers are written here rather than by tarfile: a release of 2,000 files is 2,000 of
    them, and tarfile takes some 50 us for each."""
    gzip = zlib.compressobj(1, zlib.DEFLATED, 31)  # level 1: most of level 6's gain, 6x faster
    chunks = []
    for entry in manifest.entries:
        name = f"{STAGE}/{entry.path}"
        if _same(entry, base):
            chunks.append(gzip.compress(_header(name, entry.mode, 0, 0, LINK,
                                                f"{base_folder}/{entry.path}")))
        else:
            data, mtime = read(entry)
            chunks.append(gzip.compress(_header(name, entry.mode, len(data), mtime, FILE)))
            chunks.append(gzip.compress(data + bytes(-len(data) % BLOCK)))
    marker = manifest.release.encode() + b"\n"
    chunks.append(gzip.compress(_header(f"{STAGE}/{MARKER}", 0o644, len(marker), 0, FILE)
                                + marker + bytes(-len(marker) % BLOCK) + bytes(2 * BLOCK)))
    chunks.append(gzip.flush())
    return b"".join(chunks)


BLOCK = 512
FILE, LINK, PAX = b"0", b"1", b"x"


def _header(name: str, mode: int, size: int, mtime: int, kind: bytes, link: str = "") -> bytes:
    """A POSIX (ustar) header block; a name or link target longer than its field goes in a
    pax extended header before it, as POSIX.1-2001 has it (GNU tar and bsdtar read both)."""
    name_b, link_b = name.encode(), link.encode()
    records = b""
    if len(name_b) > 100:
        records += _pax_record("path", name_b)
        name_b = name_b[:100]
    if len(link_b) > 100:
        records += _pax_record("linkpath", link_b)
        link_b = link_b[:100]
    extended = b""
    if records:
        extended = (_header_block(b"././@PaxHeader", 0o644, len(records), 0, PAX, b"")
                    + records + bytes(-len(records) % BLOCK))
    return extended + _header_block(name_b, mode, size, mtime, kind, link_b)


def _pax_record(key: str, value: bytes) -> bytes:
    body = f" {key}=".encode() + value + b"\n"
    length = len(body) + 1
    while len(str(length)) + len(body) != length:  # the length counts its own digits
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _header_block(name: bytes, mode: int, size: int, mtime: int, kind: bytes,
                  link: bytes) -> bytes:
    def octal(value: int, width: int) -> bytes:
        return f"{value:0{width - 1}o}".encode() + b"\0"

    fields = [name.ljust(100, b"\0"), octal(mode, 8), octal(0, 8), octal(0, 8), octal(size, 12),
              octal(mtime, 12), b" " * 8, kind, link.ljust(100, b"\0"), b"ustar\x0000",
              bytes(32 + 32 + 8 + 8 + 155 + 12)]
    block = b"".join(fields)
    checksum = f"{sum(block):06o}".encode() + b"\0 "
    return block[:148] + checksum + block[156:]


def _same(entry, base) -> bool:
    old = base.by_path.get(entry.path) if base is not None else None
    return old is not None and (old.sha256, old.mode) == (entry.sha256, entry.mode)


def changed_count(manifest, base=None) -> int:
    """How many of manifest's files a payload against base carries as data."""
    return sum(1 for entry in manifest.entries if not _same(entry, base))


# --- the scripts ------------------------------------------------------------------------------

# Shell functions both scripts use.
# switch F: point `current` at releases/F with one rename(2) of a new symlink over it. POSIX
# mv would move it into the folder `current` points to: GNU mv needs -T, Chimera's (FreeBSD's)
# mv -h; only GNU's answers --version.
# newest_first: the folders named in history, newest first, each once.
# on_disk: those of the folders on stdin that hold a whole release (their marker).
_FUNCTIONS = f"""switch() {{
  rm -f .current.new
  ln -s "{RELEASES}/$1" .current.new
  if mv --version >/dev/null 2>&1; then
    mv -T .current.new {CURRENT}
  else
    mv -h .current.new {CURRENT}
  fi
}}
newest_first() {{
  awk '{{ line[NR] = $0 }} END {{ for (i = NR; i > 0; i--) if (!seen[line[i]]++) print line[i] }}' \\
    {HISTORY}
}}
on_disk() {{
  while IFS= read -r f; do [ -f "{RELEASES}/$f/{MARKER}" ] && echo "$f"; done
}}
"""


def _report_and_prune(keep: int) -> str:
    """Keep the newest `keep` releases in history that are on disk (the current one first),
    rewrite history to them, move every other folder under releases/ aside and remove it in
    the background; print `current <folder>` and `kept <folder>...`."""
    return f"""kept=$(newest_first | on_disk | head -n {keep})
printf '%s\\n' $kept | awk '{{ line[NR] = $0 }} END {{ for (i = NR; i > 0; i--) print line[i] }}' \\
  > {HISTORY}.new
mv {HISTORY}.new {HISTORY}
trash={RELEASES}/.trash.$$
for path in {RELEASES}/* {RELEASES}/.[!.]*; do
  name=${{path#{RELEASES}/}}
  case " $(echo $kept) " in *" $name "*) continue ;; esac
  case "$name" in '*'|'.[!.]*'|.trash.$$) continue ;; esac
  mkdir -p "$trash" && mv "$path" "$trash/"
done
if [ -d "$trash" ]; then (nice -n 19 rm -rf "$trash" </dev/null >/dev/null 2>&1 &); fi
echo "current $(readlink {CURRENT} | sed 's|^{RELEASES}/||')"
echo "kept" $kept
"""


def push_script(content_dir: str, release: str, base_folder: str | None, keep: int,
                fresh: bool = False) -> str:
    """Read the payload from stdin into releases/.incoming, check it is whole, name it, switch
    `current` to it, prune. Exits BASE_MISSING (before reading) when base_folder is gone.
    Files left in content_dir from before releases (an rsync'd tree) go once `current` is
    switched: the folder belongs to the push, as it did to `rsync --delete`.
    When `current` already holds the release (a run cut short after its switch, whose record
    here was lost), it is kept: nothing is read, no folder made; it prints `has <folder>`
    first. Unless fresh (the host was seen serving something else: its files may be edited in
    place), when the release goes into a new folder all the same."""
    q = shlex.quote
    folder = folder_of(release)
    has = "" if fresh else (
        f"if [ \"$(cat {CURRENT}/{MARKER} 2>/dev/null)\" = {q(release)} ]; then\n"
        f"  has=$(readlink {CURRENT} | sed 's|^{RELEASES}/||')\n"
        f"  grep -qxF \"$has\" {HISTORY} 2>/dev/null || echo \"$has\" >> {HISTORY}\n"
        f"  echo \"has $has\"\n"
        + "".join(f"  {line}\n" for line in _report_and_prune(keep).splitlines())
        + "  exit 0\nfi\n")
    base_check = ""
    if base_folder is not None:
        base_check = (f"if [ ! -f {q(f'{RELEASES}/{base_folder}/{MARKER}')} ]; then\n"
                      f"  echo 'release {base_folder} is not on this host' >&2\n"
                      f"  exit {BASE_MISSING}\nfi\n")
    return f"""set -eu
umask 022
{_FUNCTIONS}cd {q(content_dir)}
mkdir -p {RELEASES}
{has}{base_check}rm -rf {RELEASES}/{STAGE}
tar -xzf - -C {RELEASES}
if [ "$(cat {RELEASES}/{STAGE}/{MARKER} 2>/dev/null)" != {q(release)} ]; then
  echo 'the release arrived incomplete; nothing was switched' >&2
  exit 1
fi
folder={folder}
n=1
while [ -e "{RELEASES}/$folder" ]; do folder={folder}.$n; n=$((n + 1)); done
mv {RELEASES}/{STAGE} "{RELEASES}/$folder"
switch "$folder"
echo "$folder" >> {HISTORY}
find . -mindepth 1 -maxdepth 1 ! -name {RELEASES} ! -name {CURRENT} ! -name {HISTORY} \\
  -exec rm -rf {{}} +
{_report_and_prune(keep)}"""


def rollback_script(content_dir: str, keep: int) -> str:
    """Switch `current` to the release before it in history, drop the releases after that one
    from history and prune (so the release rolled back from is removed, in the background).
    No transfer. Exits NOTHING_TO_ROLL_BACK when the host has no earlier release."""
    q = shlex.quote
    return f"""set -eu
{_FUNCTIONS}cd {q(content_dir)}
now=$(readlink {CURRENT} 2>/dev/null | sed 's|^{RELEASES}/||')
[ -f {HISTORY} ] || touch {HISTORY}
previous=$(newest_first | awk -v now="$now" 'past {{ print }} $0 == now {{ past = 1 }}' \\
  | on_disk | head -n 1)
if [ -z "$previous" ]; then
  echo "no release before ${{now:-none}} to roll back to" >&2
  exit {NOTHING_TO_ROLL_BACK}
fi
switch "$previous"
awk -v p="$previous" '{{ line[NR] = $0; if ($0 == p) last = NR }}
  END {{ for (i = 1; i <= last; i++) print line[i] }}' {HISTORY} > {HISTORY}.new
mv {HISTORY}.new {HISTORY}
echo "was $now"
{_report_and_prune(keep)}"""


FOLDER = re.compile(rf"[0-9a-f]{{{FOLDER_CHARS}}}(\.[0-9]+)?")


def parse_report(output: str) -> tuple[str, list[str]]:
    """(current folder, kept folders newest first) from a push or rollback script's output.
    A folder the push would not have named (made on the host by hand) is refused: the names
    end up in later scripts and in file names here."""
    current, kept = None, []
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word == "current":
            current = rest.strip()
        elif word == "kept":
            kept = rest.split()
    for folder in [current, *kept]:
        if folder is None or not FOLDER.fullmatch(folder):
            raise ValueError(f"the host reports release folder {folder!r}, which no push made")
    return current, kept
