"""Benchmark of issue 3: `doit deploy` on the three-host local fleet, against two baselines
measured in the same run.

- A no-op `doit deploy` (and `doit content`, which is deploy without the HTTPS check) against
  doit's own floor: a throwaway dodo.py with one up-to-date task.
- A one-file content change pushed by `doit deploy` (and by `doit content`) against the seed's
  way: `printf ... | xargs -P 0 -I {host} rsync -az --delete content/ {host}:<content_dir>/`,
  with the same ssh options the pipeline uses.

Every measurement is a real subprocess timed with time.perf_counter; the kinds are interleaved
round by round, so a slow patch of the machine hits all of them. It is not a test: nothing
here judges a timing. It does check that each run did what it is meant to measure (which tasks
ran, how many SSH logins each host's sshd saw), so a number never stands for the wrong thing.

Run as root from the repository: .venv/bin/python bench/deploy.py [--runs N]
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]
from conftest import copy_project  # noqa: E402  the project copy the integration tests use
from outpost import commands, fleet, inventory  # noqa: E402

# Addresses and a bridge apart from the default fleet's and the tests', so either can run beside.
ADDRESSES = {"au": "198.19.88.11", "ny": "198.19.88.12", "fr": "198.19.88.13"}
BRIDGE = "outpost-b"

FLOOR_DODO = '''\
DOIT_CONFIG = {"default_tasks": ["floor"]}


def task_floor():
    return {"actions": [lambda: None], "file_dep": ["input.txt"]}
'''


# --- what to run (pure) -----------------------------------------------------------------------

def fleet_inventory_text(text: str) -> str:
    """The default inventory with the benchmark's own addresses and bridge (every fleet
    address, the cert host's and the ACME server's too, moved to the benchmark's /24)."""
    from helpers import moved_fleet
    return moved_fleet(text, ADDRESSES, BRIDGE)


def seed_command(inv, package) -> str:
    """The seed's content push, with the fleet's addresses for its DNS names and the pipeline's
    ssh options (pinned known_hosts, deploy key), so both sides pay for the same SSH."""
    first = inv.hosts[0]  # fleet hosts share one user and port (fleet.from_inventory checks)
    ssh = shlex.join(["ssh", *commands.ssh_options(inv.ssh, first)])
    hosts = "".join(f"{host.address}\\n" for host in inv.hosts)
    return (f'printf "{hosts}" | xargs -P 0 -I {{host}} rsync -az --delete -e {shlex.quote(ssh)} '
            f'{shlex.quote(str(package.content))}/ '
            f'{first.user}@{{host}}:{shlex.quote(package.content_dir.rstrip("/"))}/')


def doit_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "doit", *args]


def ran_tasks(output: str) -> set[str]:
    """Tasks doit ran: its ".  name" lines. Parallel tasks print too, and print() writes its
    newline apart from its text, so a task's line can end up after another task's text."""
    return set(re.findall(r"\.  (\S+)$", output, re.M))


# --- running and timing -----------------------------------------------------------------------

def doit_env() -> dict:
    # The project copy's own inventory.toml, whatever the caller's shell says; and bytecode
    # cached as in a user's checkout (a shell with PYTHONDONTWRITEBYTECODE would make every run
    # compile the project again, the floor's one-line dodo hardly at all).
    return {k: v for k, v in os.environ.items()
            if k not in ("OUTPOST_INVENTORY", "PYTHONDONTWRITEBYTECODE")}


def timed(argv, cwd, *, shell=False) -> tuple[float, str]:
    """Seconds the command took, and its output; a failed command ends the benchmark."""
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=doit_env(), shell=shell, capture_output=True,
                          text=True, timeout=600)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        shown = argv if shell else shlex.join(argv)
        how = (f"was killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exited {proc.returncode}")
        raise SystemExit(f"bench: `{shown}` in {cwd} {how}\n{proc.stdout}{proc.stderr}")
    return seconds, proc.stdout


@dataclass
class Measure:
    label: str
    seconds: list[float] = field(default_factory=list)
    logins: list[int] = field(default_factory=list)

    def median(self) -> float:
        return statistics.median(self.seconds)


