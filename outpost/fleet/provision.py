"""What goes into a host's upper layer before it boots: the deploy user, sshd's config, the
service files, the packages the Debian base provides, and the stand-ins.

Services: sshd is enabled, so it runs at every boot. nginx is this machine's (Debian's) nginx,
with Debian's /etc/nginx, as a service in /usr/lib/dinit.d/nginx like the one Chimera's nginx
package ships. Not enabled: a fresh Chimera host doesn't run it until it is enabled. Each host
listens on its own :80.

The stand-ins run on the hosts' own python3 from a copy of the `outpost` package in each host's
layer (the project is hidden), so that python3 needs `cryptography` (apt: python3-cryptography).

Where this machine has the real apk or dinit (local.find_chimera_tools), /usr/local/bin links to
them instead, and a host gets what Chimera's base system would give them: an apk database, a
package for each program the Debian base provides, and the trigger that applies the sysusers.d
and tmpfiles.d files of the packages apk installs (APK_COMMIT_HOOK).
"""
from __future__ import annotations

import os
import shlex
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from outpost.commands import base
from outpost.errors import OutpostError
from outpost.fleet.host import FleetHost
from outpost.fleet.local import STANDINS_DIR, ChimeraTools, run

SSH_PORT = 22
# The `outpost` package, copied onto each host for the stand-ins in its standins/ folder.
PACKAGE = Path(__file__).resolve().parents[1]
STANDINS = STANDINS_DIR
# Paths on the hosts.
HOST_KEY = PurePosixPath("/etc/ssh/ssh_host_outpost_ed25519_key")
SSHD_CONFIG = PurePosixPath("/etc/ssh/sshd_config_outpost")
SSHD_LOG = PurePosixPath("/var/log/sshd.log")
# The apk stand-in's list of what a host has without apk (outpost/standins/README.md).
APK_PROVIDED = PurePosixPath("/etc/apk/provided")
# The copy of the package on each host, for the stand-ins.
HOST_PACKAGE = PurePosixPath("/usr/local/lib/outpost/outpost")
# Where each host's dinit (real or stand-in) logs, as `dinit --log-file` (base.DINIT_LOG).
DINIT_LOG = PurePosixPath(base.DINIT_LOG)
# Run by the real apk after each of its transactions (apk-tools: commit_hooks.d).
APK_COMMIT_HOOK = PurePosixPath("/etc/apk/commit_hooks.d/outpost-sysusers-tmpfiles")
# Where `dinitctl enable NAME` links NAME: the waits-for.d folder of Chimera's boot service.
BOOT_D = PurePosixPath(base.BOOT_D)
# Enabled on every host, as `dinitctl enable` links them: service -> link target.
ENABLED_SERVICES = {"sshd": "../sshd"}


@dataclass(frozen=True)
class BasePackage:
    """A Chimera package whose programs this machine (Debian) has, installed on the hosts as
    its own package would be: apk counts it as present, and the files it puts in /usr/lib
    (dinit service, sysusers.d and tmpfiles.d entries) are written there."""
    name: str
    files: tuple[tuple[str, str], ...]  # (path on the host, text)


@dataclass(frozen=True)
class Role:
    """What one machine needs beyond what every host gets, for its part in the fleet (a web
    host's lego user, the cert host's, the ACME server's service): see certhost.py, pebble.py."""
    users: tuple[tuple[str, str], ...] = ()  # (name, home): made as the deploy user is
    files: tuple[tuple[str, str, int, str], ...] = ()  # (path, text, mode, owner's name)
    enabled: tuple[str, ...] = ()  # services in /etc/dinit.d, enabled (started at boot)
    provided: tuple[str, ...] = ()  # more packages this machine's base provides to apk
    ssh_users: tuple[str, ...] = ()  # more users sshd lets in
    sshd: str = ""  # lines at the end of sshd's config (Match blocks)
    # (path, owner): an SSH key pair made here once, when missing (lego's on the cert host:
    # this machine pins it as it pins host keys, so no session's output has to tell it)
    keys: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Provision:
    """What the pipeline needs on every host, from the inventory."""
    # root's public key (the bootstrap's, [ssh] bootstrap_identity), or None: no root login
    root_key: str | None
    base_packages: tuple[BasePackage, ...] = ()  # e.g. gdnsd, when the hosts are nameservers
    roles: dict = field(default_factory=dict)  # host -> Role


# --- Pure: file contents -----------------------------------------------------------------------

def sshd_config(address: str, user: str, role: Role = Role(), root: bool = False) -> str:
    # root logs in only for the bootstrap, with its own key (never the deploy key).
    users = " ".join([user, *role.ssh_users, *(["root"] if root else [])])
    return f"""\
# The local fleet's sshd (outpost/fleet/provision.py): keys only, its users, every connection logged.
ListenAddress {address}
Port {SSH_PORT}
HostKey {HOST_KEY}
PidFile /run/sshd.pid
LogLevel VERBOSE
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin {"prohibit-password" if root else "no"}
AllowUsers {users}
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
Subsystem sftp /usr/lib/openssh/sftp-server
{role.sshd}"""


