"""What each host step does, composed from outpost.commands (what to run) and outpost.remote
(running it). tasks/hosts.py calls these; every function takes the inventory and a host."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.client
import json
import os
import socket
import ssl
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from outpost import bootstrap as bootstrap_module
from outpost import bundle, commands, content, geodns, hoststate, remote, render, repo, rollout, tls
from outpost.errors import OutpostError
from outpost.template import load_template

# How long check waits for a host to serve what was just pushed or switched: the app sees a
# switched release on its next request, but a restarted service needs a moment to listen.
CHECK_WAIT = 20.0
# How long the content tasks' drift probe waits for a host's answer before trusting the record.
PROBE_TIMEOUT = 3.0


def say(line: str):
    """One line of a step's output. Not print(): doit swaps sys.stdout for each action, in
    every thread, and print() on CPython 3.11 holds the stream without a reference while it
    writes (CPython gh-130163), which crashes parallel runs now and then. A single write of
    the whole line also keeps hosts' lines from running into each other."""
    sys.stdout.write(line + "\n")


# --- the local fleet --------------------------------------------------------------------------

def _fleet(inventory):
    from outpost import fleet  # only the fleet tasks need it
    return fleet.from_inventory(inventory)


def fleet_up(inventory):
    started = _fleet(inventory).up()
    say(f"fleet: started {', '.join(started) or 'none (all up)'}")


def fleet_down(inventory):
    stopped = _fleet(inventory).down()
    say(f"fleet: stopped {', '.join(stopped) or 'none (all down)'}")


def _hosts_up(inventory) -> list[bool]:
    from outpost.fleet import machine_names, running_pid
    state = inventory.fleet.state.resolve()
    return [running_pid(state, name) is not None for name in machine_names(inventory)]


def fleet_is_up(inventory) -> bool:
    return all(_hosts_up(inventory))


def fleet_any_up(inventory) -> bool:
    return any(_hosts_up(inventory))


def host_marker(inventory, host) -> list[str]:
    """A file that changes when a fleet host is made afresh (its pinned host key), so every step
    runs again for a host that lost its state. Real hosts have none."""
    if inventory.fleet is None:
        return []
    return [str(inventory.ssh.known_hosts)]


# --- the site certificate (local CA until real certificates exist) ---------------------------

def certificate(inventory):
    """Make or renew the site certificate (tls.ensure_site_certificate decides which), and
    record what it was made from for certificate_is_current."""
    site = inventory.site
    tls.ensure_site_certificate(site.ca, site.certificates, site.name)
    say(f"certificate for {site.name}: {site.certificates}")
    return {"made_from": _certificate_inputs(inventory),
            "renew_after": tls.renew_after(site.certificates)}


def _certificate_inputs(inventory) -> dict:
    """The site's name and the sha256 of the CA certificate, site certificate and key."""
    site = inventory.site
    return {"name": site.name,
            **_file_hashes([tls.ca_paths(site.ca)[0], *tls.site_paths(site.certificates)])}


def _file_hashes(paths) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None
            for p in paths}


def certificate_is_current(inventory, values: dict) -> bool:
    """doit uptodate: the files and name are those the certificate was last made from, and it
    is not yet due for renewal. Compares hashes only, so a no-op run never parses a certificate
    (nor loads cryptography); any change sends it to tls.ensure_site_certificate's full check."""
    return (values.get("made_from") == _certificate_inputs(inventory)
            and time.time() < values.get("renew_after", 0))


def client_certificate(inventory):
    """Make or renew the check's client certificate (tls.ensure_client_certificate), which
    nginx asks for before it shows /_health's details; record what it was made from."""
    site = inventory.site
    certificate, _ = tls.ensure_client_certificate(site.ca, site.certificates)
    say(f"the check's client certificate: {certificate}")
    return {"made_from": _client_certificate_inputs(inventory),
            "renew_after": tls.client_renew_after(site.certificates)}


def _client_certificate_inputs(inventory) -> dict:
    site = inventory.site
    return _file_hashes([tls.ca_paths(site.ca)[0], *tls.client_paths(site.certificates)])


def client_certificate_is_current(inventory, values: dict) -> bool:
    """doit uptodate, as certificate_is_current: hashes only, no cryptography."""
    return (values.get("made_from") == _client_certificate_inputs(inventory)
            and time.time() < values.get("renew_after", 0))


# --- bootstrap --------------------------------------------------------------------------------

def _report(host, output: str):
    for line in output.splitlines():
        say(f"{host.name}: {line}")


def bootstrap_plan(inventory, host) -> bootstrap_module.Plan:
    """What root sets up on a web host, once (outpost.bootstrap); its public key is read
    when it runs."""
    return bootstrap_module.Plan(
        host=host.name, user=host.user,
        packages=bootstrap_module.WEB_PACKAGES + (("gdnsd",) if geodns.on_hosts(inventory) else ()),
        key_name=inventory.repository.key_name,
        list_line=render.list_line(inventory), owned_folders=(inventory.repository.path,),
        helper=bootstrap_module.helper_source(), enable=("nginx",))


def certhost_plan(inventory) -> bootstrap_module.Plan:
    """What root sets up on the cert host: lego, and the helper for its bundles."""
    cert_host = inventory.acme.cert_host
    return bootstrap_module.Plan(
        host=cert_host.name, user=cert_host.user, packages=("lego", "openssl"),
        key_name=inventory.repository.key_name, list_line=None, owned_folders=(),
        helper=bootstrap_module.helper_source(), enable=())


def _read_public_key(inventory) -> str:
    try:
        return inventory.repository.public_key.read_text()
    except OSError as error:
        raise OutpostError(f"{inventory.repository.public_key}: cannot read the repository's "
                           f"public key: {error.strerror}; run `doit keygen`") from None