class Bench:
    def __init__(self, workdir: Path, runs: int):
        self.runs = runs
        self.project = copy_project(workdir)
        inv_file = self.project / "inventory.toml"
        inv_file.write_text(fleet_inventory_text(inv_file.read_text()))
        self.inv = inventory.load(inv_file)
        self.fleet = fleet.from_inventory(self.inv)
        self.package = next(p for p in self.inv.packages if p.content is not None)
        self.edited = sorted((self.package.content / "entries").glob("*.txt"))[0]
        self.edits = 0
        self.floor_dir = workdir / "floor"
        self.floor_dir.mkdir()
        (self.floor_dir / "dodo.py").write_text(FLOOR_DODO)
        (self.floor_dir / "input.txt").write_text("an input that never changes\n")

    def logins(self) -> int:
        """SSH logins all hosts' sshd accepted so far: counted on the host side, not by doit."""
        total = 0
        for host in self.inv.hosts:
            log = self.fleet.ssh_log(host.name)
            total += log.read_text().count("Accepted publickey") if log.exists() else 0
        return total

    def edit_content(self):
        """The same one-line change to the same file, before each push of either side."""
        self.edits += 1
        with self.edited.open("a") as f:
            f.write(f"Benchmark edit {self.edits:03d}.\n")

    # Each run_* does one run of one kind and checks it ran what it should, untimed.

    def run_floor(self) -> float:
        seconds, out = timed(doit_argv(), self.floor_dir)
        if ran_tasks(out):
            raise SystemExit(f"bench: the floor's task was not up to date:\n{out}")
        return seconds

    def run_doit(self, args: list[str], expect: set[str]) -> float:
        seconds, out = timed(doit_argv(*args), self.project)
        host_steps = {t for t in ran_tasks(out) if not t.startswith("deploy:")}
        if host_steps != expect:
            raise SystemExit(f"bench: `doit {' '.join(args)}` ran {sorted(host_steps)}, "
                             f"expected {sorted(expect)}:\n{out}")
        return seconds

    def run_seed(self) -> float:
        return timed(seed_command(self.inv, self.package), self.project, shell=True)[0]

    def rounds(self, kinds: dict[str, tuple[Measure, callable]]):
        """One untimed warm-up round, then `runs` timed rounds; the order rotates each round."""
        names = list(kinds)
        for round_no in range(self.runs + 1):
            shift = round_no % len(names)
            for name in names[shift:] + names[:shift]:
                measure, run = kinds[name]
                before = self.logins()
                seconds = run()
                if round_no:
                    measure.seconds.append(seconds)
                    measure.logins.append(self.logins() - before)
            print(f"  round {round_no or 'warm-up'} done", file=sys.stderr)

    def run(self) -> list[tuple[Measure, Measure | None]]:
        hosts = [h.name for h in self.inv.hosts]
        checks = {f"check:{h}" for h in hosts}
        contents = {f"content:{h}" for h in hosts}

        print("bench: first `doit deploy` (fleet up, build, sync, upgrade, content)",
              file=sys.stderr)
        timed(doit_argv("deploy"), self.project)
        timed(doit_argv(), self.floor_dir)  # the floor's one run that makes its task up to date

        floor = Measure("doit floor: one up-to-date task")
        noop = Measure("no-op `doit deploy` (with its HTTPS check)")
        noop_push = Measure("no-op `doit content` (deploy without check)")
        print("bench: no-op runs", file=sys.stderr)
        self.rounds({
            "floor": (floor, self.run_floor),
            "deploy": (noop, lambda: self.run_doit(["deploy"], checks)),
            "content": (noop_push, lambda: self.run_doit(["content"], set())),
        })

        seed = Measure("seed: `xargs -P 0` rsync -az to 3 hosts")
        change = Measure("one-file change, `doit deploy` (push + check)")
        change_push = Measure("one-file change, `doit content` (push only)")

        def edited(run):
            def run_after_edit():
                self.edit_content()
                return run()
            return run_after_edit

        print("bench: one-file content changes", file=sys.stderr)
        self.rounds({
            "seed": (seed, edited(self.run_seed)),
            "deploy": (change, edited(lambda: self.run_doit(["deploy"], contents | checks))),
            "content": (change_push, edited(lambda: self.run_doit(["content"], contents))),
        })
        return [(floor, None), (noop, floor), (noop_push, floor),
                (seed, None), (change, seed), (change_push, seed)]


# --- report -----------------------------------------------------------------------------------

def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def table(rows: list[tuple[Measure, Measure | None]]) -> str:
    lines = ["| measurement | median | min | SSH logins per run | against | ratio of medians |",
             "|---|---:|---:|---:|---|---:|"]
    for measure, baseline in rows:
        logins = sorted(set(measure.logins))
        against = baseline.label.split(":")[0] if baseline else "(baseline)"
        ratio = f"{measure.median() / baseline.median():.2f}x" if baseline else ""
        lines.append(f"| {measure.label} | {ms(measure.median())} | {ms(min(measure.seconds))} "
                     f"| {'/'.join(map(str, logins))} | {against} | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each kind (default 7)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if os.geteuid() != 0:
        sys.exit("bench: run it as root: the local fleet needs namespaces, mounts and a bridge")

    workdir = Path(tempfile.mkdtemp(prefix="outpost-bench-"))
    bench = Bench(workdir, args.runs)
    try:
        rows = bench.run()
    finally:
        print("bench: `doit fleet:down`", file=sys.stderr)
        down = subprocess.run(doit_argv("fleet:down"), cwd=bench.project, env=doit_env(),
                              capture_output=True, text=True)
        if down.returncode == 0:
            shutil.rmtree(workdir)
        else:
            print(f"bench: fleet:down failed; the project copy stays in {workdir}\n"
                  f"{down.stdout}{down.stderr}", file=sys.stderr)

    print(f"{args.runs} timed runs of each kind after one warm-up round; "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