def provided_packages(python_version: str, base_packages=()) -> str:
    """The Chimera packages the Debian base provides: its python3 for `python`, its sshd for
    `openssh`, the fleet's own boot services for `dinit-chimera`'s, its nginx, rsync, curl and
    openssl, and the base packages the inventory needs (gdnsd)."""
    extra = "".join(f"{package.name}\n" for package in base_packages)
    return (f"python={python_version}\nopenssh\ndinit-chimera\nnginx\nrsync\ncurl\nopenssl\n"
            f"{extra}")


SYSUSERS_D = PurePosixPath("/usr/lib/sysusers.d")
TMPFILES_D = PurePosixPath("/usr/lib/tmpfiles.d")


def packaged_files(name: str, files_dir: Path, program: str) -> BasePackage:
    """The base package `name` from its cports template's files/ (cports-overlay): the dinit
    service `files/<name>` with its program at this machine's path (Chimera has /usr/bin,
    Debian /usr/sbin), and its sysusers and tmpfiles entries, where cbuild's install_service,
    install_sysusers and install_tmpfiles put them."""
    sources = {files_dir / name: PurePosixPath("/usr/lib/dinit.d") / name,
               files_dir / "sysusers.conf": SYSUSERS_D / f"{name}.conf",
               files_dir / "tmpfiles.conf": TMPFILES_D / f"{name}.conf"}
    files = []
    for source, target in sources.items():
        try:
            text = source.read_text()
        except OSError as error:
            raise OutpostError(f"{source}: cannot read the {name} package's file for the local "
                               f"fleet: {error.strerror}") from None
        if source.name == name:
            text = text.replace(f"/usr/bin/{name} ", f"{program} ")
        files.append((str(target), text))
    return BasePackage(name, tuple(files))


def boot_commands(base_packages) -> list[list[str]]:
    """What a Chimera host does at boot for its packages' sysusers.d and tmpfiles.d entries,
    done by the same real tools: their users, then their folders (/run is new at every boot)."""
    commands = []
    for package in base_packages:
        for path, _ in package.files:
            if path.startswith(f"{SYSUSERS_D}/"):
                commands.append(["systemd-sysusers", path])
        for path, _ in package.files:
            if path.startswith(f"{TMPFILES_D}/"):
                commands.append(["systemd-tmpfiles", "--create", path])
    return commands


def apk_database_lines(provided: str, real_apk: bool) -> list[str]:
    """Boot lines that give a host the apk database a Chimera system has (real apk and the
    stand-in both refuse to work without one), and, for the real apk, a package for each
    `NAME[=VERSION]` line of `provided` (provided_packages): an empty `apk add --virtual` one,
    made once, so that packages depending on python, nginx, ... can install. The stand-in reads
    `provided` from APK_PROVIDED instead."""
    lines = ["[ -e /lib/apk/db/installed ] || apk add --quiet --initdb"]
    if real_apk:
        for entry in provided.split():
            name = entry.partition("=")[0]
            lines.append(f"apk info -e {shlex.quote(name)} >/dev/null || "
                         f"apk add --quiet --virtual {shlex.quote(entry)}")
    return lines


def apk_commit_hook() -> str:
    """What Chimera's base system runs when apk installs a package: its sysusers.d entries
    (users, groups), then its tmpfiles.d entries (folders), here by Debian's real
    systemd-sysusers and systemd-tmpfiles, as at boot (boot_commands). Only the files that
    apk-installed packages own (read from apk's database), not Debian's own."""
    return f"""\
#!/bin/sh
# Outpost's local fleet (outpost/fleet/provision.py): the sysusers/tmpfiles trigger of
# Chimera's base system, run by real apk after each transaction (apk-tools commit_hooks.d).
[ "$1" = post-commit ] || exit 0
owned() {{
    awk -F: -v dir="$1" '/^F:/ {{ folder = $2 }} /^R:/ && folder == dir && $2 ~ /\\.conf$/ {{ print "/" dir "/" $2 }}' /lib/apk/db/installed
}}
for file in $(owned {str(SYSUSERS_D).lstrip("/")}); do systemd-sysusers "$file"; done
for file in $(owned {str(TMPFILES_D).lstrip("/")}); do systemd-tmpfiles --create "$file"; done
"""


