"""Writing apk v2 packages and a signed APKINDEX.tar.gz (see outpost.apk)."""
import base64
import hashlib
import os
import re
import stat
import tarfile
from collections.abc import Mapping
from pathlib import Path

from outpost.apk.keys import _signature_member
from outpost.apk.model import (MAX_DESCRIPTION, PAX_CHECKSUM, Package, PackageInfo,
                                VerifyError)
from outpost.apk.read import read_package
from outpost.apk.tar import _gzip, _member, _tar
from outpost.errors import OutpostError
from outpost.files import write_atomic


# ---------------------------------------------------------------- writing


def write_package(out_path: Path, info: PackageInfo, destdir: Path, key_path: Path) -> Path:
    """Write a signed apk v2 package of everything under destdir to out_path."""
    out_path, destdir = Path(out_path), Path(destdir)
    _check_info(info)
    data_gz, installed_size = _data_member(destdir, info.builddate)
    pkginfo = pkginfo_text(info, installed_size, hashlib.sha256(data_gz).hexdigest())
    control_gz = _gzip(_tar([(_member(".PKGINFO", tarfile.REGTYPE, 0o644, info.builddate),
                              pkginfo.encode())], tarfile.USTAR_FORMAT, cut=True))
    signature_gz = _signature_member(control_gz, key_path, info.builddate)
    write_atomic(out_path, signature_gz + control_gz + data_gz)
    return out_path


def pkginfo_text(info: PackageInfo, size: int, datahash: str) -> str:
    """The .PKGINFO, in abuild's field order (abuild.in prepare_metafiles, create_apks)."""
    lines = [("pkgname", info.pkgname), ("pkgver", info.pkgver), ("pkgdesc", info.pkgdesc),
             ("url", info.url), ("builddate", str(info.builddate)),
             ("packager", info.packager), ("size", str(size)), ("arch", info.arch),
             ("origin", info.origin)]
    if info.commit is not None:
        lines.append(("commit", info.commit))
    if info.maintainer is not None:
        lines.append(("maintainer", info.maintainer))
    lines.append(("license", info.license))
    lines += [("depend", d) for d in info.depends]
    lines += [("provides", p) for p in info.provides]
    lines.append(("datahash", datahash))
    return "".join(f"{key} = {value}\n" for key, value in lines)


def _check_info(info: PackageInfo) -> None:
    if not re.fullmatch(r"[^\s-][^\s]*-r[0-9]+", info.pkgver):
        raise OutpostError(f"package {info.pkgname!r}: pkgver {info.pkgver!r} must be the full "
                           "apk version with its release, such as '1.0-r0'")
    for name in ("pkgname", "pkgver", "pkgdesc", "url", "packager", "arch", "license", "origin",
                 "commit", "maintainer"):
        value = getattr(info, name)
        if value is not None and ("\n" in value or "\r" in value):
            raise OutpostError(f"package {info.pkgname!r}: {name} must be a single line")
    for name, values in (("pkgname", [info.pkgname]), ("arch", [info.arch]),
                         ("origin", [info.origin]), ("depends", info.depends),
                         ("provides", info.provides)):
        for value in values:
            if not value or any(c.isspace() for c in value):
                raise OutpostError(f"package {info.pkgname!r}: {name} value {value!r} "
                                   "must be non-empty and without spaces")


def _data_member(destdir: Path, builddate: int) -> tuple[bytes, int]:
    """The gzipped data tar (with its end-of-archive blocks) and the installed size."""
    if not destdir.is_dir():
        raise OutpostError(f"{destdir}: the package's destdir does not exist")
    entries, size, any_entry = [], 0, False
    for rel in _sorted_tree(destdir):
        path = destdir / rel
        st = path.lstat()
        mode = stat.S_IMODE(st.st_mode)
        any_entry = True
        if stat.S_ISDIR(st.st_mode):
            entries.append((_member(rel, tarfile.DIRTYPE, mode, builddate), None))
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            member = _member(rel, tarfile.SYMTYPE, mode, builddate)
            member.linkname = target
            member.pax_headers = {PAX_CHECKSUM: hashlib.sha1(os.fsencode(target)).hexdigest()}
            entries.append((member, None))
        elif stat.S_ISREG(st.st_mode):
            content = path.read_bytes()
            member = _member(rel, tarfile.REGTYPE, mode, builddate)
            member.pax_headers = {PAX_CHECKSUM: hashlib.sha1(content).hexdigest()}
            entries.append((member, content))
            size += len(content)
        else:
            raise OutpostError(f"{path}: only directories, regular files and symlinks "
                               "can go into a package")
    # apk-tools 2 treats a package of size 0 as virtual and extracts nothing (abuild.in).
    if size == 0 and any_entry:
        size = 1
    return _gzip(_tar(entries, tarfile.PAX_FORMAT, cut=False)), size