def bootstrap_file(inventory, host) -> Path:
    """Where the host's bootstrap script is written, for an operator who runs it by hand."""
    return inventory.root / "build" / "bootstrap" / f"{host.name}.sh"


def bootstrap(inventory, host, plan: bootstrap_module.Plan):
    """Root's one-time setup (outpost.bootstrap): run as root with [ssh] bootstrap_identity,
    else only checked, the script written for the operator to run on the host as root. The
    plan's public key is read now: `doit keygen` may have just made it."""
    plan = dataclasses.replace(plan, public_key_pem=_read_public_key(inventory))
    script = bootstrap_module.script(plan)
    render.write_if_changed(bootstrap_file(inventory, host), script)
    ssh = inventory.ssh
    if ssh.bootstrap_identity is not None:
        root = dataclasses.replace(host, user="root")
        root_ssh = dataclasses.replace(ssh, identity=ssh.bootstrap_identity)
        _report(host, remote.run_script(root, script, root_ssh, step="bootstrap").stdout)
        return
    result = remote.run_script(host, bootstrap_module.check_script(plan), ssh,
                               step="bootstrap", ok_exits=(0, bootstrap_module.STALE))
    if result.exited == bootstrap_module.STALE:
        address = f"[{host.address}]" if ":" in host.address else host.address
        raise OutpostError(
            f"host {host.name}: needs its bootstrap, as root ({result.stdout.strip()}, wanted "
            f"{plan.digest()}). Run {bootstrap_file(inventory, host)} on it as root, e.g.\n"
            f"  ssh -p {host.port} root@{address} sh < {bootstrap_file(inventory, host)}\n"
            f"or set bootstrap_identity in [ssh] to root's key for Outpost to run it.")


def bootstrap_settings(plan: bootstrap_module.Plan, inventory) -> dict:
    """A bootstrap's doit config_changed value: its plan, still without the public key (a
    file_dep, and not there before `doit keygen`); cheap: no template rendered."""
    return {"plan": plan.digest(),
            "as_root": inventory.ssh.bootstrap_identity is not None}


def apply_bundle(inventory, host, b: bundle.Bundle, step: str, ok_exits=(0,),
                 then: str = "") -> remote.Result:
    """Sign the bundle here and have the host's helper apply it (outpost.bundle); `then`:
    script lines run after it, in the same round trip."""
    signed = bundle.signed(b, inventory.repository.signing_key, time.time_ns())
    return remote.run_script(host, bundle.apply_script(signed) + then, inventory.ssh,
                             step=step, ok_exits=ok_exits)


# --- config -----------------------------------------------------------------------------------

def hosts_dir(inventory, host) -> Path:
    """Where a host's rendered files are kept here, at their paths on the host."""
    return inventory.root / "build" / "hosts" / host.name


@dataclass(frozen=True)
class _Pushed:
    remote_path: str
    mode: int
    content: bytes
    service: str | None
    action: str | None


def config(inventory, host):
    """Render the host's files, then have the helper stage, check (nginx -t), switch and
    reload them in one round trip (outpost.bundle)."""
    out_dir = hosts_dir(inventory, host)
    render.render_host(inventory, host, out_dir)
    files = [_Pushed(f.remote_path, f.mode, f.local_path(out_dir).read_bytes(), f.service,
                     f.action) for f in render.host_files(inventory, host)]
    checks = ((("nginx", commands.NGINX_CONF),)
              if any(f.remote_path == commands.NGINX_CONF for f in files) else ())
    b = bundle.Bundle(host.name, "config", files=bundle.files_of(files), checks=checks,
                      actions=bundle.actions_of(files))
    _report(host, apply_bundle(inventory, host, b, "config").stdout)


# --- sync -------------------------------------------------------------------------------------

def repo_index(inventory, arch: str) -> Path:
    # v2 writes APKINDEX.tar.gz; cbuild's v3 Packages.adb has an APKINDEX.tar.gz hardlink too.
    return repo.repo_dir(inventory, arch) / repo.INDEX_V2


def sync_settings(inventory, host) -> dict:
    return {"address": host.address, "port": host.port, "user": host.user,
            "repository": inventory.repository.path,
            "content_dirs": _content_dirs(inventory)}


def _content_dirs(inventory) -> list[str]:
    return [p.content_dir for p in inventory.packages if p.content_dir]


def sync_bundle(inventory, host) -> bundle.Bundle:
    """The doas rules, with one `apk add NAME=VERSION` rule per version the repository keeps
    (there before the upgrade needs them), checked by doas -C; and the content folders, the
    deploy user's, with root-owned parents."""
    doas = render.doas_conf(inventory, host).encode()
    return bundle.Bundle(
        host.name, "sync",
        # doas refuses a doas.conf others can write; nobody else needs to read it.
        files=(bundle.BundleFile(commands.DOAS_CONF, 0o400, doas),),
        folders=tuple(bundle.Folder(path, host.user) for path in _content_dirs(inventory)),
        checks=(("doas", commands.DOAS_CONF),))


def sync(inventory, host):
    """The host's doas rules and content folders (sync_bundle), then rsync its arch folder."""
    _report(host, apply_bundle(inventory, host, sync_bundle(inventory, host), "sync").stdout)
    remote.run_local(commands.repo_rsync_argv(repo.repo_dir(inventory, host.arch).parent, host,
                                              inventory.repository, inventory.ssh),
                     host, inventory.ssh, step="sync")


# --- upgrade ----------------------------------------------------------------------------------

def template_versions(inventory) -> dict[str, str]:
    """The version of each package its template builds."""
    return {p.name: load_template(p.template_dir).version for p in inventory.packages}


