"""upgrade's builders (and the app's rollback's), pure functions: rolling upgrades: the order hosts go in (canary, then batches) and
the one script per host that installs a version, gates it, and goes back when it fails.

The gate: the service's health path (http://127.0.0.1:<port>/_health on the host, curl) answers
with the wanted version GATE_PASSES times in a row, GATE_INTERVAL apart, within the inventory's
health_timeout. A daemon that exits at start-up never answers; one that starts and then dies
within about a second breaks the run of answers.

A changed service file is reloaded before the restart (dinit reads one only when it loads the
service). A file dinit refuses fails the host as a failed gate does: the old description stays
loaded and running, and the host goes back.

When a host fails, the same script puts back the last version that passed the gate there (by
this machine's record, build/rollout/<host>.json; else the version it ran before; kept in the
repository, see [repository] keep), restarts the service, gates that too, and prints the
service's last log lines and what dinit logged meanwhile (dinitctl leaves the reason of a
refused file there). The script's report is `outpost: ...` lines (commands.upgrade_report).

The host runs all of that as a job of its own (commands.hostjob): a deploy machine that goes
away mid-gate leaves the host to finish the gate and its way back by itself, and the next
upgrade of the host waits for that job and prints what it did.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from outpost import repo
from outpost.commands import config, hostjob
from outpost.commands.base import APK_NEW, BOOT_D, DINIT_LOG, SERVICE_DIR

GATE_PASSES = 3
GATE_INTERVAL = 0.5
LOG_LINES = 20
# Exit status of an install script whose host failed the gate (and went back, or tried to).
GATE_FAILED = 70


@dataclass(frozen=True)
class Install:
    """One package to put on a host: the exact version, its service and health port, the
    service's log file (None when its service file names none), the package's env-file
    when config installs it (env_file), and the version to go back to when the gate fails
    (back_to: the last that passed the gate there; None: the version installed before)."""
    name: str
    version: str
    service: str | None
    port: int | None
    logfile: str | None
    env_file: str | None = None
    back_to: str | None = None


def batches(hosts, canary, batch_size: int | None) -> list[list]:
    """The order of a rollout: the canary alone, then the other hosts in inventory order,
    batch_size at a time (None: a quarter of the hosts, at least one). The hosts of a batch
    go at once."""
    size = batch_size or max(1, len(hosts) // 4)
    rest = [h for h in hosts if h != canary]
    return [[canary]] + [rest[i:i + size] for i in range(0, len(rest), size)]


def install_command(name: str, version: str) -> list[str]:
    # `NAME=VERSION` puts that exact version in apk's world: a newer one in the repository
    # is not taken, and an older one is installed by going back (apk's solver downgrades).
    return ["doas", "apk", "add", f"{name}={version}"]


def restart_commands(service: str) -> list[list[str]]:
    return [["doas", "dinitctl", "restart", "--ignore-unstarted", service],
            ["doas", "dinitctl", "start", service]]


def enable_command(service: str) -> list[str]:
    return ["doas", "dinitctl", "enable", service]


def reload_commands(service: str) -> list[list[str]]:
    """reload, and stop for the retry: dinit won't reload some changes into a running service
    (its log-type, its type), so the service is stopped, reloaded and started again."""
    return [["doas", "dinitctl", "reload", service], ["doas", "dinitctl", "stop", service]]


def env_file(package_name: str, config_files) -> str | None:
    """The package's env-file (/etc/default/<name>) when config installs it (among the
    `config_files` paths), else None."""
    path = f"/etc/default/{package_name}"
    return path if path in config_files else None


def apk_new_command(path: str) -> list[str]:
    # config renders the env-file from templates/ and restarts the service when it changes, so
    # the package's copy, which real apk leaves beside it on each upgrade, is not wanted.
    return ["doas", "rm", "-f", path + APK_NEW]


def log_command(logfile: str) -> list[str]:
    return ["doas", "tail", "-n", str(LOG_LINES), logfile]


def doas_commands(name: str, versions, service: str | None, logfile: str | None,
                  env_file: str | None = None):
    """Every root command install_script may run for this package, with these versions
    installable (for commands.doas_permits)."""
    commands = [["doas", "apk", "update"]]
    commands += [install_command(name, version) for version in versions]
    if env_file:
        commands.append(apk_new_command(env_file))
    if service:
        commands += (restart_commands(service) + [enable_command(service)]
                     + reload_commands(service))
    if logfile:
        commands.append(log_command(logfile))
    return commands


_GATE = f"""\
outpost_gate() {{  # PORT VERSION TIMEOUT: health answers VERSION {GATE_PASSES} times in a row
  outpost_deadline=$(( $(date +%s) + $3 ))
  outpost_passes=0
  while :; do
    if outpost_body=$(curl -fsS -m 2 "http://127.0.0.1:$1/_health" 2>&1); then
      case "$(printf '%s' "$outpost_body" | tr -d ' \\n')" in
        *"\\"version\\":\\"$2\\""*) outpost_passes=$((outpost_passes + 1)) ;;
        *) outpost_passes=0
           outpost_reason="the health path answers, but not with version $2: $(printf '%s' \
"$outpost_body" | head -c 200)" ;;
      esac
    else
      outpost_passes=0
      outpost_reason="the health path does not answer: $(printf '%s' "$outpost_body" | tail -n 1)"
    fi
    [ "$outpost_passes" -ge {GATE_PASSES} ] && return 0
    [ "$(date +%s)" -ge "$outpost_deadline" ] && return 1
    sleep {GATE_INTERVAL}
  done
}}
"""


def _installed(name: str) -> str:
    q = shlex.quote(name)
    # `apk info -e -v NAME` prints NAME-VERSION (FACTS.md); nothing when not installed.
    return f"apk info -e -v {q} 2>/dev/null | sed -n 's/^'{q}'-//p' | tail -n 1"


def _reload(install: Install, version_var: str) -> list[str]:
    """Lines (after the apk add) that reload the service when its file changed. A file dinit
    refuses leaves the old description loaded: the service is started again with it (the
    retry may have stopped it), and the host fails (outpost_failed) with dinitctl's words."""
    reload, stop = (shlex.join(argv) for argv in reload_commands(install.service))
    start = shlex.join(restart_commands(install.service)[1])
    path = shlex.quote(f"{SERVICE_DIR}/{install.service}")
    return [
        f'if [ -n "$outpost_unit" ] && [ "$(cat {path} 2>/dev/null || :)" != "$outpost_unit" ]; then',
        f"  if ! {reload} 2>/dev/null; then",
        f"    {stop} >/dev/null 2>&1",
        f"    if ! outpost_said=$({reload} 2>&1); then",
        f"      {start} >/dev/null 2>&1",
        "      outpost_failed=1",
        '      outpost_reason="dinit refused its new service file: $outpost_said"',
        f'      echo "outpost: refused {install.name} ${version_var}"',
        "    fi",
        "  fi",
        "fi",
    ]


