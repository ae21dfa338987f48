"""Every command the remote steps run, built by pure functions: argv lists for local programs
(ssh options, rsync) and one POSIX sh script per host per step. Nothing here runs anything;
outpost.remote does. (index_format reads local files, nothing else.) The content releases'
scripts are in outpost.releases.

Root on the hosts: the SSH user (`deploy`) is not root. The scripts run a short, fixed list of
commands through doas, each with fixed arguments; `doas_permits` lists them and `doas_rules`
writes the doas.conf rules (templates/doas.conf.j2) that allow exactly those and nothing more:

    doas tee /etc/apk/keys/<key_name>              the repository's public key (sync)
    doas tee /etc/apk/repositories.d/outpost.list  the repository list line (sync)
    doas install -d -o <user> -m 755 <dir>         a folder the user then writes with rsync:
                                                   the repository path and each content_dir (sync)
    doas apk update                                (upgrade)
    doas apk add -u <package>                      (upgrade)
    doas dinitctl restart --ignore-unstarted <svc> (upgrade)
    doas dinitctl start <svc>                      (upgrade)

A rule with `cmd` makes doas look the command up in its own safe PATH, and `args` must match
the whole argument list, so the user can't widen any of these. Note what they grant all the
same: whoever can write the repository and the key can have apk install anything, so the SSH
user is as good as root on the package side. That is the deploy user's job; keep its key safe.
"""
from __future__ import annotations

import base64
import hashlib
import math
import re
import shlex
from pathlib import Path, PurePosixPath

from outpost.errors import OutpostError

# /etc/apk/repositories.d/<LIST_NAME>.list holds Outpost's repository line.
LIST_NAME = "outpost"
KEYS_DIR = "/etc/apk/keys"
LISTS_DIR = "/etc/apk/repositories.d"
INDEX_FILES = {"v3": "Packages.adb", "v2": "APKINDEX.tar.gz"}  # what each list format reads


# --- ssh and rsync (run on this machine) ------------------------------------------------------

def ssh_options(ssh, host) -> list[str]:
    """OpenSSH options that pin the host key to the inventory's known_hosts and use only the
    inventory's identity. `-F /dev/null` ignores ~/.ssh/config, as the Fabric side does: the
    inventory alone says how to reach a host."""
    return [
        "-F", "/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={ssh.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "BatchMode=yes",
        # OpenSSH takes whole seconds; round up so a short timeout never becomes 0 (= none).
        "-o", f"ConnectTimeout={math.ceil(ssh.connect_timeout)}",
        "-o", "IdentitiesOnly=yes",
        "-i", str(ssh.identity),
        "-p", str(host.port),
    ]


def _remote_host(host) -> str:
    address = f"[{host.address}]" if ":" in host.address else host.address  # IPv6
    return f"{host.user}@{address}"


def rsync_argv(src_dir, host, dest_dir: str, ssh, *, delete=True, hardlinks=False,
               extra=()) -> list[str]:
    """rsync the contents of src_dir into dest_dir on host (both with a trailing slash, so the
    folder's contents land in dest_dir, not a folder inside it)."""
    argv = ["rsync", "-a"]
    if hardlinks:
        argv.append("-H")
    if delete:
        argv.append("--delete")
    argv += [
        # An I/O timeout: a host that stops answering mid-transfer fails the step.
        f"--timeout={math.ceil(ssh.command_timeout)}",
        "-e", shlex.join(["ssh", *ssh_options(ssh, host)]),
        *extra,
        f"{str(src_dir).rstrip('/')}/",
        f"{_remote_host(host)}:{dest_dir.rstrip('/')}/",
    ]
    return argv


def repo_rsync_argv(build_repo: Path, host, repository, ssh) -> list[str]:
    """The host's arch folder of the local repository, to the same folder under the
    repository path on the host. -H keeps cbuild's APKINDEX.tar.gz a hardlink of
    Packages.adb instead of a second copy."""
    return rsync_argv(build_repo / host.arch, host, f"{repository.path}/{host.arch}", ssh,
                      hardlinks=True)


def ssh_argv(ssh, host) -> list[str]:
    """OpenSSH to host with ssh_options; the remote command goes after it."""
    return ["ssh", *ssh_options(ssh, host), _remote_host(host)]


# --- sync: repository key and list ------------------------------------------------------------