def broken_template(inventory) -> str | None:
    """Why a package template can't be read, or None. A broken template stops only what needs
    the package (build, index, upgrade, rollback); the rest of the pipeline goes on."""
    try:
        template_versions(inventory)
    except OutpostError as error:
        return str(error)
    return None


def fail(problem: str):
    """The action of a step that can't run: fails with the problem."""
    raise OutpostError(problem)


def skip_upgrade(host, problem: str):
    say(f"{host.name}: upgrade skipped, the host keeps what it runs: {problem}")


def wanted_versions(inventory) -> dict[str, str]:
    """The version of each package that every host should run: what its template builds,
    unless `doit rollback:app` holds the package at an earlier one (until the template's
    version changes)."""
    wanted = template_versions(inventory)
    for name, held in hoststate.hold(inventory).items():
        if wanted.get(name) == held.get("instead_of"):
            wanted[name] = held["version"]
    return wanted


class HostRuns:
    """doit uptodate of upgrade:<host>: the host's record says it runs `wanted`, and the host,
    asked over HTTPS (the drift probe, never SSH), serves the wanted version of the package
    nginx serves. A host left on another version (a package installed there by hand, then
    the service restarted) is upgraded again by this very run; a host that doesn't answer is
    taken at its record, and the check will say what is wrong with it. Named, so
    `doit info upgrade:<host>` says what it compared."""

    def __init__(self, inventory, host, wanted: dict[str, str]):
        self.inventory, self.host, self.wanted = inventory, host, wanted

    def _served_version(self) -> tuple[str, str] | None:
        """(package, version) the host serves, when it answers."""
        package = render.served_package(self.inventory)
        health = _probe(self.inventory, self.host)
        if not isinstance(health, dict):
            return None
        return package.name, health.get("version")

    def __call__(self) -> bool:
        if not hoststate.runs(self.inventory, self.host, self.wanted):
            return False
        served = self._served_version()
        return served is None or served[1] == self.wanted.get(served[0])

    def __repr__(self):
        ran = hoststate.history(self.inventory, self.host)
        served = self._served_version()
        return (f"{self.host.name} should run " + ", ".join(
            f"{name} {version} (its record: {(ran.get(name) or ['nothing'])[-1]}"
            + (f"; it serves {served[1]}" if served and served[0] == name else "") + ")"
            for name, version in self.wanted.items()))


def upgrade(inventory, host):
    """Install the wanted versions (reloading a changed service file) and gate them, in one
    round trip (outpost.rollout); a host that fails the gate, or whose service file dinit
    refuses, goes back to what it ran, and the step fails saying why."""
    return install_gated(inventory, host, wanted_versions(inventory), step="upgrade")


def install_gated(inventory, host, versions: dict[str, str], step: str) -> dict:
    config_files = {f.remote_path for f in render.host_files(inventory, host)}
    installs = [rollout.Install(p.name, versions[p.name], p.service, p.port,
                                rollout.service_logfile(p.template_dir, p.service),
                                rollout.env_file(p.name, config_files))
                for p in inventory.packages]
    script = rollout.install_script(installs, inventory.rollout.health_timeout)
    result = remote.run_script(host, script, inventory.ssh, step=step,
                               ok_exits=(0, rollout.GATE_FAILED))
    report = rollout.parse_report(result.stdout)
    for name, version in report.back.items():
        hoststate.went_back(inventory, host, name, version)
    if report.failed:
        raise OutpostError(f"{step}: " + rollout.gate_failure(host, report))
    for package in inventory.packages:
        version = report.ok.get(package.name)
        if version != versions[package.name]:
            raise OutpostError(f"host {host.name}, step {step}: {package.name} "
                               f"{versions[package.name]} was not confirmed:\n{result.stdout}")
        before = report.before.get(package.name)
        hoststate.record(inventory, host, package.name, version)
        change = "unchanged" if before == version else f"was {before or 'not installed'}"
        say(f"{host.name}: {package.name} {version} passed the health gate ({change})")
    return {"installed": dict(versions)}


def rollback_targets(inventory) -> dict[str, str]:
    """The version of each package every host ran before its current one, by the hosts'
    records; an error, before any host is touched, when a host has none or they differ, or
    the repository no longer keeps it."""
    targets = {}
    for package in inventory.packages:
        previous = {host.name: hoststate.previous(inventory, host, package.name)
                    for host in inventory.hosts}
        missing = [name for name, version in previous.items() if version is None]
        if missing:
            raise OutpostError(f"rollback: no earlier version of {package.name} is recorded for "
                               f"host {', '.join(missing)} (build/rollout/<host>.json): there is "
                               "nothing to go back to")
        if len(set(previous.values())) > 1:
            raise OutpostError(f"rollback: the hosts ran different versions of {package.name} "
                               "before: " + ", ".join(f"{n} {v}" for n, v in previous.items())
                               + "; deploy one version everywhere first")
        version = previous[inventory.hosts[0].name]
        for arch in inventory.arches:
            kept = repo.versions(repo.repo_dir(inventory, arch)).get(package.name, [])
            if version not in kept:
                raise OutpostError(f"rollback: {package.name} {version} is no longer in the "
                                   f"{arch} repository (it keeps {', '.join(kept)}; keep in "
                                   "[repository])")
        targets[package.name] = version
    return targets


def rollback_app(inventory):
    """Every host back on the versions it ran before: the canary, then the batches, each
    gated as an upgrade is (a host that fails goes back to what it ran, and the rollback
    stops). Then the hold: deploys keep these versions until the template's version changes."""
    targets = rollback_targets(inventory)
    templates = template_versions(inventory)
    for batch in rollout.batches(inventory.hosts, inventory.canary, inventory.rollout.batch_size):
        for host in batch:
            install_gated(inventory, host, targets, step="rollback")
    hoststate.set_hold(inventory, {name: {"version": version, "instead_of": templates[name]}
                                   for name, version in targets.items()})
    say("rollback: every host runs " + ", ".join(f"{n} {v}" for n, v in targets.items())
        + "; deploys keep it until a template's version changes")


