"""sync: the host's doas rules and content folders in a signed bundle, then the repository's
arch folder by rsync (commands.sync builds both)."""
from __future__ import annotations

from pathlib import Path

from outpost import remote, repo
from outpost.commands import sync as sync_commands
from outpost.steps.common import apply_bundle, report


def repo_index(inventory, arch: str) -> Path:
    # v2 writes APKINDEX.tar.gz; cbuild's v3 Packages.adb has an APKINDEX.tar.gz hardlink too.
    return repo.repo_dir(inventory, arch) / repo.INDEX_V2


def sync_settings(inventory, host) -> dict:
    return {"address": host.address, "port": host.port, "user": host.user,
            "repository": inventory.repository.path,
            "content_dirs": sync_commands.content_dirs(inventory)}


def sync(inventory, host):
    """The host's doas rules and content folders (sync_bundle), then rsync its arch folder on a
    channel of the same SSH login."""
    remote.connect_soon(host, inventory.ssh, "sync")  # logs in while the bundle is made
    report(host, apply_bundle(inventory, host, sync_commands.sync_bundle(inventory, host),
                              "sync").stdout)
    build_repo = repo.repo_dir(inventory, host.arch).parent
    rsh = remote.relay_command(host, inventory.ssh, step="sync")
    remote.run_local(sync_commands.repo_rsync_argv(build_repo, host, inventory.repository,
                                                   inventory.ssh, rsh),
                     host, inventory.ssh, step="sync")
