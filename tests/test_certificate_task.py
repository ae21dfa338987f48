"""The certificate tasks' up-to-date checks (the site's, the check's client certificate):
hashes only, never parsing a certificate."""
import json
import subprocess
import sys

import pytest

from outpost import inventory
from outpost.steps import certificates

# (make, is_current, a file it is made from) of each task.
TASKS = {"certificate": ("certificate", "certificate_is_current", "build/tls/site.key"),
         "client-certificate": ("client_certificate", "client_certificate_is_current",
                                "build/tls/client.key"),
         # The CA that nginx verifies the check's certificate with is another file.
         "client-certificate, CA": ("client_certificate", "client_certificate_is_current",
                                    "keys/ca/ca.pem")}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_certificate_is_current_until_an_input_changes_or_renewal_is_due(project, task):
    make, is_current, made_from = TASKS[task]
    inv = inventory.load(project / "inventory.toml")
    values = getattr(certificates, make)(inv)
    current = getattr(certificates, is_current)
    assert current(inv, values)
    assert not current(inv, {})  # never made
    assert not current(inv, {**values, "renew_after": 0})  # due
    changed = project / made_from
    changed.write_bytes(changed.read_bytes() + b"\n")
    assert not current(inv, values)  # a file changed under it


@pytest.mark.parametrize("task", ["certificate", "client-certificate"])
def test_the_check_loads_no_cryptography(project, task):
    make, is_current, _ = TASKS[task]
    inv = inventory.load(project / "inventory.toml")
    (project / "values.json").write_text(json.dumps(getattr(certificates, make)(inv)))
    code = ("import json, sys\n"
            "from outpost import inventory\nfrom outpost.steps import certificates as steps\n"
            "inv = inventory.load('inventory.toml')\n"
            f"assert steps.{is_current}(inv, json.load(open('values.json')))\n"
            "print(sorted(m for m in sys.modules if m.startswith('cryptography')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
