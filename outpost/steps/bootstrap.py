"""Root's one-time setup of a host (commands.bootstrap builds it): run as root, or checked and
written for the operator to run."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from outpost import remote
from outpost.commands import bootstrap as bootstrap_module
from outpost.errors import OutpostError
from outpost.files import write_if_changed
from outpost.steps.common import report


def _read_public_key(inventory) -> str:
    try:
        return inventory.repository.public_key.read_text()
    except OSError as error:
        raise OutpostError(f"{inventory.repository.public_key}: cannot read the repository's "
                           f"public key: {error.strerror}; run `doit keygen`") from None


def bootstrap_file(inventory, host) -> Path:
    """Where the host's bootstrap script is written, for an operator who runs it by hand."""
    return inventory.root / "build" / "bootstrap" / f"{host.name}.sh"


def bootstrap(inventory, host, plan: bootstrap_module.Plan):
    """Root's one-time setup (commands.bootstrap): run as root with [ssh] bootstrap_identity,
    else only checked, the script written for the operator to run on the host as root. The
    plan's public key is read now: `doit keygen` may have just made it."""
    plan = dataclasses.replace(plan, public_key_pem=_read_public_key(inventory))
    script = bootstrap_module.script(plan)
    write_if_changed(bootstrap_file(inventory, host), script)
    ssh = inventory.ssh
    if ssh.bootstrap_identity is not None:
        root = dataclasses.replace(host, user="root")
        # Root's login is never kept (keep_connection): a kept one would make whoever can
        # reach its socket root on the host.
        root_ssh = dataclasses.replace(ssh, identity=ssh.bootstrap_identity, keep_connection=0)
        report(host, remote.run_script(root, script, root_ssh, step="bootstrap").stdout)
        return
    result = remote.run_script(host, bootstrap_module.check_script(plan), ssh,
                               step="bootstrap", ok_exits=(0, bootstrap_module.STALE))
    if result.exited == bootstrap_module.STALE:
        address = f"[{host.address}]" if ":" in host.address else host.address
        raise OutpostError(
            f"host {host.name}: needs its bootstrap, as root ({result.stdout.strip()}, wanted "
            f"{plan.digest()}). Run {bootstrap_file(inventory, host)} on it as root, e.g.\n"
            f"  ssh -p {host.port} root@{address} sh < {bootstrap_file(inventory, host)}\n"
            f"or set bootstrap_identity in [ssh] to root's key for Outpost to run it.")


def bootstrap_settings(plan: bootstrap_module.Plan, inventory) -> dict:
    """A bootstrap's doit config_changed value: its plan, still without the public key (a
    file_dep, and not there before `doit keygen`); cheap: no template rendered."""
    return {"plan": plan.digest(),
            "as_root": inventory.ssh.bootstrap_identity is not None}
