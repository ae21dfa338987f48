"""Certificates from ACME, as the seed makes them: lego on a cert host (not a web host) gets
the site's certificate through DNS-01 on the site's own nameservers, and a renew hook pushes
it from there to every web host. Pure builders of what each machine gets and runs;
outpost.steps.acme runs them.

Who can do what:
- On the cert host, the `lego` user holds the ACME account, the site's key and an SSH key of
  its own. The deploy user may run `acme key|issue|show|push HOST` as lego (doas, exact
  arguments) and nothing else as lego; `acme show` prints only the public certificate, so the
  key never reaches the deploy machine.
- On each web host, the `lego` user can run one program, lego-gate (sshd ForceCommand and
  command= on its key): post a DNS-01 challenge for the site's names (checked again as
  gdnsd's user), or install a certificate chain and key, checked as a pair and switched in
  with one rename, then nginx reloads (`doas dinitctl signal HUP nginx`, its one other rule).

    certhost_files(inventory, known_hosts)  the cert host's scripts, service and doas.conf
    certhost_permits(inventory)     the cert host's doas rules
    gate_files(inventory, lego_pub)  what a web host gets: lego-gate, acme-challenge, the key,
                                    the ACME server's CA
    roots_source(inventory)         where each host gets the ACME server's current root
    caa_records(inventory)          the zone's CAA records: the CA's identity, no wildcard
    lego_permits()                  lego's rules on a web host
    setup_bundle(...), gate_bundle(...)  those files as signed bundles (commands.bundle)
    print_public_key(), driver_command(...)  what the steps run
    lego_key_pin(inventory)         where this machine pins lego's public SSH key
"""
from __future__ import annotations

import ipaddress
import shlex
import urllib.parse
from pathlib import Path

from outpost import render
from outpost.commands import base, bundle
from outpost.commands.bundle import HELPER, HostFile
from outpost.errors import OutpostError

LIBEXEC = "/usr/libexec/outpost"
LEGO_USER = "lego"
LEGO_HOME = "/var/lib/lego"
# On web hosts.
GATE = f"{LIBEXEC}/lego-gate"
CHALLENGE = f"{LIBEXEC}/acme-challenge"
LEGO_KEYS = "/etc/outpost/lego_authorized_keys"  # root's file: lego can't add a key
SITE_PEM = f"{LEGO_HOME}/site.pem"               # chain and key, one file: one rename
GDNSD_USER = "_gdnsd"
GDNSD_CONF = "/etc/gdnsd"
# On the cert host.
DRIVER = f"{LIBEXEC}/acme"
HOOK = f"{LIBEXEC}/renew-hook"
DNS_EXEC = f"{LIBEXEC}/dns-challenge"
DAILY = f"{LIBEXEC}/renew-daily"
SERVICE = "outpost-renew"
SERVICE_FILE = f"/etc/dinit.d/{SERVICE}"
KNOWN_HOSTS = "/etc/outpost/known_hosts"
SERVER_CA = "/etc/outpost/acme-server-ca.pem"
LEGO_PATH = f"{LEGO_HOME}/acme"       # lego --path: accounts/, certificates/
SSH_KEY = f"{LEGO_HOME}/.ssh/id_ed25519"
# With [dns] provider = "gcore": lego's own gcore provider, with the token the admin puts in
# this file on the cert host (mode 600, lego's); it never enters git or this machine.
GCORE_TOKEN = f"{LEGO_HOME}/gcore.token"
# Gcore's own nameservers answer for a zone it serves: where lego checks propagation.
GCORE_RESOLVER = "ns1.gcorelabs.net:53"
# CAA identities (RFC 8659 issuer domain names) by the ACME directory's host: Let's Encrypt
# checks "letsencrypt.org", for its staging directory too.
CAA_IDENTITIES = {"acme-v02.api.letsencrypt.org": "letsencrypt.org",
                  "acme-staging-v02.api.letsencrypt.org": "letsencrypt.org"}
# Marks the line of acme:setup's output that holds lego's public key.
PUBLIC_KEY_MARK = "lego-public-key: "


def names(inventory) -> list[str]:
    """The names the certificate is for."""
    return [inventory.site.name]


def ssh_options() -> str:
    """How lego's scripts on the cert host reach web hosts: its own key, pinned host keys."""
    return shlex.join(["-F", "/dev/null", "-i", SSH_KEY, "-o", "IdentitiesOnly=yes",
                       "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                       "-o", f"UserKnownHostsFile={KNOWN_HOSTS}",
                       "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10"])


