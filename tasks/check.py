"""check:<host>: what the host serves, asked over HTTPS, its certificate and its nameserver's
answers (after content:<host> and the DNS step). It only reads, so it always runs."""
from outpost.steps import check as check_step
from outpost.taskutil import action


def dns_tasks(inventory, host) -> list[str]:
    """What the check waits for on the DNS side (tasks/dns.py): the host's own nameserver, or
    the map on Gcore."""
    if inventory.dns is None:
        return []
    return [f"dns:{host.name}"] if inventory.dns.provider == "gdnsd" else ["dns:gcore"]


def check(inventory):
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Check over HTTPS that {host.name} serves the app and the pushed content",
            # No inputs: it always runs. It only reads, so a no-op deploy stays a no-op.
            "actions": [action(check_step.check, inventory, host, read_only=True)],
            "task_dep": [f"content:{host.name}", f"services:{host.name}"]
            + dns_tasks(inventory, host),
            "verbosity": 2,
        }
