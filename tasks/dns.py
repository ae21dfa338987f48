"""GeoDNS: the local fleet's test country database, then per host its gdnsd config, zone and
database (after upgrade:<host>)."""
from doit.tools import config_changed

from outpost import geoip, render
from outpost.commands import dns as dns_commands
from outpost.commands.gcore import TOKEN_ENV
from outpost.steps import dns as dns_step
from outpost.steps.common import host_marker
from outpost.taskutil import action, files_under, remove


def fleet_database(inventory):
    dns = inventory.dns
    if dns is None or dns.provider != "gdnsd" or dns.database is not None:
        return
    path = geoip.fleet_database_path(inventory)
    yield {
        "basename": "geoip",
        "doc": "Write the local fleet's test country database (never used for real hosts)",
        "actions": [action(dns_step.fleet_database, inventory)],
        "targets": [str(path)],
        # Its content is dns_commands.PROBE_NETWORKS: made again when they change.
        "uptodate": [config_changed(dns_commands.PROBE_NETWORKS)],
        "clean": [remove(path)],
    }


def dns(inventory):
    dns = inventory.dns
    if dns is None:
        return
    if dns.provider == "gcore":
        yield {
            "name": "gcore",
            "doc": f"Put the GeoDNS map on Gcore's managed DNS for {inventory.site.name} "
                   f"(token from ${TOKEN_ENV})",
            "actions": [action(dns_step.dns_gcore, inventory)],
            "uptodate": [config_changed({"api": dns.api, "requests": [
                {"method": r.method, "path": r.path, "body": r.body}
                for r in dns_commands.gcore_requests(inventory)]})],
        }
        return
    templates = files_under(render.TEMPLATES / "gdnsd")
    database = geoip.database_path(inventory)
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Switch in {host.name}'s gdnsd config, zone and country database after "
                   "gdnsd checkconf",
            "actions": [action(dns_step.dns, inventory, host)],
            # A user's database that is missing is not a file_dep (doit would say only that a
            # dependency is missing): the step runs and says which file and why.
            "file_dep": templates + host_marker(inventory, host)
            + ([str(database)] if database.is_file() or dns.database is None else []),
            "uptodate": [config_changed(dns_commands.dns_context(inventory, host)),
                         lambda: database.is_file()],
            # After upgrade (gdnsd may come from the repository), not after config: ACME's
            # DNS-01 needs the nameservers before config's nginx can have its certificate.
            # Until config gives nginx the health path, gdnsd's checks fail, and it answers
            # as if every host were up.
            "task_dep": [f"upgrade:{host.name}"],
        }
