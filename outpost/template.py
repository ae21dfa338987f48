"""Read a cports template.py without cbuild: its metadata, and its install hooks for the local
builder.

A template is the user's own Python file, so it is executed, as cbuild does (cports
src/cbuild/core/template.py, exec_module). At the top level `self` offers only `get_data`;
hooks get a BuildContext whose helpers put files where cbuild's helpers of the same name put
them, with the same modes. Whatever the local builder can't do raises an OutpostError that names
the template and says to use the cbuild builder.

cports has no "noarch": every package is built per target arch, and `archs` is a list of arch
patterns the template may be built for (cports Packaging.md, "Architecture Patterns"). The local
builder makes arch-independent packages only (arch "noarch", which apk accepts on every arch),
and refuses a package with native code (an ELF file).
"""
from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import traceback
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from outpost.errors import OutpostError

USE_CBUILD = ('use the cbuild builder instead ([builder] kind = "cbuild" and cports = '
              '"<path of a cports clone>" in the inventory)')

# cbuild's mandatory fields and their types (core_fields, "mandatory" column).
MANDATORY_FIELDS = {"pkgname": str, "pkgver": str, "pkgrel": int, "pkgdesc": str,
                    "license": str, "url": str}

# build_style None runs only the template's hooks; "meta" installs nothing (build_style/meta.py).
LOCAL_BUILD_STYLES = (None, "meta")

# cbuild's phases (tmpl_hooks); each may also have pre_/post_/init_ hooks.
PHASES = ("fetch", "extract", "prepare", "patch", "configure", "build", "check", "install")

# The hooks the local builder runs, in order. `do_install` is the name cbuild used before
# commit d43505148 (2024, "drop do_ prefix from hook names").
LOCAL_HOOKS = (("install", "do_install"), ("post_install",))

ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class Template:
    path: Path                      # .../<category>/<pkgname>/template.py
    fields: dict[str, Any]          # every public top-level value (pkgname, pkgver, ...)
    hooks: dict[str, Callable]      # every public top-level function, by name
    data_keys: tuple[str, ...]      # what the template read with self.get_data(...)
    declares_subpackages: bool

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def files_path(self) -> Path:
        return self.folder / "files"

    @property
    def pkgname(self) -> str:
        return self.fields["pkgname"]

    @property
    def pkgver(self) -> str:
        return self.fields["pkgver"]

    @property
    def pkgrel(self) -> int:
        return self.fields["pkgrel"]

    @property
    def pkgdesc(self) -> str:
        return self.fields["pkgdesc"]

    @property
    def license(self) -> str:
        return self.fields["license"]

    @property
    def url(self) -> str:
        return self.fields["url"]

    @property
    def depends(self) -> list[str]:
        return self.fields.get("depends", [])

    @property
    def archs(self) -> list[str] | None:
        return self.fields.get("archs")

    @property
    def build_style(self) -> str | None:
        return self.fields.get("build_style")

    @property
    def source(self) -> list[str] | str:
        return self.fields.get("source", [])

    @property
    def version(self) -> str:
        """The apk version: "2.0.12-r1"."""
        return f"{self.pkgver}-r{self.pkgrel}"

    @property
    def apk_name(self) -> str:
        return f"{self.pkgname}-{self.version}.apk"

    def local_build_problem(self) -> str | None:
        """Why the local builder can't build this template, or None when it can."""
        if self.build_style not in LOCAL_BUILD_STYLES:
            return (f"build_style = {self.build_style!r} needs a build system and a bldroot; "
                    "the local builder supports no build_style or \"meta\" only")
        if self.source:
            return "it has a source, and the local builder fetches no sources"
        if self.declares_subpackages:
            return "it declares subpackages, which the local builder does not split"
        if self.data_keys:
            return (f"self.get_data({self.data_keys[0]!r}) reads cbuild's config [data] "
                    "section, which the local builder does not have")
        runs = {name for names in LOCAL_HOOKS for name in names}
        for name in sorted(self.hooks):
            if name not in runs:
                return (f"hook {name}() is not run by the local builder (it runs only "
                        "install() or do_install(), then post_install())")
        if "install" in self.hooks and "do_install" in self.hooks:
            return "it defines both install() and do_install() (the current name is install)"
        return None


