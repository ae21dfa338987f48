"""The web tier: the site certificate and the check's, then per host bootstrap (base packages, nginx enabled)
and config (files from templates/, checked by nginx -t before they are switched in)."""
from doit.tools import config_changed

from outpost import bootstrap as bootstrap_module
from outpost import render, steps, tls
from outpost.taskutil import action, files_under, remove


def certificate(inventory):
    site = inventory.site
    certificate, key = tls.site_paths(site.certificates)
    return {
        "doc": f"Make the TLS certificate for {site.name} from the local CA (kept by clean)",
        "actions": [action(steps.certificate, inventory)],
        "targets": [str(certificate), str(key)],
        # Renewed when missing, for another name or CA, or within 30 days of expiry.
        "uptodate": [lambda task, values: steps.certificate_is_current(inventory, values)],
        "clean": [remove(certificate, key)],
    }


def client_certificate(inventory):
    """The check's client certificate, from the local CA (with ACME too: the local CA stays
    on this machine for this). Its targets include the CA's certificate, which config sends
    to the hosts, so config runs after it; clean keeps the CA."""
    site = inventory.site
    certificate, key = tls.client_paths(site.certificates)
    return {
        "doc": "Make the check's TLS client certificate from the local CA (kept by clean)",
        "actions": [action(steps.client_certificate, inventory)],
        "targets": [str(tls.ca_paths(site.ca)[0]), str(certificate), str(key)],
        "uptodate": [lambda task, values: steps.client_certificate_is_current(inventory, values)],
        "clean": [remove(certificate, key)],
    }


def bootstrap(inventory):
    """Root's one-time setup of each host (outpost.bootstrap): as root over SSH with
    [ssh] bootstrap_identity, else checked and written to build/bootstrap/<host>.sh."""
    hosts = [(host, steps.bootstrap_plan(inventory, host)) for host in inventory.hosts]
    if inventory.acme is not None:
        hosts.append((inventory.acme.cert_host, steps.certhost_plan(inventory)))
    for host, plan in hosts:
        yield {
            "name": host.name,
            "doc": f"Prepare {host.name} as root: base packages, the repository's key and list,"
                   f" the bundle helper and its doas rule",
            "actions": [action(steps.bootstrap, inventory, host, plan)],
            "file_dep": [str(inventory.repository.public_key),
                         str(render.TEMPLATES / bootstrap_module.HELPER_TEMPLATE)]
            + steps.host_marker(inventory, host),
            "targets": [str(steps.bootstrap_file(inventory, host))],
            "uptodate": [config_changed(steps.bootstrap_settings(plan, inventory))],
            "task_dep": ["fleet:up"] if inventory.fleet is not None else [],
        }


def config(inventory):
    # templates/gdnsd/ is the dns task's (tasks/dns.py): a zone edit doesn't touch nginx.
    templates = [t for t in files_under(render.TEMPLATES)
                 if not t.startswith(str(render.TEMPLATES / "gdnsd") + "/")]
    for host in inventory.hosts:
        out_dir = steps.hosts_dir(inventory, host)
        files = render.host_files(inventory, host)
        yield {
            "name": host.name,
            "doc": f"Render {host.name}'s files from templates/ and switch them in after nginx -t",
            "actions": [action(steps.config, inventory, host)],
            "file_dep": templates + [str(f.source) for f in files if f.source is not None]
            + steps.host_marker(inventory, host),
            "targets": [str(f.local_path(out_dir)) for f in files if f.template is not None],
            # The inventory values this host's templates use: change one, and only the hosts
            # whose files it changes run again.
            "uptodate": [config_changed(render.config_inputs(inventory, host))],
            # nginx reads the certificate: from ACME, the host must have it first.
            "task_dep": [f"upgrade:{host.name}"]
            + ([f"certificate:{host.name}"] if inventory.acme is not None else []),
            "clean": [remove(out_dir)],
        }
