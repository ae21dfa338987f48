"""Outpost's pipeline, as doit tasks.

    build:<arch> -> index:<arch> -> bootstrap:<host> -> sync:<host> -> upgrade:<host>
    -> config:<host> -> content:<host> and dns:<host> -> check:<host>
    (services:<host>, after upgrade:<host> and dns:<host>, starts what is stopped; check waits)

`doit rollback` switches every host back to its previous content release.

`doit deploy` runs it all (it is the default); `doit list --status` shows what would run;
`doit info TASK` says why. The inventory is inventory.toml, or the file OUTPOST_INVENTORY names.
"""
import os
import sys

from pathlib import Path

from outpost import depfile, interrupt, lock
from outpost import inventory as inventory_file
from outpost.errors import OutpostError
from outpost.report import reporter_for
from outpost.steps.build import broken_template
from tasks import (acme, bootstrap, build, certificates, check, config, content, deploy, dns, fleet,
                   latency, login, services, sync, upgrade)

try:
    INVENTORY = inventory_file.load(os.environ.get("OUTPOST_INVENTORY", "inventory.toml"))
    # Read before doit opens it, so damage is one line instead of doit's traceback.
    depfile.check(Path(depfile.NAME))
except OutpostError as err:
    # One clear line instead of doit's "error loading dodo" traceback.
    sys.exit(f"outpost: {err}")

# Said by every command (list included); only the steps that need the package stop.
if (_BROKEN := broken_template(INVENTORY)) is not None:
    sys.stderr.write(f"outpost: {_BROKEN}\n  (build, index, upgrade and rollback:app stop until "
                     "it is fixed; the rest of the pipeline, check and fleet:down still run)\n")

# A run takes the project lock when it first changes something (outpost.taskutil.action).
lock.use(INVENTORY.root / "build" / "outpost.lock")
interrupt.install()

DOIT_CONFIG = {
    "default_tasks": ["deploy"],
    "verbosity": 2,
    # Hosts run side by side (threads: a Fabric connection can't cross processes), and one
    # failing host doesn't stop the others.
    "num_process": max(2, len(INVENTORY.hosts)),
    "par_type": "thread",
    "continue": True,
    # A plain `doit clean` cleans what deploy depends on: packages, indexes, staging.
    "cleandep": True,
    # doit's console output, plus the health check's table and the latency line at the end.
    "reporter": reporter_for(INVENTORY),
    # The backend that survives crashes and a reader beside a writer: see outpost/depfile.py.
    "backend": depfile.BACKEND,
    "dep_file": depfile.NAME,
}


def _tasks(make):
    """Run a task generator from tasks/; a user error (a broken template, say) is one line."""
    try:
        yield from make(INVENTORY)
    except OutpostError as err:
        sys.exit(f"outpost: {err}")


def task_keygen():
    """Make the repository signing key, only when none exists."""
    return build.keygen(INVENTORY)


def task_build():
    """Build the packages, once per target arch."""
    yield from _tasks(build.packages)


def task_index():
    """Put the packages in the repository and sign its index, per arch."""
    yield from _tasks(build.index)


def task_fleet():
    """The built-in local fleet: fleet:up starts its hosts, fleet:down stops them."""
    yield from _tasks(fleet.fleet)


def task_certificate():
    """The site's TLS certificate: on each host from the cert host (ACME), or the local CA's."""
    if INVENTORY.acme is not None:
        yield from _tasks(acme.certificate)
    else:
        yield {"basename": "certificate", **certificates.certificate(INVENTORY)}


def task_client_certificate():
    """The check's TLS client certificate, from the local CA: nginx shows /_health's details
    only to it."""
    return {"basename": "client-certificate", **certificates.client_certificate(INVENTORY)}


def task_acme():
    """The cert host: set up lego, and have it issue the site's certificate."""
    yield from _tasks(acme.acme_tasks)


def task_gate():
    """Each web host's lego-gate: what the cert host may do there."""
    yield from _tasks(acme.gate)


def task_bootstrap():
    """Prepare each host: base packages, nginx enabled, repository key and list."""
    yield from _tasks(bootstrap.bootstrap)


def task_config():
    """Render each host's files from templates/ and switch them in after nginx -t."""
    yield from _tasks(config.config)


def task_sync():
    """Copy the repository and its public key to each host."""
    yield from _tasks(sync.sync)


def task_upgrade():
    """Upgrade the packages on each host and restart their services."""
    yield from _tasks(upgrade.upgrade)


def task_geoip():
    """Write the local fleet's test country database."""
    yield from _tasks(dns.fleet_database)


def task_dns():
    """Switch in each host's GeoDNS config, zone and database (gdnsd), after gdnsd checkconf."""
    yield from _tasks(dns.dns)


def task_login():
    """Log in to each host whose content is to be pushed, at the start of the run."""
    yield from _tasks(login.login)


def task_content():
    """Push the content to each host as a new release, and switch to it."""
    yield from _tasks(content.content)


def task_services():
    """Start the services each host should run that are stopped (the app, nginx, gdnsd)."""
    yield from _tasks(services.services)


def task_check():
    """Check over HTTPS that each host serves the app and the content just pushed."""
    yield from _tasks(check.check)


def task_deploy():
    """The whole pipeline for every host (deploy:<host> for one)."""
    yield from _tasks(deploy.deploy)


def task_latency():
    """The latency plan: what visitors wait for, the best map, where the next host should go."""
    yield from _tasks(latency.latency)


def task_rollback():
    """Go back one step: rollback:app (previous app version, gated), rollback:content."""
    yield from _tasks(upgrade.rollback_app)
    yield from _tasks(content.rollback)
