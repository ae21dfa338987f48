"""Benchmark of issues 9 and 19: content and app deploys on the local fleet, on a generated tree
of 2,000 entries (about 8 MB) in the app's format, against the seed's way measured in the same run:

    printf "<host>\\n..." | xargs -P 0 -I {host} rsync -az --delete content/ {host}:<folder>/

- doit's floor (a throwaway dodo.py with one up-to-date task), a no-op `doit deploy` and
  `doit content` (deploy without the check), and the seed's rsync with nothing to send;
- a one-file change: `doit deploy`, `doit content`, the seed;
- a 3,000-file change (every entry edited, 1,000 added or removed): `doit deploy`, the seed;
- an app change (pkgrel bump): `doit deploy` (build, sync, upgrade, check), against the seed's
  rsync of a rebuilt package's repository;
- at 30 hosts: a no-op `doit deploy` (beside the 3-host one) and a one-file change against the
  seed to the same 30 hosts;
- at the world's distances (issue 19): the same 3 hosts with each one's services behind a round
  trip of au 30, ny 200 and fr 280 ms (outpost/fleet/delay.py), the no-op, the one-file,
  3,000-file and app changes, each against the seed under the same delays, and how many round
  trips of the farthest host each costs beyond the same row on the veth fleet.

Each side pushes its own copy of the tree, changed the same way before each of its runs, so
each push carries exactly the change it is meant to: Outpost's `content/` to its releases, the
seed's `seed-content/` to `~deploy/seed-content/` on each host (the same file system as the
releases; rsync --delete into the releases' folder would wreck them).

Every measurement is a real subprocess timed with time.perf_counter; the kinds are interleaved
round by round, so a slow patch of the machine hits all of them. It is not a test: nothing
here judges a timing. It does check that each run did what it is meant to measure (which tasks
ran, how many SSH logins each host's sshd saw), so a number never stands for the wrong thing.

Run as root from the repository:
    .venv/bin/python bench/deploy.py [--runs N] [--large-runs N] [--wan-runs N]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from sites import Measure, Site, after, doit_argv, ran_tasks, rounds, timed

# Addresses and bridges apart from the default fleet's and the tests', so either can run beside.
SMALL = ("outpost-b", {name: f"198.19.88.{11 + i}" for i, name in enumerate(("au", "ny", "fr"))})
LARGE = ("outpost-c", {name: f"198.19.89.{11 + i}" for i, name in enumerate(
    ["au", "ny", "fr"] + [f"h{n:02d}" for n in range(4, 31)])})
WAN = ("outpost-w", {name: f"198.19.93.{11 + i}" for i, name in enumerate(("au", "ny", "fr"))})
# The seed's world: each host's round trip from the deploying machine (Australia), in ms.
WAN_RTT = {"au": 30, "ny": 200, "fr": 280}

FLOOR_DODO = '''\
DOIT_CONFIG = {"default_tasks": ["floor"]}


def task_floor():
    return {"actions": [lambda: None], "file_dep": ["input.txt"]}
'''


# Each kind of row: Outpost's label and the seed's.
PAIRS = {
    "noop": ("no-op `doit deploy` (with its HTTPS check)",
             "seed: rsync to 3 hosts, nothing changed"),
    "one": ("one-file change, `doit deploy` (push + check)",
            "seed: one-file change, rsync to 3 hosts"),
    "many": ("3,000-file change, `doit deploy` (push + check)",
             "seed: 3,000-file change, rsync to 3 hosts"),
    "app": ("app change (pkgrel bump), `doit deploy`",
            "seed: a rebuilt package's repository, rsync to 3 hosts"),
}
WHAT = {"noop": "no-op runs", "one": "one-file changes", "many": "3,000-file changes",
        "app": "app changes"}


def pair(site: Site, what: str) -> tuple[Measure, Measure, dict]:
    """Outpost's and the seed's measure of one kind of row, and the rounds that time them."""
    deploy, seed = (Measure(label) for label in PAIRS[what])
    checks, contents = site.steps("check"), site.steps("login") | site.steps("content")
    app = {"build:noarch", "index:x86_64"} | site.steps("sync") | site.steps("upgrade") | checks
    run_deploy, run_seed = {
        "noop": (lambda: site.run_doit(["deploy"], checks), site.run_seed),
        "one": (after(site.content.one_file, lambda: site.run_doit(["deploy"], contents | checks)),
                after(site.seed.one_file, site.run_seed)),
        "many": (after(site.content.three_thousand_files,
                       lambda: site.run_doit(["deploy"], contents | checks)),
                 after(site.seed.three_thousand_files, site.run_seed)),
        "app": (after(site.bump_app, lambda: site.run_doit(["deploy"], app)),
                after(lambda: site.seed_repo.new_package(), site.run_seed_repo)),
    }[what]
    return deploy, seed, {"seed": (seed, run_seed, site), "deploy": (deploy, run_deploy, site)}


def floor_runner(workdir: Path):
    """doit's floor: a throwaway dodo.py with one up-to-date task; returns its timed run."""
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
    return run_floor


