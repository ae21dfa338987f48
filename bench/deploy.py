"""Benchmark of issue 9: content deploys on the local fleet, on a generated tree of 2,000
entries (about 8 MB) in the app's format, against the seed's way measured in the same run:

    printf "<host>\\n..." | xargs -P 0 -I {host} rsync -az --delete content/ {host}:<folder>/

- doit's floor (a throwaway dodo.py with one up-to-date task), a no-op `doit deploy` and
  `doit content` (deploy without the check), and the seed's rsync with nothing to send;
- a one-file change: `doit deploy`, `doit content`, the seed;
- a 3,000-file change (every entry edited, 1,000 added or removed): `doit deploy`, the seed;
- at 30 hosts: a no-op `doit deploy` (beside the 3-host one) and a one-file change against the
  seed to the same 30 hosts.

Each side pushes its own copy of the tree, changed the same way before each of its runs, so
each push carries exactly the change it is meant to: Outpost's `content/` to its releases, the
seed's `seed-content/` to `~deploy/seed-content/` on each host (the same file system as the
releases; rsync --delete into the releases' folder would wreck them).

Every measurement is a real subprocess timed with time.perf_counter; the kinds are interleaved
round by round, so a slow patch of the machine hits all of them. It is not a test: nothing
here judges a timing. It does check that each run did what it is meant to measure (which tasks
ran, how many SSH logins each host's sshd saw), so a number never stands for the wrong thing.

Run as root from the repository: .venv/bin/python bench/deploy.py [--runs N] [--large-runs N]
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
from content_tree import add_entries, edit_all, entry_path, make_tree  # noqa: E402
from outpost import fleet, inventory  # noqa: E402
from outpost.commands import base as commands  # noqa: E402

ENTRIES = 2000
# Addresses and bridges apart from the default fleet's and the tests', so either can run beside.
SMALL = ("outpost-b", {name: f"198.19.88.{11 + i}" for i, name in enumerate(("au", "ny", "fr"))})
LARGE = ("outpost-c", {name: f"198.19.89.{11 + i}" for i, name in enumerate(
    ["au", "ny", "fr"] + [f"h{n:02d}" for n in range(4, 31)])})
SEED_DEST = "seed-content"  # in the deploy user's home on each host

FLOOR_DODO = '''\
DOIT_CONFIG = {"default_tasks": ["floor"]}


def task_floor():
    return {"actions": [lambda: None], "file_dep": ["input.txt"]}
'''


# --- what to run (pure) -----------------------------------------------------------------------

def fleet_inventory_text(text: str, bridge: str, addresses: dict[str, str]) -> str:
    """The default inventory with these hosts (in place of its own) on their own bridge. The
    first host is GeoDNS's default and the map names no other; certificates come from the
    local CA (lego and pebble are measured on their own, README.md "Certificates")."""
    from helpers import without_acme
    text = without_acme(text)
    head = text[:text.index("\n[[hosts]]\n") + 1]  # the table, not a comment naming it
    if 'state = "build/fleet"' not in head:
        raise SystemExit("bench: inventory.toml has no [fleet] state to give a bridge to")
    head = head.replace('state = "build/fleet"', f'state = "build/fleet"\nbridge = "{bridge}"')
    head = re.sub(r'\ndefault = "[^"]+"', f'\ndefault = "{next(iter(addresses))}"', head)
    head = re.sub(r"\n\[dns\.map\]\n(?:[A-Z\"/]+ = \[[^\n]*\]\n)+", "\n", head)
    return head + "".join(f'[[hosts]]\nname = "{name}"\naddress = "{address}"\n'
                          f'arch = "x86_64"\nregion = "bench"\n\n'
                          for name, address in addresses.items())


def seed_command(inv, source: Path) -> str:
    """The seed's content push, with the fleet's addresses for its DNS names and the pipeline's
    ssh options (pinned known_hosts, deploy key), so both sides pay for the same SSH."""
    first = inv.hosts[0]  # fleet hosts share one user and port (fleet.from_inventory checks)
    ssh = shlex.join(["ssh", *commands.ssh_options(inv.ssh, first)])
    hosts = "".join(f"{host.address}\\n" for host in inv.hosts)
    return (f'printf "{hosts}" | xargs -P 0 -I {{host}} rsync -az --delete -e {shlex.quote(ssh)} '
            f'{shlex.quote(str(source))}/ {first.user}@{{host}}:{SEED_DEST}/')


def doit_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "doit", *args]


def ran_tasks(output: str) -> set[str]:
    """Tasks doit ran: its ".  name" lines."""
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
                          text=True, timeout=900)
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


class Tree:
    """One side's copy of the content, and the changes it goes through."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.changes = 0
        make_tree(folder, entries=ENTRIES)

    def one_file(self):
        self.changes += 1
        with entry_path(self.folder, 0).open("a") as f:
            f.write(f"Benchmark edit {self.changes:03d}.\n")

    def three_thousand_files(self):
        """All 2,000 entries edited, and 1,000 more added (or, every other time, removed)."""
        self.changes += 1
        edit_all(self.folder, f" (edit {self.changes})")
        extra = [entry_path(self.folder, n) for n in range(ENTRIES, ENTRIES + 1000)]
        if extra[0].exists():
            for path in extra:
                path.unlink()
        else:
            add_entries(self.folder, ENTRIES, 1000)


