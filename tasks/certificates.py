"""The site's certificate from the local CA (without [acme]; with it, certificate:<host> is
tasks/acme.py's) and the check's client certificate."""
from outpost import tls
from outpost.steps import certificates as certificates_step
from outpost.taskutil import action, remove


def certificate(inventory):
    site = inventory.site
    certificate, key = tls.site_paths(site.certificates)
    return {
        "doc": f"Make the TLS certificate for {site.name} from the local CA (kept by clean)",
        "actions": [action(certificates_step.certificate, inventory)],
        "targets": [str(certificate), str(key)],
        # Renewed when missing, for another name or CA, or within 30 days of expiry.
        "uptodate": [lambda task, values: certificates_step.certificate_is_current(inventory, values)],
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
        "actions": [action(certificates_step.client_certificate, inventory)],
        "targets": [str(tls.ca_paths(site.ca)[0]), str(certificate), str(key)],
        "uptodate": [lambda task, values: certificates_step.client_certificate_is_current(inventory, values)],
        "clean": [remove(certificate, key)],
    }
