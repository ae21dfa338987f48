"""The upgrade's report, pure: the `outpost: ...` lines commands.upgrade's install job prints
(see install_job for each kind), parsed; and the messages made of them. A report may hold the
lines of a job an earlier, cut session left on the host (commands.hostjob), as `outpost:
earlier ...`: parsed into its own Report."""
from __future__ import annotations

import re
from dataclasses import dataclass

from outpost.commands import hostjob
from outpost.commands.base import DINIT_LOG


@dataclass(frozen=True)
class Report:
    before: dict[str, str | None]   # package -> version installed before the script
    ok: dict[str, str]              # package -> version that passed the gate
    failed: dict[str, tuple[str, str]]  # package -> (version, reason)
    back: dict[str, str]            # package -> version it went back to (and passed)
    not_back: dict[str, tuple[str | None, str]]
    log: list[str]                  # the service's last log lines
    refused: set[str]               # packages whose service file dinit refused
    dinit_log: list[str]            # what dinit logged while the script ran (on a failure)
    gate: dict[str, str]            # package -> version whose gate began last
    earlier: Report | None = None   # the job an earlier, cut session left (hostjob)
    ended: bool = False             # (earlier) the job ran to its end: its exit line is there


_LINE = re.compile(r"outpost: (before|gate|ok|refused|failed|back|not-back|log|dinit|exit) ?(.*)")
_EARLIER = f"outpost: {hostjob.EARLIER} "


def parse_report(output: str) -> Report:
    earlier = [line.replace(_EARLIER, "outpost: ", 1) for line in output.splitlines()
               if line.startswith(_EARLIER)]
    lines = output.splitlines()
    report = Report({}, {}, {}, {}, {}, [], set(), [], {},
                    parse_report("\n".join(earlier)) if earlier else None,
                    any(line.startswith("outpost: exit ") for line in lines))
    for line in lines:
        match = _LINE.fullmatch(line)
        if not match or match.group(1) == "exit":
            continue
        kind, rest = match.groups()
        if kind in ("log", "dinit"):
            (report.log if kind == "log" else report.dinit_log).append(rest)
            continue
        name, _, rest = rest.partition(" ")
        version, _, reason = rest.partition(": ")
        version = None if version == "none" else version
        if kind == "before":
            report.before[name] = version
        elif kind == "gate":
            report.gate[name] = version
        elif kind == "refused":
            report.refused.add(name)
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
    message = "; ".join(f"host {host.name}: {_outcome(report, name)}. The rollout stopped: "
                        "no other host was touched" for name in report.failed)
    if report.log:
        message += ". The service's last log lines:\n  " + "\n  ".join(report.log)
    if report.dinit_log:
        message += (f"\ndinit logged ({DINIT_LOG}):\n  " + "\n  ".join(report.dinit_log))
    return message


def _outcome(report: Report, name: str) -> str:
    version, reason = report.failed[name]
    if name in report.back:
        now = f"it is back on {report.back[name]}"
    else:
        previous, why = report.not_back.get(name, (None, "unknown"))
        now = f"it could NOT go back to {previous or 'an earlier version'}: {why}"
    what = "was not loaded" if name in report.refused else "failed the health gate"
    return f"{name} {version} {what} ({reason}); {now}"


def earlier_outcome(report: Report) -> str:
    """What the job an earlier, cut session left did, in one line (the host ended it alone)."""
    done = [f"{name} {version} passed the health gate" for name, version in report.ok.items()]
    done += [_outcome(report, name) for name in report.failed]
    if not report.ended:
        gating = list(report.gate.items())[-1:]
        done.append("it was cut short (the host went down, or the job was killed)"
                    + "".join(f" in the gate of {name} {version}" for name, version in gating))
    return "; ".join(done)
