"""What every step's builders share (Kamal's commands/base.rb): the ssh and rsync command lines
run on this machine, the paths every host has, and the one maker of doas.conf. Pure: nothing
here runs anything (outpost.remote does).

Root on the hosts: the SSH user (`deploy`) is not root, and no doas rule of its takes a path, a
file or an argument it controls. `doas_permits` lists them; doas.conf (templates/doas.conf.j2)
allows exactly those and nothing more:

    doas /usr/libexec/outpost/apply                every root-owned file: a bundle signed on the
                                                   build machine, on stdin (commands.bundle)
    doas apk update                                (upgrade)
    doas apk add <package>=<version>               (upgrade, rollback: one rule per version
                                                   the repository keeps; see commands.upgrade)
    doas rm -f /etc/default/<package>.apk-new      (upgrade, when config owns that env-file)
    doas dinitctl reload|stop|restart|start|enable <svc>   (upgrade, the package's service)
    doas tail -n 20 <the service's logfile>        (upgrade: why a host failed the gate)

A rule with `cmd` makes doas look the command up in its own safe PATH, and `args` must match
the whole argument list, so the user can't widen any of these. The bootstrap (commands.bootstrap,
as root) installs the repository's key and list and the helper. Note what the rules grant all
the same: whoever holds the repository's signing key can have apk install anything; that key
never leaves the build machine.
"""
from __future__ import annotations

import math
import shlex

from outpost import render
from outpost.commands.bundle import HELPER
from outpost.errors import OutpostError

# Paths every host has.
# Where `dinitctl enable` links a service on Chimera (the boot service's waits-for.d).
BOOT_D = "/etc/dinit.d/boot.d"
# Where packages put their dinit service files (cbuild's install_service).
SERVICE_DIR = "/usr/lib/dinit.d"
# Where dinit writes its log on the local fleet (`dinit --log-file`). dinitctl prints only "error
# in service description." and leaves the reason there, so a failed upgrade shows what dinit
# logged meanwhile (commands.upgrade). (A Chimera host's dinit logs to syslog; there the step
# shows no log.)
DINIT_LOG = "/var/log/dinit.log"
# apk keeps a config file the admin (here: config) changed and writes the package's as this.
APK_NEW = ".apk-new"
NGINX_CONF = "/etc/nginx/nginx.conf"  # what both Chimera's and Debian's nginx read by default
# nginx's access log (combined format: the client's address first), which its root master
# opens: 0644 in Chimera's /var/log/nginx (0755, cports main/nginx tmpfiles.conf).
ACCESS_LOG = "/var/log/nginx/access.log"
DOAS_CONF = "/etc/doas.conf"
ENV_DIR = "/etc/default"              # <package>.env.j2 becomes /etc/default/<package>


# --- ssh and rsync (run on this machine) ------------------------------------------------------

def ssh_options(ssh, host) -> list[str]:
    """OpenSSH options that pin the host key to the inventory's known_hosts and use only the
    inventory's identity, as Outpost's own connection does (outpost.sshconnect); for ssh and
    rsync run by hand or by the benchmark's seed. `-F /dev/null` ignores ~/.ssh/config: the
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


def rsync_argv(src_dir, host, dest_dir: str, ssh, rsh: list[str], *, delete=True,
               hardlinks=False, extra=()) -> list[str]:
    """rsync the contents of src_dir into dest_dir on host (both with a trailing slash, so the
    folder's contents land in dest_dir, not a folder inside it), with `rsh` as its remote
    shell (outpost.remote.relay_command: a channel of the run's SSH connection). -s
    (--secluded-args, once --protect-args; -s on every rsync since 3.0) sends the paths to
    the host's rsync over the protocol, not through the host's shell: a path is one literal
    path, whatever it holds, and RSYNC_OLD_ARGS can't undo it."""
    argv = ["rsync", "-a", "-s"]
    if hardlinks:
        argv.append("-H")
    if delete:
        argv.append("--delete")
    argv += [
        # An I/O timeout: a host that stops answering mid-transfer fails the step.
        f"--timeout={math.ceil(ssh.command_timeout)}",
        "-e", shlex.join(rsh),
        *extra,
        f"{str(src_dir).rstrip('/')}/",
        f"{_remote_host(host)}:{dest_dir.rstrip('/')}/",
    ]
    return argv


# --- doas.conf --------------------------------------------------------------------------------

def doas_permits(user: str, *, installs=()) -> list[tuple[str, list[str]]]:
    """(user, argv without doas) for each root command the deploy user runs: the bundle helper
    (commands.bundle; no arguments, its input is signed), and the upgrade's commands
    (`installs`, argv lists from commands.upgrade.doas_commands: one `apk add NAME=VERSION` per
    version the repository keeps), in order and each once."""
    permits = []
    for doas, *argv in [["doas", HELPER], *installs]:
        if (user, argv) not in permits:  # `apk update` is the same for every package
            permits.append((user, argv))
    return permits


def doas_rule(user: str, argv: list[str]) -> dict:
    """A doas_permits entry as templates/doas.conf.j2 reads it: who, as whom, which command.
    `doas -u NAME cmd ...` runs as NAME (gdnsdctl as gdnsd's own user), else as root."""
    if argv[:1] == ["-u"]:
        return {"user": user, "as": argv[1], "argv": argv[2:]}
    return {"user": user, "as": "root", "argv": argv}


def doas_conf_text(permits) -> str:
    """doas.conf text (templates/doas.conf.j2) allowing exactly `permits` (doas_permits): the one
    maker of every host's doas.conf."""
    return render.render("doas.conf.j2", {"doas_rules": [doas_rule(user, list(argv))
                                                         for user, argv in permits]})


# --- check: the app's health endpoint ---------------------------------------------------------

def health_url(host, package) -> str:
    if package.port is None:
        raise OutpostError(f"package {package.name!r} has no port in the inventory, so its "
                           f"health can't be checked on host {host.name}")
    address = f"[{host.address}]" if ":" in host.address else host.address
    return f"http://{address}:{package.port}/_health"