def veth_rows(small: Site, workdir: Path, runs: int) -> tuple[list[tuple], dict]:
    """The veth table's rows, and each pair's measures (the WAN table's no-delay rows)."""
    measured = {what: pair(small, what) for what in PAIRS}
    floor = Measure("doit floor: one up-to-date task")
    noop_push = Measure("no-op `doit content` (deploy without check)")
    one_push = Measure("one-file change, `doit content` (push only)")
    extra = {"noop": {"floor": (floor, floor_runner(workdir), small),
                      "content": (noop_push, lambda: small.run_doit(["content"], set()), small)},
             "one": {"content": (one_push, after(small.content.one_file, lambda: small.run_doit(
                 ["content"], small.steps("login") | small.steps("content"))), small)}}
    for what, (_, _, kinds) in measured.items():
        rounds({**kinds, **extra.get(what, {})}, runs, f"{WHAT[what]}, 3 hosts")
    (noop, seed_noop, _), (one, seed_one, _), (many, seed_many, _), (app, seed_app, _) = (
        measured[what] for what in PAIRS)
    rows = [(floor, None), (noop, floor), (noop, seed_noop), (noop_push, floor),
            (seed_noop, None), (seed_one, None), (one, seed_one), (one_push, seed_one),
            (seed_many, None), (many, seed_many), (seed_app, None), (app, seed_app)]
    return rows, {what: (deploy, seed) for what, (deploy, seed, _) in measured.items()}


def wan_rows(wan: Site, runs: int, near: dict) -> list[tuple]:
    """Each pair at the world's distances: (measure, its baseline, the same row with no delay)."""
    rows = []
    for what in PAIRS:
        deploy, seed, kinds = pair(wan, what)
        rounds(kinds, runs, f"{WHAT[what]}, 3 hosts at their distances")
        near_deploy, near_seed = near[what]
        rows += [(seed, None, near_seed), (deploy, seed, near_deploy)]
    return rows


def large_rows(small: Site, big: Site, runs: int) -> list[tuple]:
    noop3 = Measure("no-op `doit deploy`, 3 hosts")
    noop30 = Measure("no-op `doit deploy`, 30 hosts")
    rounds({"3": (noop3, lambda: small.run_doit(["deploy"], small.steps("check")), small),
            "30": (noop30, lambda: big.run_doit(["deploy"], big.steps("check")), big)},
           runs, "no-op runs, 3 and 30 hosts")
    seed30 = Measure("seed: one-file change, rsync to 30 hosts")
    one30 = Measure("one-file change, `doit deploy`, 30 hosts")
    rounds({"seed": (seed30, after(big.seed.one_file, big.run_seed), big),
            "deploy": (one30, after(big.content.one_file, lambda: big.run_doit(
                ["deploy"], big.steps("login") | big.steps("content") | big.steps("check"))),
                big)},
           runs, "one-file changes, 30 hosts")
    return [(noop3, None), (noop30, noop3), (seed30, None), (one30, seed30)]


def bench(workdir: Path, runs: int, large_runs: int, wan_runs: int) -> tuple[list, list]:
    small = Site(workdir / "small", *SMALL)
    sites = [small]
    try:
        print("bench: first deploy to 3 hosts (fleet up, build, sync, upgrade, content)",
              file=sys.stderr)
        small.bring_up()
        rows, near = veth_rows(small, workdir, runs)
        if large_runs:
            big = Site(workdir / "large", *LARGE)
            sites.append(big)
            print("bench: first deploy to 30 hosts", file=sys.stderr)
            big.bring_up()
            rows += large_rows(small, big, large_runs)
        if not wan_runs:
            return rows, []
        wan = Site(workdir / "wan", *WAN, WAN_RTT)
        sites.append(wan)
        print("bench: first deploy to 3 hosts at their distances", file=sys.stderr)
        wan.bring_up()
        return rows, wan_rows(wan, wan_runs, near)
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
        lines.append(_row(measure, baseline))
    return "\n".join(lines)


def wan_table(rows: list[tuple[Measure, Measure | None, Measure]]) -> str:
    far, rtt_ms = max(WAN_RTT.items(), key=lambda item: item[1])
    lines = ["| measurement | median | min | SSH logins per run | against | ratio of medians "
             f"| round trips of {far} ({rtt_ms} ms) |", "|---|---:|---:|---:|---|---:|---:|"]
    for measure, baseline, near in rows:
        trips = (measure.median() - near.median()) / (rtt_ms / 1000)
        lines.append(f"{_row(measure, baseline)} {trips:.1f} |")
    return "\n".join(lines)


def _row(measure: Measure, baseline: Measure | None) -> str:
    logins = sorted(set(measure.logins))
    against = baseline.label if baseline else "(baseline)"
    ratio = f"{measure.median() / baseline.median():.2f}x" if baseline else ""
    return (f"| {measure.label} | {ms(measure.median())} | {ms(min(measure.seconds))} "
            f"| {'/'.join(map(str, logins))} | {against} | {ratio} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each kind at 3 hosts "
                                                           "(default 7)")
    parser.add_argument("--large-runs", type=int, default=5,
                        help="timed runs of each kind at 30 hosts (default 5; 0 skips them)")
    parser.add_argument("--wan-runs", type=int, default=5,
                        help="timed runs of each kind at the world's distances (default 5; "
                             "0 skips them)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.large_runs < 0 or args.wan_runs < 0:
        parser.error("--runs must be at least 1, --large-runs and --wan-runs at least 0")
    if os.geteuid() != 0:
        sys.exit("bench: run it as root: the local fleet needs namespaces, mounts and a bridge")

    workdir = Path(tempfile.mkdtemp(prefix="outpost-bench-"))
    rows, wan = bench(workdir, args.runs, args.large_runs, args.wan_runs)
    print(f"{args.runs} timed runs of each kind at 3 hosts, {args.large_runs} at 30, "
          f"{args.wan_runs} at the world's distances, after one warm-up round each; "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}\n")
    print(table(rows))
    if wan:
        rtts = ", ".join(f"{name} {rtt} ms" for name, rtt in WAN_RTT.items())
        print(f"\nAt the world's distances (round trips: {rtts}); the last column is "
              "(median - the same row's median on the veth fleet) / the farthest host's round "
              f"trip:\n\n{wan_table(wan)}")


if __name__ == "__main__":
    main()