# --- content ----------------------------------------------------------------------------------

def push_content(inventory, host):
    """A new release of each package's content on host, switched in (outpost.content)."""
    content.push(inventory, host, say)


def content_is_current(inventory, host) -> bool:
    """doit uptodate of content:<host>: this machine's record says the host has the release of
    content/ now (content.is_current), and the host, asked over HTTPS (never SSH), serves that
    release whole. A host seen serving anything else (a file changed or removed there by hand,
    `current` switched) is marked as drifted, so this very run repairs it; a host that doesn't
    answer is taken at its record, and the check will say what is wrong with it."""
    if not content.is_current(inventory, host):
        return False
    package = render.served_package(inventory)
    health = _probe(inventory, host) if package.content is not None else None
    if not isinstance(health, dict):
        return True
    problem = _content_problem(health, *content.expected(inventory, package, host))
    if problem:
        content.mark_drift(inventory, package, host, problem)
    return problem is None


_probes: dict = {}  # inventory path -> {host name: Future of its /_health}
_probe_lock = threading.Lock()


def _probe(inventory, host) -> dict | str | None:
    """The host's /_health, asked once per run (upgrade's and content's uptodate share it).
    doit asks for each task's status in turn on one thread, so the first call asks every host
    with a record at once, and each call waits for its own host's answer only."""
    with _probe_lock:
        if inventory.path not in _probes:
            # Hosts the upgrade or content step would otherwise take at their records.
            hosts = [h for h in inventory.hosts
                     if content.is_current(inventory, h) or hoststate.history(inventory, h)]
            pool = ThreadPoolExecutor(max_workers=max(1, len(hosts)))
            _probes[inventory.path] = {h.name: pool.submit(_health, inventory, h, PROBE_TIMEOUT)
                                       for h in hosts}
            pool.shutdown(wait=False)  # the threads end with their requests
        answer = _probes[inventory.path].get(host.name)
    return answer.result() if answer is not None else None


def _content_problem(health: dict, folder: str | None, digest: str | None) -> str | None:
    """What is wrong with the content a host's health reports, against the release folder and
    digest it should serve (either may be unknown: None); None when nothing is."""
    if folder is not None and health.get("release") != folder:
        return _served(health)
    if digest is not None and health.get("content") != digest:
        return _served(health)
    return None


def _served(health: dict) -> str:
    return f"release {health.get('release')} with content {str(health.get('content'))[:12]}"


def rollback_content(inventory, host):
    """Switch each package's content on host back one release (no transfer), then wait until
    the host serves it."""
    for package, folder, digest in content.rollback(inventory, host, say):
        if package.port is None:
            continue  # not served over HTTPS: nothing to wait for
        health = _wait_for_health(inventory, host, lambda h: _content_problem(h, folder, digest)
                                  is None)
        if not isinstance(health, dict) or _content_problem(health, folder, digest):
            seen = _served(health) if isinstance(health, dict) else health
            raise OutpostError(f"host {host.name}, step rollback: switched to {folder}, but the "
                               f"app does not serve it: it gives {seen}")