def acme_context(inventory) -> dict:
    """Everything templates/acme/ reads, as plain data (a doit config_changed value)."""
    acme = inventory.acme
    gcore = inventory.dns is not None and inventory.dns.provider == "gcore"
    return {"acme": {
        "names": names(inventory),
        # DNS-01: the site's own nameservers (exec, through each host's lego-gate), or Gcore.
        "provider": "gcore" if gcore else "exec",
        "gcore_token": GCORE_TOKEN,
        "directory": acme.directory,
        "email": acme.email,
        "renew_days": acme.renew_days,
        "server_ca": SERVER_CA if acme.server_ca is not None else "",
        "roots": roots_source(inventory),
        # lego asks a nameserver of the site's own for what it needs to resolve.
        "resolver": GCORE_RESOLVER if gcore else f"{inventory.hosts[0].address}:53",
        "cert_host": acme.cert_host.name,
        "hosts": [{"name": h.name, "address": h.address, "port": h.port}
                  for h in inventory.hosts],
        "home": LEGO_HOME, "lego_path": LEGO_PATH, "ssh_key": SSH_KEY,
        "ssh_options": ssh_options(),
        "driver": DRIVER, "hook": HOOK, "dns_exec": DNS_EXEC, "daily": DAILY,
        "challenge": CHALLENGE, "site_pem": SITE_PEM,
        "gdnsd_user": GDNSD_USER, "gdnsd_conf": GDNSD_CONF,
    }}


def caa_records(inventory) -> list[dict]:
    """The zone's CAA records (RFC 8659): only the configured CA may issue for the site's
    name, and no CA a wildcard. A wildcard order and the name itself share one DNS-01 TXT
    name, so no challenge gate can tell them apart: the CA's CAA check is what refuses one.
    The fleet's pebble stands in for Let's Encrypt and gets its identity; pebble checks no CAA
    (letsencrypt/pebble#476), so on the fleet the records are served, not enforced. A CA
    whose identity is not known here gets only `issuewild ";"`."""
    if inventory.acme is None:
        return []
    host = urllib.parse.urlsplit(inventory.acme.directory).hostname
    if inventory.fleet is not None and host == inventory.fleet.acme_server:
        host = "acme-v02.api.letsencrypt.org"
    identity = CAA_IDENTITIES.get(host)
    return ([{"tag": "issue", "value": identity}] if identity else []) \
        + [{"tag": "issuewild", "value": ";"}]


def roots_source(inventory) -> dict | str:
    """Where the cert host and the web hosts get the ACME server's current root, each for
    itself: from the server (`[acme] roots`, pebble's management port, whose root is new at
    each start), over TLS checked against `[acme] server_ca`; or "" for the host's own trust
    store (Let's Encrypt's roots). Never from the deploy machine or the cert host's output."""
    url = inventory.acme.roots
    if url is None:
        return ""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https":
        raise OutpostError(f"{inventory.path}: [acme] roots: {url} must be https: the hosts "
                           f"trust every certificate that leads to what it serves")
    try:
        ipaddress.ip_address(parts.hostname)
        verify = ["-verify_ip", parts.hostname]
    except ValueError:
        verify = ["-verify_hostname", parts.hostname, "-servername", parts.hostname]
    return {"url": url, "host": parts.hostname, "port": parts.port or 443,
            "path": parts.path or "/", "verify": shlex.join(verify)}


def _render(name: str, context: dict) -> bytes:
    return render.render(f"acme/{name}.j2", context).encode()


# --- the cert host ----------------------------------------------------------------------------

def certhost_permits(inventory) -> list[tuple[str, list[str]]]:
    """The deploy user's doas rules on the cert host: the bundle helper, and the driver's
    commands as lego."""
    user = inventory.acme.cert_host.user
    lego = ["-u", LEGO_USER, DRIVER]
    return ([(user, [HELPER])]
            + [(user, lego + [command]) for command in ("key", "issue", "issue-again", "show")]
            + [(user, lego + ["push", host.name]) for host in inventory.hosts])


def _certhost_file_list(inventory, context=None, known_hosts="", server_ca="", doas_conf=""):
    """The cert host's files (content empty when only their paths and modes are wanted)."""
    def text(name):
        return _render(name, context) if context is not None else b""
    files = [
        HostFile(DRIVER, 0o755, text("acme")),
        HostFile(HOOK, 0o755, text("renew-hook")),
        HostFile(DNS_EXEC, 0o755, text("dns-challenge")),
        HostFile(DAILY, 0o755, text("renew-daily"), SERVICE, action="restart"),
        HostFile(SERVICE_FILE, 0o644, text("outpost-renew"), SERVICE, action="restart"),
        HostFile(KNOWN_HOSTS, 0o644, known_hosts.encode()),
        # doas refuses a doas.conf others can write; nobody else needs to read it.
        HostFile(base.DOAS_CONF, 0o400, doas_conf.encode()),
    ]
    if inventory.acme.server_ca is not None:
        files.append(HostFile(SERVER_CA, 0o644, server_ca.encode()))
    return files


