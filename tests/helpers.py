"""Helpers for tests that drive real doit runs in a subprocess."""
import os
import re
import subprocess
import sys
import time


def run_doit(project, *args, env=None, check=True):
    """Run real doit in a subprocess, in the project copy. Returns the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if k != "OUTPOST_INVENTORY"}
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=project, env=full_env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def ran_tasks(output: str) -> list[str]:
    """Task names doit ran ('.  name' lines), as opposed to up-to-date ones ('-- name')."""
    return sorted(line[3:].strip() for line in output.splitlines() if line.startswith(".  "))


def template_version(project) -> str:
    """The version the linkedlist template builds ("2.0.12-r1"), read from its text."""
    text = (project / "cports-overlay/user/linkedlist/template.py").read_text()
    ver = re.search(r'^pkgver = "(.+)"', text, re.M).group(1)
    rel = re.search(r"^pkgrel = (\d+)", text, re.M).group(1)
    return f"{ver}-r{rel}"


def fleet_project(parent, addresses: dict, bridge: str):
    """A project copy whose inventory puts the local fleet on its own addresses and bridge,
    so several fleets (a developer's, each test module's) can run at once."""
    from conftest import copy_project

    project = copy_project(parent)
    text = moved_fleet(project.joinpath("inventory.toml").read_text(), addresses, bridge)
    (project / "inventory.toml").write_text(text)
    return project


def stop_fleet_after(request, project):
    """After the module, `doit fleet:down` as a user runs it, and again if it could not stop
    every host (a host slow to die is named, and the second run finishes). Then the whole fleet
    as the inventory has it NOW, before the tests change it (web hosts, cert host, ACME
    server), must be gone, with its veths and bridge: whatever is left is stopped directly and
    the teardown fails, naming it."""
    from outpost import fleet, inventory

    inv = inventory.load(project / "inventory.toml")

    def stop():
        runs = [run_doit(project, "fleet:down", check=False)]
        if runs[0].returncode != 0:
            runs.append(run_doit(project, "fleet:down", check=False))
        left = fleet.leftovers(inv)
        if left:
            fleet.from_inventory(inv).down()
            said = "".join(run.stdout + run.stderr for run in runs)
            raise AssertionError(f"`doit fleet:down` left {', '.join(left)}:\n{said}")
    request.addfinalizer(stop)


def deployed_site(tmp_path_factory, request, label: str, addresses: dict, bridge: str,
                  prepare=None):
    """A test module's own fleet (fleet_project), deployed: (project, inventory, fleet).
    `prepare(project)` runs before the deploy. The whole fleet goes down after the module
    (stop_fleet_after)."""
    from outpost import fleet, inventory

    project = fleet_project(tmp_path_factory.mktemp(label), addresses, bridge)
    stop_fleet_after(request, project)
    if prepare is not None:
        prepare(project)
    run_doit(project, "deploy")
    inv = inventory.load(project / "inventory.toml")
    return project, inv, fleet.from_inventory(inv)


def moved_fleet(text: str, addresses: dict, bridge: str) -> str:
    """The default inventory's text with the web hosts at `addresses` and every other fleet
    address (cert host, ACME server, its URLs) moved into the same /24, on `bridge`."""
    new_net = next(iter(addresses.values())).rsplit(".", 1)[0] + "."
    for name, address in addresses.items():
        text, found = re.subn(rf'(name = "{name}"\naddress = )"[^"]+"', rf'\1"{address}"', text)
        assert found == 1, f"inventory.toml has no host {name!r}"
    text = text.replace("198.18.0.", new_net)
    return text.replace('state = "build/fleet"', f'state = "build/fleet"\nbridge = "{bridge}"')


def wait_for(condition, what, timeout=20.0):
    """Poll until condition() is truthy and return it; the timeout only bounds a hung test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def without_acme(text: str) -> str:
    """An inventory's text with its [acme] and [cert_host] tables and the fleet's ACME server
    taken out: certificates from the local CA, the explicit offline choice."""
    text = re.sub(r"\n\[acme\]\n.*?(?=\n\[\[?[a-z_]+\]\]?\n)", "\n", text, flags=re.S)
    text = re.sub(r"\n\[cert_host\]\n.*?(?=\n\[\[?[a-z_]+\]\]?\n)", "\n", text, flags=re.S)
    return re.sub(r"\n(#[^\n]*\n)*acme_server = [^\n]*", "", text)


def load_app():
    """linkedlistd (a script without .py) imported as a module, to call its functions."""
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "cports-overlay/user/linkedlist/files/linkedlistd"
    loader = importlib.machinery.SourceFileLoader("linkedlistd", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module