class Site:
    """A project copy with its own fleet, its generated content and the seed's copy of it."""

    def __init__(self, workdir: Path, bridge: str, addresses: dict[str, str]):
        workdir.mkdir()
        self.project = copy_project(workdir)
        inv_file = self.project / "inventory.toml"
        inv_file.write_text(fleet_inventory_text(inv_file.read_text(), bridge, addresses))
        shutil.rmtree(self.project / "content")
        self.content = Tree(self.project / "content")
        self.seed = Tree(workdir / "seed-content")
        self.inv = inventory.load(inv_file)
        self.fleet = fleet.from_inventory(self.inv)
        self.hosts = [h.name for h in self.inv.hosts]

    def bring_up(self):
        timed(doit_argv("deploy"), self.project)
        self.run_seed()  # the seed's first, full copy

    def logins(self) -> int:
        """SSH logins all hosts' sshd accepted so far: counted on the host side, not by doit."""
        total = 0
        for name in self.hosts:
            log = self.fleet.ssh_log(name)
            total += log.read_text().count("Accepted publickey") if log.exists() else 0
        return total

    def run_doit(self, args: list[str], expect: set[str]) -> float:
        seconds, out = timed(doit_argv(*args), self.project)
        host_steps = {t for t in ran_tasks(out) if not t.startswith("deploy:")}
        if host_steps != expect:
            raise SystemExit(f"bench: `doit {' '.join(args)}` ran {sorted(host_steps)}, "
                             f"expected {sorted(expect)}:\n{out}")
        return seconds

    def run_seed(self) -> float:
        return timed(seed_command(self.inv, self.seed.folder), self.project, shell=True)[0]

    def steps(self, step: str) -> set[str]:
        return {f"{step}:{name}" for name in self.hosts}

    def down(self, workdir: Path) -> bool:
        down = subprocess.run(doit_argv("fleet:down"), cwd=self.project, env=doit_env(),
                              capture_output=True, text=True)
        if down.returncode != 0:
            print(f"bench: fleet:down failed; the project copy stays in {workdir}\n"
                  f"{down.stdout}{down.stderr}", file=sys.stderr)
        return down.returncode == 0


def rounds(kinds: dict[str, tuple[Measure, callable]], runs: int, what: str):
    """One untimed warm-up round, then `runs` timed rounds; the order rotates each round."""
    print(f"bench: {what}", file=sys.stderr)
    names = list(kinds)
    for round_no in range(runs + 1):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            measure, run, site = kinds[name]
            before = site.logins()
            seconds = run()
            if round_no:
                measure.seconds.append(seconds)
                measure.logins.append(site.logins() - before)
        print(f"  round {round_no or 'warm-up'} done", file=sys.stderr)


def after(change, run):
    def run_after_change():
        change()
        return run()
    return run_after_change


