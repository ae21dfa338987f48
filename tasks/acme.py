"""Certificates from ACME: the cert host set up, each web host's lego-gate, the certificate
issued on the cert host, then each web host made to serve it (before config:<host>, whose nginx
reads it)."""
from doit.tools import config_changed

from outpost.commands import acme
from outpost.steps import acme as acme_step
from outpost.steps.common import host_marker
from outpost.render import TEMPLATES
from outpost.taskutil import action, files_under, remove


def acme_tasks(inventory):
    if inventory.acme is None:
        return
    templates = files_under(TEMPLATES / "acme")
    cert_host = inventory.acme.cert_host
    yield {
        "name": "setup",
        "doc": f"Set up the cert host {cert_host.name}: lego, its scripts, the daily renewal",
        "actions": [action(acme_step.acme_setup, inventory)],
        "file_dep": templates + [str(inventory.ssh.known_hosts)]
        + ([str(inventory.acme.server_ca)] if inventory.acme.server_ca else []),
        "uptodate": [config_changed(acme.acme_context(inventory)),
                     lambda task, values: acme_step.lego_key_unchanged(inventory, values)],
        "task_dep": [f"bootstrap:{cert_host.name}"],
        "clean": [remove(acme_step.acme_dir(inventory))],
    }
    yield {
        "name": "issue",
        "doc": f"Have lego on {cert_host.name} get the certificate for "
               f"{', '.join(acme.names(inventory))}, unless it has one",
        "actions": [action(acme_step.acme_issue, inventory)],
        "targets": [str(acme_step.issued_certificate(inventory))],
        "uptodate": [config_changed({"names": acme.names(inventory),
                                     "directory": inventory.acme.directory,
                                     "email": inventory.acme.email}),
                     lambda task, values: acme_step.acme_issue_is_current(inventory, values)],
        "task_dep": ["acme:setup"],
        # Only when it must issue: the nameservers must then hold challenges. As a setup and
        # not a task_dep, a host that is down later blocks no other host's certificate.
        "setup": issue_setup(inventory),
    }


def issue_setup(inventory) -> list[str]:
    """What must be in place before lego asks for a certificate: with the site's own
    nameservers, each one's gdnsd and lego-gate; with Gcore, the map on Gcore."""
    if inventory.dns is not None and inventory.dns.provider == "gcore":
        return ["dns:gcore"]
    dns = ["dns"] if inventory.dns is not None else []
    return [f"{step}:{host.name}" for host in inventory.hosts for step in (*dns, "gate")]


def gate(inventory):
    if inventory.acme is None:
        return
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Let the cert host reach {host.name} for challenges and certificates only",
            "actions": [action(acme_step.gate, inventory, host)],
            "file_dep": files_under(TEMPLATES / "acme") + host_marker(inventory, host)
            # The ACME server's CA goes in the gate's bundle too.
            + ([str(inventory.acme.server_ca)] if inventory.acme.server_ca else []),
            "uptodate": [config_changed(acme.acme_context(inventory)),
                     lambda task, values: acme_step.lego_key_unchanged(inventory, values)],
            "task_dep": ["acme:setup", f"bootstrap:{host.name}"],
        }


def certificate(inventory):
    if inventory.acme is None:
        return
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Make {host.name} serve the current certificate (the cert host pushes it)",
            # No inputs: it always runs. A TLS handshake tells whether the host has the
            # current certificate; only a host that lacks it costs an SSH session.
            "actions": [action(acme_step.host_certificate, inventory, host, read_only=True)],
            "task_dep": ["acme:issue", f"gate:{host.name}"],
        }