def _certificate_days(inventory, host) -> int:
    """Days left on the certificate the host serves, verified as site_context trusts it and
    for the site's name (the handshake checks both)."""
    connection = _SiteConnection(host.address, inventory.site.name, site_context(inventory), 5)
    try:
        connection.connect()
        not_after = ssl.cert_time_to_seconds(connection.sock.getpeercert()["notAfter"])
    except ssl.SSLCertVerificationError as error:
        raise OutpostError(f"host {host.name}, step check: its certificate for "
                           f"{inventory.site.name}: {_untrusted(inventory, host, error)}") from None
    except (OSError, ssl.SSLError) as error:
        raise OutpostError(f"host {host.name}, step check: its certificate for "
                           f"{inventory.site.name}: {error}") from None
    finally:
        connection.close()
    return int((not_after - time.time()) // 86400)


def _untrusted(inventory, host, error: ssl.SSLCertVerificationError) -> str:
    """Why the host's certificate is refused, and what it is: a wrong certificate is fixed on
    the host, so say which one the host serves (asked again without verifying it)."""
    served = _served_certificate(inventory, host)
    what = describe_certificate(served) if served else "no certificate on a second handshake"
    return f"its certificate is refused ({error.verify_message}): it serves {what}"


def describe_certificate(der: bytes) -> str:
    """A certificate as a person checks it: the names it is for, who issued it, until when."""
    from cryptography import x509
    certificate = x509.load_der_x509_certificate(der)
    try:
        names = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    return (f"a certificate for {', '.join(names) or 'no DNS name'} "
            f"(subject {certificate.subject.rfc4514_string()}), issued by "
            f"{certificate.issuer.rfc4514_string()}, valid until "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}")


# --- ACME certificates (outpost.acme) ---------------------------------------------------------

def acme_dir(inventory) -> Path:
    """This machine's ACME files: lego's public SSH key and the site's public certificate. The
    site's key is never here."""
    return inventory.root / "build" / "acme"


def lego_public_key(inventory) -> Path:
    return acme_dir(inventory) / "lego.pub"


def issued_certificate(inventory) -> Path:
    return acme_dir(inventory) / "site.crt"


def _web_known_hosts(inventory) -> str:
    """The pinned keys of the web hosts, for the cert host's lego (nothing else of ours)."""
    from outpost.remote import _known_hosts_name
    names = {_known_hosts_name(host) for host in inventory.hosts}
    try:
        lines = inventory.ssh.known_hosts.read_text().splitlines()
    except OSError as error:
        raise OutpostError(f"{inventory.ssh.known_hosts}: cannot read the pinned host keys: "
                           f"{error.strerror}") from None
    return "".join(line + "\n" for line in lines
                   if line.split() and line.split()[0] in names)


def acme_setup(inventory):
    """The cert host: lego, its scripts and daily renewal service, the web hosts' pinned keys;
    keep lego's public SSH key here for the web hosts (gate)."""
    from outpost import acme
    cert_host = inventory.acme.cert_host
    files = acme.certhost_files(inventory, _web_known_hosts(inventory))
    output = apply_bundle(inventory, cert_host, acme.setup_bundle(inventory, files),
                          "acme:setup", then=acme.print_public_key()).stdout
    key = acme.public_key(output)
    if not key:
        raise OutpostError(f"host {cert_host.name}, step acme:setup: lego's SSH key was not "
                           f"reported; the output was:\n{output.strip()}")
    _report(cert_host, "\n".join(line for line in output.splitlines()
                                 if not line.startswith(acme.PUBLIC_KEY_MARK)))
    render.write_if_changed(lego_public_key(inventory), key + "\n")


def gate(inventory, host):
    """The host's lego-gate, its challenge script and lego's key: what lets the cert host post
    DNS-01 challenges here and install certificates, and nothing else."""
    from outpost import acme
    files = acme.gate_files(inventory, lego_public_key(inventory).read_text())
    _report(host, apply_bundle(inventory, host, acme.gate_bundle(host.name, files), "gate")
            .stdout)


def acme_issue(inventory) -> dict:
    """A certificate for the site's names from the ACME server, made by lego on the cert host
    unless it has one for them; keep its public certificate here."""
    cert_host = inventory.acme.cert_host
    status, certificate = _issue(inventory, "issue")
    roots = acme_roots(inventory)
    if certificate and roots and not _chains_to(certificate, roots):
        # The ACME server's root changed since (a restarted pebble makes a new one): the
        # certificate lego holds leads nowhere a client trusts.
        _report(cert_host, status + "its chain does not lead to the ACME server's root: "
                "issuing again")
        status, certificate = _issue(inventory, "issue-again")
    _report(cert_host, status)
    _keep_issued(inventory, certificate)
    return {"renew_by": _renew_by(inventory, certificate), "roots": _roots_digest(inventory)}


def _issue(inventory, command: str) -> tuple[str, str]:
    """Run `acme COMMAND` then `acme show` on the cert host: (its status, the certificate)."""
    from outpost import acme
    output = remote.run_script(inventory.acme.cert_host, acme.driver_command(command)
                               + acme.driver_command("show"), inventory.ssh,
                               step="acme:issue").stdout
    begin = output.find("-----BEGIN CERTIFICATE-----")
    return (output[:begin], output[begin:]) if begin >= 0 else (output, "")


def _chains_to(chain_pem: str, roots_pem: str) -> bool:
    """Whether the chain's last certificate is signed by one of the roots."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    top = x509.load_pem_x509_certificates(chain_pem.encode())[-1]
    for root in x509.load_pem_x509_certificates(roots_pem.encode()):
        try:
            top.verify_directly_issued_by(root)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


def _keep_issued(inventory, certificate: str):
    certificate = certificate[certificate.find("-----BEGIN CERTIFICATE-----"):]
    if "BEGIN CERTIFICATE" not in certificate:
        raise OutpostError(f"host {inventory.acme.cert_host.name}, step acme:issue: no "
                           f"certificate came back: {certificate.strip()[:200]}")
    render.write_if_changed(issued_certificate(inventory), certificate)


def _leaf_der(pem: str) -> bytes:
    """The first certificate of a PEM chain (the leaf), as DER."""
    begin = pem.index("-----BEGIN CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(pem[begin:pem.index("-----END CERTIFICATE-----") + 25])


def _renew_by(inventory, certificate: str) -> float:
    """When this machine should ask the cert host again: a day after the cert host's own daily
    renewal should have renewed it (so a renewal nobody saw is found)."""
    from cryptography import x509
    leaf = x509.load_der_x509_certificate(_leaf_der(certificate))
    return leaf.not_valid_after_utc.timestamp() - (inventory.acme.renew_days - 1) * 86400


def _roots_digest(inventory) -> str | None:
    roots = acme_roots(inventory)
    return hashlib.sha256(roots.encode()).hexdigest() if roots else None


def acme_issue_is_current(inventory, values: dict) -> bool:
    """doit uptodate of acme:issue: a certificate is kept here, it is not yet time to look for
    its renewal, and the ACME server's root is the one it was issued under (pebble makes a new
    one at each start)."""
    try:
        return (issued_certificate(inventory).exists()
                and time.time() < values.get("renew_by", 0)
                and values.get("roots") == _roots_digest(inventory))
    except OutpostError:
        return False  # the task runs, and its action says what is wrong (no traceback)


_certificates_seen: dict = {}
_served_lock = threading.Lock()


def _served_certificate(inventory, host) -> bytes | None:
    """The leaf certificate (DER) the host's nginx presents for the site's name, unverified,
    or None (no TLS there yet)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host.address, 443), timeout=5) as sock:
            with context.wrap_socket(sock, server_hostname=inventory.site.name) as tls_sock:
                return tls_sock.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


def served_certificates(inventory) -> dict[str, bytes | None]:
    """What every web host serves, asked once per run (the certificate tasks share it)."""
    import concurrent.futures
    with _served_lock:
        if inventory.path not in _certificates_seen:
            with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
                _certificates_seen[inventory.path] = dict(zip(
                    [h.name for h in inventory.hosts],
                    pool.map(lambda h: _served_certificate(inventory, h), inventory.hosts)))
        return _certificates_seen[inventory.path]


