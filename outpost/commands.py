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
    doas apk add <package>=<version>               (upgrade, rollback: one rule per version
                                                   the repository keeps; see outpost.rollout)
    doas rm -f /etc/default/<package>.apk-new      (upgrade, when config owns that env-file)
    doas dinitctl reload <svc>                     (upgrade, when its service file changed)
    doas dinitctl stop <svc>                       (upgrade, when dinit won't reload it running)
    doas dinitctl restart --ignore-unstarted <svc> (upgrade)
    doas dinitctl start|enable <svc>               (upgrade)
    doas tail -n 20 <the service's logfile>        (upgrade: why a host failed the gate)

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
    folder's contents land in dest_dir, not a folder inside it). -s (--secluded-args, once
    --protect-args; -s on every rsync since 3.0) sends the paths to the host's rsync over the
    protocol, not through the host's shell: a path is one literal path, whatever it holds,
    and RSYNC_OLD_ARGS can't undo it."""
    argv = ["rsync", "-a", "-s"]
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
                content_dirs=(), doas_conf: str | None = None) -> str:
    """Make the host ready for the repository rsync and for apk to trust it: the folders the
    user rsyncs into (repository path, content dirs) exist and are the user's, the public key
    is /etc/apk/keys/<key_name>, and the list file holds list_line. Each file is written only
    when its content differs. With doas_conf, /etc/doas.conf is installed as config installs
    it (doas_conf_script). Prints `changed: <path>` for what it changed."""
    parts = ["set -eu\n", "umask 022\n"]
    for path in (repository.path, CONFIG_DIR, *content_dirs):
        parts.append(_ensure_owned_dir(user, path))
    parts.append(_ensure_file(key_path(repository.key_name), public_key_pem))
    parts.append(_ensure_file(list_path(), list_line + "\n"))
    if doas_conf is not None:
        parts.append(doas_conf_script(doas_conf))
    return "".join(parts)


def doas_conf_script(text: str) -> str:
    """Install /etc/doas.conf (mode 400) the way config_script does, with the same doas rule:
    staged, checked by `doas -C`, installed only when config's record of installed files has
    another sha256 for it, and that record then updated. The sync step uses it, so the rules
    for a new version are on the host before the upgrade runs it."""
    q = shlex.quote
    staged = STAGE + DOAS_CONF
    record = f"{hashlib.sha256(text.encode()).hexdigest()}  {DOAS_CONF}"
    install = ["doas", "install", "-m", "400", staged, DOAS_CONF]
    return (f"if ! grep -qxF {q(record)} {q(INSTALLED)} 2>/dev/null; then\n"
            f"  rm -rf {q(STAGE)} && mkdir -p {q(STAGE + '/etc')}\n"
            f"  printf '%s' {q(text)} > {q(staged)}\n"
            f"  doas -C {q(staged)} || {{ echo 'doas -C refused the new doas.conf' >&2; "
            f"exit {NGINX_REFUSED}; }}\n"
            f"  {shlex.join(install)}\n"
            f"  {{ grep -vF {q('  ' + DOAS_CONF)} {q(INSTALLED)} 2>/dev/null || true; "
            f"echo {q(record)}; }} > {q(INSTALLED + '.new')}\n"
            f"  mv {q(INSTALLED + '.new')} {q(INSTALLED)}\n"
            f"  rm -rf {q(STAGE)}\n"
            f"  echo changed: {DOAS_CONF}\n"
            f"fi\n")


# Where `dinitctl enable` links a service on Chimera (the boot service's waits-for.d).
BOOT_D = "/etc/dinit.d/boot.d"
# Where packages put their dinit service files (cbuild's install_service).
SERVICE_DIR = "/usr/lib/dinit.d"
# Where dinit writes its log on the local fleet (`dinit --log-file`). dinitctl prints only "error
# in service description." and leaves the reason there, so a failed upgrade shows what dinit
# logged meanwhile (outpost.rollout). (A Chimera host's dinit logs to syslog; there the step
# shows no log.)
DINIT_LOG = "/var/log/dinit.log"
# apk keeps a config file the admin (here: config) changed and writes the package's as this.
APK_NEW = ".apk-new"


