"""upgrade: each host on the wanted versions, canary first, gated on its health path, in one
round trip per host (commands.upgrade builds the script); and rollback:app, every host back on
the versions it ran before."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from outpost import hoststate, remote, repo
from outpost.commands import config as config_commands
from outpost.commands import upgrade as upgrade_commands
from outpost.commands import upgrade_report
from outpost.errors import OutpostError
from outpost.steps import content
from outpost.steps.build import template_versions
from outpost.steps.common import say


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
        package = config_commands.served_package(self.inventory)
        health = content.drift_probe(self.inventory, self.host)
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
    round trip (commands.upgrade); a host that fails the gate, or whose service file dinit
    refuses, goes back to what it ran, and the step fails saying why."""
    return install_gated(inventory, host, wanted_versions(inventory), step="upgrade")


def back_to(inventory, host, versions: dict[str, str]) -> dict[str, str]:
    """The version of each package to go back to if `versions` fail on host: the last that
    passed the gate there (its record), while the repository keeps it. Not "what is installed
    now": a host whose gate was cut short (it went down mid-gate) may run one that failed."""
    kept = repo.versions(repo.repo_dir(inventory, host.arch))
    back = {}
    for name, version in versions.items():
        passed = hoststate.last_passed(inventory, host, name)
        if passed not in (None, version) and passed in kept.get(name, []):
            back[name] = passed
    return back


def install_gated(inventory, host, versions: dict[str, str], step: str) -> dict:
    installs = upgrade_commands.installs(inventory, host, versions,
                                         back_to(inventory, host, versions))
    script = upgrade_commands.install_script(installs, inventory.rollout.health_timeout)
    result = remote.run_script(host, script, inventory.ssh, step=step,
                               ok_exits=(0, upgrade_commands.GATE_FAILED))
    report = upgrade_report.parse_report(result.stdout)
    if report.earlier is not None:
        say(f"{host.name}: the gate of an interrupted run went on on the host, and it ended "
            f"by itself: {upgrade_report.earlier_outcome(report.earlier)}")
    for name, version in report.back.items():
        hoststate.went_back(inventory, host, name, version)
    if report.failed:
        raise OutpostError(f"{step}: " + upgrade_report.gate_failure(host, report))
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
    gated as an upgrade is, the hosts of a batch at once and after the whole batch before
    it (a host that fails goes back to what it ran, its batch finishes, and the rollback
    stops there, naming each failed host and those not touched). Then the hold: deploys keep
    these versions until the template's version changes."""
    targets = rollback_targets(inventory)
    templates = template_versions(inventory)
    order = upgrade_commands.batches(inventory.hosts, inventory.canary,
                                     inventory.rollout.batch_size)
    for number, batch in enumerate(order):
        with ThreadPoolExecutor(max_workers=len(batch)) as pool:
            done = [pool.submit(install_gated, inventory, host, targets, step="rollback")
                    for host in batch]
        failed = []
        for future in done:
            try:
                future.result()
            except OutpostError as err:
                failed.append(str(err))
        if failed:
            untouched = [host.name for later in order[number + 1:] for host in later]
            raise OutpostError("\n".join(failed) + (
                f"\nrollback: stopped; not touched: {', '.join(untouched)}" if untouched else ""))
    hoststate.set_hold(inventory, {name: {"version": version, "instead_of": templates[name]}
                                   for name, version in targets.items()})
    say("rollback: every host runs " + ", ".join(f"{n} {v}" for n, v in targets.items())
        + "; deploys keep it until a template's version changes")