def _sorted_tree(root: Path) -> list[str]:
    """Every path below root, relative, in byte order (abuild: `LC_ALL=C sort -z`)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        found += [(base / name).as_posix() for name in dirnames + filenames]
    return sorted(found, key=os.fsencode)


def write_index(out_path: Path, apk_paths: list[Path], key_path: Path,
                description: str | None = None, arch: str | None = None) -> Path:
    """Write a signed APKINDEX.tar.gz listing the packages at apk_paths.

    arch: the repository folder's arch. apk (2 and 3) fetches a package from
    `URL/<its A: arch>/NAME-VER.apk`, so a noarch package listed as noarch in URL/x86_64/ is
    looked for in URL/noarch/. Given arch, every entry says A:<arch>, as abuild does with
    `apk index --rewrite-arch $CARCH`; packages built for another arch are refused."""
    out_path = Path(out_path)
    if description is not None and len(description.encode()) > MAX_DESCRIPTION:
        raise OutpostError(f"{out_path}: the index description is longer than "
                           f"{MAX_DESCRIPTION} bytes, which apk ignores")
    entries, seen = [], {}
    for apk_path in apk_paths:
        package = read_package(apk_path)
        fields = index_fields(package, Path(apk_path).stat().st_size)
        if arch is not None:
            if fields.get("A") not in ("noarch", arch):
                raise OutpostError(f"{apk_path}: built for {fields.get('A')}, "
                                   f"so it does not belong in the {arch} index {out_path}")
            fields["A"] = arch
        identity = (fields["P"], fields["V"], fields.get("A"))
        if identity in seen:
            raise OutpostError(f"{apk_path}: {fields['P']}-{fields['V']} is already in the index "
                               f"from {seen[identity]}")
        seen[identity] = apk_path
        entries.append(fields)
    # Sorted by name and version, as `apk index` lists them; independent of the argument order.
    entries.sort(key=lambda f: (f["P"], f["V"], f.get("A", "")))
    text = "".join(index_entry_text(f) for f in entries).encode()

    mtime = max((int(f.get("t", 0)) for f in entries), default=0)
    members = []
    if description is not None:
        members.append((_member("DESCRIPTION", tarfile.REGTYPE, 0o644, mtime),
                        description.encode()))
    members.append((_member("APKINDEX", tarfile.REGTYPE, 0o644, mtime), text))
    unsigned = _gzip(_tar(members, tarfile.USTAR_FORMAT, cut=False))
    write_atomic(out_path, _signature_member(unsigned, key_path, mtime) + unsigned)
    return out_path


# APKINDEX field order (apk-tools src/package.c apk_pkg_write_index_header).
INDEX_FIELDS = ("C", "P", "V", "A", "S", "I", "T", "U", "L", "o", "m", "t", "c", "k", "D", "p", "i")


def index_fields(package: Package, file_size: int) -> dict[str, str]:
    """The APKINDEX fields of one package."""
    info = package.info
    control_sha1 = hashlib.sha1(package.control_gz).digest()
    fields = {"C": "Q1" + base64.b64encode(control_sha1).decode(),
              "P": info.get("pkgname"), "V": info.get("pkgver"), "A": info.get("arch"),
              "S": str(file_size), "I": info.get("size"), "T": info.get("pkgdesc"),
              "U": info.get("url"), "L": info.get("license"), "o": info.get("origin"),
              "m": info.get("maintainer"), "t": info.get("builddate"),
              "c": info.get("commit"), "k": info.get("provider_priority"),
              "D": " ".join(info.get("depend", [])), "p": " ".join(info.get("provides", [])),
              "i": info.get("install_if")}
    for letter, key in (("P", "pkgname"), ("V", "pkgver"), ("I", "size")):
        if not fields[letter]:
            raise VerifyError(f"{package.path}: .PKGINFO has no {key}")
    return {k: v for k, v in fields.items() if v}


def index_entry_text(fields: Mapping[str, str]) -> str:
    return "".join(f"{k}:{fields[k]}\n" for k in INDEX_FIELDS if k in fields) + "\n"
