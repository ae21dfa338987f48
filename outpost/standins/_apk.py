"""The apk stand-in: installs signed apk v2 packages from local repositories.

Chimera's apk-tools can't be had on this machine, so fleet hosts run this instead. It reads the
same files as real apk under its root (repositories, keys, world, the installed database) and
checks signatures with outpost.apk. README.md beside this file lists the real behaviours it
honours; what it does not honour is an error, never skipped in silence.
"""
from __future__ import annotations

import base64
import hashlib
import os
import platform
import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from outpost import apk
from outpost.errors import OutpostError

INSTALLED_DB = "lib/apk/db/installed"
WORLD = "etc/apk/world"
KEYS_DIR = "etc/apk/keys"
ARCH_FILE = "etc/apk/arch"
# Stand-in only: what the host already provides without apk (the fleet's Debian base system).
PROVIDED = "etc/apk/provided"
REPO_FILES = ("etc/apk/repositories",)
# apk's default protected paths (database.c): config files there are kept when changed.
PROTECTED, UNPROTECTED, APK_NEW = "etc/", "etc/apk/", ".apk-new"
REPO_DIRS = ("etc/apk/repositories.d", "lib/apk/repositories.d")


class ApkError(OutpostError):
    """A failure apk reports as "ERROR: ..." and exits non-zero for."""


# -- versions and dependencies (pure) -------------------------------------------------------

DEPENDENCY = re.compile(r"(!?)([^<>=~!\s]+)(?:(<=|>=|<|>|=|~)(\S+))?")


def version_key(version):
    """A sort key ordering apk versions as apk does (outpost.apk.version_key)."""
    try:
        return apk.version_key(version)
    except ValueError as err:
        raise ApkError(str(err)) from None


def compare_versions(a, b):
    key_a, key_b = version_key(a), version_key(b)
    return (key_a > key_b) - (key_a < key_b)


@dataclass(frozen=True)
class Dependency:
    name: str
    op: str | None = None
    version: str | None = None
    conflict: bool = False

    def __str__(self):
        return ("!" if self.conflict else "") + self.name + (f"{self.op}{self.version}"
                                                             if self.op else "")

    def allows(self, version):
        """Whether `version` (None: unversioned provider) meets the constraint."""
        if self.op is None:
            return True
        if version is None:
            return False
        if self.op == "~":
            return version == self.version or version.startswith(self.version + ".") \
                or version.startswith(self.version + "-")
        order = compare_versions(version, self.version)
        return {"=": order == 0, "<": order < 0, ">": order > 0, "<=": order <= 0,
                ">=": order >= 0}[self.op]


def parse_dependency(text):
    match = DEPENDENCY.fullmatch(text)
    if not match:
        raise ApkError(f"dependency format is invalid: {text}")
    conflict, name, op, version = match.groups()
    return Dependency(name, op, version, bool(conflict))


def parse_provides(words):
    """provides / provided entries: 'name' or 'name=version' -> [(name, version or None)]."""
    out = []
    for word in words:
        name, _, version = word.partition("=")
        out.append((name, version or None))
    return out


def human_size(size):
    """apk's size format (src/print.c apk_fmt_human_size, as `apk add` prints it)."""
    units, value, scaled, i = ("B", "KiB", "MiB", "GiB", "TiB"), size, float(size), 0
    while i < len(units) - 1 and scaled >= 10000:
        scaled, value, i = scaled / 1024, value // 1024, i + 1
    return f"{value} {units[i]}" if i < 2 else f"{scaled:.1f} {units[i]}"


# -- repositories (pure) --------------------------------------------------------------------


@dataclass(frozen=True)
class Repository:
    index: str  # path of APKINDEX.tar.gz
    base: str  # folder holding <arch>/NAME-VER.apk (for "ndx" lines, the index's folder)
    tag: str | None
    source: str  # "file:line", for messages