# --- bootstrap: what a fresh host needs before the first sync --------------------------------

# What the pipeline itself runs on a host: nginx in front of the app, rsync for the pushes,
# curl for the upgrade's health gate (outpost.rollout).
BASE_PACKAGES = ("nginx", "rsync", "curl")


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


def folders_of(host_files) -> list[str]:
    return sorted({str(PurePosixPath(f.remote_path).parent) for f in host_files})


def install_file_command(stage: str, f) -> list[str]:
    """Install a staged file at its place, as root (its content was checked while staged)."""
    return ["doas", "install", "-m", f"{f.mode:o}", stage + f.remote_path, f.remote_path]


def folder_command(folder: str) -> list[str]:
    return ["doas", "install", "-d", "-m", "755", folder]


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


def config_commands(host_files) -> list[list[str]]:
    commands = [folder_command(folder) for folder in folders_of(host_files)]
    if any(f.remote_path == NGINX_CONF for f in host_files):
        commands.append(_nginx_check())
    commands += [install_file_command(STAGE, f) for f in host_files]
    commands += [argv for _, argvs in _service_actions(host_files) for argv in argvs]
    return commands


def changed_flag(name: str) -> str:
    """The shell variable install_changed_lines sets when a file of `name` changed."""
    return "changed_" + re.sub(r"[^A-Za-z0-9]", "_", name)


def stage_lines(stage: str, files) -> list[str]:
    """Script lines that write every file under `stage` at its path on the host (the staged
    copy is the SSH user's, readable by it alone), from base64 in the script itself."""
    q = shlex.quote
    lines = [f"rm -rf {q(stage)}"]
    lines += [f"mkdir -p {q(stage + folder)}" for folder in folders_of(files)]
    for f in files:
        lines.append(f"base64 -d > {q(stage + f.remote_path)} <<'OUTPOST_FILE'\n"
                     f"{base64.encodebytes(f.content).decode()}OUTPOST_FILE")
    return lines


def refusal_lines(check: list[str], message: str, status: int) -> list[str]:
    """Run a check of the staged files; on failure print its output and `message` to stderr
    and exit with `status`, before anything was switched."""
    return [f"if ! out=$({shlex.join(check)} 2>&1); then\n"
            f"  printf '%s\\n' \"$out\" >&2\n"
            f"  echo {shlex.quote(message)} >&2\n  exit {status}\nfi"]


def install_changed_lines(stage: str, record: str, files, sha256s=None) -> list[str]:
    """Install each staged file whose sha256 differs from what `record` says was installed
    last, and record the new set. A file with a .service sets changed_flag(service). `sha256s`
    gives the hash of files whose content is not in the script (default: hash .content)."""
    q = shlex.quote
    lines = [f"[ -d {q(folder)} ] || {shlex.join(folder_command(folder))}"
             for folder in folders_of(files)]
    sha256s = sha256s or {}
    records = [f"{sha256s.get(f.remote_path) or hashlib.sha256(f.content).hexdigest()}  "
               f"{f.remote_path}" for f in files]
    for f, line in zip(files, records):
        flag = f"; {changed_flag(f.service)}=1" if f.service else ""
        lines.append(f"if ! grep -qxF {q(line)} {q(record)} 2>/dev/null; then\n"
                     f"  {shlex.join(install_file_command(stage, f))}\n"
                     f"  echo changed: {q(f.remote_path)}{flag}\nfi")
    lines.append(f"printf '%s\\n' {' '.join(q(r) for r in records)} > {q(record)}")
    return lines