def bench(workdir: Path, runs: int, large_runs: int, large: bool) -> list[tuple]:
    small = Site(workdir / "small", *SMALL)
    sites = [small]
    try:
        print("bench: first deploy to 3 hosts (fleet up, build, sync, upgrade, content)",
              file=sys.stderr)
        small.bring_up()
        floor_dir = workdir / "floor"
        floor_dir.mkdir()
        (floor_dir / "dodo.py").write_text(FLOOR_DODO)
        (floor_dir / "input.txt").write_text("an input that never changes\n")
        timed(doit_argv(), floor_dir)  # the floor's one run that makes its task up to date

        def run_floor():
            seconds, out = timed(doit_argv(), floor_dir)
            if ran_tasks(out):
                raise SystemExit(f"bench: the floor's task was not up to date:\n{out}")
            return seconds

        checks, contents = small.steps("check"), small.steps("content")
        floor = Measure("doit floor: one up-to-date task")
        noop = Measure("no-op `doit deploy` (with its HTTPS check)")
        noop_push = Measure("no-op `doit content` (deploy without check)")
        seed_noop = Measure("seed: rsync to 3 hosts, nothing changed")
        rounds({"floor": (floor, run_floor, small),
                "deploy": (noop, lambda: small.run_doit(["deploy"], checks), small),
                "content": (noop_push, lambda: small.run_doit(["content"], set()), small),
                "seed": (seed_noop, small.run_seed, small)}, runs, "no-op runs, 3 hosts")

        seed_one = Measure("seed: one-file change, rsync to 3 hosts")
        one = Measure("one-file change, `doit deploy` (push + check)")
        one_push = Measure("one-file change, `doit content` (push only)")
        rounds({"seed": (seed_one, after(small.seed.one_file, small.run_seed), small),
                "deploy": (one, after(small.content.one_file,
                                      lambda: small.run_doit(["deploy"], contents | checks)),
                           small),
                "content": (one_push, after(small.content.one_file,
                                            lambda: small.run_doit(["content"], contents)),
                            small)}, runs, "one-file changes, 3 hosts")

        seed_many = Measure("seed: 3,000-file change, rsync to 3 hosts")
        many = Measure("3,000-file change, `doit deploy` (push + check)")
        rounds({"seed": (seed_many, after(small.seed.three_thousand_files, small.run_seed),
                         small),
                "deploy": (many, after(small.content.three_thousand_files,
                                       lambda: small.run_doit(["deploy"], contents | checks)),
                           small)}, runs, "3,000-file changes, 3 hosts")
        rows = [(floor, None), (noop, floor), (noop, seed_noop), (noop_push, floor),
                (seed_noop, None), (seed_one, None), (one, seed_one), (one_push, seed_one),
                (seed_many, None), (many, seed_many)]
        if not large:
            return rows

        big = Site(workdir / "large", *LARGE)
        sites.append(big)
        print("bench: first deploy to 30 hosts", file=sys.stderr)
        big.bring_up()
        noop3 = Measure("no-op `doit deploy`, 3 hosts")
        noop30 = Measure("no-op `doit deploy`, 30 hosts")
        rounds({"3": (noop3, lambda: small.run_doit(["deploy"], checks), small),
                "30": (noop30, lambda: big.run_doit(["deploy"], big.steps("check")), big)},
               large_runs, "no-op runs, 3 and 30 hosts")
        seed30 = Measure("seed: one-file change, rsync to 30 hosts")
        one30 = Measure("one-file change, `doit deploy`, 30 hosts")
        rounds({"seed": (seed30, after(big.seed.one_file, big.run_seed), big),
                "deploy": (one30, after(big.content.one_file, lambda: big.run_doit(
                    ["deploy"], big.steps("content") | big.steps("check"))), big)},
               large_runs, "one-file changes, 30 hosts")
        return rows + [(noop3, None), (noop30, noop3), (seed30, None), (one30, seed30)]
    finally:
        print("bench: `doit fleet:down`", file=sys.stderr)
        if all([site.down(workdir) for site in sites]):
            shutil.rmtree(workdir)


# --- report -----------------------------------------------------------------------------------

def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def table(rows: list[tuple[Measure, Measure | None]]) -> str:
    lines = ["| measurement | median | min | SSH logins per run | against | ratio of medians |",
             "|---|---:|---:|---:|---|---:|"]
    for measure, baseline in rows:
        logins = sorted(set(measure.logins))
        against = baseline.label if baseline else "(baseline)"
        ratio = f"{measure.median() / baseline.median():.2f}x" if baseline else ""
        lines.append(f"| {measure.label} | {ms(measure.median())} | {ms(min(measure.seconds))} "
                     f"| {'/'.join(map(str, logins))} | {against} | {ratio} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each kind at 3 hosts "
                                                           "(default 7)")
    parser.add_argument("--large-runs", type=int, default=5,
                        help="timed runs of each kind at 30 hosts (default 5; 0 skips them)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.large_runs < 0:
        parser.error("--runs must be at least 1, --large-runs at least 0")
    if os.geteuid() != 0:
        sys.exit("bench: run it as root: the local fleet needs namespaces, mounts and a bridge")

    workdir = Path(tempfile.mkdtemp(prefix="outpost-bench-"))
    rows = bench(workdir, args.runs, args.large_runs, args.large_runs > 0)
    print(f"{args.runs} timed runs of each kind at 3 hosts, {args.large_runs} at 30, after one "
          f"warm-up round; {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
