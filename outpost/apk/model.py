"""The apk formats' constants, data and version order (see outpost.apk)."""
import re
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import OutpostError


# cryptography is imported by the functions that sign, verify or make keys, not at the top:
# the task definitions import this module, and a no-op deploy does none of that.

# cbuild keygen's default size (cports src/runner.py do_keygen); abuild-keygen uses 4096.
# 2048 keeps key generation fast in the test suite and is still a sound RSA size.
KEY_BITS = 2048

# Signature entry types apk-tools knows, in apk's order of preference (src/extract_v2.c),
# with the name of each one's hash in cryptography.hazmat.primitives.hashes.
SIGNATURE_HASHES = {"RSA512": "SHA512", "RSA256": "SHA256", "RSA": "SHA1"}
SIGNATURE_TYPE = "RSA256"

PAX_CHECKSUM = "APK-TOOLS.checksum.SHA1"

# .PKGINFO keys that may appear more than once (abuild prepare_metafiles).
LIST_KEYS = ("depend", "provides", "replaces")

# apk only reads a DESCRIPTION of up to 160 bytes (src/extract_v2.c).
MAX_DESCRIPTION = 160


class VerifyError(OutpostError):
    """A package or index is malformed, changed, or not signed by a trusted key."""


@dataclass
class PackageInfo:
    pkgname: str
    pkgver: str  # the full apk version, with the release: "2.0.12-r1"
    pkgdesc: str
    url: str
    builddate: int
    packager: str
    arch: str
    license: str
    origin: str
    commit: str | None = None
    depends: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    maintainer: str | None = None


@dataclass
class FileEntry:
    path: str
    type: str  # "dir", "file" or "symlink"
    mode: int
    size: int
    sha1: str | None  # the PAX APK-TOOLS.checksum.SHA1 as recorded in the package
    link_target: str | None = None
    content: bytes | None = None  # regular files only


@dataclass
class Package:
    path: Path
    info: dict  # .PKGINFO: key -> str, or list[str] for LIST_KEYS
    files: list[FileEntry]
    signatures: list[tuple[str, bytes]]  # (".SIGN.RSA256.<key>.rsa.pub", signature)
    signature_gz: bytes
    control_gz: bytes
    data_gz: bytes


@dataclass
class IndexEntry:
    fields: dict[str, str]  # one-letter APKINDEX field -> value ("C", "P", "V", ...)


# apk's version order (apk-tools src/version.c): numbers, a letter, _suffixes, then -rN.
PRE_SUFFIXES = {"alpha": 0, "beta": 1, "pre": 2, "rc": 3}
POST_SUFFIXES = {"cvs": 5, "svn": 6, "git": 7, "hg": 8, "p": 9}
RELEASE = (4, 0)
VERSION = re.compile(r"(\d+(?:\.\d+)*)([a-z]?)((?:_[a-z]+\d*)*)(?:~[0-9a-f]+)?(?:-r(\d+))?")


def version_key(version: str) -> tuple:
    """A sort key ordering apk versions as apk does. ValueError for a malformed version."""
    match = VERSION.fullmatch(version)
    if not match:
        raise ValueError(f"package version is invalid: {version}")
    numbers, letter, suffixes, release = match.groups()
    ranks = []
    for suffix in filter(None, suffixes.split("_")):
        word, number = re.fullmatch(r"([a-z]+)(\d*)", suffix).groups()
        if word in PRE_SUFFIXES:
            ranks.append((PRE_SUFFIXES[word], int(number or 0)))
        elif word in POST_SUFFIXES:
            ranks.append((POST_SUFFIXES[word], int(number or 0)))
        else:
            raise ValueError(f"package version is invalid: {version}")
    return (tuple(int(n) for n in numbers.split(".")), letter, tuple(ranks) + (RELEASE,),
            int(release or 0))
