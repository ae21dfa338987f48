"""config:<host>: the web host's files rendered from templates/, checked by nginx -t before
they are switched in (after upgrade:<host>, and with ACME after certificate:<host>)."""
from doit.tools import config_changed

from outpost import render
from outpost.commands import config as config_commands
from outpost.steps import config as config_step
from outpost.steps.common import host_marker
from outpost.taskutil import action, files_under, remove


def config(inventory):
    # templates/gdnsd/ is the dns task's (tasks/dns.py): a zone edit doesn't touch nginx.
    templates = [t for t in files_under(render.TEMPLATES)
                 if not t.startswith(str(render.TEMPLATES / "gdnsd") + "/")]
    for host in inventory.hosts:
        out_dir = config_step.hosts_dir(inventory, host)
        files = config_commands.host_files(inventory, host)
        yield {
            "name": host.name,
            "doc": f"Render {host.name}'s files from templates/ and switch them in after nginx -t",
            "actions": [action(config_step.config, inventory, host)],
            "file_dep": templates + [str(f.source) for f in files if f.source is not None]
            + host_marker(inventory, host),
            "targets": [str(f.local_path(out_dir)) for f in files if f.template is not None],
            # The inventory values this host's templates use: change one, and only the hosts
            # whose files it changes run again.
            "uptodate": [config_changed(config_commands.config_inputs(inventory, host))],
            # nginx reads the certificate: from ACME, the host must have it first.
            "task_dep": [f"upgrade:{host.name}"]
            + ([f"certificate:{host.name}"] if inventory.acme is not None else []),
            "clean": [remove(out_dir)],
        }