def config_script(files) -> str:
    """One round trip that puts config files in place. Every file is staged first; nginx -t
    checks the staged nginx folder (with its own certificate), and a refusal stops here with
    nginx's message, the old files still serving. Then each file whose sha256 differs from what
    config last installed is installed; a service whose files changed is reloaded (nginx: HUP)
    or restarted (an env-file). `files` have .remote_path, .mode, .service, .action and
    .content (bytes). Prints `changed: <path>`, `reloaded: <svc>`, `restarted: <svc>`."""
    q = shlex.quote
    lines = ["set -eu", "umask 077", *stage_lines(STAGE, files)]
    if any(f.remote_path == NGINX_CONF for f in files):
        lines += refusal_lines(_nginx_check(), "nginx -t refused the new configuration; the old"
                               " one keeps serving", NGINX_REFUSED)
    if any(f.remote_path == DOAS_CONF for f in files):
        # A doas.conf that doas can't parse would lock the user out of every later step.
        lines.append(f"doas -C {q(STAGE + DOAS_CONF)} || {{ echo 'doas -C refused the new "
                     f"doas.conf' >&2; exit {NGINX_REFUSED}; }}")
    lines += install_changed_lines(STAGE, INSTALLED, files)
    for service, argvs in _service_actions(files):
        verb = "reloaded" if len(argvs) == 2 else "restarted"
        run = " || ".join(f"{shlex.join(argv)} >/dev/null" for argv in argvs)
        lines.append(f"if [ -n \"${{{changed_flag(service)}:-}}\" ]; then\n"
                     f"  {run}\n  echo {verb}: {q(service)}\nfi")
    lines.append(f"rm -rf {q(STAGE)}")
    return "\n".join(lines) + "\n"


# --- doas.conf for the hosts ------------------------------------------------------------------

def doas_permits(user: str, repository, packages, host_files=(),
                 *, installs=(), extra=()) -> list[tuple[str, list[str]]]:
    """(user, argv without doas) for each root command the scripts above and below run (see the
    module docstring), for this repository, these packages, these config files (objects
    with .remote_path, .mode, .service, .action, such as outpost.render.HostFile), the
    upgrade's commands (`installs`, argv lists from outpost.rollout.doas_commands: one
    `apk add NAME=VERSION` per version the repository keeps) and `extra` (other steps'
    commands with doas, such as geodns.doas_commands), in order and each once."""
    commands = [_owned_dir_command(user, path)
                for path in (repository.path, CONFIG_DIR, *(p.content_dir for p in packages
                                                             if p.content_dir))]
    commands += [_write_file_command(key_path(repository.key_name)),
                 _write_file_command(list_path())]
    commands += _bootstrap_commands()
    commands += list(installs)
    commands += config_commands(host_files)
    commands += list(extra)
    permits = []
    for doas, *argv in commands:
        if (user, argv) not in permits:  # `apk update` is the same for every package
            permits.append((user, argv))
    return permits


def doas_rule(user: str, argv: list[str]) -> dict:
    """A doas_permits entry as templates/doas.conf.j2 reads it: who, as whom, which command.
    `doas -u NAME cmd ...` runs as NAME (gdnsdctl as gdnsd's own user), else as root."""
    if argv[:1] == ["-u"]:
        return {"user": user, "as": argv[1], "argv": argv[2:]}
    return {"user": user, "as": "root", "argv": argv}


def doas_rules(user: str, repository, packages, host_files=(), *, installs=(),
               extra=()) -> str:
    """doas.conf text (templates/doas.conf.j2) allowing `user` exactly doas_permits."""
    from outpost import render  # render imports this module
    return render.render("doas.conf.j2", {"doas_rules": [
        doas_rule(permit_user, argv)
        for permit_user, argv in doas_permits(user, repository, packages, host_files,
                                              installs=installs, extra=extra)]})


# --- check: the app's health endpoint ---------------------------------------------------------

def health_url(host, package) -> str:
    if package.port is None:
        raise OutpostError(f"package {package.name!r} has no port in the inventory, so its "
                           f"health can't be checked on host {host.name}")
    address = f"[{host.address}]" if ":" in host.address else host.address
    return f"http://{address}:{package.port}/_health"