def _put(install: Install, version_var: str) -> list[str]:
    """Lines that install the version in $version_var and, if it changed, reload the service's
    changed file and restart it (neither after a refused file: outpost_failed)."""
    q = shlex.quote
    name_var = "$(" + _installed(install.name) + ")"
    lines = [f'if [ "{name_var}" != "${version_var}" ]; then']
    if install.service:
        path = q(f"{SERVICE_DIR}/{install.service}")
        lines.append(f"  outpost_unit=$(cat {path} 2>/dev/null || :)")
    lines.append(f'  doas apk add {q(install.name)}="${version_var}" >&2 || exit 1')
    if install.env_file:
        lines.append(f"  {shlex.join(apk_new_command(install.env_file))} >&2")
    if install.service:
        lines += [f"  {line}" for line in _reload(install, version_var)]
        lines.append(f'  [ -n "$outpost_failed" ] || '
                     f"{shlex.join(restart_commands(install.service)[0])} >&2")
    lines.append("fi")
    if install.service:
        lines += [f"[ -e {q(f'{BOOT_D}/{install.service}')} ] || "
                  f"{shlex.join(enable_command(install.service))} >&2",
                  f"{shlex.join(restart_commands(install.service)[1])} >&2"]
    return lines


def _dinit_log_since_start() -> str:
    """What dinit logged since the script began, as `outpost: dinit LINE` lines: read as a user
    would, from DINIT_LOG (world-readable; absent on Chimera, where nothing is printed)."""
    log = shlex.quote(DINIT_LOG)
    return (f"[ -r {log} ] && tail -c +$((outpost_dinit_log_start + 1)) {log} | "
            "sed 's/^/outpost: dinit /'")


def install_script(installs: list[Install], health_timeout: float) -> str:
    """One round trip, the work done by the host as a job of its own (install_job, run by
    commands.hostjob): it goes on to its end if the session is cut, and this script first
    waits for such a job an earlier session left, printing its report as `outpost: earlier
    ...` lines."""
    return hostjob.detached_script("upgrade", install_job(installs, health_timeout))