class _TopLevelSelf:
    """`self` while the template's top level runs. cbuild's Template offers much more here;
    outpost offers get_data only and remembers which keys were read."""

    def __init__(self, path: Path):
        self._path = path
        self.data_keys: list[str] = []
        self.declares_subpackages = False

    def get_data(self, key, default=None):
        # The [data] section is in cbuild's config, which outpost does not read.
        self.data_keys.append(key)
        return default

    def subpackage(self, *args, **kwargs):
        self.declares_subpackages = True
        return lambda fn: fn

    def __getattr__(self, name):
        raise OutpostError(f"{self._path}: the template uses self.{name} at its top level; "
                           "outpost reads template metadata without cbuild and offers only "
                           "self.get_data() there")


def load_template(template_dir: str | Path) -> Template:
    """Execute <template_dir>/template.py and check its mandatory fields."""
    path = Path(template_dir).absolute() / "template.py"
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as err:
        raise OutpostError(f"{path}: cannot read the template: {err.strerror}") from None
    top_self = _TopLevelSelf(path)
    namespace = {"__name__": "template", "__file__": str(path), "self": top_self,
                 "subpackage": top_self.subpackage}
    try:
        exec(compile(source, str(path), "exec"), namespace)
    except OutpostError:
        raise
    except Exception as err:  # the user's file: any failure is an error in it
        raise OutpostError(f"{_where(path, err)}: the template failed to load: "
                           f"{type(err).__name__}: {err}") from None

    fields, hooks = {}, {}
    for name, value in namespace.items():
        if name.startswith("_") or name in ("self", "subpackage"):
            continue
        if inspect.isfunction(value) and value.__globals__ is namespace:
            hooks[name] = value
        elif not inspect.ismodule(value) and not callable(value):
            fields[name] = value
    template = Template(path, fields, hooks, tuple(top_self.data_keys),
                        top_self.declares_subpackages)
    _check_fields(template)
    return template


