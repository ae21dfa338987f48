"""Rolling upgrades, built by pure functions: the order hosts go in (canary, then batches) and
the one script per host that installs a version, gates it, and goes back when it fails.

The gate: the service's health path (http://127.0.0.1:<port>/_health on the host, curl) answers
with the wanted version GATE_PASSES times in a row, GATE_INTERVAL apart, within the inventory's
health_timeout. A daemon that exits at start-up never answers; one that starts and then dies
within about a second breaks the run of answers.

When a host fails the gate, the same script puts back the version it ran before (kept in the
repository, see [repository] keep), restarts the service, gates that too, and prints the
service's last log lines. The script's report is `outpost: ...` lines (parse_report).
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from outpost.commands import BOOT_D

GATE_PASSES = 3
GATE_INTERVAL = 0.5
LOG_LINES = 20
# Exit status of an install script whose host failed the gate (and went back, or tried to).
GATE_FAILED = 70


@dataclass(frozen=True)
class Install:
    """One package to put on a host: the exact version, its service and health port, and the
    service's log file (None when its service file names none)."""
    name: str
    version: str
    service: str | None
    port: int | None
    logfile: str | None


def batches(hosts, canary, batch_size: int) -> list[list]:
    """The order of a rollout: the canary alone, then the other hosts in inventory order,
    batch_size at a time."""
    rest = [h for h in hosts if h != canary]
    return [[canary]] + [rest[i:i + batch_size] for i in range(0, len(rest), batch_size)]


def install_command(name: str, version: str) -> list[str]:
    # `NAME=VERSION` puts that exact version in apk's world: a newer one in the repository
    # is not taken, and an older one is installed by going back (apk's solver downgrades).
    return ["doas", "apk", "add", f"{name}={version}"]


def restart_commands(service: str) -> list[list[str]]:
    return [["doas", "dinitctl", "restart", "--ignore-unstarted", service],
            ["doas", "dinitctl", "start", service]]


def enable_command(service: str) -> list[str]:
    return ["doas", "dinitctl", "enable", service]


def log_command(logfile: str) -> list[str]:
    return ["doas", "tail", "-n", str(LOG_LINES), logfile]


def doas_commands(name: str, versions, service: str | None, logfile: str | None):
    """Every root command install_script may run for this package, with these versions
    installable (for commands.doas_permits)."""
    commands = [["doas", "apk", "update"]]
    commands += [install_command(name, version) for version in versions]
    if service:
        commands += restart_commands(service) + [enable_command(service)]
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


def _put(install: Install, version_var: str) -> list[str]:
    """Lines that install the version in $version_var and restart the service if it changed."""
    q = shlex.quote
    name_var = f"$(" + _installed(install.name) + ")"
    lines = [f'if [ "{name_var}" != "${version_var}" ]; then',
             f'  doas apk add {q(install.name)}="${version_var}" >&2 || exit 1']
    if install.service:
        lines.append(f"  {shlex.join(restart_commands(install.service)[0])} >&2")
    lines.append("fi")
    if install.service:
        lines += [f"[ -e {q(f'{BOOT_D}/{install.service}')} ] || "
                  f"{shlex.join(enable_command(install.service))} >&2",
                  f"{shlex.join(restart_commands(install.service)[1])} >&2"]
    return lines


def install_script(installs: list[Install], health_timeout: float) -> str:
    """One round trip: for each package, note the version installed now, install the wanted
    one (only when it differs: an unchanged host restarts nothing), and gate it. On a failed
    gate: print the reason and the service's log lines, put the version it ran before back,
    gate that, and exit GATE_FAILED. Prints, per package:

        outpost: before NAME VERSION|none
        outpost: ok NAME VERSION                    (passed the gate)
        outpost: failed NAME VERSION: REASON
        outpost: log LINE                           (each of the service's last log lines)
        outpost: back NAME VERSION                  (went back, and that passed the gate)
        outpost: not-back NAME VERSION|none: WHY    (could not go back)
    """
    timeout = max(1, round(health_timeout))
    lines = ["set -u", _GATE, "doas apk update >&2"]
    for n, install in enumerate(installs):
        q = shlex.quote
        name = q(install.name)
        before, wanted = f"outpost_before_{n}", f"outpost_wanted_{n}"
        lines += [f"{before}=$({_installed(install.name)})",
                  f"{wanted}={q(install.version)}",
                  f'echo "outpost: before {install.name} ${{{before}:-none}}"']
        lines += _put(install, wanted)
        if install.port is None:
            lines.append(f'echo "outpost: ok {install.name} ${wanted}"')
            continue
        logs = ([f"{shlex.join(log_command(install.logfile))} 2>/dev/null | "
                 "sed 's/^/outpost: log /'"] if install.logfile else [])
        lines += [
            f"if outpost_gate {install.port} \"${wanted}\" {timeout}; then",
            f'  echo "outpost: ok {install.name} ${wanted}"',
            "else",
            f'  echo "outpost: failed {install.name} ${wanted}: $outpost_reason"',
            *[f"  {line}" for line in logs],
            f'  if [ -z "${before}" ] || [ "${before}" = "${wanted}" ]; then',
            f'    echo "outpost: not-back {install.name} ${{{before}:-none}}: no other version '
            f'was installed before"',
            "  else",
            *[f"    {line}" for line in _put(install, before)],
            f"    if outpost_gate {install.port} \"${before}\" {timeout}; then",
            f'      echo "outpost: back {install.name} ${before}"',
            "    else",
            f'      echo "outpost: not-back {install.name} ${before}: $outpost_reason"',
            "    fi",
            "  fi",
            f"  exit {GATE_FAILED}",
            "fi",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Report:
    before: dict[str, str | None]   # package -> version installed before the script
    ok: dict[str, str]              # package -> version that passed the gate
    failed: dict[str, tuple[str, str]]  # package -> (version, reason)
    back: dict[str, str]            # package -> version it went back to (and passed)
    not_back: dict[str, tuple[str | None, str]]
    log: list[str]


_LINE = re.compile(r"outpost: (before|ok|failed|back|not-back|log) ?(.*)")


def parse_report(output: str) -> Report:
    report = Report({}, {}, {}, {}, {}, [])
    for line in output.splitlines():
        match = _LINE.fullmatch(line)
        if not match:
            continue
        kind, rest = match.groups()
        if kind == "log":
            report.log.append(rest)
            continue
        name, _, rest = rest.partition(" ")
        version, _, reason = rest.partition(": ")
        version = None if version == "none" else version
        if kind == "before":
            report.before[name] = version
        elif kind == "ok":
            report.ok[name] = version
        elif kind == "back":
            report.back[name] = version
        elif kind == "failed":
            report.failed[name] = (version, reason)
        else:
            report.not_back[name] = (version, reason)
    return report


def gate_failure(host, report: Report) -> str:
    """The message of a host that failed the gate: host, version, reason, where it is now,
    and the service's own log lines."""
    parts = []
    for name, (version, reason) in report.failed.items():
        if name in report.back:
            now = f"it is back on {report.back[name]}"
        else:
            previous, why = report.not_back.get(name, (None, "unknown"))
            now = f"it could NOT go back to {previous or 'an earlier version'}: {why}"
        parts.append(f"host {host.name}: {name} {version} failed the health gate "
                     f"({reason}); {now}. The rollout stopped: no other host was touched")
    message = "; ".join(parts)
    if report.log:
        message += ". The service's last log lines:\n  " + "\n  ".join(report.log)
    return message


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