def install_job(installs: list[Install], health_timeout: float) -> str:
    """For each package, note the version installed now, install the wanted one (only when
    it differs: an unchanged host restarts nothing; a changed service file is reloaded first),
    and gate it. When dinit refuses the service file or the gate fails: print the reason, the
    service's log lines and dinit's, put back the version to go back to (Install.back_to, else
    the one installed before), gate that, and exit GATE_FAILED. Prints, per package:

        outpost: before NAME VERSION|none
        outpost: gate NAME VERSION                  (the gate of VERSION begins)
        outpost: ok NAME VERSION                    (passed the gate)
        outpost: refused NAME VERSION               (dinit refused its service file)
        outpost: failed NAME VERSION: REASON
        outpost: log LINE                           (each of the service's last log lines)
        outpost: dinit LINE                         (each line dinit logged meanwhile)
        outpost: back NAME VERSION                  (went back, and that passed the gate)
        outpost: not-back NAME VERSION|none: WHY    (could not go back)
    """
    timeout = max(1, round(health_timeout))
    log = shlex.quote(DINIT_LOG)
    lines = ["set -u", _GATE,
             f"outpost_dinit_log_start=$(if [ -r {log} ]; then wc -c < {log}; else echo 0; fi)",
             "doas apk update >&2"]
    for n, install in enumerate(installs):
        q = shlex.quote
        before, wanted, back = f"outpost_before_{n}", f"outpost_wanted_{n}", f"outpost_back_{n}"
        lines += [f"{before}=$({_installed(install.name)})",
                  f"{wanted}={q(install.version)}",
                  # The host may run a version that never passed the gate (a gate cut short
                  # on a host that went down): back_to, not "before", is then the way back.
                  f"{back}={q(install.back_to or '')}",
                  f'[ -n "${back}" ] || {back}="${before}"',
                  f'echo "outpost: before {install.name} ${{{before}:-none}}"',
                  "outpost_failed="]
        lines += _put(install, wanted)

        def gate(version_var: str) -> str:
            # Without a health port the gate is only that dinit took the service file.
            took = '[ -z "$outpost_failed" ]'
            if install.port is None:
                return took
            return f'{took} && outpost_gate {install.port} "${version_var}" {timeout}'

        logs = ([f"{shlex.join(log_command(install.logfile))} 2>/dev/null | "
                 "sed 's/^/outpost: log /'"] if install.logfile else [])
        logs.append(_dinit_log_since_start())
        lines += [
            f'echo "outpost: gate {install.name} ${wanted}"',
            f"if {gate(wanted)}; then",
            f'  echo "outpost: ok {install.name} ${wanted}"',
            "else",
            f'  echo "outpost: failed {install.name} ${wanted}: $outpost_reason"',
            *[f"  {line}" for line in logs],
            f'  if [ -z "${back}" ] || [ "${back}" = "${wanted}" ]; then',
            f'    echo "outpost: not-back {install.name} ${{{back}:-none}}: no other version '
            f'passed the gate there or was installed before"',
            "  else",
            "    outpost_failed=",
            *[f"    {line}" for line in _put(install, back)],
            f'    echo "outpost: gate {install.name} ${back}"',
            f"    if {gate(back)}; then",
            f'      echo "outpost: back {install.name} ${back}"',
            "    else",
            f'      echo "outpost: not-back {install.name} ${back}: $outpost_reason"',
            "    fi",
            "  fi",
            f"  exit {GATE_FAILED}",
            "fi",
        ]
    return "\n".join(lines) + "\n"


def service_logfile(template_dir: Path, service: str | None) -> str | None:
    """The `logfile` of the package's dinit service file (files/<service> in its template
    folder, as install_service ships it), or None."""
    if not service:
        return None
    path = template_dir / "files" / service
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "logfile":
            return value.strip()
    return None



def install_commands(inventory, host) -> list[list[str]]:
    """The root commands the upgrade may run on host: apk add NAME=VERSION for each version
    the host's arch folder of the repository keeps, the env-file's .apk-new removed, the
    reload and restart, the service's log."""
    kept = repo.versions(repo.repo_dir(inventory, host.arch))
    config_files = {f.remote_path for f in config.host_files(inventory, host)}
    return [argv for p in inventory.packages
            for argv in doas_commands(p.name, kept.get(p.name, []), p.service,
                                      service_logfile(p.template_dir, p.service),
                                      env_file(p.name, config_files))]


def installs(inventory, host, versions: dict[str, str],
             back_to: dict[str, str]) -> list[Install]:
    """What install_script puts on host: each package at its version in `versions`, going
    back to its version in `back_to` (if any) when it fails."""
    config_files = {f.remote_path for f in config.host_files(inventory, host)}
    return [Install(p.name, versions[p.name], p.service, p.port,
                    service_logfile(p.template_dir, p.service), env_file(p.name, config_files),
                    back_to.get(p.name))
            for p in inventory.packages]