def _check_fields(template: Template) -> None:
    for name, kind in MANDATORY_FIELDS.items():
        if name not in template.fields:
            raise OutpostError(f"{template.path}: missing field {name!r} (cbuild requires "
                               + ", ".join(MANDATORY_FIELDS) + ")")
        value = template.fields[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise OutpostError(f"{template.path}: field {name!r} must be a {kind.__name__}, "
                               f"not {type(value).__name__}")
    if template.pkgname != template.folder.name:
        raise OutpostError(f"{template.path}: pkgname {template.pkgname!r} does not match the "
                           f"template's folder {template.folder.name!r} (cbuild requires it)")
    depends = template.depends
    if not isinstance(depends, list) or not all(isinstance(d, str) for d in depends):
        raise OutpostError(f"{template.path}: field 'depends' must be a list of strings")


def _where(path: Path, err: BaseException) -> str:
    """path:line of the template line that raised err, or just path."""
    if isinstance(err, SyntaxError) and err.lineno:
        return f"{path}:{err.lineno}"
    lines = [frame.lineno for frame in traceback.extract_tb(err.__traceback__)
             if frame.filename == str(path)]
    return f"{path}:{lines[-1]}" if lines else str(path)


# --- Running the install hooks -------------------------------------------------------------

class BuildContext:
    """The `self` that install hooks get: the template's names and cbuild's install helpers.

    Destinations and modes are cbuild's (src/cbuild/core/template.py: install_file,
    install_bin, install_license, install_service, install_sysusers, install_tmpfiles,
    install_dir, install_link). Sources must be absolute, as `self.files_path / "x"` is: a
    relative source means the build's source tree, which the local builder does not have."""

    def __init__(self, template: Template, destdir: Path):
        self._template = template
        self.pkgname = template.pkgname
        self.pkgver = template.pkgver
        self.pkgrel = template.pkgrel
        self.files_path = template.files_path
        self.template_path = template.folder
        self.destdir = destdir

    def __getattr__(self, name):
        raise OutpostError(f"{self._template.path}: self.{name} is not something the local "
                           f"builder provides; {USE_CBUILD}")

    def _fail(self, message: str):
        raise OutpostError(f"{self._template.path}: {message}")

    def _dest(self, helper: str, dest) -> Path:
        dest = PurePosixPath(dest)
        if dest.is_absolute():
            self._fail(f"{helper}: path '{dest}' must not be absolute")
        if ".." in dest.parts:
            self._fail(f"{helper}: path '{dest}' must stay inside the package")
        return self.destdir / dest

    def install_dir(self, dest, mode=0o755):
        path = self._dest("install_dir", dest)
        _make_dirs(self.destdir, path)
        if mode is not None:
            path.chmod(mode)

    def install_file(self, src, dest, mode=0o644, name=None):
        src = Path(src)
        if not src.is_absolute():
            self._fail(f"install_file: source '{src}' is relative to the build's source tree, "
                       "which the local builder does not have; use self.files_path / "
                       f"'{src}', or {USE_CBUILD}")
        if not src.is_file():
            self._fail(f"install_file: source '{src}' is not a file")
        target = self._dest("install_file", PurePosixPath(dest) / (name or src.name))
        if target.exists() or target.is_symlink():
            self._fail(f"install_file: destination file '{target}' already exists")
        self.install_dir(dest)
        shutil.copyfile(src, target)
        if mode is not None:
            target.chmod(mode)

    def install_bin(self, src, mode=0o755, name=None):
        self.install_file(src, "usr/bin", mode, name)

    def install_license(self, src, name=None, pkgname=None):
        self.install_file(src, "usr/share/licenses/" + (pkgname or self.pkgname), 0o644, name)

    def install_service(self, src, name=None, enable=False):
        src = Path(src)
        # A ".user" service is a user service (dinit -u); cbuild puts it in dinit.d/user.
        folder = "usr/lib/dinit.d/user" if src.suffix == ".user" else "usr/lib/dinit.d"
        service = name or (src.stem if src.suffix == ".user" else src.name)
        self.install_file(src, folder, name=service)
        if enable:
            self.install_dir(f"{folder}/boot.d")
            self.install_link(f"{folder}/boot.d/{service}", f"../{service}")

    def install_tmpfiles(self, src, name=None):
        self.install_file(src, "usr/lib/tmpfiles.d", name=f"{name or self.pkgname}.conf")

    def install_sysusers(self, src, name=None):
        self.install_file(src, "usr/lib/sysusers.d", name=f"{name or self.pkgname}.conf")

    def install_link(self, dest, tgt, absolute=False):
        path = self._dest("install_link", dest)
        if not absolute and str(tgt).startswith("/"):
            self._fail(f"install_link: target '{tgt}' must not be absolute")
        path.symlink_to(tgt)


def _make_dirs(root: Path, path: Path) -> None:
    """mkdir -p with mode 0755 for every folder it makes, whatever the umask: the modes go into
    the package, which must not depend on who built it."""
    folder = root
    for part in path.relative_to(root).parts:
        folder = folder / part
        if not folder.is_dir():
            folder.mkdir()
            folder.chmod(0o755)


def install(template: Template, destdir: Path) -> None:
    """Run the template's install hooks into an empty destdir, then refuse native code."""
    context = BuildContext(template, destdir)
    for names in LOCAL_HOOKS:
        hook = next((template.hooks[n] for n in names if n in template.hooks), None)
        if hook is None:
            continue
        try:
            hook(context)
        except OutpostError:
            raise
        except Exception as err:  # the user's hook: any failure is an error in the template
            raise OutpostError(f"{_where(template.path, err)}: {hook.__name__}() failed: "
                               f"{type(err).__name__}: {err}") from None
    for path in sorted(destdir.rglob("*")):
        if path.is_file() and not path.is_symlink() and _is_elf(path):
            raise OutpostError(
                f"{template.path}: the package has native code "
                f"(/{path.relative_to(destdir).as_posix()} is an ELF file); the local builder "
                f"makes arch-independent packages only and can't build for other arches; "
                f"{USE_CBUILD}")


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == ELF_MAGIC


def source_date_epoch(template_dir: Path) -> int:
    """The packages' build date, from the inputs only, so rebuilding unchanged inputs gives the
    same bytes: SOURCE_DATE_EPOCH if set, else the time of the last git commit that touched the
    template folder (cbuild does this too, core/template.py), else FALLBACK_EPOCH.

    Not file mtimes: a fresh clone or a copy gives new mtimes, and a changed build date would
    change the package's bytes while its version stays the same."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is not None:
        if not value.isdigit():
            raise OutpostError(f"SOURCE_DATE_EPOCH={value!r} must be a whole number of seconds")
        return int(value)
    return _git_commit_time(template_dir) or FALLBACK_EPOCH


# 1980-01-01 00:00 UTC: a fixed date for templates outside git (the oldest a zip file can hold,
# and clearly not a real build time).
FALLBACK_EPOCH = 315532800


def _git_commit_time(folder: Path) -> int | None:
    try:
        result = subprocess.run(["git", "log", "-1", "--format=%ct", "--", "."], cwd=folder,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = result.stdout.strip()
    return int(value) if result.returncode == 0 and value.isdigit() else None
