"""What each host step does, composed from outpost.commands (what to run) and outpost.remote
(running it). tasks/hosts.py calls these; every function takes the inventory and a host."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from outpost import commands, remote, repo
from outpost.errors import OutpostError
from outpost.template import load_template

# How long check waits for a host to serve what was just pushed: the app rescans its content
# folder at most once a second, and a restarted service needs a moment to listen.
CHECK_WAIT = 20.0


# --- the local fleet --------------------------------------------------------------------------

def _fleet(inventory):
    from outpost import fleet  # only the fleet tasks need it
    return fleet.from_inventory(inventory)


def fleet_up(inventory):
    started = _fleet(inventory).up()
    print(f"fleet: started {', '.join(started) or 'none (all up)'}")


def fleet_down(inventory):
    stopped = _fleet(inventory).down()
    print(f"fleet: stopped {', '.join(stopped) or 'none (all down)'}")


def fleet_is_up(inventory) -> bool:
    fleet = _fleet(inventory)
    return all(fleet.is_up(host.name) for host in inventory.hosts)


def fleet_any_up(inventory) -> bool:
    fleet = _fleet(inventory)
    return any(fleet.is_up(host.name) for host in inventory.hosts)


def host_marker(inventory, host) -> list[str]:
    """A file that changes when a fleet host is made afresh (its pinned host key), so every step
    runs again for a host that lost its state. Real hosts have none."""
    if inventory.fleet is None:
        return []
    return [str(inventory.ssh.known_hosts)]


# --- sync -------------------------------------------------------------------------------------

def repo_index(inventory, arch: str) -> Path:
    # v2 writes APKINDEX.tar.gz; cbuild's v3 Packages.adb has an APKINDEX.tar.gz hardlink too.
    return repo.repo_dir(inventory, arch) / repo.INDEX_V2


def _list_line(inventory, host) -> str:
    fmt = commands.index_format(repo.repo_dir(inventory, host.arch))
    return commands.repo_list_line(fmt, inventory.repository.path)


def sync_settings(inventory, host) -> dict:
    return {"address": host.address, "port": host.port, "user": host.user,
            "repository": inventory.repository.path}


def sync(inventory, host):
    """Make the host trust the repository (key, list line, folders), then rsync its arch folder."""
    script = commands.sync_script(
        inventory.repository, inventory.repository.public_key.read_text(),
        _list_line(inventory, host), user=host.user,
        content_dirs=[p.content_dir for p in inventory.packages if p.content_dir])
    output = remote.run_script(host, script, inventory.ssh, step="sync").stdout
    for line in output.splitlines():
        print(f"{host.name}: {line}")
    remote.run_local(commands.repo_rsync_argv(repo.repo_dir(inventory, host.arch).parent, host,
                                              inventory.repository, inventory.ssh),
                     host, inventory.ssh, step="sync")


# --- upgrade ----------------------------------------------------------------------------------

def wanted_versions(inventory) -> dict[str, str]:
    """The version of each package that every host should run: what its template builds."""
    return {p.name: load_template(p.template_dir).version for p in inventory.packages}


def upgrade(inventory, host):
    """apk update + add -u + restart for every package, in one round trip; checks and reports
    the version now installed."""
    script = "".join(commands.upgrade_script(p.name, p.service) for p in inventory.packages)
    output = remote.run_script(host, script, inventory.ssh, step="upgrade").stdout
    wanted = wanted_versions(inventory)
    for package in inventory.packages:
        installed = commands.parse_installed_version(output, package.name)
        if installed != wanted[package.name]:
            raise OutpostError(f"host {host.name}, step upgrade: {package.name} {installed} is "
                               f"installed, but the repository should give {wanted[package.name]}")
        print(f"{host.name}: {package.name} {installed} installed")
    return {"installed": {p.name: wanted[p.name] for p in inventory.packages}}


# --- content ----------------------------------------------------------------------------------

def push_content(inventory, host):
    for package in inventory.packages:
        if package.content is not None:
            remote.run_local(commands.content_rsync_argv(package, host, inventory.ssh),
                             host, inventory.ssh, step="content")


# --- check ------------------------------------------------------------------------------------

def _health(url: str) -> dict | str:
    """The app's /_health as a dict, or why it couldn't be had."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as error:
        return str(getattr(error, "reason", error))


def check(inventory, host):
    """Poll the app's health endpoint until it reports the wanted version and the digest of the
    content folder here, or fail naming the host and what it serves instead."""
    wanted = wanted_versions(inventory)
    for package in inventory.packages:
        if package.port is None:
            continue
        url = commands.health_url(host, package)
        digest = commands.content_digest(package.content) if package.content else None
        deadline = time.monotonic() + CHECK_WAIT
        while True:
            health = _health(url)
            ok = (isinstance(health, dict) and health.get("version") == wanted[package.name]
                  and (digest is None or health.get("content") == digest))
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not ok:
            seen = (f"version {health.get('version')}, content {health.get('content', '?')[:12]}"
                    if isinstance(health, dict) else health)
            raise OutpostError(f"host {host.name}, step check: {url} does not serve "
                               f"{package.name} {wanted[package.name]} with content "
                               f"{(digest or '-')[:12]}: it gives {seen}")
        print(f"{host.name}: {package.name} {health['version']} serves content {digest[:12] if digest else '-'} "
              f"({health.get('entries')} entries)")