def parse_repositories(text, source, arch):
    """Repository lines `[v2|v3|ndx] [@tag] URL [component...]` (apk-repositories(5))."""
    repos = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{source}:{number}"
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "set" or "$" in line:
            raise ApkError(f"{where}: repository variables ('set', '$name') are not supported "
                           "by the apk stand-in")
        kind = words.pop(0) if words[0] in ("v2", "v3", "ndx") else None
        tag = words.pop(0)[1:] if words and words[0].startswith("@") else None
        if not words:
            raise ApkError(f"{where}: repositories file syntax error: no URL")
        url, components = words[0], words[1:]
        if url.startswith("file://"):
            url = url[len("file://"):]
        if "://" in url or not url.startswith("/"):
            raise ApkError(f"{where}: {url}: the apk stand-in only reads local repositories "
                           "(an absolute path or file:// URL)")
        if kind is None:
            kind = "ndx" if url.endswith((".adb", ".tar.gz")) else "v2"
        if kind == "v3" or url.endswith(".adb"):
            raise ApkError(f"{where}: {url}: v3 index (Packages.adb): the apk stand-in can't "
                           "read v3 indexes; use a 'v2' line and APKINDEX.tar.gz")
        if kind == "ndx":
            if components:
                raise ApkError(f"{where}: components are not valid with 'ndx'")
            repos.append(Repository(url, os.path.dirname(url), tag, where))
            continue
        for base in [f"{url.rstrip('/')}/{c}" for c in components] or [url.rstrip("/")]:
            repos.append(Repository(f"{base}/{arch}/APKINDEX.tar.gz", base, tag, where))
    return repos


# -- the installed database (apk's own format, lib/apk/db/installed) ----------------------


@dataclass
class Installed:
    fields: dict  # index fields: P, V, A, S, I, T, U, L, o, m, t, c, C, D, p
    files: dict = field(default_factory=dict)  # path -> ("dir", mode) | ("file", mode, sha1)

    @property
    def name(self):
        return self.fields["P"]

    @property
    def version(self):
        return self.fields["V"]


DB_FIELDS = ("C", "P", "V", "A", "S", "I", "T", "U", "L", "o", "m", "t", "c", "D", "p")


def parse_installed(text):
    packages, current, last_dir, last_file = [], None, "", None
    for line in text.split("\n"):
        if not line:
            if current:
                packages.append(current)
            current, last_dir = None, ""
            continue
        key, _, value = line.partition(":")
        if current is None:
            current = Installed({})
        if key == "F":
            last_dir = value
            current.files[value] = ("dir", 0o755)
        elif key == "M":
            current.files[last_dir] = ("dir", int(value.split(":")[2], 8))
        elif key == "R":
            path = f"{last_dir}/{value}" if last_dir else value
            current.files[path] = ("file", 0o644, None)
            last_file = path
        elif key == "a":
            current.files[last_file] = ("file", int(value.split(":")[2], 8),
                                        current.files[last_file][2])
        elif key == "Z":
            kind, mode, _ = current.files[last_file]
            current.files[last_file] = (kind, mode, value)
        else:
            current.fields[key] = value
    if current:
        packages.append(current)
    return packages


def installed_text(packages):
    """The installed database: index fields, then F:/M: per folder and R:/a:/Z: per file."""
    out = []
    for package in sorted(packages, key=lambda p: p.name):
        out += [f"{k}:{package.fields[k]}" for k in DB_FIELDS if package.fields.get(k)]
        by_dir = {}
        for path, entry in package.files.items():
            if entry[0] == "dir":
                by_dir.setdefault(path, [])
            else:
                by_dir.setdefault(os.path.dirname(path), []).append((os.path.basename(path), entry))
        for folder in sorted(by_dir):
            if folder:
                out.append(f"F:{folder}")
                mode = package.files.get(folder, ("dir", 0o755))[1]
                if mode != 0o755:
                    out.append(f"M:0:0:{mode:o}")
            for name, (_, mode, checksum) in sorted(by_dir[folder]):
                out.append(f"R:{name}")
                if mode != 0o644:
                    out.append(f"a:0:0:{mode:o}")
                if checksum:
                    out.append(f"Z:{checksum}")
        out.append("")
    return "\n".join(out) + ("\n" if out else "")