def _newer_elsewhere(inventory, current: bytes) -> bool:
    """True when some host serves a certificate issued after the one kept here: the cert
    host renewed it since this machine last asked."""
    from cryptography import x509
    issued = x509.load_der_x509_certificate(current).not_valid_before_utc
    return any(der and der != current
               and x509.load_der_x509_certificate(der).not_valid_before_utc > issued
               for der in served_certificates(inventory).values())


_refreshed: set = set()
_refresh_lock = threading.Lock()


def host_certificate(inventory, host):
    """Make the host serve the current certificate: if it serves another (a new host, one
    that was down at a renewal), the cert host pushes it there, key and all, through the
    host's lego-gate. Costs one TLS handshake per host when all is well: no SSH."""
    from outpost import acme
    cert_host = inventory.acme.cert_host
    current = _leaf_der(issued_certificate(inventory).read_text())
    served = served_certificates(inventory).get(host.name)
    if served == current:
        return
    with _refresh_lock:
        # Renewed on the cert host since this machine asked: ask once more, once per run.
        if inventory.path not in _refreshed and _newer_elsewhere(inventory, current):
            output = remote.run_script(cert_host, acme.driver_command("show"), inventory.ssh,
                                       step=f"certificate:{host.name}").stdout
            _keep_issued(inventory, output)
            _refreshed.add(inventory.path)
        current = _leaf_der(issued_certificate(inventory).read_text())
    if served == current:
        return
    from outpost import lock
    lock.hold()  # read-only until here: a host that serves the current certificate needs none
    output = remote.run_script(cert_host, acme.driver_command("push", host.name), inventory.ssh,
                               step=f"certificate:{host.name}").stdout
    # The host's lego-gate checked the pair and switched it in, or the push failed (nginx
    # serves it on 443 once config has given it the site; the check verifies that).
    _report(cert_host, output)


# --- dns -------------------------------------------------------------------------------------

def fleet_database(inventory):
    """Write the local fleet's test country database (geoip.write_fleet_database)."""
    from outpost import geoip
    path = geoip.fleet_database_path(inventory)
    geoip.write_fleet_database(path)
    say(f"geoip: wrote the fleet's test database {path}")


def dns(inventory, host):
    """Put the host's gdnsd config, zone and country database in place, checked by gdnsd
    before they are switched in, and apply them (geodns.dns_bundle). The database goes only to
    a host that lacks it: the first try sends none, and the host says when it needs it."""
    from outpost import geoip
    database = geoip.read_database(geoip.database_path(inventory))
    for send in (False, True):
        files = geodns.dns_files(inventory, host, database, send_database=send)
        result = apply_bundle(inventory, host, geodns.dns_bundle(host.name, files), "dns",
                              ok_exits=(0,) if send else (0, geodns.NEEDS_DATABASE))
        if result.exited == 0:
            _report(host, result.stdout)
            return


def dns_gcore(inventory):
    """Put the map on Gcore's managed DNS, with the API token from the environment."""
    from outpost import gcore
    dns = inventory.dns
    requests = geodns.gcore_requests(inventory)
    gcore.apply(dns.api, requests)
    say(f"gcore: {', '.join(f'{r.method} {r.path}' for r in requests)}: done")
    for region, ours, theirs in gcore.unexpressed_fallbacks(
            geodns.region_orders(dns, inventory.hosts), dns.default):
        say(f"gcore: note: with {region}'s first host down, Gcore answers {theirs} "
            f"where the map says {ours} (Gcore falls back to the default host)")


# --- check ---------------------------------------------------------------------------------

# HEAD / requests per host for the response time; the median of these is reported.
CHECK_REQUESTS = 5


class _SiteConnection(http.client.HTTPSConnection):
    """HTTPS to one host's address, with the site's name as SNI (and Host): what a visitor
    sent to this host by DNS gets."""

    def __init__(self, address: str, site_name: str, context: ssl.SSLContext, timeout: float):
        super().__init__(site_name, 443, context=context, timeout=timeout)
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


_roots_seen: dict = {}
_roots_lock = threading.Lock()


def acme_roots(inventory) -> str | None:
    """The ACME server's root certificate (PEM) from `[acme] roots`, fetched once per run and
    trusting only `[acme] server_ca` for that fetch; None when the roots are this machine's
    trust store (Let's Encrypt)."""
    acme_settings = inventory.acme
    if acme_settings is None or acme_settings.roots is None:
        return None
    with _roots_lock:
        if acme_settings.roots not in _roots_seen:
            _roots_seen[acme_settings.roots] = _fetch_roots(inventory)
        return _roots_seen[acme_settings.roots]


# A server that refuses the connection may be starting (the fleet's pebble, just after
# fleet:up, listens a moment after its machine's sshd): asked again for this long.
ROOTS_STARTING = 15.0


def _fetch_roots(inventory) -> str:
    import urllib.request
    acme_settings = inventory.acme
    cafile = str(acme_settings.server_ca) if acme_settings.server_ca else None
    context = ssl.create_default_context(cafile=cafile)
    deadline = time.monotonic() + ROOTS_STARTING
    while True:
        try:
            with urllib.request.urlopen(acme_settings.roots, context=context,
                                        timeout=10) as answer:
                return answer.read().decode()
        except (OSError, ValueError) as error:
            refused = isinstance(getattr(error, "reason", error), ConnectionRefusedError)
            if refused and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            raise OutpostError(f"{inventory.path}: [acme] roots: cannot fetch the ACME "
                               f"server's root from {acme_settings.roots}: {error}") from None


