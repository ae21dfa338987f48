"""The bootstrap: what root sets up once on a host, so that no later step needs a doas rule that
takes a path. PURE: builds the script; outpost.steps.bootstrap runs it (as root over SSH with
`[ssh] bootstrap_identity`, or the operator runs the file it writes).

It installs, as root:
    base packages (nginx, rsync, curl; openssl for the helper's signature check)
    /etc/apk/keys/<key>, /etc/apk/repositories.d/outpost.list   what apk trusts and reads
    /etc/outpost/host                the host's name (every bundle must carry it)
    /usr/libexec/outpost/apply       the helper that applies signed bundles (commands.bundle)
    /var/lib/outpost/                root's; repo/ in it the deploy user's (rsync writes it)
    /etc/doas.conf                   one rule: the deploy user may run the helper, without
                                     arguments. Every other rule arrives in a signed bundle.
    /etc/outpost/bootstrap           the digest of all this: a step can see a host is current
and enables nginx. Run again, it changes only what differs.
"""
from __future__ import annotations

import functools
import hashlib
import json
import shlex
from dataclasses import dataclass

from outpost import render
from outpost.commands import base, bundle, dns, latency, sync

MARKER = "/etc/outpost/bootstrap"
VAR_DIR = "/var/lib/outpost"
# What the pipeline runs on a web host beyond the base system: nginx in front of the app,
# rsync for the pushes, curl for the upgrade's health gate, openssl for the helper.
WEB_PACKAGES = ("nginx", "rsync", "curl", "openssl")
# Exit status when a host's bootstrap is not the current one (steps tell the operator).
STALE = 69


@dataclass(frozen=True)
class Plan:
    """One host's bootstrap: everything that goes into its script."""
    host: str
    user: str                 # the deploy user
    packages: tuple[str, ...]
    key_name: str
    list_line: str | None     # None: a host that installs no package from the repository
    owned_folders: tuple[str, ...]
    helper: str               # templates/outpost/apply.j2's source (rendered by script())
    enable: tuple[str, ...]
    public_key_pem: str = ""  # read when the bootstrap runs (outpost.steps.bootstrap)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()


HELPER_TEMPLATE = "outpost/apply.j2"


@functools.cache  # one read per run, however many hosts
def helper_source() -> str:
    """The helper's template as it is: part of the plan's digest without rendering it."""
    return (render.TEMPLATES / HELPER_TEMPLATE).read_text()


def helper_text(key_path: str) -> str:
    return render.render(HELPER_TEMPLATE, {
        "key": key_path, "host_file": bundle.HOST_FILE, "state": bundle.STATE,
        "boot_d": base.BOOT_D, "exits": bundle.EXITS})


def _write(path: str, text: str, mode: int) -> str:
    """Write a root-owned file when its content or mode differs: a sibling, then a rename."""
    q = shlex.quote
    return (f"if ! printf '%s' {q(text)} | cmp -s - {q(path)} 2>/dev/null"
            f" || [ -n \"$(find {q(path)} -maxdepth 0 ! -perm {mode:o} -print 2>/dev/null)\" ]; then\n"
            f"  printf '%s' {q(text)} > {q(path + '.outpost-new')}\n"
            f"  chmod {mode:o} {q(path + '.outpost-new')}\n"
            f"  mv -f {q(path + '.outpost-new')} {q(path)}\n"
            f"  echo changed: {q(path)}\nfi")


def script(plan: Plan) -> str:
    q = shlex.quote
    key_path = f"{sync.KEYS_DIR}/{plan.key_name}"
    helper = helper_text(key_path)
    # The bootstrap's doas.conf: the helper, with no arguments, and nothing else.
    doas = base.doas_conf_text(base.doas_permits(plan.user))
    lines = ["set -eu", "umask 022", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             f"apk add {' '.join(q(p) for p in plan.packages)} >/dev/null",
             f"mkdir -p {sync.KEYS_DIR} {sync.LISTS_DIR} /etc/outpost "
             f"{q(bundle.HELPER.rsplit('/', 1)[0])}",
             # root's, and nobody else can write it: the helper checks the folders it writes in.
             f"[ -d {VAR_DIR} ] || mkdir -m 755 {VAR_DIR}",
             f"chown -h 0:0 {VAR_DIR} && chmod 755 {VAR_DIR}",
             _write(key_path, plan.public_key_pem, 0o644)]
    if plan.list_line is not None:
        lines.append(_write(sync.list_path(), plan.list_line + "\n", 0o644))
    lines += [_write(bundle.HOST_FILE, plan.host + "\n", 0o644),
              _write(bundle.HELPER, helper, 0o755)]
    for folder in plan.owned_folders:
        # Its parent is root's (above), so the deploy user can't have put a link here.
        lines.append(f"if [ -L {q(folder)} ]; then rm -f {q(folder)}; fi\n"
                     f"[ -d {q(folder)} ] || {{ mkdir -m 755 {q(folder)}; "
                     f"echo changed: {q(folder)}; }}\n"
                     f"chown -h {q(plan.user)} {q(folder)}")
    # A doas.conf doas can't parse would lock the deploy user out: checked before it is used.
    # Written only when the host has none from a bundle (a later sync replaces it with the
    # steps' full rules, and the bootstrap must not take them away again).
    conf, staged = base.DOAS_CONF, base.DOAS_CONF + ".outpost-new"
    lines.append(f"if [ ! -f {conf} ] || ! grep -qF {q(bundle.HELPER)} {conf};"
                 f" then\n  printf '%s' {q(doas)} > {staged}\n"
                 f"  chmod 400 {staged}\n"
                 f"  doas -C {staged}\n"
                 f"  mv -f {staged} {conf}\n"
                 f"  echo changed: {conf}\nfi")
    for service in plan.enable:
        lines.append(f"if [ ! -e {base.BOOT_D}/{q(service)} ]; then "
                     f"dinitctl enable {q(service)} >/dev/null; echo enabled: {q(service)}; fi")
    lines.append(_write(MARKER, plan.digest() + "\n", 0o644))
    return "\n".join(lines) + "\n"


def check_script(plan: Plan) -> str:
    """Run as the deploy user: exit STALE unless the host's bootstrap is this plan's."""
    return (f"[ \"$(cat {MARKER} 2>/dev/null)\" = {plan.digest()} ] || "
            f"{{ echo \"bootstrap: $(cat {MARKER} 2>/dev/null || echo none)\"; exit {STALE}; }}\n")


def host_plan(inventory, host) -> Plan:
    """What root sets up on a web host, once; its public key is read when it runs."""
    return Plan(
        host=host.name, user=host.user,
        # libmaxminddb: mmdblookup, which counts visitors in gdnsd's database (`doit latency`).
        packages=WEB_PACKAGES + (("gdnsd", latency.LOOKUP_PACKAGE) if dns.on_hosts(inventory)
                                 else ()),
        key_name=inventory.repository.key_name,
        list_line=sync.list_line(inventory), owned_folders=(inventory.repository.path,),
        helper=helper_source(), enable=("nginx",))


def certhost_plan(inventory) -> Plan:
    """What root sets up on the cert host: lego, and the helper for its bundles."""
    cert_host = inventory.acme.cert_host
    return Plan(
        host=cert_host.name, user=cert_host.user, packages=("lego", "openssl"),
        key_name=inventory.repository.key_name, list_line=None, owned_folders=(),
        helper=helper_source(), enable=())
