"""The content step: each package's content/ becomes a release on every host (the layout and
scripts are commands.content), from the manifest of content/ (outpost.manifest), each on a
channel of the run's SSH login to the host (outpost.remote). And what this machine knows of
each host's releases, so that content:<host> is up to date without asking the host.

Kept here, under build/content/<package>/:
    hashes.json          the manifest's hash cache
    manifests/<folder>   the manifest of each release a host keeps: the base the next push
                         links to, and the digest a rollback expects
    hosts/<host>.json    what the host serves: release id, folder, digest, the folders it
                         keeps, `drift` once it was seen serving something else (by the
                         check, or the content tasks' probe), `held_for` after a rollback

A push links to the release the host serves, unless that one drifted (a file on the host
changed by hand shares its inode with every release that links to it): then everything is
sent again into a new folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from outpost import hoststate, manifest as manifests, probe, remote
from outpost.commands import config as config_commands
from outpost.commands import content as releases
from outpost.errors import OutpostError
from outpost.files import write_atomic
from outpost.steps.common import say

_lock = threading.RLock()  # manifest() is called with it held, by _prune_manifests
_scanned: dict = {}   # (package name, content folder) -> Manifest, once per process
_payloads: dict = {}  # (release, base release, base folder) -> bytes, shared by hosts
_parsed: dict = {}    # stored manifest's path -> Manifest
PAYLOADS_KEPT = 4


@dataclass(frozen=True)
class Served:
    """What this machine knows a host serves for one package."""
    release: str | None  # the full release id; None when its manifest isn't known here
    folder: str
    digest: str | None
    kept: tuple[str, ...]
    drift: str | None = None  # what the check saw instead, until the next push
    # After a rollback: the release of content/ then. The rollback holds (deploy pushes
    # nothing) until content/ changes, so an unrelated deploy can't undo it.
    held_for: str | None = None


def packages(inventory) -> list:
    return [p for p in inventory.packages if p.content is not None]


def _state(inventory, package) -> Path:
    return inventory.root / "build" / "content" / package.name


def manifest(inventory, package) -> manifests.Manifest:
    """The manifest of the package's content/, scanned once per process (the task list asks
    for it before any task runs, so a link out of content/ stops the run before any host)."""
    key = (package.name, str(package.content))
    with _lock:
        if key not in _scanned:
            _scanned[key] = manifests.scan(package.content,
                                           cache=_state(inventory, package) / "hashes.json")
        return _scanned[key]


# --- what each host serves --------------------------------------------------------------------

def _record_path(inventory, package, host) -> Path:
    return _state(inventory, package) / "hosts" / f"{host.name}.json"


def served(inventory, package, host) -> Served | None:
    try:
        data = json.loads(_record_path(inventory, package, host).read_text())
        return Served(**{**data, "kept": tuple(data["kept"])})
    except (OSError, ValueError, TypeError, KeyError):
        return None  # never pushed from here (or unreadable): the next push sends it all


def _record(inventory, package, host, record: Served):
    write_atomic(_record_path(inventory, package, host),
                 (json.dumps(asdict(record), indent=1) + "\n").encode())


def is_current(inventory, host) -> bool:
    """doit uptodate: every package's content is the release this machine last pushed to
    the host (or content/ is as it was when the host was rolled back), and the check has not
    seen the host serve anything else since."""
    for package in packages(inventory):
        record = served(inventory, package, host)
        release = manifest(inventory, package).release
        if (record is None or record.drift is not None
                or release not in (record.release, record.held_for)):
            return False
    return True


def expected(inventory, package, host) -> tuple[str | None, str | None]:
    """(folder, digest) the host should serve: what the last push or rollback put there, or
    for a host never pushed from here, the manifest's digest."""
    record = served(inventory, package, host)
    if record is None:
        return None, manifest(inventory, package).digest
    return record.folder, record.digest


def mark_drift(inventory, package, host, seen: str):
    """The check saw the host serve something else: its next push sends everything."""
    record = served(inventory, package, host)
    if record is not None and record.drift != seen:
        _record(inventory, package, host, Served(**{**asdict(record), "drift": seen}))


# --- the manifests of releases on hosts -------------------------------------------------------

def _manifest_path(inventory, package, folder: str) -> Path:
    return _state(inventory, package) / "manifests" / releases.release_of(folder)


def _stored_manifest(inventory, package, folder: str) -> manifests.Manifest | None:
    """The manifest of the release in that folder, if it was pushed from here (parsed once:
    the hosts of a run mostly share their base)."""
    path = _manifest_path(inventory, package, folder)
    with _lock:
        if path not in _parsed:
            try:
                stored = manifests.Manifest.parse(path.read_text())
            except (OSError, ValueError):
                return None
            _parsed[path] = stored if releases.folder_of(stored.release) == path.name else None
        return _parsed[path]


