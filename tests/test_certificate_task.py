"""The certificate task's up-to-date check: hashes only, never parsing the certificate."""
import json
import subprocess
import sys

from outpost import inventory, steps


def test_certificate_is_current_until_an_input_changes_or_renewal_is_due(project):
    inv = inventory.load(project / "inventory.toml")
    values = steps.certificate(inv)
    assert steps.certificate_is_current(inv, values)
    assert not steps.certificate_is_current(inv, {})  # never made
    assert not steps.certificate_is_current(inv, {**values, "renew_after": 0})  # due
    key = inv.site.certificates / "site.key"
    key.write_bytes(key.read_bytes() + b"\n")
    assert not steps.certificate_is_current(inv, values)  # a file changed under it


def test_the_check_loads_no_cryptography(project):
    inv = inventory.load(project / "inventory.toml")
    (project / "values.json").write_text(json.dumps(steps.certificate(inv)))
    code = ("import json, sys\n"
            "from outpost import inventory, steps\n"
            "inv = inventory.load('inventory.toml')\n"
            "assert steps.certificate_is_current(inv, json.load(open('values.json')))\n"
            "print(sorted(m for m in sys.modules if m.startswith('cryptography')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
