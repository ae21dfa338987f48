"""The two package builders, behind one interface. `make_builder(inventory)` picks one.

    build_arches(host_arches) -> the arches that get a build:<arch> task
    sources(arch)             -> the build arches whose packages go into repository <arch>
    packages(arch)            -> the inventory packages build:<arch> builds
    targets(arch)             -> the files build:<arch> writes (pure: reads templates, builds nothing)
    build(arch)               -> builds, returns the files written
    stage_dir(arch)           -> the local builder's staging folder, for `doit clean`
    settings()                -> what, when changed, must rebuild (doit config_changed)
    index_format              -> "v2": publish writes APKINDEX.tar.gz; "v3": cbuild's Packages.adb
    template_path_of(apk)     -> the template.py that makes a package file, for error messages

LocalBuilder builds on this machine, with no bldroot, from the template's install hooks (see
outpost.template): arch-independent packages only, built once as "noarch" and published into
every arch's repository. CbuildBuilder runs cports' own ./cbuild once per target arch.
"""
from __future__ import annotations

import collections
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from outpost import apk
from outpost.errors import OutpostError
from outpost.repo import INDEX_V2, INDEX_V3, place, replace
from outpost.template import load_template, install, source_date_epoch, USE_CBUILD

NOARCH = "noarch"
PACKAGER = "Outpost local builder"
# The overlay files cbuild reads from a template folder (FACTS.md, cbuild).
OVERLAY_ENTRIES = ("template.py", "files", "patches")
# cbuild's exit code when it built the packages but refused to unstage them (runner.py).
EXIT_UNSTAGE_REFUSED = 32
OUTPUT_TAIL_LINES = 30


class _Builder:
    def __init__(self, inventory):
        self.inventory = inventory
        self.root = inventory.root

    def packages(self, arch: str):
        return list(self.inventory.packages)

    def apk_dir(self, arch: str) -> Path:
        return self.root / "build" / "apks" / arch

    def stage_dir(self, arch: str) -> Path:
        return self.root / "build" / "stage" / arch

    def template_path_of(self, apk_name: str) -> Path | None:
        """The template.py of the inventory package an apk file name belongs to."""
        matches = [p for p in self.inventory.packages if apk_name.startswith(p.name + "-")]
        if not matches:
            return None
        return max(matches, key=lambda p: len(p.name)).template_dir / "template.py"

    def _apk_targets(self, arch: str) -> list[Path]:
        return [self.apk_dir(arch) / load_template(p.template_dir).apk_name
                for p in self.packages(arch)]


class LocalBuilder(_Builder):
    kind = "local"
    index_format = "v2"

    def make_key(self, private_path: Path):
        """The repository signing key: made here, like `cbuild keygen` would."""
        apk.generate_key(private_path)

    def settings(self) -> dict:
        return {"kind": self.kind}

    def build_arches(self, host_arches) -> list[str]:
        # Arch-independent packages only: one build serves every arch.
        return [NOARCH] if self.inventory.packages and host_arches else []

    def sources(self, arch: str) -> list[str]:
        return [NOARCH]

    def targets(self, arch: str) -> list[Path]:
        return self._apk_targets(arch)

    def build(self, arch: str) -> list[Path]:
        if arch != NOARCH:
            raise OutpostError(f"the local builder builds {NOARCH} packages only, not {arch}; "
                               f"{USE_CBUILD}")
        written = []
        for package in self.packages(arch):
            written.append(self._build_one(package.template_dir, arch))
        return written

    def _build_one(self, template_dir: Path, arch: str) -> Path:
        template = load_template(template_dir)
        problem = template.local_build_problem()
        if problem:
            raise OutpostError(f"{template.path}: {problem}; {USE_CBUILD}")
        destdir = self.stage_dir(arch) / template.pkgname
        if destdir.exists():
            shutil.rmtree(destdir)
        destdir.mkdir(parents=True)
        install(template, destdir)

        info = apk.PackageInfo(
            pkgname=template.pkgname, pkgver=template.version, pkgdesc=template.pkgdesc,
            url=template.url, builddate=source_date_epoch(template.folder),
            packager=PACKAGER, arch=NOARCH, license=template.license,
            origin=template.pkgname, depends=tuple(template.depends))
        target = self.apk_dir(arch) / template.apk_name
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written beside the target first: an existing package with other bytes is kept.
        fresh = target.with_name(f".{target.name}.new")
        try:
            apk.write_package(fresh, info, destdir, self.inventory.repository.signing_key)
            place(fresh, target, template.path)
        finally:
            fresh.unlink(missing_ok=True)
        return target