@functools.cache
def _context_of_file(ca: Path) -> ssl.SSLContext:
    # Made once: loading the CA file for every request is most of a request's own cost.
    return ssl.create_default_context(cafile=str(ca))


@functools.cache
def _context_of_roots(roots: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=roots) if roots else ssl.create_default_context()


def site_context(inventory) -> ssl.SSLContext:
    """What a visitor's browser trusts, for this site: the ACME server's root (pebble's), this
    machine's trust store (Let's Encrypt's), or the local CA when there is no [acme]."""
    if inventory.acme is None:
        return _context_of_file(tls.ca_paths(inventory.site.ca)[0])
    return _context_of_roots(acme_roots(inventory))


def check_context(inventory) -> ssl.SSLContext:
    """site_context's trust, presenting the check's client certificate (made by the
    client-certificate task): nginx gives /_health's details to this client only."""
    certificate, key = tls.client_paths(inventory.site.certificates)
    if inventory.acme is None:
        return _context_with_client(None, tls.ca_paths(inventory.site.ca)[0], certificate, key)
    return _context_with_client(acme_roots(inventory), None, certificate, key)


@functools.cache  # as _context_of_file: once per run (a failure is not kept)
def _context_with_client(roots: str | None, ca: Path | None, certificate: Path,
                         key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca) if ca else None, cadata=roots)
    try:
        context.load_cert_chain(certificate, key)
    except (OSError, ssl.SSLError) as error:
        raise OutpostError(f"{certificate}: the check's client certificate can't be loaded "
                           f"({error}); `doit client-certificate` makes it") from None
    return context


def _site_connection(inventory, host, timeout: float) -> _SiteConnection:
    return _SiteConnection(host.address, inventory.site.name, check_context(inventory), timeout)


def site_request(inventory, host, path: str, timeout: float = 5.0,
                 context: ssl.SSLContext | None = None) -> tuple[int, dict, bytes]:
    """GET path from host through nginx as the check does: trusting only what site_context
    trusts, with the check's client certificate; or with `context` instead (a visitor's:
    site_context). (status, headers, body)."""
    connection = (_site_connection(inventory, host, timeout) if context is None
                  else _SiteConnection(host.address, inventory.site.name, context, timeout))
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


_kept: dict = {}  # (address, site name) -> an open _SiteConnection not in use
_kept_lock = threading.Lock()


def _kept_request(inventory, host, path: str, method: str = "GET",
                  timeout: float = 5.0) -> tuple[int, bytes]:
    """As site_request, on a connection kept open for the host's next request in this run
    (the drift probe's, the check's): one TLS handshake per host, not one per request. A kept
    connection the server has closed meanwhile is replaced once. (status, body)."""
    key = (host.address, inventory.site.name)
    with _kept_lock:
        connection = _kept.pop(key, None)
    while True:
        kept = connection is not None
        if not kept:
            connection = _site_connection(inventory, host, timeout)
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            answer = response.status, response.read()
        except ConnectionError:
            connection.close()
            connection = None
            if kept:
                continue
            raise
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            with _kept_lock:
                _kept[key] = connection
        return answer


def _health(inventory, host, timeout: float = 5.0) -> dict | str:
    """The app's /_health through nginx, as a dict, or why it couldn't be had."""
    try:
        status, body = _kept_request(inventory, host, "/_health", timeout=timeout)
    except ssl.SSLCertVerificationError as error:
        return _untrusted(inventory, host, error)
    except (OSError, ssl.SSLError, http.client.HTTPException) as error:
        return str(error)
    if status == 403:
        return ("HTTP 403: nginx did not take the check's client certificate (was it signed "
                "by the CA in the host's client-ca.pem?)")
    if status != 200:
        return f"HTTP {status}"
    try:
        return json.loads(body)
    except ValueError:
        return "not JSON"


def _wait_for_health(inventory, host, good, hopeless=lambda health: False) -> dict | str:
    """Ask the host's health until good(health) or hopeless(health) (both given a dict), or
    CHECK_WAIT has passed; returns the last answer."""
    deadline = time.monotonic() + CHECK_WAIT
    while True:
        health = _health(inventory, host)
        if isinstance(health, dict) and (good(health) or hopeless(health)):
            return health
        if time.monotonic() > deadline:
            return health
        time.sleep(0.05)


def _content_expected(inventory, package, host) -> tuple[str | None, str | None]:
    if package.content is None:
        return None, None
    return content.expected(inventory, package, host)


def _wanted_for_check(inventory, host) -> dict:
    """The versions the check expects: the template's, or with a broken template the ones the
    host last passed the gate with (what it should still serve); and any rollback hold."""
    problem = broken_template(inventory)
    if problem:
        wanted = {name: versions[-1] for name, versions
                  in hoststate.history(inventory, host).items() if versions}
        say(f"{host.name}: a template is broken, so the check expects the version the host "
            f"runs ({', '.join(f'{n} {v}' for n, v in wanted.items()) or 'none recorded'}): "
            f"{problem}")
    else:
        wanted = wanted_versions(inventory)
    for name, held in hoststate.hold(inventory).items():
        if wanted.get(name) == held["version"]:
            say(f"{host.name}: {name} held at {held['version']} by `doit rollback` instead of "
                f"{held['instead_of']}; a new version in its template ends the hold")
    return wanted


