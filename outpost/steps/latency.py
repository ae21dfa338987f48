"""`doit latency`: the latency plan (outpost.latency) for the inventory's hosts and map, with
visitors counted on the hosts when [latency] visitors = "logs" (commands.latency's script, one
SSH round trip per host, every host at once), the hosts' health as gdnsd sees it (probe), and
the last check's timings; then the picture in build/latency/. It only reads the hosts."""
from __future__ import annotations

import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from outpost import probe, remote
from outpost.commands import latency as latency_commands
from outpost.errors import OutpostError
from outpost.files import write_atomic
from outpost.latency import inputs, picture
from outpost.latency.report import render
from outpost.latency.visitors import LOGS
from outpost.steps.common import say


def _count(inventory, host) -> dict:
    script = latency_commands.count_script([h.address for h in inventory.hosts])
    result = remote.run_script(host, script, inventory.ssh, step="latency")
    counts, unknown = latency_commands.parse_counts(result.stdout, host.name)
    return {"counts": counts, "unknown": unknown, "at": time.time()}


def count_visitors(inventory) -> tuple[dict[str, dict], list[str]]:
    """Every host's counts, asked at once; a host that can't be asked keeps its last counts
    (said in a line). Returns (counts by host, the hosts counted now)."""
    counted = inputs.kept_counts(inventory)
    with ThreadPoolExecutor(max_workers=len(inventory.hosts)) as pool:
        asked = {h.name: pool.submit(_count, inventory, h) for h in inventory.hosts}
    fresh = []
    for name, future in asked.items():
        try:
            counted[name] = future.result()
            fresh.append(name)
        except OutpostError as error:
            kept = "its last counts are used" if name in counted else "no counts of it kept"
            say(f"latency: {error} ({kept})")
    inputs.keep_counts(inventory, counted)
    return counted, fresh


def _png(svg_path) -> str | None:
    """The PNG beside the SVG, when a converter is installed."""
    png_path = svg_path.with_suffix(".png")
    command = picture.png_command(str(svg_path), str(png_path))
    if command is None:
        return None
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise OutpostError(f"{command[0]}: could not make {png_path}: "
                           f"{done.stderr.strip() or f'exit {done.returncode}'}")
    return str(png_path)


def latency(inventory):
    """Count the visitors (when asked to), ask the hosts' health, and print the plan; write the
    picture to build/latency/map.svg (and .png)."""
    inputs.hosts(inventory)
    inputs.dns_map(inventory)
    counted, fresh = (count_visitors(inventory) if inventory.latency.visitors == LOGS
                      else (None, []))
    rep = inputs.plan(inventory, probe.healthy_hosts(inventory),
                      inputs.visitors(inventory, counted, fresh), inputs.kept_checks(inventory))
    svg_path = inventory.root / inputs.PICTURE
    write_atomic(svg_path, picture.svg(rep).encode())
    png = _png(svg_path)
    shown = inputs.PICTURE.as_posix() + (f" and {inputs.PICTURE.with_suffix('.png').as_posix()}"
                                         if png else "")
    say(render(rep, shown).rstrip("\n"))