def dinit_services() -> dict[PurePosixPath, str]:
    """The service files of every host: what dinit-chimera's boot graph needs, sshd and nginx."""
    return {
        # dinit-chimera's boot and system (chimera-linux/dinit-chimera services/): boot waits
        # for what the admin enabled, system for what packages enabled. The rest of Chimera's
        # early boot (login.target, network.target, ...) is the fleet's job, so it is left out.
        PurePosixPath("/etc/dinit.d/boot"): (
            f"type = internal\ndepends-on: system\nwaits-for.d: {BOOT_D}\n"),
        PurePosixPath("/etc/dinit.d/system"): (
            "type = internal\nwaits-for.d: /usr/lib/dinit.d/boot.d\n"),
        # dinit-chimera's local.target (packaged services depend on it), an empty milestone here.
        PurePosixPath("/etc/dinit.d/local.target"): "type = internal\n",
        PurePosixPath("/etc/dinit.d/sshd"): (
            "type = process\n"
            f"command = /usr/sbin/sshd -D -e -f {SSHD_CONFIG}\n"
            f"logfile = {SSHD_LOG}\n"),
        # cports main/nginx/files/nginx, with Debian's path to the binary.
        PurePosixPath("/usr/lib/dinit.d/nginx"): (
            "type = process\n"
            'command = /usr/sbin/nginx -g "daemon off;"\n'
            "smooth-recovery = true\n"
            "depends-on: local.target\n"),
    }


def with_user(passwd: str, group: str, shadow: str, user: str, home: str,
              gecos: str = "Outpost deploy") -> tuple[str, str, str, int]:
    """passwd, group and shadow with `user` added (unchanged if it exists), and its uid."""
    for line in passwd.splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return passwd, group, shadow, int(fields[2])
    taken = {int(line.split(":")[2]) for text in (passwd, group) for line in text.splitlines()
             if line.count(":") >= 2 and line.split(":")[2].isdigit()}
    uid = next(n for n in range(1000, 60000) if n not in taken)

    def add(text: str, line: str) -> str:
        return text + ("" if text.endswith("\n") or not text else "\n") + line + "\n"

    # "*" (no password) rather than "!" (locked): sshd refuses locked accounts even for keys.
    return (add(passwd, f"{user}:x:{uid}:{uid}:{gecos}:{home}:/bin/sh"),
            add(group, f"{user}:x:{uid}:"),
            add(shadow, f"{user}:*:19000:0:99999:7:::"), uid)


def _gid_of(name: str, group: str) -> int:
    for line in group.splitlines():
        fields = line.split(":")
        if fields[0] == name:
            return int(fields[2])
    return 0


# --- Writing the upper layer -------------------------------------------------------------------

def role_of(provision: Provision, name: str) -> Role:
    """A machine's role; one made only as the machine starts (the ACME server's, whose HTTPS
    certificate is new at each start) is made here, once per start."""
    role = provision.roles.get(name, Role())
    return role() if callable(role) else role


def host_provided(python_version: str, provision: Provision, role: Role) -> str:
    """Everything apk counts as installed on this machine (provided_packages and its role's)."""
    return (provided_packages(python_version, provision.base_packages)
            + "".join(f"{name}\n" for name in role.provided))