def check(inventory, host):
    """Wait until the host serves the wanted version and the content release last pushed or
    rolled back to (over HTTPS, through nginx), then time CHECK_REQUESTS requests. Fails naming
    the host and what it serves; a host whose release folder holds other files than it should
    fails at once and is marked, so the next run sends the release again. Then the certificate
    it serves, and its nameserver's answers (check_dns)."""
    wanted = _wanted_for_check(inventory, host)
    package = render.served_package(inventory)
    folder, digest = _content_expected(inventory, package, host)
    health = _wait_for_health(
        inventory, host,
        good=lambda h: (h.get("version") == wanted.get(package.name)
                        and _content_problem(h, folder, digest) is None),
        # Its folder is the right one but the files in it are not: waiting won't mend that.
        hopeless=lambda h: (folder is not None and h.get("release") == folder
                            and _content_problem(h, folder, digest) is not None))
    problem = _content_problem(health, folder, digest) if isinstance(health, dict) else None
    if not isinstance(health, dict) or health.get("version") != wanted.get(package.name) or problem:
        if problem:
            content.mark_drift(inventory, package, host, problem)
        seen = (f"it gives version {health.get('version')}, {_served(health)}"
                if isinstance(health, dict) else health)
        raise OutpostError(f"host {host.name}, step check: https://{inventory.site.name}/_health "
                           f"at {host.address} does not serve {package.name} "
                           f"{wanted.get(package.name)} with release {folder or '-'} content "
                           f"{(digest or '-')[:12]}: {seen}"
                           + ("; the next deploy sends the release again" if problem else ""))
    times = []
    for _ in range(CHECK_REQUESTS):
        # HEAD: the app renders the page and nginx passes the answer on, but the body (the
        # size of the content, 8 MB for 2,000 entries) does not make the time. On the kept
        # connection: the time of a request, not of a TLS handshake.
        start = time.perf_counter()
        status, _ = _kept_request(inventory, host, "/", method="HEAD")
        times.append((time.perf_counter() - start) * 1000)
        if status != 200:
            raise OutpostError(f"host {host.name}, step check: https://{inventory.site.name}/ "
                               f"at {host.address} answered HTTP {status}")
    result = {"host": host.name, "region": host.region, "status": "ok",
              "version": health["version"], "release": health.get("release") or "-",
              "median_ms": round(statistics.median(times), 1), "requests": CHECK_REQUESTS,
              "certificate_days": _certificate_days(inventory, host)}
    if inventory.dns is not None and inventory.dns.provider == "gdnsd":
        result["dns"] = check_dns(inventory, host)
    return result


# Hosts whose health path answered, per inventory, shared by the check tasks of one run (they
# run in threads) for as long as gdnsd's own checks take to see a change.
_health_seen: dict = {}
_health_lock = threading.Lock()


def _plain_health(host, site_name: str, timeout: float = 2.0) -> bool:
    """What gdnsd's checker asks each host: GET /_health on port 80 with the site's name as
    Host (its `vhost`: nginx closes the connection for any other), HTTP 200 or not."""
    connection = http.client.HTTPConnection(host.address, 80, timeout=timeout)
    try:
        connection.request("GET", geodns.HEALTH_PATH, headers={"Host": site_name})
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def healthy_hosts(inventory) -> set[str]:
    """The hosts that pass the health check GeoDNS uses, asked at most once per interval."""
    import concurrent.futures

    with _health_lock:
        seen = _health_seen.get(inventory.path)
        if seen and time.monotonic() - seen[0] < inventory.dns.health.interval:
            return seen[1]
        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            up = dict(zip([h.name for h in inventory.hosts],
                          pool.map(lambda h: _plain_health(h, inventory.site.name),
                                   inventory.hosts)))
        healthy = {name for name, ok in up.items() if ok}
        _health_seen[inventory.path] = (time.monotonic(), healthy)
        return healthy


def ask_nameserver(address: str, name: str, network: str, timeout: float = 2.0) -> list[str]:
    """The A addresses a nameserver gives a visitor in `network` (one UDP query with ECS)."""
    query_id = int.from_bytes(os.urandom(2), "big")
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((address, 53))
        sock.send(geodns.ecs_query(name, network, query_id))
        return geodns.answer_addresses(sock.recv(4096), query_id)


def _dns_rows(inventory, host) -> list[dict]:
    """Ask the host's nameserver for the site's name once per continent, as a resolver would
    for a visitor there (EDNS Client Subnet from geodns.PROBE_NETWORKS). The expected answer is
    the first healthy host of the continent's order, as gdnsd's own checks see it."""
    by_address = {h.address: h.name for h in inventory.hosts}
    healthy = healthy_hosts(inventory)
    rows = []
    for continent, (_, network) in sorted(geodns.PROBE_NETWORKS.items()):
        expected = geodns.expected_host(inventory.dns, inventory.hosts, continent, healthy)
        try:
            addresses = ask_nameserver(host.address, inventory.site.name, network)
            answer = ", ".join(by_address.get(a, a) for a in addresses) or "no answer"
        except (geodns.DnsReplyError, OSError) as error:
            answer = f"no reply ({error or type(error).__name__})"
        rows.append({"nameserver": host.name, "continent": continent, "network": network,
                     "answer": answer, "expected": expected,
                     "first": geodns.expected_host(inventory.dns, inventory.hosts, continent)})
    return rows


def check_dns(inventory, host) -> list[dict]:
    """Wait until the host's nameserver answers every continent with the host the map gives
    (its health checks may still be catching up with a deploy), then return the rows. Fails
    naming the nameserver, the continent, the answer and the expected host."""
    deadline = time.monotonic() + CHECK_WAIT
    while True:
        rows = _dns_rows(inventory, host)
        wrong = [row for row in rows if row["answer"] != row["expected"]]
        if not wrong or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if wrong:
        raise OutpostError("; ".join(
            f"host {host.name}, step check: nameserver {host.address} answers {row['continent']}"
            f" ({row['network']}) with {row['answer']}, expected {row['expected']}"
            for row in wrong))
    return rows
