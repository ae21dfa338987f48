"""sync's builders: the repository's place on a host (its key, its list line), the rsync of the
host's arch folder, and the bundle with the host's doas rules and content folders. Pure."""
from __future__ import annotations

from pathlib import Path

from outpost.commands import acme, base, bundle, upgrade

# /etc/apk/repositories.d/<LIST_NAME>.list holds Outpost's repository line.
LIST_NAME = "outpost"


KEYS_DIR = "/etc/apk/keys"


LISTS_DIR = "/etc/apk/repositories.d"


INDEX_FILES = {"v3": "Packages.adb", "v2": "APKINDEX.tar.gz"}  # what each list format reads

# Which index the repository has, by builder: the local builder writes a v2 APKINDEX.tar.gz,
# cbuild a v3 Packages.adb (FACTS.md). Known from the inventory, so the list line is known
# before anything is built.
INDEX_FORMATS = {"local": "v2", "cbuild": "v3"}


def repo_rsync_argv(build_repo: Path, host, repository, ssh, rsh: list[str]) -> list[str]:
    """The host's arch folder of the local repository, to the same folder under the
    repository path on the host, over rsh (base.rsync_argv). -H keeps cbuild's
    APKINDEX.tar.gz a hardlink of Packages.adb instead of a second copy."""
    return base.rsync_argv(build_repo / host.arch, host, f"{repository.path}/{host.arch}", ssh,
                           rsh, hardlinks=True)


def repo_list_line(fmt: str, repo_path: str) -> str:
    """The repositories.d line for a local-path repository: apk reads
    <repo_path>/<arch>/Packages.adb for v3 and <repo_path>/<arch>/APKINDEX.tar.gz for v2."""
    if fmt not in INDEX_FILES:
        raise ValueError(f"unknown index format {fmt!r}; expected one of {sorted(INDEX_FILES)}")
    return f"{fmt} {repo_path}"


def key_path(key_name: str) -> str:
    return f"{KEYS_DIR}/{key_name}"


def list_path() -> str:
    return f"{LISTS_DIR}/{LIST_NAME}.list"


def list_line(inventory) -> str:
    """The repositories.d line, known from the builder before anything is built."""
    return repo_list_line(INDEX_FORMATS[inventory.builder.kind], inventory.repository.path)


def doas_permits(inventory, host) -> list[tuple[str, list[str]]]:
    """Every doas rule of a web host: the deploy user's (base.doas_permits: the bundle
    helper, the upgrade's for the repository's versions); and lego's two when certificates
    come from ACME."""
    permits = base.doas_permits(host.user, installs=upgrade.install_commands(inventory, host))
    return permits + (acme.lego_permits() if inventory.acme is not None else [])


def doas_conf(inventory, host) -> str:
    """/etc/doas.conf for host (templates/doas.conf.j2), installed by the sync step's bundle."""
    return base.doas_conf_text(doas_permits(inventory, host))


def content_dirs(inventory) -> list[str]:
    return [p.content_dir for p in inventory.packages if p.content_dir]


def sync_bundle(inventory, host) -> bundle.Bundle:
    """The doas rules, with one `apk add NAME=VERSION` rule per version the repository keeps
    (there before the upgrade needs them), checked by doas -C; and the content folders, the
    deploy user's, with root-owned parents."""
    doas = doas_conf(inventory, host).encode()
    return bundle.Bundle(
        host.name, "sync",
        # doas refuses a doas.conf others can write; nobody else needs to read it.
        files=(bundle.HostFile(base.DOAS_CONF, 0o400, doas),),
        folders=tuple(bundle.Folder(path, host.user) for path in content_dirs(inventory)),
        checks=(("doas", base.DOAS_CONF),))