def q1_checksum(data):
    return "Q1" + base64.b64encode(hashlib.sha1(data).digest()).decode()


# -- sysusers.d and tmpfiles.d (the stand-in for Chimera's install triggers) ---------------


def sysusers_commands(text, source, root, users, groups):
    """argv lists that create the users and groups of a sysusers.d file that don't exist yet.
    Honours `u NAME ID|- "GECOS" HOME SHELL` and `g NAME ID|-`; other lines are errors."""
    prefix = [] if str(root) == "/" else ["--prefix", str(root)]
    commands = []
    for number, line in enumerate(text.splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        kind, name = words[0], words[1] if len(words) > 1 else None
        ident = words[2] if len(words) > 2 else "-"
        if kind not in ("u", "g") or name is None:
            raise ApkError(f"{source}:{number}: sysusers.d line type {kind!r} is not supported by "
                           "the apk stand-in (only 'u' and 'g')")
        if kind == "g":
            if name not in groups:
                commands.append(["groupadd", *prefix, "--system",
                                 *([] if ident == "-" else ["--gid", ident]), name])
                groups.add(name)
            continue
        if name in users:
            continue
        uid, _, gid = ident.partition(":")
        if not re.fullmatch(r"-|\d+", uid) or not re.fullmatch(r"|-|\d+|[A-Za-z_][\w-]*", gid):
            raise ApkError(f"{source}:{number}: sysusers.d id {ident!r} is not supported by the "
                           "apk stand-in (use '-', UID or UID:GID)")
        gecos = words[3] if len(words) > 3 and words[3] != "-" else ""
        home = words[4] if len(words) > 4 and words[4] != "-" else "/"
        shell = words[5] if len(words) > 5 and words[5] != "-" else "/usr/sbin/nologin"
        group_args = ["--gid", gid] if gid not in ("", "-") else (
            ["--gid", name] if name in groups else ["--user-group"])
        if "--user-group" in group_args:
            groups.add(name)
        commands.append(["useradd", *prefix, "--system", "--no-create-home",
                         *([] if uid == "-" else ["--uid", uid]), *group_args,
                         "--home-dir", home, "--shell", shell, "--comment", gecos, name])
        users.add(name)
    return commands


@dataclass(frozen=True)
class TmpDir:
    path: str
    mode: int
    user: str | None
    group: str | None


def parse_tmpfiles(text, source):
    """tmpfiles.d `d PATH MODE USER GROUP [AGE]` lines; any other type is an error."""
    dirs = []
    for number, line in enumerate(text.splitlines(), 1):
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] != "d" or len(words) < 2:
            raise ApkError(f"{source}:{number}: tmpfiles.d line type {words[0]!r} is not "
                           "supported by the apk stand-in (only 'd')")
        mode, user, group = (words[2:5] + ["-", "-", "-"])[:3]
        dirs.append(TmpDir(words[1], 0o755 if mode == "-" else int(mode, 8),
                           None if user == "-" else user, None if group == "-" else group))
    return dirs


def read_ids(path):
    """name -> numeric id from an /etc/passwd or /etc/group style file."""
    ids = {}
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return ids
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) > 2 and parts[2].isdigit():
            ids[parts[0]] = int(parts[2])
    return ids


# -- the database: reading the root, planning and committing changes ----------------------


