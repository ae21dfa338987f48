"""config: the web host's files rendered from templates/ into build/hosts/<host>/, then
staged, checked by nginx -t, switched and reloaded by the host's helper in one round trip
(commands.config builds the files and the bundle)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from outpost import probe, render
from outpost.commands import config as config_commands
from outpost.files import write_if_changed
from outpost.steps.common import apply_bundle, report


def hosts_dir(inventory, host) -> Path:
    """Where a host's rendered files are kept here, at their paths on the host."""
    return inventory.root / "build" / "hosts" / host.name


def render_host(inventory, host, out_dir: Path) -> list[Path]:
    """Render every file of host_files into out_dir (e.g. build/hosts/<host>) at its path on
    the host. Renders all before writing any, so a template error leaves the old set whole.
    Returns the local paths, in host_files order."""
    context = config_commands.host_context(inventory, host)
    files = [f for f in config_commands.host_files(inventory, host) if f.template is not None]
    texts = [render.render(f.template, context) for f in files]
    paths = [f.local_path(out_dir) for f in files]
    for path, text in zip(paths, texts):
        write_if_changed(path, text)
    return paths


def config(inventory, host):
    """Render the host's files, then have the helper stage, check (nginx -t), switch and
    reload them in one round trip (commands.bundle)."""
    out_dir = hosts_dir(inventory, host)
    render_host(inventory, host, out_dir)
    files = [dataclasses.replace(f, content=f.local_path(out_dir).read_bytes())
             for f in config_commands.host_files(inventory, host)]
    report(host, apply_bundle(inventory, host, config_commands.config_bundle(host, files),
                              "config").stdout)
    probe.drop_connections(inventory, host)  # nginx may have reloaded: ask it afresh
