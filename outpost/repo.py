"""The apk repository in build/repo/<arch>/: the packages for that arch plus a signed index.

The rule that keeps hosts sane: the repository never holds two different packages with the
same name and version (apk would keep whichever it saw first). place() enforces it for every
file that goes into build/apks/ or build/repo/.
"""
from __future__ import annotations

import filecmp
import os
import re
import shutil
from pathlib import Path

from outpost import apk
from outpost.errors import OutpostError

INDEX_V2 = "APKINDEX.tar.gz"
INDEX_V3 = "Packages.adb"


def repo_dir(inventory, arch: str) -> Path:
    return inventory.root / "build" / "repo" / arch


# <name>-<version>-r<release>.apk; apk versions start with a digit and hold no "-" before -r.
APK_FILE = re.compile(r"(.+?)-(\d[^-]*-r\d+)\.apk")


def versions(repo_dir: Path) -> dict[str, list[str]]:
    """{package name: [versions in the folder, newest first]}."""
    found: dict[str, list[str]] = {}
    for path in repo_dir.glob("*.apk") if repo_dir.is_dir() else ():
        match = APK_FILE.fullmatch(path.name)
        if match:
            found.setdefault(match.group(1), []).append(match.group(2))
    return {name: sorted(found[name], key=apk.version_key, reverse=True) for name in sorted(found)}


def prune(repo_dir: Path, keep: int, published: list[Path]) -> list[Path]:
    """Remove all but the `keep` newest versions of each package, never one just published
    (a template taken back to an older version keeps it). Returns what it removed."""
    removed = []
    for name, kept in versions(repo_dir).items():
        for version in kept[keep:]:
            path = repo_dir / f"{name}-{version}.apk"
            if path.name not in {p.name for p in published}:
                path.unlink()
                removed.append(path)
    return removed


def place(src: Path, dest: Path, template_path: Path | None, link: bool = True) -> Path:
    """Put the package src at dest: a hardlink (a copy across file systems), or a copy when
    `link` is false (for files another program may rewrite in place).

    The same bytes already at dest are kept as they are. Other bytes under the same name are
    refused and kept: a package's name and version must change whenever its contents do."""
    if dest.exists():
        if filecmp.cmp(src, dest, shallow=False):
            return dest
        where = template_path or "the package's template.py"
        raise OutpostError(
            f"{dest} already exists with other contents, and a repository never holds two "
            f"different packages with the same name and version: bump pkgrel (or pkgver) in "
            f"{where}. The existing package is kept.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    replace(src, dest, link)
    return dest


def replace(src: Path, dest: Path, link: bool = True) -> None:
    """Make dest a hardlink to (or a copy of) src, atomically: readers never see half a file.
    Files here are only ever replaced by a rename, never rewritten, so sharing one inode
    between build/apks/ and build/repo/ can't change a published file."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    if link:
        try:
            os.link(src, tmp)
        except OSError:  # another file system
            link = False
    if not link:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def publish(arch: str, apk_paths: list[Path], repo_dir: Path, builder, key_path: Path,
            keep: int = 3) -> list[Path]:
    """Put the packages built for `arch` into repo_dir and index them.

    v2 (local builder): the packages (noarch ones included) go in, the `keep` newest versions
    of each package stay (so hosts can go back without a rebuild), then a signed
    APKINDEX.tar.gz over every .apk in repo_dir is written with key_path.
    v3 (cbuild): cbuild already indexed and signed its folder with its own key; its
    Packages.adb lists every package in that folder, so all of them go in, with Packages.adb
    and APKINDEX.tar.gz as a hardlink to it (as cbuild lays it out, apk/cli.py build_index)."""
    repo_dir.mkdir(parents=True, exist_ok=True)
    apk_paths = [Path(p) for p in apk_paths]
    if builder.index_format == "v2":
        for path in apk_paths:
            place(path, repo_dir / path.name, builder.template_path_of(path.name))
        prune(repo_dir, keep, apk_paths)
        index = repo_dir / INDEX_V2
        # arch=: apk fetches a package from <repo>/<its index A: arch>/, so noarch packages
        # are listed under this folder's arch (abuild: apk index --rewrite-arch).
        apk.write_index(index, sorted(repo_dir.glob("*.apk")), key_path, arch=arch)
        return [index]

    indexes = [p for p in apk_paths if p.name == INDEX_V3]
    if not indexes:
        raise OutpostError(f"no {INDEX_V3} among the {arch} build outputs: "
                           + ", ".join(str(p) for p in apk_paths))
    built = indexes[0].parent
    for path in sorted(built.glob("*.apk")):
        place(path, repo_dir / path.name, builder.template_path_of(path.name))
    replace(built / INDEX_V3, repo_dir / INDEX_V3)
    replace(repo_dir / INDEX_V3, repo_dir / INDEX_V2)
    return [repo_dir / INDEX_V3, repo_dir / INDEX_V2]