def index_format(arch_dir: Path) -> str:
    """"v3" when the repository folder has a Packages.adb (cbuild), "v2" when it has only an
    APKINDEX.tar.gz (the local builder)."""
    for fmt in ("v3", "v2"):
        if (arch_dir / INDEX_FILES[fmt]).is_file():
            return fmt
    raise OutpostError(f"{arch_dir}: no repository index (Packages.adb or APKINDEX.tar.gz);"
                       f" run `doit index:{arch_dir.name}` first")


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


def _owned_dir_command(user: str, path: str) -> list[str]:
    return ["doas", "install", "-d", "-o", user, "-m", "755", path]


def _write_file_command(path: str) -> list[str]:
    return ["doas", "tee", path]


def _ensure_owned_dir(user: str, path: str) -> str:
    q = shlex.quote(path)
    return (f"if [ ! -d {q} ] || [ ! -w {q} ]; then\n"
            f"  {shlex.join(_owned_dir_command(user, path))}\n"
            f"  echo changed: {q}\n"
            f"fi\n")


def _ensure_file(path: str, content: str) -> str:
    # cmp reads the current file as the SSH user (both folders are world-readable), so an
    # unchanged file costs no doas call and no write.
    q, text = shlex.quote(path), shlex.quote(content)
    return (f"if ! printf '%s' {text} | cmp -s - {q}; then\n"
            f"  printf '%s' {text} | {shlex.join(_write_file_command(path))} >/dev/null\n"
            f"  echo changed: {q}\n"
            f"fi\n")


def sync_script(repository, public_key_pem: str, list_line: str, *, user: str,
                content_dirs=()) -> str:
    """Make the host ready for the repository rsync and for apk to trust it: the folders the
    user rsyncs into (repository path, content dirs) exist and are the user's, the public key
    is /etc/apk/keys/<key_name>, and the list file holds list_line. Each file is written only
    when its content differs. Prints `changed: <path>` for what it changed."""
    parts = ["set -eu\n", "umask 022\n"]
    for path in (repository.path, CONFIG_DIR, *content_dirs):
        parts.append(_ensure_owned_dir(user, path))
    parts.append(_ensure_file(key_path(repository.key_name), public_key_pem))
    parts.append(_ensure_file(list_path(), list_line + "\n"))
    return "".join(parts)


# --- upgrade: package and service -------------------------------------------------------------

# Where `dinitctl enable` links a service on Chimera (the boot service's waits-for.d).
BOOT_D = "/etc/dinit.d/boot.d"


def _upgrade_steps(package_name: str, service: str | None) -> list[tuple[str | None, list[str]]]:
    """(shell condition or None, argv) for each command of the upgrade, in order."""
    steps = [
        # Remote indexes are cached; a local-path repository is not, but update is cheap and
        # makes the step right for either.
        (None, ["doas", "apk", "update"]),
        (None, ["doas", "apk", "add", "-u", package_name]),
    ]
    if service:
        # restart alone fails on a first install (the service isn't started yet), and start
        # alone leaves the old process running: restart if started, then start if not.
        # Enabled once, so the service comes back when the host reboots.
        steps += [
            (None, ["doas", "dinitctl", "restart", "--ignore-unstarted", service]),
            (f"[ ! -e {shlex.quote(f'{BOOT_D}/{service}')} ]",
             ["doas", "dinitctl", "enable", service]),
            (None, ["doas", "dinitctl", "start", service]),
        ]
    return steps


def _upgrade_commands(package_name: str, service: str | None) -> list[list[str]]:
    return [argv for _, argv in _upgrade_steps(package_name, service)]


def installed_version_command(package_name: str) -> list[str]:
    # apk-tools src/app_info.c: `info -e` prints the installed package one line each, and
    # with -v that line is "<name>-<version>"; it exits non-zero when it isn't installed.
    # (`apk info -v NAME` without -e prints description/webpage/size fields instead.)
    return ["apk", "info", "-e", "-v", package_name]


def upgrade_script(package_name: str, service: str | None) -> str:
    """apk update + add -u + service restart, then print the installed version (last line,
    see parse_installed_version)."""
    lines = ["set -eu"]
    for condition, argv in _upgrade_steps(package_name, service):
        lines.append(f"if {condition}; then {shlex.join(argv)}; fi" if condition
                     else shlex.join(argv))
    lines.append(shlex.join(installed_version_command(package_name)))
    return "\n".join(lines) + "\n"


