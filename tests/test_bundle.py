"""outpost.commands.bundle and the helper that applies bundles (templates/outpost/apply.j2), and the
bootstrap script (outpost.commands.bootstrap), run for real.

The helper runs as root with the real /bin/sh, openssl, doas -C and nginx -t, in a private
mount namespace whose /etc, /var, /srv and /usr/local are overlays (nothing on this machine
changes); `dinitctl` and `apk` are stubs in /usr/local/bin that record their arguments.
Needs root, unshare and mount, doas (opendoas), nginx and openssl.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from outpost import apk
from outpost.commands import bootstrap
from outpost.commands import bundle
from outpost.commands import sync as sync_commands
from outpost.errors import OutpostError

OVERLAID = ("etc", "var", "srv", "usr/local", "usr/libexec")
KEY_NAME = "test.rsa.pub"
STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> /var/log/stub-calls
"""


class Machine:
    """Runs scripts as root with OVERLAID overlays kept in dir/upper between runs."""

    def __init__(self, root: Path):
        self.dir = root
        for top in OVERLAID:
            (root / "upper" / top).mkdir(parents=True)
            (root / "work" / top).mkdir(parents=True)
        local_bin = root / "upper/usr/local/bin"
        local_bin.mkdir(parents=True)
        for name in ("dinitctl", "apk"):
            (local_bin / name).write_text(STUB)
            (local_bin / name).chmod(0o755)

    def run(self, script: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
        mounts = " && ".join(
            f"mount -t overlay overlay -o lowerdir=/{top},upperdir={self.dir}/upper/{top},"
            f"workdir={self.dir}/work/{top} /{top}" for top in OVERLAID)
        return subprocess.run(["unshare", "--mount", "sh", "-c", mounts + ' && exec sh -c "$1"',
                               "sh", script], input=stdin, capture_output=True, timeout=60)

    def file(self, path: str) -> Path:
        return self.dir / "upper" / path.lstrip("/")

    def calls(self) -> list[str]:
        log = self.file("/var/log/stub-calls")
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    apk.generate_key(folder / "test.rsa")
    apk.generate_key(folder / "other.rsa")
    return folder


@pytest.fixture
def machine(tmp_path, keys):
    missing = [tool for tool in ("unshare", "mount", "openssl", "nginx")
               if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")]
    if not os.path.exists("/usr/bin/doas"):
        missing.append("doas (apt-get install opendoas)")
    assert not missing, f"these tests need {', '.join(missing)}"
    assert os.geteuid() == 0, "these tests need root (mount namespaces and overlays)"
    m = Machine(tmp_path / "machine")
    m.file("/etc/apk/keys").mkdir(parents=True)
    m.file(f"/etc/apk/keys/{KEY_NAME}").write_bytes((keys / "test.rsa.pub").read_bytes())
    m.file("/etc/outpost").mkdir(parents=True)
    m.file(bundle.HOST_FILE).write_text("au\n")
    m.file("/usr/local/libexec/outpost").mkdir(parents=True)
    m.file("/usr/local/libexec/outpost/apply").write_text(
        bootstrap.helper_text(f"/etc/apk/keys/{KEY_NAME}"))
    m.file("/var/lib/outpost").mkdir(parents=True)
    return m


HELPER = "sh /usr/local/libexec/outpost/apply"
NGINX = b"pid /run/test-nginx.pid;\nevents {}\n"


def config(nginx=NGINX, env=b"PORT=8080\n", host="au", step="config", folders=()):
    return bundle.Bundle(
        host, step,
        files=(bundle.HostFile("/etc/nginx/nginx.conf", 0o644, nginx, "nginx"),
               bundle.HostFile("/etc/nginx/outpost/site.key", 0o600, b"KEY\n", "nginx"),
               bundle.HostFile("/etc/default/app", 0o644, env, "app")),
        folders=folders,
        checks=(("nginx", "/etc/nginx/nginx.conf"),),
        actions=(bundle.Action("nginx", "reload", "nginx"),
                 bundle.Action("app", "restart", "app")))


def tampered(data: bytes) -> bytes:
    """One bit of the archive flipped (its gzip trailer: it still unpacks)."""
    return data[:-3] + bytes([data[-3] ^ 1]) + data[-2:]


def apply(machine, b, keys, serial, key="test.rsa"):
    return machine.run(HELPER, bundle.signed(b, keys / key, serial))


def test_manifest_lists_every_item_one_per_line():
    b = bundle.Bundle(
        "au", "dns",
        files=(bundle.HostFile("/etc/gdnsd/config", 0o644, b"x", "gdnsd"),
               bundle.HostFile("/etc/gdnsd/geoip/country.mmdb", 0o644, None, "gdnsd",
                                 "ab" * 32)),
        folders=(bundle.Folder("/srv/app", "deploy"),),
        checks=(("gdnsd", "/etc/gdnsd"),), enable=("gdnsd",),
        actions=(bundle.Action("zone", "reload-zones", "gdnsd"),), start=("gdnsd",))
    assert bundle.manifest(b, 7).splitlines() == [
        "host au", "step dns", "serial 7",
        "folder deploy 755 /srv/app",
        "file 644 gdnsd /etc/gdnsd/config",
        f"keep 644 gdnsd /etc/gdnsd/geoip/country.mmdb {'ab' * 32}",
        "check gdnsd /etc/gdnsd",
        "enable gdnsd",
        "on zone reload-zones gdnsd",
        "start gdnsd",
    ]


@pytest.mark.parametrize("path", ["etc/doas.conf", "/etc/a b", "/etc/../shadow", "/etc/x\n",
                                  "/etc/$(id)", "/srv/./x"])
def test_a_path_that_is_not_plain_is_refused(path):
    b = bundle.Bundle("au", "config", files=(bundle.HostFile(path, 0o644, b""),))
    with pytest.raises(OutpostError, match="not a plain absolute path"):
        bundle.manifest(b, 1)


def test_apply_installs_checks_and_reloads_then_changes_only_what_differs(machine, keys):
    first = apply(machine, config(), keys, 1)
    assert first.returncode == 0, first.stderr.decode()
    assert machine.file("/etc/nginx/nginx.conf").read_bytes() == NGINX
    key = machine.file("/etc/nginx/outpost/site.key")
    assert key.read_bytes() == b"KEY\n" and key.stat().st_mode & 0o777 == 0o600
    assert key.stat().st_uid == 0
    assert machine.calls() == ["dinitctl signal HUP nginx",
                               "dinitctl restart --ignore-unstarted app"]
    assert b"reloaded: nginx" in first.stdout and b"restarted: app" in first.stdout

    again = apply(machine, config(), keys, 2)
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout == b"" and len(machine.calls()) == 2

    env_only = apply(machine, config(env=b"PORT=9090\n"), keys, 3)
    assert env_only.stdout.decode().splitlines() == ["changed: /etc/default/app",
                                                     "restarted: app"]
    # Nothing of the run's staging is left (the TLS key was in it).
    assert list(machine.file(bundle.STATE).iterdir()) == [machine.file(bundle.STATE + "/config.serial")]


def test_a_config_nginx_refuses_switches_nothing(machine, keys):
    assert apply(machine, config(), keys, 1).returncode == 0
    broken = apply(machine, config(nginx=b"events {}\nbroken;\n", env=b"PORT=1\n"), keys, 2)
    assert broken.returncode == bundle.EXITS["refused"]
    assert b'unknown directive "broken"' in broken.stderr
    assert machine.file("/etc/nginx/nginx.conf").read_bytes() == NGINX
    assert machine.file("/etc/default/app").read_bytes() == b"PORT=8080\n"
    assert [p.name for p in machine.file(bundle.STATE).iterdir()] == ["config.serial"]


@pytest.mark.parametrize("change, message", [
    (lambda m, keys: apply(m, config(env=b"EVIL=1\n"), keys, 5, key="other.rsa"),
     b"signature does not verify"),
    (lambda m, keys: m.run(HELPER, tampered(bundle.signed(config(env=b"EVIL=1\n"),
                                                          keys / "test.rsa", 5))),
     b"signature does not verify"),
    (lambda m, keys: m.run(HELPER, bundle.archive(config(env=b"EVIL=1\n"), 5)),
     b"not an Outpost bundle"),
    (lambda m, keys: apply(m, config(env=b"EVIL=1\n", host="ny"), keys, 5),
     b"for host 'ny'"),
    (lambda m, keys: apply(m, config(env=b"EVIL=1\n"), keys, 3),
     b"older than the one applied last"),
])
def test_a_bundle_root_cannot_trust_changes_nothing(machine, keys, change, message):
    assert apply(machine, config(), keys, 4).returncode == 0
    result = change(machine, keys)
    assert result.returncode == bundle.EXITS["bad"], result.stderr
    assert message in result.stderr
    assert machine.file("/etc/default/app").read_bytes() == b"PORT=8080\n"


def test_a_folder_for_the_deploy_user_has_root_owned_parents_and_is_never_a_link(machine, keys):
    folders = (bundle.Folder("/srv/outpost-test/content", "nobody"),)
    first = apply(machine, config(folders=folders), keys, 1)
    assert first.returncode == 0, first.stderr.decode()
    content = machine.file("/srv/outpost-test/content")
    assert content.is_dir() and content.stat().st_uid == 65534  # nobody
    assert machine.file("/srv/outpost-test").stat().st_uid == 0

    # A link put where the folder was: refused, and its target keeps its owner.
    target = machine.file("/srv/elsewhere")
    target.mkdir()
    shutil.rmtree(content)
    content.symlink_to("/srv/elsewhere")
    linked = apply(machine, config(folders=folders), keys, 2)
    assert linked.returncode == bundle.EXITS["unsafe"]
    assert b"/srv/outpost-test/content is not a folder" in linked.stderr
    assert target.stat().st_uid == 0

    # A parent another user owns (the app's home): refused before anything changes.
    content.unlink()
    os.chown(machine.file("/srv/outpost-test"), 65534, 65534)
    owned = apply(machine, config(folders=folders, env=b"PORT=7\n"), keys, 3)
    assert owned.returncode == bundle.EXITS["unsafe"]
    assert b"/srv/outpost-test is not a folder that only root can write" in owned.stderr
    assert not content.exists()
    assert machine.file("/etc/default/app").read_bytes() == b"PORT=8080\n"


def test_a_file_sent_by_hash_must_be_on_the_host(machine, keys):
    kept = bundle.Bundle("au", "dns", files=(
        bundle.HostFile("/etc/outpost/db", 0o644, None, None, bundle.sha256(b"DB")),))
    result = apply(machine, kept, keys, 1)
    assert result.returncode == bundle.EXITS["needs"]
    assert result.stdout.decode().strip() == "needs: /etc/outpost/db"
    sent = bundle.Bundle("au", "dns", files=(bundle.HostFile("/etc/outpost/db", 0o644, b"DB"),))
    assert apply(machine, sent, keys, 2).returncode == 0
    assert apply(machine, kept, keys, 3).returncode == 0


def test_bootstrap_script_is_idempotent(machine, keys):
    plan = bootstrap.Plan(
        host="au", user="nobody", packages=("nginx", "openssl"), key_name=KEY_NAME,
        public_key_pem=(keys / "test.rsa.pub").read_text(), list_line="v2 /var/lib/outpost/repo",
        owned_folders=("/var/lib/outpost/repo",), helper=bootstrap.helper_source(),
        enable=("nginx",))
    script = bootstrap.script(plan)
    first = machine.run(script)
    assert first.returncode == 0, first.stderr.decode()
    assert machine.file(bundle.HELPER).read_text() == bootstrap.helper_text(
        f"/etc/apk/keys/{KEY_NAME}")
    assert machine.file(sync_commands.list_path()).read_text() == "v2 /var/lib/outpost/repo\n"
    doas_conf = machine.file("/etc/doas.conf")
    assert doas_conf.read_text().splitlines()[1:] == [
        "permit nopass nobody as root cmd /usr/libexec/outpost/apply args"]
    assert doas_conf.stat().st_mode & 0o777 == 0o400
    assert machine.file("/var/lib/outpost/repo").stat().st_uid == 65534
    assert machine.calls() == ["apk add nginx openssl", "dinitctl enable nginx"]
    second = machine.run(script)
    assert second.returncode == 0, second.stderr.decode()
    # Only the package check and the enable (no boot.d link here) run again; nothing changed.
    assert b"changed" not in second.stdout
    check = machine.run(bootstrap.check_script(plan))
    assert check.returncode == 0
    stale = machine.run(bootstrap.check_script(bootstrap.Plan(**{**plan.__dict__, "host": "x"})))
    assert stale.returncode == bootstrap.STALE