def _store_manifest(inventory, package, release: manifests.Manifest):
    path = _manifest_path(inventory, package, releases.folder_of(release.release))
    with _lock:  # the hosts of a run store the same one
        if not path.exists():
            write_atomic(path, release.text.encode())


def _prune_manifests(inventory, package):
    """Keep the manifests of releases some host keeps, and the one of content/ now."""
    wanted = {releases.folder_of(manifest(inventory, package).release)}
    for record_file in (_state(inventory, package) / "hosts").glob("*.json"):
        try:
            kept = json.loads(record_file.read_text())["kept"]
        except (OSError, ValueError, KeyError):
            return  # a record we can't read might need any of them
        wanted.update(releases.release_of(folder) for folder in kept)
    for path in (_state(inventory, package) / "manifests").iterdir():
        if path.name not in wanted:
            path.unlink(missing_ok=True)


# --- push and rollback ------------------------------------------------------------------------

def _read(release: manifests.Manifest):
    def read(entry) -> tuple[bytes, int]:
        with open(release.sources[entry.path], "rb") as f:
            data = f.read()
            mtime = int(os.fstat(f.fileno()).st_mtime)
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise OutpostError(f"{release.sources[entry.path]} changed while it was being "
                               f"deployed; run the deploy again")
        return data, mtime
    return read


def _payload(release: manifests.Manifest, base, base_folder) -> bytes:
    """The payload for hosts that serve base from base_folder; made once for all of them."""
    key = (release.release, base.release if base else None, base_folder)
    with _lock:
        if key not in _payloads:
            if len(_payloads) >= PAYLOADS_KEPT:
                _payloads.pop(next(iter(_payloads)))
            _payloads[key] = releases.payload(release, _read(release), base, base_folder)
        return _payloads[key]


def push(inventory, host, say, confirmed=None):
    """Put each package's content on host as a release and switch to it: one round trip per
    package, on the run's SSH login to the host. Links to the release the host serves, unless
    it drifted or is gone. A package in `confirmed` ({name: folder}: the host serves its
    release from that folder) is not sent again, only recorded; nor is a release the host's
    `current` already holds (commands.content.push_script)."""
    for package in packages(inventory):
        release = manifest(inventory, package)
        record = served(inventory, package, host)
        folder = (confirmed or {}).get(package.name)
        if folder is not None:
            if (record.release, record.folder) != (release.release, folder):
                # The run that switched it ended before it kept this record.
                _store_manifest(inventory, package, release)
                _record(inventory, package, host, Served(
                    release.release, folder, release.digest,
                    (folder,) + tuple(k for k in record.kept if k != folder)))
            say(f"{host.name}: {package.name} content {folder}: the host serves it already; "
                "nothing sent")
            continue
        try:
            output, sent = _push(inventory, package, host, release, record, linked=True)
        except remote.ScriptFailed as failed:
            if failed.exited != releases.BASE_MISSING:
                raise
            output, sent = _push(inventory, package, host, release, record, linked=False)
        folder, kept = _report(output, host, "content")
        had = f"has {folder}" in output.splitlines()  # what was sent was not read
        _store_manifest(inventory, package, release)
        _record(inventory, package, host,
                Served(release.release, folder, release.digest, tuple(kept)))
        with _lock:
            _prune_manifests(inventory, package)
        if had:
            say(f"{host.name}: {package.name} content {folder}: the host had it already; "
                f"nothing switched; keeps {len(kept)} releases")
            continue
        whole = " (all)" if sent == len(release.entries) else ""
        say(f"{host.name}: {package.name} content {folder}: {sent} of {len(release.entries)} "
            f"files sent{whole}; keeps {len(kept)} releases")


def _push(inventory, package, host, release, record, linked: bool) -> tuple[str, int]:
    """One round trip: the release, linked to the one the host serves when linked and known
    here."""
    base = None
    if linked and record is not None and record.drift is None:
        base = _stored_manifest(inventory, package, record.folder)
    base_folder = record.folder if base is not None else None
    script = releases.push_script(package.content_dir, release.release, base_folder,
                                  package.keep_releases,
                                  fresh=record is None or record.drift is not None)
    result = remote.run_script(host, script, inventory.ssh, step="content",
                               payload=_payload(release, base, base_folder))
    return result.stdout, releases.changed_count(release, base)


def _report(output: str, host, step: str) -> tuple[str, list[str]]:
    try:
        return releases.parse_report(output)
    except ValueError as error:
        raise OutpostError(f"host {host.name}, step {step}: {error}") from None