class Database:
    def __init__(self, root, out, err):
        self.root = Path(root)
        self.out, self.err = out, err
        self.arch = self._arch()
        self.installed = {p.name: p for p in parse_installed(self._read(INSTALLED_DB, ""))}
        self.world = self._read(WORLD, "").split()
        self.provided = parse_provides(self._read(PROVIDED, "").split())
        self.available = None  # name -> [(entry fields, Repository)], filled by load_repositories

    def path(self, rel):
        return self.root / rel.lstrip("/")

    def _read(self, rel, default):
        try:
            return self.path(rel).read_text()
        except FileNotFoundError:
            return default

    def _arch(self):
        arch = self._read(ARCH_FILE, "").strip()
        return arch or platform.machine()

    def repositories(self):
        repos, seen = [], set()
        for rel in REPO_FILES:
            if self.path(rel).is_file():
                repos += parse_repositories(self._read(rel, ""), str(self.path(rel)), self.arch)
        for rel in REPO_DIRS:
            folder = self.path(rel)
            for list_file in sorted(folder.glob("*.list")) if folder.is_dir() else []:
                if list_file.name in seen:  # an earlier folder's file of this name wins
                    continue
                seen.add(list_file.name)
                repos += parse_repositories(list_file.read_text(), str(list_file), self.arch)
        return repos

    def load_repositories(self):
        """Read every repository's index, checking its signature. An index that can't be read
        or trusted is a WARNING and the repository is left out, as apk does."""
        self.available = {}
        loaded = []
        for repo in self.repositories():
            try:  # a local repository is a path on this machine, not under --root (as in apk)
                entries = apk.verify_index(Path(repo.index), self.path(KEYS_DIR))
            except apk.VerifyError as err:
                self.warn(f"opening {repo.index}: {signature_problem(err)} (stand-in: {err})")
                continue
            loaded.append((repo, len(entries)))
            for entry in entries:
                self.available.setdefault(entry.fields["P"], []).append((entry.fields, repo))
        return loaded

    def warn(self, message):
        self.err.write(f"WARNING: {message}\n")

    def error(self, message):
        self.err.write(f"ERROR: {message}\n")

    def installed_stats(self):
        size = sum(int(p.fields.get("I", 0)) for p in self.installed.values())
        return f"{human_size(size)} in {len(self.installed)} packages"

    # resolving

    def providers(self, dependency, planned):
        """Whether something installed, planned or provided satisfies `dependency`."""
        for pkg in list(planned.values()) + [p for n, p in self.installed.items()
                                             if n not in planned]:
            fields = pkg.fields
            if fields["P"] == dependency.name and dependency.allows(fields["V"]):
                return True
            for name, version in parse_provides(fields.get("p", "").split()):
                if name == dependency.name and dependency.allows(version):
                    return True
        return any(name == dependency.name and dependency.allows(version)
                   for name, version in self.provided)

    def best_available(self, dependency, tag=None):
        """The highest available version satisfying `dependency` (by name or provides)."""
        candidates = []
        for entries in self.available.values():
            for fields, repo in entries:
                if repo.tag not in (None, tag):
                    continue
                if fields["P"] == dependency.name and dependency.allows(fields["V"]):
                    candidates.append((fields, repo))
                    continue
                for name, version in parse_provides(fields.get("p", "").split()):
                    if name == dependency.name and dependency.allows(version):
                        candidates.append((fields, repo))
        if not candidates:
            return None
        return max(candidates, key=lambda c: (c[0]["P"] == dependency.name, version_key(c[0]["V"])))

    def plan(self, names, upgrade):
        """{name: (Installed-to-be, Repository)} for `apk add [-u] names`: each name's best
        version (kept as installed unless upgrading) and whatever its depends pull in."""
        planned, sources, problems = {}, {}, []

        def want(dependency, required_by, tag=None, force_best=False):
            if dependency.conflict:
                if dependency.name in self.installed or dependency.name in planned:
                    problems.append(f"  {dependency.name}-{self._version_of(dependency.name, planned)}"
                                    f":\n    conflicts: {required_by}[{dependency}]")
                return
            if not force_best and self.providers(dependency, planned):
                return
            best = self.best_available(dependency, tag)
            if best is None:
                if force_best and (dependency.name in self.installed or any(
                        name == dependency.name and dependency.allows(version)
                        for name, version in self.provided)):
                    return  # nothing newer to be had: keep what is installed or provided
                problems.append(f"  {dependency} (no such package):\n"
                                f"    required by: {required_by}[{dependency}]")
                return
            fields, repo = best
            name = fields["P"]
            if name in planned:
                return
            old = self.installed.get(name)
            if (old and dependency.allows(old.version)
                    and compare_versions(fields["V"], old.version) <= 0):
                return  # the installed one is as new, and allowed
            # (An installed version the dependency rules out, as `name=older` does, is
            # replaced: apk's solver downgrades to satisfy world.)
            planned[name] = Installed(dict(fields))
            sources[name] = repo
            for word in fields.get("D", "").split():
                want(parse_dependency(word), f"{name}-{fields['V']}")

        for spec in names:
            base, _, tag = spec.partition("@")
            dependency = parse_dependency(base)
            want(dependency, "world", tag or None,
                 force_best=upgrade or dependency.name not in self.installed)
        if problems:
            raise ApkError("unable to select packages:\n" + "\n".join(problems))
        return planned, sources

    def _version_of(self, name, planned):
        pkg = planned.get(name) or self.installed.get(name)
        return pkg.version if pkg else "?"

    # committing

    def install(self, planned, sources):
        """Install each planned package: verify it, write its files, drop the files its old
        version had and it doesn't. Returns the number of errors (apk's exit status)."""
        errors, total = 0, len(planned)
        installed_now = []
        for step, name in enumerate(sorted(planned, key=lambda n: self._depth(n, planned)), 1):
            new = planned[name]
            old = self.installed.get(name)
            label = f"({step}/{total})"
            if old is None:
                self.out.write(f"{label} Installing {name} ({new.version})\n")
            else:
                word = {1: "Upgrading", 0: "Replacing", -1: "Downgrading"}[
                    compare_versions(new.version, old.version)]
                self.out.write(f"{label} {word} {name} ({old.version} -> {new.version})\n")
            try:
                package = self._fetch(new, sources[name])
                self._write_files(new, package, old)
            except ApkError as err:
                self.error(f"{name}-{new.version}: {err}")
                errors += 1
                continue
            self.installed[name] = new
            installed_now.append(new)
        errors += self._run_triggers(installed_now)
        return errors

    def _depth(self, name, planned, seen=()):
        """Dependencies install first: a package's depth is one more than its deepest dependency."""
        depth = 0
        for word in planned[name].fields.get("D", "").split():
            dep = parse_dependency(word).name
            if dep in planned and dep not in seen and dep != name:
                depth = max(depth, 1 + self._depth(dep, planned, seen + (name,))[0])
        return depth, name

    def _fetch(self, new, repo):
        arch = new.fields.get("A") or self.arch
        path = Path(f"{repo.base}/{arch}/{new.name}-{new.version}.apk")
        if not path.is_file():
            raise ApkError("package mentioned in index not found (try 'apk update')")
        try:
            package = apk.verify_package(path, self.path(KEYS_DIR))
        except apk.VerifyError as err:
            raise ApkError(f"{signature_problem(err)} (stand-in: {err})") from None
        if q1_checksum(package.control_gz) != new.fields.get("C"):
            raise ApkError(f"file integrity error (stand-in: {path} is not the package the "
                           "index lists)")
        return package

    def _write_files(self, new, package, old):
        owners = {path: pkg.name for pkg in self.installed.values() if pkg.name != new.name
                  for path, entry in pkg.files.items() if entry[0] != "dir"}
        for entry in package.files:
            if entry.type != "dir" and entry.path in owners:
                raise ApkError(f"trying to overwrite {entry.path} owned by {owners[entry.path]}.")
        files = {}
        for entry in package.files:
            target = self.path(entry.path)
            if entry.type == "dir":
                target.mkdir(parents=True, exist_ok=True)
                os.chmod(target, entry.mode)
                files[entry.path] = ("dir", entry.mode)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if _keep_changed_config(target, entry, old):
                target = target.with_name(target.name + APK_NEW)
            _replace(target, entry)
            files[entry.path] = ("file", entry.mode, q1_checksum(
                entry.content if entry.type == "file" else os.fsencode(entry.link_target)))
        new.files = files
        if old is None:
            return
        for path, entry in sorted(old.files.items(), reverse=True):  # files before their folders
            if path in files or path in owners:
                continue
            target = self.path(path)
            if entry[0] == "dir":
                if not any(path in p.files for p in self.installed.values() if p.name != new.name):
                    try:
                        target.rmdir()
                    except OSError:
                        pass  # not empty: something else lives there
            elif target.is_symlink() or target.exists():
                target.unlink()

    def remove(self, name):
        package = self.installed.pop(name)
        others = {path for pkg in self.installed.values() for path in pkg.files}
        for path, entry in sorted(package.files.items(), reverse=True):
            if path in others:
                continue
            target = self.path(path)
            if entry[0] == "dir":
                try:
                    target.rmdir()
                except OSError:
                    pass
            elif target.is_symlink() or target.exists():
                target.unlink()

    def _run_triggers(self, packages):
        """Chimera applies sysusers.d and tmpfiles.d through triggers when packages install;
        the stand-in applies their `u`/`g` and `d` lines. Returns the number of errors."""
        errors = 0
        for package in packages:
            try:
                self._apply_sysusers(package)
                self._apply_tmpfiles(package)
            except (ApkError, OSError, subprocess.CalledProcessError) as err:
                self.error(f"{package.name}-{package.version}: trigger: {err}")
                errors += 1
        return errors

    def _apply_sysusers(self, package):
        for path in sorted(p for p in package.files if p.startswith("usr/lib/sysusers.d/")
                           and p.endswith(".conf")):
            users = set(read_ids(self.path("etc/passwd")))
            groups = set(read_ids(self.path("etc/group")))
            for argv in sysusers_commands(self.path(path).read_text(), path, self.root, users,
                                          groups):
                subprocess.run(argv, check=True, capture_output=True)

    def _apply_tmpfiles(self, package):
        for path in sorted(p for p in package.files if p.startswith("usr/lib/tmpfiles.d/")
                           and p.endswith(".conf")):
            users = read_ids(self.path("etc/passwd"))
            groups = read_ids(self.path("etc/group"))
            for d in parse_tmpfiles(self.path(path).read_text(), path):
                target = self.path(d.path)
                target.mkdir(parents=True, exist_ok=True)
                os.chmod(target, d.mode)
                uid = users[d.user] if d.user else -1
                gid = groups[d.group] if d.group else -1
                if (d.user and d.user not in users) or (d.group and d.group not in groups):
                    raise ApkError(f"{path}: {d.path}: no such user or group "
                                   f"{d.user or ''}:{d.group or ''}")
                os.chown(target, uid, gid)

    def save(self):
        _write_atomically(self.path(INSTALLED_DB), installed_text(self.installed.values()).encode())
        world = "".join(f"{name}\n" for name in sorted(set(self.world)))
        _write_atomically(self.path(WORLD), world.encode())


