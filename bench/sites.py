"""The benchmark's sites (bench/deploy.py): project copies with their own local fleets, the
generated content and the seed's copies of it, and how each run is timed and checked."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
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
SEED_DEST = "seed-content"  # in the deploy user's home on each host
SEED_REPO = "seed-repo"  # the same, for the seed's package repository
TEMPLATE = "cports-overlay/user/linkedlist/template.py"


# --- what to run (pure) -----------------------------------------------------------------------

def fleet_inventory_text(text: str, bridge: str, addresses: dict[str, str],
                         rtt_ms: dict[str, int] | None = None) -> str:
    """The default inventory with these hosts (in place of its own) on their own bridge, at
    these round trips (none by default). The first host is GeoDNS's default and the map names
    no other; certificates come from the local CA (lego and pebble are measured on their own,
    README.md "Certificates")."""
    from helpers import without_acme
    text = without_acme(text)
    head = text[:text.index("\n[[hosts]]\n") + 1]  # the table, not a comment naming it
    if 'state = "build/fleet"' not in head:
        raise SystemExit("bench: inventory.toml has no [fleet] state to give a bridge to")
    fleet = f'state = "build/fleet"\nbridge = "{bridge}"'
    if rtt_ms:
        fleet += "\nrtt_ms = { " + ", ".join(f"{k} = {v}" for k, v in rtt_ms.items()) + " }"
    head = head.replace('state = "build/fleet"', fleet)
    head = re.sub(r'\ndefault = "[^"]+"', f'\ndefault = "{next(iter(addresses))}"', head)
    head = re.sub(r"\n\[dns\.map\]\n(?:[A-Z\"/]+ = \[[^\n]*\]\n)+", "\n", head)
    return head + "".join(f'[[hosts]]\nname = "{name}"\naddress = "{address}"\n'
                          f'arch = "x86_64"\nregion = "bench"\n\n'
                          for name, address in addresses.items())


def seed_command(inv, source: Path, dest: str = SEED_DEST) -> str:
    """The seed's content push, with the fleet's addresses for its DNS names and the pipeline's
    ssh options (pinned known_hosts, deploy key), so both sides pay for the same SSH."""
    first = inv.hosts[0]  # fleet hosts share one user and port (fleet.from_inventory checks)
    ssh = shlex.join(["ssh", *commands.ssh_options(inv.ssh, first)])
    hosts = "".join(f"{host.address}\\n" for host in inv.hosts)
    return (f'printf "{hosts}" | xargs -P 0 -I {{host}} rsync -az --delete -e {shlex.quote(ssh)} '
            f'{shlex.quote(str(source))}/ {first.user}@{{host}}:{dest}/')


def doit_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "doit", *args]


def bumped(template: str) -> str:
    """A cports template with its pkgrel one higher: an app change."""
    return re.sub(r"^pkgrel = (\d+)", lambda m: f"pkgrel = {int(m.group(1)) + 1}", template,
                  flags=re.M)


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


class SeedRepo:
    """The seed's side of an app change: a package repository as a build leaves it, one package
    and its index, pushed by the same rsync. A change is a new package (another name, the real
    package's size) and a new index. The seed's pyinfra would then upgrade the hosts: that part
    is not measured (the seed's text doesn't show it)."""

    def __init__(self, folder: Path, built: Path):
        folder.mkdir()
        self.folder = folder
        self.package_size = max(p.stat().st_size for p in built.glob("*.apk"))
        # APKINDEX.tar.gz and/or Packages.adb, as the builder writes them.
        self.indexes = {p.name: p.stat().st_size for p in built.iterdir() if p.suffix != ".apk"}
        self.changes = 0
        self.new_package()

    def new_package(self):
        self.changes += 1
        for old in self.folder.glob("*.apk"):
            old.unlink()
        (self.folder / f"linkedlist-seed-r{self.changes}.apk").write_bytes(
            os.urandom(self.package_size))
        for name, size in self.indexes.items():
            (self.folder / name).write_bytes(os.urandom(size))


class Site:
    """A project copy with its own fleet, its generated content and the seed's copy of it."""

    def __init__(self, workdir: Path, bridge: str, addresses: dict[str, str],
                 rtt_ms: dict[str, int] | None = None):
        workdir.mkdir()
        self.workdir = workdir
        self.project = copy_project(workdir)
        inv_file = self.project / "inventory.toml"
        inv_file.write_text(fleet_inventory_text(inv_file.read_text(), bridge, addresses,
                                                 rtt_ms))
        shutil.rmtree(self.project / "content")
        self.content = Tree(self.project / "content")
        self.seed = Tree(workdir / "seed-content")
        self.inv = inventory.load(inv_file)
        self.fleet = fleet.from_inventory(self.inv)
        self.hosts = [h.name for h in self.inv.hosts]

    def bring_up(self):
        timed(doit_argv("deploy"), self.project)
        self.run_seed()  # the seed's first, full copies
        arch = self.inv.hosts[0].arch
        self.seed_repo = SeedRepo(self.workdir / "seed-repo", self.project / "build/repo" / arch)
        self.run_seed_repo()

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

    def run_seed_repo(self) -> float:
        return timed(seed_command(self.inv, self.seed_repo.folder, SEED_REPO), self.project,
                     shell=True)[0]

    def bump_app(self):
        template = self.project / TEMPLATE
        template.write_text(bumped(template.read_text()))

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