def rollback(inventory, host, say) -> list[tuple]:
    """Switch each package's content on host back to the release before the current one (no
    transfer), held until content/ changes; returns (package, folder, digest or None) for
    each, for the caller to wait on."""
    done = []
    for package in packages(inventory):
        script = releases.rollback_script(package.content_dir, package.keep_releases)
        try:
            result = remote.run_script(host, script, inventory.ssh, step="rollback")
        except remote.ScriptFailed as failed:
            if failed.exited == releases.NOTHING_TO_ROLL_BACK:
                raise OutpostError(f"host {host.name}, step rollback: {package.name} has no "
                                   f"earlier release on the host to roll back to") from None
            raise
        folder, kept = _report(result.stdout, host, "rollback")
        was = next((line[4:] for line in result.stdout.splitlines()
                    if line.startswith("was ")), "")
        stored = _stored_manifest(inventory, package, folder)
        _record(inventory, package, host, Served(
            stored.release if stored else None, folder, stored.digest if stored else None,
            tuple(kept), held_for=manifest(inventory, package).release))
        say(f"{host.name}: {package.name} content rolled back from {was or '-'} to {folder}")
        done.append((package, folder, stored.digest if stored else None))
    return done


# --- the steps: content:<host>, its uptodate, rollback:content:<host> ----------------------------

def push_content(inventory, host):
    """A new release of each package's content on host, switched in. The SSH login starts
    first, beside the HTTPS question and the payload: content:<host> runs when something is
    to be sent, save after a run cut short (then the login goes unused)."""
    remote.connect_soon(host, inventory.ssh, "content")
    push(inventory, host, say, confirmed=_confirmed(inventory, host))


def _confirmed(inventory, host) -> dict[str, str]:
    """{package: folder} for the served package, when the host, asked now over HTTPS, serves
    the release of content/ whole from a folder of that release, and this machine pushed to
    it before and saw no drift. Such a run of content:<host> sends nothing: doit forgets a
    step whose task_dep failed (a failed canary forgets every host's content step), and a run
    may end after a host switched but before its record here was kept. Asked afresh, not the
    drift probe's answer from the run's start: config may have pointed the app elsewhere."""
    package = config_commands.served_package(inventory)
    record = served(inventory, package, host) if package.content is not None else None
    if record is None or record.drift is not None:
        return {}
    release = manifest(inventory, package)
    health = probe.health(inventory, host, timeout=probe.PROBE_TIMEOUT)
    folder = health.get("release") if isinstance(health, dict) else None
    if (isinstance(folder, str) and releases.FOLDER.fullmatch(folder)
            and releases.release_of(folder) == releases.folder_of(release.release)
            and health.get("content") == release.digest):
        return {package.name: folder}
    return {}


def content_is_current(inventory, host) -> bool:
    """doit uptodate of content:<host>: this machine's record says the host has the release of
    content/ now (content.is_current), and the host, asked over HTTPS (never SSH), serves that
    release whole. A host seen serving anything else (a file changed or removed there by hand,
    `current` switched) is marked as drifted, so this very run repairs it; a host that doesn't
    answer is taken at its record, and the check will say what is wrong with it."""
    if not is_current(inventory, host):
        return False
    package = config_commands.served_package(inventory)
    health = drift_probe(inventory, host) if package.content is not None else None
    if not isinstance(health, dict):
        return True
    problem = content_problem(health, *expected(inventory, package, host))
    if problem:
        mark_drift(inventory, package, host, problem)
    return problem is None


def drift_probe(inventory, host) -> dict | str | None:
    """The host's /_health, asked once per run for every host this machine would otherwise
    take at its records (upgrade's and content's uptodate share it); None for the others."""
    hosts = [h for h in inventory.hosts
             if is_current(inventory, h) or hoststate.history(inventory, h)]
    return probe.probe(inventory, host, hosts)


def content_problem(health: dict, folder: str | None, digest: str | None) -> str | None:
    """What is wrong with the content a host's health reports, against the release folder and
    digest it should serve (either may be unknown: None); None when nothing is."""
    if folder is not None and health.get("release") != folder:
        return served_text(health)
    if digest is not None and health.get("content") != digest:
        return served_text(health)
    return None


def served_text(health: dict) -> str:
    return f"release {health.get('release')} with content {str(health.get('content'))[:12]}"


def rollback_content(inventory, host):
    """Switch each package's content on host back one release (no transfer), then wait until
    the host serves it."""
    for package, folder, digest in rollback(inventory, host, say):
        if package.port is None:
            continue  # not served over HTTPS: nothing to wait for
        health, _, _ = probe.wait_for_health(
            inventory, host, lambda h: content_problem(h, folder, digest) is None)
        if not isinstance(health, dict) or content_problem(health, folder, digest):
            seen = served_text(health) if isinstance(health, dict) else health
            raise OutpostError(f"host {host.name}, step rollback: switched to {folder}, but the "
                               f"app does not serve it: it gives {seen}")