def _server_ca(inventory) -> str:
    """The text of `[acme] server_ca` ("" when there is none)."""
    if inventory.acme.server_ca is None:
        return ""
    try:
        return inventory.acme.server_ca.read_text()
    except OSError as error:
        raise OutpostError(f"{inventory.acme.server_ca}: cannot read the ACME server's CA "
                           f"([acme] server_ca in {inventory.path}): {error.strerror}") from None


def certhost_files(inventory, known_hosts: str) -> list[HostFile]:
    """The cert host's scripts (rendered from templates/acme/), its renewal service, the web
    hosts' pinned keys, the ACME server's CA (when not public) and its doas.conf."""
    return _certhost_file_list(inventory, acme_context(inventory), known_hosts,
                               _server_ca(inventory), base.doas_conf_text(certhost_permits(inventory)))


def setup_bundle(inventory, files: list[HostFile]) -> bundle.Bundle:
    """The cert host's files for the helper (commands.bundle): doas.conf checked by doas -C,
    each file installed when it differs, the renewal service enabled, and restarted when its
    files changed."""
    return bundle.Bundle(
        inventory.acme.cert_host.name, "acme-setup", files=tuple(files),
        checks=((("doas", base.DOAS_CONF),)), enable=(SERVICE,),
        actions=bundle.actions_of(files))


def print_public_key() -> str:
    """Script lines, after the setup bundle: lego's SSH key made if missing and its public
    key printed after PUBLIC_KEY_MARK (compared with the pin, never taken from there)."""
    return f"printf '{PUBLIC_KEY_MARK}%s\\n' \"$(doas -u {LEGO_USER} {DRIVER} key)\"\n"


def public_keys(output: str) -> list[str]:
    """Every key a session's output reports after PUBLIC_KEY_MARK: one, unless something
    else on the host wrote into it."""
    return [line[len(PUBLIC_KEY_MARK):].strip() for line in output.splitlines()
            if line.startswith(PUBLIC_KEY_MARK)]


def lego_key_pin(inventory) -> Path:
    """This machine's pin of lego's public SSH key (its line, as in the cert host's
    SSH_KEY.pub), beside the pinned host keys: the key the web hosts let in. The operator
    writes it once (acme:setup says how); the local fleet writes it when it makes the key."""
    known_hosts = inventory.ssh.known_hosts
    return known_hosts.with_name(f"lego-{inventory.acme.cert_host.name}.pub")


def driver_command(*args: str) -> str:
    """`acme ARGS` as lego, from the deploy user (one of its doas rules)."""
    return shlex.join(["doas", "-u", LEGO_USER, DRIVER, *args]) + "\n"


# --- the web hosts ----------------------------------------------------------------------------

def authorized_key(lego_pub: str) -> str:
    """lego's key on a web host: only lego-gate, no terminal, no forwarding of any kind."""
    return f'restrict,command="{GATE}" {lego_pub.strip()}\n'


def _gate_file_list(context=None, lego_pub="", server_ca="") -> list[HostFile]:
    def text(name):
        return _render(name, context) if context is not None else b""
    files = [HostFile(GATE, 0o755, text("lego-gate")),
             HostFile(CHALLENGE, 0o755, text("acme-challenge")),
             HostFile(LEGO_KEYS, 0o644, authorized_key(lego_pub).encode() if lego_pub else b"")]
    if server_ca:
        # What lego-gate trusts to fetch the ACME server's root (roots_source).
        files.append(HostFile(SERVER_CA, 0o644, server_ca.encode()))
    return files


def gate_files(inventory, lego_pub: str) -> list[HostFile]:
    """lego-gate, its challenge script, lego's key, and the ACME server's CA (when not
    public): signed on the deploy machine, so nothing of the cert host's decides them."""
    return _gate_file_list(acme_context(inventory), lego_pub, _server_ca(inventory))


def lego_permits() -> list[tuple[str, list[str]]]:
    """lego's two rules on a web host: the challenge script as gdnsd's user (its input comes on
    stdin, so the rule allows no arguments at all), and nginx's reload."""
    return [(LEGO_USER, ["-u", GDNSD_USER, CHALLENGE]),
            (LEGO_USER, ["dinitctl", "signal", "HUP", "nginx"])]


def gate_bundle(host: str, files: list[HostFile]) -> bundle.Bundle:
    """The gate's files for the helper: each installed when it differs."""
    return bundle.Bundle(host, "gate", files=tuple(files))
