"""Signed bundles: how a root-owned file on a host changes.

The deploy user has no doas rule that takes a path, a file or an argument. To change a root-owned
file, a step builds a bundle here, on the build machine: the files, the folders it gives the
deploy user, the checks to run on the staged copy and what to reload; signs it with the
repository's key (the one whose public half apk trusts); and pipes it to
`doas /usr/libexec/outpost/apply` (templates/outpost/apply.j2, installed by the bootstrap as
root). The helper verifies the signature, the host and the serial before it trusts a byte.

    Bundle(host, step, files=[HostFile...], folders=[Folder...], checks=[(kind, path)...],
           actions=[Action...])
    signed(bundle, key_path, serial)     the bytes the helper reads on stdin
    apply_script(data)                   one sh script: those bytes into the helper

The manifest (MANIFEST in the bundle's tar, one line per item, fields split on spaces; every
path is checked here to hold no space or control character):

    host NAME | step NAME | serial N
    folder OWNER MODE PATH          a folder the deploy user writes (content)
    file MODE TRIGGER PATH          files/PATH in the tar; TRIGGER (or -) names what it changes
    keep MODE TRIGGER PATH SHA256   a file sent by hash only: the host must already have it
    check nginx|doas|gdnsd PATH     run on the staged copy before anything is switched
    enable SERVICE                  enable (and so start) once
    on TRIGGER reload|restart|reload-zones SERVICE   when a file with TRIGGER changed
    start SERVICE                   make sure it runs
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import re
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import OutpostError

HELPER = "/usr/libexec/outpost/apply"
# Written by the bootstrap: the host's own name, which every bundle must carry.
HOST_FILE = "/etc/outpost/host"
# The helper's own folder (root's, mode 700): staging and the last serial of each step.
STATE = "/var/lib/outpost/apply"
MAGIC = "outpost-bundle 1"
# The helper's exit statuses.
EXITS = {"refused": 65, "needs": 66, "bad": 67, "unsafe": 68}

_WORD = re.compile(r"[A-Za-z0-9_.+@-]+")
_PATH = re.compile(r"(/[A-Za-z0-9_.+@-]+)+")
CHECKS = ("nginx", "doas", "gdnsd")
VERBS = ("reload", "restart", "reload-zones")


@dataclass(frozen=True)
class HostFile:
    """A file a host receives. Every root-owned file reaches a host in a bundle as one of these;
    a web host's config file is first one without content, saying where its content comes
    from (a template, or a file of this machine), and then the same with it."""
    remote_path: str            # absolute path on the host
    mode: int
    content: bytes | None = None  # None: sent by hash only (the host must have it), or not made yet
    service: str | None = None  # what acts when the file changes (the bundle's trigger)
    sha256: str | None = None   # of the content, for a file sent by hash only
    action: str | None = None   # "reload" (re-read config, keep serving) or "restart"
    template: str | None = None  # under templates/, when rendered
    source: Path | None = None  # the local file to copy, when not rendered

    def local_path(self, out_dir: Path) -> Path:
        """Where the host's copy is here: its source, or where config renders it
        (out_dir/<remote_path without its leading />)."""
        if self.source is not None:
            return self.source
        return Path(out_dir) / self.remote_path.lstrip("/")

    def by_hash(self) -> "HostFile":
        """The same file sent by its hash only: the host must already have it."""
        return dataclasses.replace(self, content=None, sha256=sha256(self.content))


@dataclass(frozen=True)
class Folder:
    path: str
    owner: str
    mode: int = 0o755


@dataclass(frozen=True)
class Action:
    trigger: str
    verb: str
    service: str


@dataclass(frozen=True)
class Bundle:
    host: str
    step: str
    files: tuple[HostFile, ...] = ()
    folders: tuple[Folder, ...] = ()
    checks: tuple[tuple[str, str], ...] = ()
    enable: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()
    start: tuple[str, ...] = ()


def actions_of(files) -> tuple[Action, ...]:
    """A reload or restart of each service whose files say so (HostFile service, action)."""
    return tuple(sorted({Action(f.service, f.action, f.service) for f in files
                         if f.service and f.action}, key=lambda a: (a.service, a.verb)))


def _word(value: str, what: str) -> str:
    if not _WORD.fullmatch(value):
        raise OutpostError(f"bundle: {what} {value!r} is not a plain word")
    return value


def _path(value: str) -> str:
    # Paths reach sh unquoted in the helper's loops: one word of safe characters only.
    if not _PATH.fullmatch(value) or "/../" in value + "/" or "/./" in value + "/":
        raise OutpostError(f"bundle: {value!r} is not a plain absolute path")
    return value


def manifest(bundle: Bundle, serial: int) -> str:
    lines = [f"host {_word(bundle.host, 'host')}", f"step {_word(bundle.step, 'step')}",
             f"serial {int(serial)}"]
    lines += [f"folder {_word(f.owner, 'owner')} {f.mode:o} {_path(f.path)}"
              for f in bundle.folders]
    for f in bundle.files:
        trigger = _word(f.service, "trigger") if f.service else "-"
        if f.content is None:
            lines.append(f"keep {f.mode:o} {trigger} {_path(f.remote_path)} "
                         f"{_word(f.sha256, 'sha256')}")
        else:
            lines.append(f"file {f.mode:o} {trigger} {_path(f.remote_path)}")
    for kind, path in bundle.checks:
        if kind not in CHECKS:
            raise OutpostError(f"bundle: unknown check {kind!r}")
        lines.append(f"check {kind} {_path(path)}")
    lines += [f"enable {_word(s, 'service')}" for s in bundle.enable]
    for a in bundle.actions:
        if a.verb not in VERBS:
            raise OutpostError(f"bundle: unknown action {a.verb!r}")
        lines.append(f"on {_word(a.trigger, 'trigger')} {a.verb} {_word(a.service, 'service')}")
    lines += [f"start {_word(s, 'service')}" for s in bundle.start]
    return "\n".join(lines) + "\n"


def _member(name: str, data: bytes, mode: int) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    info.uname = info.gname = "root"
    return info, io.BytesIO(data)


def archive(bundle: Bundle, serial: int) -> bytes:
    """The bundle's gzip'd tar: MANIFEST, then files/<path> of each file sent."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(*_member("MANIFEST", manifest(bundle, serial).encode(), 0o600))
        for f in bundle.files:
            if f.content is not None:
                tar.addfile(*_member("files" + f.remote_path, f.content, 0o600))
    return out.getvalue()


def signed(bundle: Bundle, key_path: Path, serial: int) -> bytes:
    """What the helper reads: `outpost-bundle 1 <base64 signature>` then the archive. The
    signature is RSA PKCS#1 v1.5 over the archive's SHA-256, as `openssl dgst -sha256 -sign`
    makes it with the repository's key, so `openssl dgst -verify` checks it on the host."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from outpost.apk.keys import _load_private_key
    data = archive(bundle, serial)
    signature = _load_private_key(key_path).sign(data, padding.PKCS1v15(), hashes.SHA256())
    return f"{MAGIC} {base64.b64encode(signature).decode()}\n".encode() + data


def apply_script(data: bytes) -> str:
    """One sh script that feeds the signed bundle to the helper through doas."""
    return ("set -eu\nbase64 -d <<'OUTPOST_BUNDLE' | " + shlex.join(["doas", HELPER]) + "\n"
            + base64.encodebytes(data).decode() + "OUTPOST_BUNDLE\n")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