def provision_host(host: FleetHost, upper: Path, user: str, identity: Path,
                   provision: Provision, python_version: str, tools: ChimeraTools,
                   role: Role = Role()):
    """Write what the host needs into its upper layer (the host is down, so this is safe).
    Every file is rewritten on each start, so a changed fleet setting takes effect."""
    home = f"/home/{user}"

    def lower_or_upper(path: str) -> str:
        mine = upper / path.lstrip("/")
        return (mine if mine.exists() else Path(path)).read_text()

    passwd, group, shadow, uid = with_user(lower_or_upper("/etc/passwd"),
                                           lower_or_upper("/etc/group"),
                                           lower_or_upper("/etc/shadow"), user, home)
    uids = {user: uid, "root": 0}
    for name, role_home in role.users:
        passwd, group, shadow, uids[name] = with_user(passwd, group, shadow, name, role_home,
                                                      gecos=f"Outpost {name}")
    shadow_gid = _gid_of("shadow", group)
    files = {
        "/etc/passwd": (passwd, 0o644, 0, 0),
        "/etc/group": (group, 0o644, 0, 0),
        "/etc/shadow": (shadow, 0o640, 0, shadow_gid),
        str(SSHD_CONFIG): (sshd_config(host.address, user, role, provision.root_key is not None),
                           0o644, 0, 0),
        "/etc/apk/arch": (host.arch + "\n", 0o644, 0, 0),
        str(APK_PROVIDED): (host_provided(python_version, provision, role), 0o644, 0, 0),
        f"{home}/.ssh/authorized_keys": (
            Path(f"{identity}.pub").read_text(), 0o600, uid, uid),
        **{str(path): (text, 0o644, 0, 0) for path, text in dinit_services().items()},
        **{path: (text, 0o644, 0, 0) for package in provision.base_packages
           for path, text in package.files},
        **{path: (text, mode, uids[owner], uids[owner]) for path, text, mode, owner in role.files},
    }
    if provision.root_key is not None:
        files["/root/.ssh/authorized_keys"] = (provision.root_key, 0o600, 0, 0)
    if tools.apk:
        files[str(APK_COMMIT_HOOK)] = (apk_commit_hook(), 0o755, 0, 0)
    dirs = {home: (0o755, uid), f"{home}/.ssh": (0o700, uid), str(BOOT_D): (0o755, 0),
            "/root/.ssh": (0o700, 0),
            # A role's user's home is its own alone.
            **{role_home: (0o700, uids[name]) for name, role_home in role.users}}
    for path, (mode, owner) in dirs.items():
        no_links(upper, PurePosixPath(path))  # the host's users' folders: root here follows none
        target = upper_dir(upper, path)
        os.chown(target, owner, owner)
        target.chmod(mode)
    for path, (text, mode, owner, gid) in files.items():
        no_links(upper, PurePosixPath(path).parent)
        target = upper_dir(upper, str(PurePosixPath(path).parent)) / PurePosixPath(path).name
        target.unlink(missing_ok=True)
        # Made with its mode: a key is never readable by others, not even briefly.
        with os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as out:
            out.write(text)
        os.chown(target, owner, gid)
        target.chmod(mode)
    # nginx's logs as on Chimera, where its root master makes them 0644 (base.ACCESS_LOG), not
    # this machine's 0640 www-data ones that the lower layer would show; only where missing,
    # so a host keeps its log (`doit latency` counts its visitors) from one start to the next.
    for log in (base.ACCESS_LOG, "/var/log/nginx/error.log"):
        target = upper_dir(upper, str(PurePosixPath(log).parent)) / PurePosixPath(log).name
        if not target.exists():
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    # Links only where missing: boot.d also holds what was enabled on the host since.
    for service, link_target in {**ENABLED_SERVICES,
                                 **{name: f"../{name}" for name in role.enabled}}.items():
        link = upper / BOOT_D.relative_to("/") / service
        if not os.path.lexists(link):
            link.symlink_to(link_target)
    for path, owner in role.keys:
        make_user_key(upper, PurePosixPath(path), uids[owner], f"{owner}@{host.name}")
    install_tools(upper, tools)


def make_user_key(upper: Path, path: PurePosixPath, uid: int, comment: str):
    """An ed25519 key pair at `path` in an upper layer, the user's, unless one is there; its
    folder the user's alone. Made while the host is down, so no one on it sees it half made."""
    no_links(upper, path)
    folder = upper_dir(upper, str(path.parent))
    os.chown(folder, uid, uid)
    folder.chmod(0o700)
    key = folder / path.name
    if os.path.lexists(key):
        return
    Path(f"{key}.pub").unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
    for made in (key, Path(f"{key}.pub")):
        os.chown(made, uid, uid)


def no_links(upper: Path, path: PurePosixPath):
    """Refuse a path of the host's users' (its folders are theirs) that holds a link: seen
    from this machine, it would lead root here to a file of this machine's."""
    target = upper
    for part in path.relative_to("/").parts:
        target = target / part
        if target.is_symlink():
            raise OutpostError(f"local fleet: {target} is a link; the fleet follows none in "
                               f"a host's users' folders")


def install_tools(upper: Path, tools: ChimeraTools):
    """Link apk and dinitctl in the host's /usr/local/bin (on doas's PATH and the host's): to
    the real tool where `tools` has it (this machine's / is the host's lower layer), else to
    the stand-in. The stand-ins import `outpost`, and the project is hidden on the host, so the
    package is copied into the host's layer."""
    package = upper_dir(upper, str(HOST_PACKAGE.parent)) / "outpost"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    bin_dir = upper_dir(upper, "/usr/local/bin")
    for tool, real in (("apk", tools.apk), ("dinitctl", tools.dinitctl)):
        link = bin_dir / tool
        link.unlink(missing_ok=True)
        link.symlink_to(real or HOST_PACKAGE / "standins" / tool)


def upper_dir(upper: Path, path: str) -> Path:
    """Make folder `path` in an upper layer. New parents copy the owner and mode of the same
    folder on this machine, since an upper folder's attributes hide the lower one's."""
    upper.mkdir(parents=True, exist_ok=True)
    target = upper
    for part in PurePosixPath(path).relative_to("/").parts:
        target = target / part
        if not target.exists():
            target.mkdir()
            lower = Path("/") / target.relative_to(upper)
            if lower.is_dir():
                info = lower.stat()
                os.chown(target, info.st_uid, info.st_gid)
                target.chmod(stat.S_IMODE(info.st_mode))
    return target