def parse_installed_version(output: str, package_name: str) -> str:
    """The version from the `<name>-<version>` line of `apk info -e -v <name>`, e.g.
    "2.0.12-r1". Other output (apk update's) can come before it."""
    # apk versions are <digits...>[letters/_suffixes]-r<N>; they hold no "-" before -r, so a
    # package named "<name>-doc" can't be mistaken for <name>.
    pattern = re.compile(rf"{re.escape(package_name)}-(\d[^\s-]*-r\d+)")
    for line in reversed(output.splitlines()):
        match = pattern.fullmatch(line.strip())
        if match:
            return match.group(1)
    raise OutpostError(f"apk did not report an installed version of {package_name!r}; "
                       f"its output was:\n{output.strip()}")


# --- bootstrap: what a fresh host needs before the first sync --------------------------------

# What the pipeline itself runs on a host: nginx in front of the app, rsync for the pushes.
BASE_PACKAGES = ("nginx", "rsync")


def _bootstrap_steps() -> list[tuple[str | None, list[str]]]:
    return [(None, ["doas", "apk", "add", *BASE_PACKAGES]),
            # Enabled once: started now and at every boot.
            (f"[ ! -e {BOOT_D}/nginx ]", ["doas", "dinitctl", "enable", "nginx"])]


def _bootstrap_commands() -> list[list[str]]:
    return [argv for _, argv in _bootstrap_steps()]


def bootstrap_script(repository, public_key_pem: str, list_line: str, *, user: str,
                     content_dirs=()) -> str:
    """Make a fresh host ready, idempotently: base packages, nginx enabled, and what sync_script
    sets up (folders, repository key and list). Prints `changed: ...` for what it changed."""
    lines = [f"if {condition}; then {shlex.join(argv)}; echo changed: {argv[-1]}; fi"
             if condition else f"{shlex.join(argv)} >/dev/null"
             for condition, argv in _bootstrap_steps()]
    return (sync_script(repository, public_key_pem, list_line, user=user,
                        content_dirs=content_dirs) + "\n".join(lines) + "\n")


# --- config: files from templates/, checked before they are switched in ------------------------

# The user's own folder on the host: the staged files, and a record of what config installed.
CONFIG_DIR = "/var/lib/outpost/config"
STAGE = f"{CONFIG_DIR}/stage"
INSTALLED = f"{CONFIG_DIR}/installed.sha256"
NGINX_CONF = "/etc/nginx/nginx.conf"
DOAS_CONF = "/etc/doas.conf"
# Exit status of a config script whose nginx -t (or doas -C) refused the new files.
NGINX_REFUSED = 65


def _folders(host_files) -> list[str]:
    return sorted({str(PurePosixPath(f.remote_path).parent) for f in host_files})


def _install_file(f) -> list[str]:
    return ["doas", "install", "-m", f"{f.mode:o}", STAGE + f.remote_path, f.remote_path]


def _nginx_check() -> list[str]:
    return ["doas", "nginx", "-t", "-q", "-c", STAGE + NGINX_CONF]


def _service_actions(host_files) -> list[tuple[str, list[list[str]]]]:
    """(service, the commands that apply its changed files): HUP for a reload (nginx re-reads
    its files and keeps serving; start it instead if it isn't running), else a restart."""
    actions = {}
    for f in host_files:
        if f.service and f.action == "reload":
            actions[f.service] = [["doas", "dinitctl", "signal", "HUP", f.service],
                                  ["doas", "dinitctl", "start", f.service]]
        elif f.service:
            actions[f.service] = [["doas", "dinitctl", "restart", "--ignore-unstarted",
                                   f.service]]
    return sorted(actions.items())


def _config_commands(host_files) -> list[list[str]]:
    commands = [["doas", "install", "-d", "-m", "755", folder] for folder in _folders(host_files)]
    if any(f.remote_path == NGINX_CONF for f in host_files):
        commands.append(_nginx_check())
    commands += [_install_file(f) for f in host_files]
    commands += [argv for _, argvs in _service_actions(host_files) for argv in argvs]
    return commands


def _changed_flag(service: str) -> str:
    return "changed_" + re.sub(r"[^A-Za-z0-9]", "_", service)