def _keep_changed_config(target, entry, old):
    """apk 3's protected paths (its default: /etc but /etc/apk): a file there that was changed
    since apk installed it (it is not what the old version recorded) is kept, and the new
    version goes beside it as FILE.apk-new, unless the two are the same."""
    if entry.type != "file" or not entry.path.startswith(PROTECTED) or \
            entry.path.startswith(UNPROTECTED) or target.is_symlink() or not target.is_file():
        return False
    on_disk = target.read_bytes()
    recorded = old.files.get(entry.path) if old else None
    unchanged = recorded is not None and recorded[0] == "file" and \
        recorded[2] == q1_checksum(on_disk)
    return not unchanged and on_disk != entry.content


def signature_problem(err):
    """apk's words for what outpost.apk's VerifyError found."""
    text = str(err)
    if "not a trusted key" in text or "not signed" in text:
        return "UNTRUSTED signature"
    if "does not verify" in text:
        return "BAD signature"
    return "v2 package integrity error"


def _replace(target, entry):
    """Put one file or symlink in place atomically: written beside it, then renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".apk.{target.name}.")
    try:
        if entry.type == "symlink":
            os.close(fd)
            os.unlink(tmp)
            os.symlink(entry.link_target, tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(entry.content)
            os.chmod(tmp, entry.mode)
        if target.is_dir() and not target.is_symlink():
            raise ApkError(f"failed to extract {entry.path}: a folder is in the way")
        os.replace(tmp, target)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _write_atomically(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# -- the applets ----------------------------------------------------------------------------


def cmd_update(db):
    for repo, count in db.load_repositories():
        db.out.write(f" [{repo.base}]\n")
    count = sum(len(v) for v in db.available.values())
    db.out.write(f"OK: {count} distinct packages available\n")
    return 0


def cmd_add(db, names, upgrade):
    db.load_repositories()
    planned, sources = db.plan(names, upgrade)
    for spec in names:
        # As apk_deps_add does: a name already in world gets the new constraint in its place.
        name = parse_dependency(spec.partition("@")[0]).name
        db.world = [w for w in db.world if parse_dependency(w.partition("@")[0]).name != name]
        db.world.append(spec)
    errors = db.install(planned, sources)
    db.save()
    summary = f"{errors} error{'s' if errors > 1 else ''};" if errors else "OK:"
    db.out.write(f"{summary} {db.installed_stats()}\n")
    return min(errors, 99)


def cmd_del(db, names):
    for name in names:
        if name not in db.installed:
            raise ApkError(f"No such package: {name}")
    for name in names:
        users = [p.name for p in db.installed.values() if p.name not in names and any(
            parse_dependency(w).name == name for w in p.fields.get("D", "").split())]
        if users:
            raise ApkError(f"{name} is needed by {', '.join(sorted(users))}: the apk stand-in "
                           "does not remove dependents")
    for step, name in enumerate(names, 1):
        db.out.write(f"({step}/{len(names)}) Purging {name} ({db.installed[name].version})\n")
        db.remove(name)
    db.world = [w for w in db.world if w.partition("@")[0] not in names]
    db.save()
    db.out.write(f"OK: {db.installed_stats()}\n")
    return 0


def cmd_info(db, names, verbosity, exists):
    if exists:
        missing = 0
        for name in names:
            package = db.installed.get(name)
            if package is None:
                missing += 1
            elif verbosity >= 1:
                db.out.write(package.name + (f"-{package.version}" if verbosity > 1 else "") + "\n")
        return missing
    if not names:
        for package in sorted(db.installed.values(), key=lambda p: p.name):
            db.out.write(package.name + (f"-{package.version}" if verbosity > 1 else "") + "\n")
        return 0
    for name in names:
        package = db.installed.get(name)
        if package is None:
            continue  # the stand-in shows installed packages only
        size = human_size(int(package.fields.get("I", 0)))
        if verbosity > 1:  # apk's -v form: one "name: value" line per field (app_info.c)
            db.out.write(f"{name}: {package.fields.get('T', '')}\n{name}: "
                         f"{package.fields.get('U', '')}\n{name}: {size}\n")
            continue
        pv = f"{package.name}-{package.version}"
        db.out.write(f"{pv} description:\n{package.fields.get('T', '')}\n\n"
                     f"{pv} webpage:\n{package.fields.get('U', '')}\n\n"
                     f"{pv} installed size:\n{size}\n\n")
    return 0


def has_database(root):
    """Whether `root` has an apk database (made by --initdb); apk refuses to work without one."""
    return (Path(root) / INSTALLED_DB).is_file()


def init_db(root):
    """--initdb: the folders and empty files of a new apk database."""
    root = Path(root)
    for rel in ("etc/apk/keys", "etc/apk/repositories.d", "lib/apk/db"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    for rel in (INSTALLED_DB, WORLD):
        if not (root / rel).exists():
            _write_atomically(root / rel, b"")