class CbuildBuilder(_Builder):
    kind = "cbuild"
    index_format = "v3"

    def __init__(self, inventory):
        super().__init__(inventory)
        self.cports = inventory.builder.cports
        self.args = tuple(inventory.builder.args)
        self.config = inventory.builder.config

    def make_key(self, private_path: Path):
        # cbuild signs with the key its own config names; a key made here would not be it.
        raise OutpostError(
            f"{self.inventory.path}: [repository] signing_key {private_path} does not exist. "
            f"With the cbuild builder, make it in the cports clone ({self.cports}) with "
            "`./cbuild keygen`, then point signing_key at the etc/keys/*.rsa it wrote")

    def settings(self) -> dict:
        return {"kind": self.kind, "cports": str(self.cports), "args": list(self.args),
                "config": self.config}

    def build_arches(self, host_arches) -> list[str]:
        # cbuild builds (cross-compiles) every package per target arch.
        return list(host_arches)

    def sources(self, arch: str) -> list[str]:
        return [arch]

    def targets(self, arch: str) -> list[Path]:
        return self._apk_targets(arch) + [self.apk_dir(arch) / INDEX_V3,
                                          self.apk_dir(arch) / INDEX_V2]

    def command(self, arch: str, package) -> list[str]:
        config = ["-c", self.config] if self.config else []
        return ["./cbuild", *config, *self.args, "-a", arch, "pkg",
                f"{package.category}/{package.name}"]

    def output_dir(self, arch: str, category: str) -> Path:
        """Where cbuild puts the packages: <repository path>/<category>/<arch> in the clone."""
        return self.cports / _repository_path(self.args) / category / arch

    def build(self, arch: str) -> list[Path]:
        self._check_clone()
        packages = self.packages(arch)
        categories = sorted({p.category for p in packages})
        if len(categories) > 1:
            raise OutpostError(f"{self.inventory.path}: [[packages]] use categories "
                               f"{', '.join(categories)}; with the cbuild builder they must "
                               "share one, since cbuild indexes each category on its own")
        for package in packages:
            self._copy_overlay(package)
            self._run(self.command(arch, package))
        return self._collect(arch, packages)

    def _check_clone(self) -> None:
        where = f"{self.inventory.path}: [builder] cports"
        if self.cports is None:
            raise OutpostError(f"{where} is not set; it must be the path of a cports git clone")
        if not self.cports.is_dir():
            raise OutpostError(f"{where} = {str(self.cports)!r}: no such folder; it must be "
                               "the path of a cports git clone")
        if not (self.cports / ".git").exists():
            raise OutpostError(f"{where} = {str(self.cports)!r} is not a git clone (no .git); "
                               "cbuild only runs from a git clone of cports")
        if not (self.cports / "cbuild").is_file():
            raise OutpostError(f"{where} = {str(self.cports)!r} has no ./cbuild; it must be "
                               "a clone of chimera-linux/cports")

    def _copy_overlay(self, package) -> None:
        """Replace <clone>/<category>/<name>/ by the overlay's template.py, files/, patches/."""
        src = package.template_dir
        if not (src / "template.py").is_file():
            raise OutpostError(f"{src / 'template.py'}: no such file (package {package.name!r} "
                               f"in {self.inventory.path})")
        dest = self.cports / package.category / package.name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in OVERLAY_ENTRIES:
            entry = src / name
            if entry.is_dir():
                shutil.copytree(entry, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif entry.is_file():
                shutil.copy2(entry, dest / name)

    def _run(self, command: list[str]) -> None:
        """Run cbuild in the clone, showing its output as it comes and keeping the tail."""
        tail = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        try:
            proc = subprocess.Popen(command, cwd=self.cports, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, errors="replace")
        except OSError as err:
            raise OutpostError(f"{self.cports}/cbuild: cannot run it: {err.strerror}") from None
        with proc:
            for line in proc.stdout:
                sys.stdout.write(line)
                tail.append(line.rstrip("\n"))
        ran = f"{shlex.join(command)} (in {self.cports})"
        output = "\n".join(f"  {line}" for line in tail)
        if proc.returncode == EXIT_UNSTAGE_REFUSED:
            raise OutpostError(
                f"cbuild left the packages in pkgstage/ (exit {EXIT_UNSTAGE_REFUSED}): "
                f"unstaging them into the repository was refused, see cbuild's output. "
                f"Command: {ran}\nLast lines of its output:\n{output}")
        if proc.returncode != 0:
            raise OutpostError(f"cbuild failed with exit code {proc.returncode}. Command: {ran}"
                               f"\nLast lines of its output:\n{output}")

    def _collect(self, arch: str, packages) -> list[Path]:
        """Copy cbuild's packages and index into build/apks/<arch>/. Packages.adb lists every
        package in cbuild's folder, so all of them come along."""
        if not packages:
            return []
        built = self.output_dir(arch, packages[0].category)
        index = built / INDEX_V3
        if not index.is_file():
            raise OutpostError(f"cbuild finished but wrote no index {index}; check "
                               f"[builder] args in {self.inventory.path} (--stage or -r?)")
        for package in packages:
            name = load_template(package.template_dir).apk_name
            if not (built / name).is_file():
                raise OutpostError(f"cbuild finished but wrote no {name} in {built}")
        out = self.apk_dir(arch)
        out.mkdir(parents=True, exist_ok=True)
        # Copies, not hardlinks: cbuild may rewrite its files in place on the next build.
        written = [place(path, out / path.name, self.template_path_of(path.name), link=False)
                   for path in sorted(built.glob("*.apk"))]
        # The index is remade on every build: replaced, and APKINDEX.tar.gz stays its hardlink.
        replace(index, out / INDEX_V3, link=False)
        replace(out / INDEX_V3, out / INDEX_V2)
        return written + [out / INDEX_V3, out / INDEX_V2]


def _repository_path(args) -> str:
    """cbuild's -r/--repository-path from the user's args (default "packages", runner.py)."""
    path = "packages"
    args = list(args)
    for i, arg in enumerate(args):
        if arg in ("-r", "--repository-path") and i + 1 < len(args):
            path = args[i + 1]
        elif arg.startswith("--repository-path="):
            path = arg.split("=", 1)[1]
    return path


def make_builder(inventory) -> LocalBuilder | CbuildBuilder:
    if inventory.builder.kind == "cbuild":
        return CbuildBuilder(inventory)
    return LocalBuilder(inventory)


# --- the package templates ----------------------------------------------------------------------

def template_versions(inventory) -> dict[str, str]:
    """The version of each package its template builds."""
    return {p.name: load_template(p.template_dir).version for p in inventory.packages}


def broken_template(inventory) -> str | None:
    """Why a package template can't be read, or None. A broken template stops only what needs
    the package (build, index, upgrade, rollback); the rest of the pipeline goes on."""
    try:
        template_versions(inventory)
    except OutpostError as error:
        return str(error)
    return None