def config_script(files) -> str:
    """One round trip that puts config files in place. Every file is staged first; nginx -t
    checks the staged nginx folder (with its own certificate), and a refusal stops here with
    nginx's message, the old files still serving. Then each file whose sha256 differs from what
    config last installed is installed; a service whose files changed is reloaded (nginx: HUP)
    or restarted (an env-file). `files` have .remote_path, .mode, .service, .action and
    .content (bytes). Prints `changed: <path>`, `reloaded: <svc>`, `restarted: <svc>`."""
    q = shlex.quote
    lines = ["set -eu", "umask 077", f"rm -rf {q(STAGE)}"]
    lines += [f"mkdir -p {q(STAGE + folder)}" for folder in _folders(files)]
    for f in files:
        lines.append(f"base64 -d > {q(STAGE + f.remote_path)} <<'OUTPOST_FILE'\n"
                     f"{base64.encodebytes(f.content).decode()}OUTPOST_FILE")
    if any(f.remote_path == NGINX_CONF for f in files):
        lines.append(f"if ! out=$({shlex.join(_nginx_check())} 2>&1); then\n"
                     f"  printf '%s\\n' \"$out\" >&2\n"
                     f"  echo 'nginx -t refused the new configuration; the old one keeps serving'"
                     f" >&2\n  exit {NGINX_REFUSED}\nfi")
    if any(f.remote_path == DOAS_CONF for f in files):
        # A doas.conf that doas can't parse would lock the user out of every later step.
        lines.append(f"doas -C {q(STAGE + DOAS_CONF)} || {{ echo 'doas -C refused the new "
                     f"doas.conf' >&2; exit {NGINX_REFUSED}; }}")
    lines += [f"[ -d {q(folder)} ] || doas install -d -m 755 {q(folder)}"
              for folder in _folders(files)]
    records = [f"{hashlib.sha256(f.content).hexdigest()}  {f.remote_path}" for f in files]
    for f, record in zip(files, records):
        flag = f"; {_changed_flag(f.service)}=1" if f.service else ""
        lines.append(f"if ! grep -qxF {q(record)} {q(INSTALLED)} 2>/dev/null; then\n"
                     f"  {shlex.join(_install_file(f))}\n"
                     f"  echo changed: {q(f.remote_path)}{flag}\nfi")
    lines.append(f"printf '%s\\n' {' '.join(q(r) for r in records)} > {q(INSTALLED)}")
    for service, argvs in _service_actions(files):
        verb = "reloaded" if len(argvs) == 2 else "restarted"
        run = " || ".join(f"{shlex.join(argv)} >/dev/null" for argv in argvs)
        lines.append(f"if [ -n \"${{{_changed_flag(service)}:-}}\" ]; then\n"
                     f"  {run}\n  echo {verb}: {q(service)}\nfi")
    lines.append(f"rm -rf {q(STAGE)}")
    return "\n".join(lines) + "\n"


# --- doas.conf for the hosts ------------------------------------------------------------------

def doas_permits(user: str, repository, packages, host_files=()) -> list[tuple[str, list[str]]]:
    """(user, argv without doas) for each root command the scripts above and below run (see the
    module docstring), for this repository, these packages and these config files (objects
    with .remote_path, .mode, .service, .action, such as outpost.render.HostFile), in order and
    each once."""
    commands = [_owned_dir_command(user, path)
                for path in (repository.path, CONFIG_DIR, *(p.content_dir for p in packages
                                                             if p.content_dir))]
    commands += [_write_file_command(key_path(repository.key_name)),
                 _write_file_command(list_path())]
    commands += _bootstrap_commands()
    for package in packages:
        commands += _upgrade_commands(package.name, package.service)
    commands += _config_commands(host_files)
    permits = []
    for doas, *argv in commands:
        if (user, argv) not in permits:  # `apk update` is the same for every package
            permits.append((user, argv))
    return permits


def doas_rules(user: str, repository, packages, host_files=()) -> str:
    """doas.conf text (templates/doas.conf.j2) allowing `user` exactly doas_permits."""
    from outpost import render  # render imports this module
    return render.render("doas.conf.j2", {"doas_rules": [
        {"user": permit_user, "argv": argv}
        for permit_user, argv in doas_permits(user, repository, packages, host_files)]})


# --- check: the app's health endpoint ---------------------------------------------------------

def health_url(host, package) -> str:
    if package.port is None:
        raise OutpostError(f"package {package.name!r} has no port in the inventory, so its "
                           f"health can't be checked on host {host.name}")
    address = f"[{host.address}]" if ":" in host.address else host.address
    return f"http://{address}:{package.port}/_health"
