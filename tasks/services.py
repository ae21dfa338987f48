"""services:<host>: start each service the host should run that is stopped (the app, nginx,
gdnsd), after upgrade:<host> and the host's DNS step; check:<host> waits for it."""
from outpost.commands import services as services_commands
from outpost.steps import services as services_step
from outpost.taskutil import action


def services(inventory):
    gdnsd = services_commands.gdnsd(inventory) is not None
    for host in inventory.hosts:
        yield {
            "name": host.name,
            "doc": f"Start the services {host.name} should run that are stopped "
                   "(the app, nginx, gdnsd)",
            "actions": [action(services_step.start_stopped, inventory, host)],
            # Asked when the task is reached (after its task_deps): HTTPS, port 80 only when
            # 443 refuses, one DNS query. SSH only when something is stopped.
            "uptodate": [services_step.AllRunning(inventory, host)],
            # The app is in place and gated, gdnsd has its files; not after config, which the
            # certificate step can hold up (it can't reach a host whose nginx is stopped).
            "task_dep": [f"upgrade:{host.name}"] + ([f"dns:{host.name}"] if gdnsd else []),
        }
