"""outpost.commands.base and .sync: the argv lists and the scripts, and what the scripts really do.

The scripts run with the real /bin/sh in a private mount namespace whose /etc and /var are
overlays (so the paths they name are the real ones, and nothing on this machine changes),
with stub `apk` and `dinitctl` that record their arguments and a stub `doas` that asks the
real doas (`doas -C`) whether the rules from `doas_rules` permit the command, and refuses it
otherwise. Needs root, unshare and mount (util-linux), and doas (apt: opendoas).
"""
import os
import shlex
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from outpost.commands import base
from outpost.commands import sync as sync_commands
from outpost.commands import upgrade as rollout
from outpost.commands import upgrade_report
from outpost.errors import OutpostError
from outpost.inventory import Host, Package, Repository, Ssh

REPO = Path(__file__).resolve().parents[1]

PEM = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n-----END PUBLIC KEY-----\n"
USER = "root"  # the scripts run as the current user here; the rules are written for it


def make_host(address="198.18.0.11", port=22):
    return Host(name="au", address=address, user="deploy", port=port, arch="x86_64",
                region="oceania", groups=())


def make_ssh(tmp_path=Path("/inv")):
    return Ssh(known_hosts=tmp_path / "known_hosts", identity=tmp_path / "deploy key",
               connect_timeout=2.5, command_timeout=60)


def make_package(name="linkedlist", service="linkedlist", port=8080, root=Path("/inv")):
    return Package(name=name, category="user", service=service, content=root / "content",
                   content_dir="/srv/linkedlist", port=port, root=root)


REPOSITORY = Repository(signing_key=Path("/inv/keys/outpost.rsa"), path="/var/lib/outpost/repo")


# --- argv builders ----------------------------------------------------------------------------

def test_ssh_options_pin_the_host_key_and_the_identity():
    options = base.ssh_options(make_ssh(), make_host(port=2222))
    pairs = dict(zip(options[::2], options[1::2]))
    assert options[:2] == ["-F", "/dev/null"]
    assert pairs["-i"] == "/inv/deploy key"
    assert pairs["-p"] == "2222"
    settings = [options[i + 1] for i, word in enumerate(options) if word == "-o"]
    assert settings == ["StrictHostKeyChecking=yes", "UserKnownHostsFile=/inv/known_hosts",
                        "GlobalKnownHostsFile=/dev/null", "BatchMode=yes",
                        "ConnectTimeout=3",  # 2.5 s rounded up: OpenSSH takes whole seconds
                        "IdentitiesOnly=yes"]


def test_rsync_argv_for_the_repository_keeps_hardlinks_and_deletes():
    ssh, host = make_ssh(), make_host()
    relay = ["/venv/bin/python", "-I", "-m", "outpost.relay", "/tmp/outpost-ssh-x/s"]
    argv = sync_commands.repo_rsync_argv(Path("/inv/build/repo"), host, REPOSITORY, ssh, relay)
    assert argv[:5] == ["rsync", "-a", "-s", "-H", "--delete"]
    assert "--timeout=60" in argv
    assert argv[-2:] == ["/inv/build/repo/x86_64/",
                         "deploy@198.18.0.11:/var/lib/outpost/repo/x86_64/"]
    # rsync splits -e itself, honouring quotes: it must give back exactly the relay's argv.
    remote_shell = argv[argv.index("-e") + 1]
    assert shlex.split(remote_shell) == relay


def test_rsync_argv_options():
    argv = base.rsync_argv("src/", make_host(address="fd00::5"), "/dest/", make_ssh(),
                           ["relay"], delete=False, extra=("--checksum",))
    assert "--delete" not in argv
    assert argv[:3] == ["rsync", "-a", "-s"]  # the paths never pass through the host's shell
    assert argv[-3:] == ["--checksum", "src/", "deploy@[fd00::5]:/dest/"]


def test_repo_list_line():
    assert sync_commands.repo_list_line("v2", "/var/lib/outpost/repo") == "v2 /var/lib/outpost/repo"
    assert sync_commands.repo_list_line("v3", "/srv/repo") == "v3 /srv/repo"
    with pytest.raises(ValueError):
        sync_commands.repo_list_line("v4", "/srv/repo")


def test_health_url():
    assert base.health_url(make_host(), make_package()) == "http://198.18.0.11:8080/_health"
    assert (base.health_url(make_host(address="fd00::5"), make_package(port=81))
            == "http://[fd00::5]:81/_health")
    with pytest.raises(OutpostError, match="'linkedlist' has no port.*host au"):
        base.health_url(make_host(), make_package(port=None))


def rules_text(user, installs=()):
    return base.doas_conf_text(base.doas_permits(user, installs=installs))


def test_doas_rules_text():
    installs = (rollout.doas_commands("linkedlist", ["2.0.13-r1", "2.0.12-r1"], "linkedlist",
                                      "/var/log/linkedlist.log")
                + rollout.doas_commands("other", ["1.0-r0"], None, None))
    rules = rules_text("deploy", installs)
    lines = rules.splitlines()
    assert rules.endswith("\n")
    assert lines[1:] == [
        # Every root-owned file: a signed bundle on stdin; the rule allows no argument.
        "permit nopass deploy as root cmd /usr/libexec/outpost/apply args",
        "permit nopass deploy as root cmd apk args update",
        "permit nopass deploy as root cmd apk args add linkedlist=2.0.13-r1",
        "permit nopass deploy as root cmd apk args add linkedlist=2.0.12-r1",
        "permit nopass deploy as root cmd dinitctl args restart --ignore-unstarted linkedlist",
        "permit nopass deploy as root cmd dinitctl args start linkedlist",
        "permit nopass deploy as root cmd dinitctl args enable linkedlist",
        "permit nopass deploy as root cmd dinitctl args reload linkedlist",
        "permit nopass deploy as root cmd dinitctl args stop linkedlist",
        "permit nopass deploy as root cmd tail args -n 20 /var/log/linkedlist.log",
        "permit nopass deploy as root cmd apk args add other=1.0-r0",
    ]


def test_doas_permits_are_the_commands_without_doas_each_once():
    installs = (rollout.doas_commands("linkedlist", ["2.0.12-r1"], "linkedlist", None)
                + rollout.doas_commands("other", ["1.0-r0"], "other", None))
    permits = base.doas_permits("deploy", installs=installs)
    assert permits[:3] == [("deploy", ["/usr/libexec/outpost/apply"]),
                           ("deploy", ["apk", "update"]),
                           ("deploy", ["apk", "add", "linkedlist=2.0.12-r1"])]
    assert permits.count(("deploy", ["apk", "update"])) == 1
    assert ("deploy", ["dinitctl", "start", "other"]) in permits
    assert all(argv[0] != "doas" for _, argv in permits)


# --- the scripts, run for real ----------------------------------------------------------------

DOAS_STUB = """#!/bin/sh
echo "doas $*" >> "$STUB_LOG"
if ! /usr/bin/doas -C "$STUB_RULES" "$@" >/dev/null; then
    echo "doas: Operation not permitted" >&2
    exit 1
fi
exec "$@"
"""

# Installed: 1.2.3-r4 until `add NAME=VERSION`. An add also writes the package's service file
# (when /usr/lib/dinit.d exists): $STUB_SERVICE_FILE, else one that names the version.
APK_STUB = """#!/bin/sh
echo "apk $*" >> "$STUB_LOG"
if [ "$1" = "${APK_FAIL:-}" ]; then echo "ERROR: unable to select packages" >&2; exit 1; fi
case "$*" in
    update) echo "OK: 1 distinct packages available" ;;
    "info -e -v "*) echo "$4-$(cat /var/lib/stub-apk-version 2>/dev/null || echo 1.2.3-r4)" ;;
    "add "*=*)
        version=${2#*=}
        echo "$version" > /var/lib/stub-apk-version
        if [ -d /usr/lib/dinit.d ]; then
            echo "${STUB_SERVICE_FILE:-command = /usr/bin/${2%%=*}d $version}" > "/usr/lib/dinit.d/${2%%=*}"
        fi ;;
esac
"""

# `reload` is refused (as real dinitctl words it, the reason in dinit's log) when the service
# file holds $DINITCTL_REFUSE.
DINITCTL_STUB = """#!/bin/sh
echo "dinitctl $*" >> "$STUB_LOG"
if [ "$1" = reload ] && [ -n "${DINITCTL_REFUSE:-}" ] \\
        && grep -qF "$DINITCTL_REFUSE" "/usr/lib/dinit.d/$2"; then
    echo "dinit: Error in service description for '$2': run-as: no such user" >> /var/log/dinit.log
    echo "dinitctl: could not reload service; service in wrong state, incompatible change, or bad service description." >&2
    exit 1
fi
"""


OVERLAID = ("etc", "var", "usr/lib")


@dataclass
class FakeHost:
    """Runs a script with /etc, /var and /usr/lib overlaid (their changes kept in upper/) and
    stubs first on PATH. What each run changed stays for the next run, as on a real host."""
    dir: Path
    env: dict  # extra environment for the stubs

    def run(self, script: str, rules: str) -> subprocess.CompletedProcess:
        (self.dir / "doas.conf").write_text(rules)
        (self.dir / "log").write_text("")
        mounts = " && ".join(
            f"mount -t overlay overlay -o lowerdir=/{top},upperdir={self.dir}/upper/{top},"
            f"workdir={self.dir}/work/{top} /{top}" for top in OVERLAID)
        env = {"PATH": f"{self.dir}/bin:/usr/bin:/bin", "HOME": f"{self.dir}/home",
               "STUB_LOG": f"{self.dir}/log",
               "STUB_RULES": f"{self.dir}/doas.conf", **self.env}
        return subprocess.run(["unshare", "--mount", "sh", "-c", mounts + ' && exec sh -c "$1"',
                               "sh", script], env=env, capture_output=True, text=True,
                              timeout=60)

    def calls(self) -> list[str]:
        return (self.dir / "log").read_text().splitlines()

    def file(self, path: str) -> Path:
        return self.dir / "upper" / path.lstrip("/")


@pytest.fixture
def fake_host(tmp_path):
    missing = [tool for tool in ("unshare", "mount") if not shutil.which(tool)]
    if not os.path.exists("/usr/bin/doas"):
        missing.append("doas (apt-get install opendoas)")
    assert not missing, f"these tests need {', '.join(missing)}"
    assert os.geteuid() == 0, "these tests need root (mount namespaces and overlays)"
    host = FakeHost(tmp_path / "host", {})
    (host.dir / "bin").mkdir(parents=True)
    for top in OVERLAID:
        (host.dir / "upper" / top).mkdir(parents=True)
        (host.dir / "work" / top).mkdir(parents=True)
    for name, text in (("doas", DOAS_STUB), ("apk", APK_STUB), ("dinitctl", DINITCTL_STUB)):
        (host.dir / "bin" / name).write_text(text)
        (host.dir / "bin" / name).chmod(0o755)
    # A Chimera host has these folders (apk-tools and its keys ship them).
    (host.dir / "upper/etc/apk/keys").mkdir(parents=True)
    (host.dir / "upper/etc/apk/repositories.d").mkdir(parents=True)
    return host


# install_script without a health port (the gate then is only that dinit took the service file);
# tests/test_rollout.py runs it with the gate on a fleet.

def install(version="2.0-r0", env_file=None, service="linkedlist"):
    return rollout.install_script([rollout.Install("linkedlist", version, service, None, None,
                                                   env_file)], health_timeout=5)


def install_rules(env_file=None):
    return rules_text(USER, rollout.doas_commands(
        "linkedlist", ["2.0-r0", "1.2.3-r4"], "linkedlist", None, env_file))


def root_calls(fake_host):
    return [call for call in fake_host.calls() if call.startswith("doas ")]


def test_install_script_installs_restarts_enables_and_starts(fake_host):
    result = fake_host.run(install(), install_rules())
    assert result.returncode == 0, result.stderr
    assert root_calls(fake_host) == [
        "doas apk update", "doas apk add linkedlist=2.0-r0",
        "doas dinitctl restart --ignore-unstarted linkedlist",
        # Not enabled yet (this machine has no /etc/dinit.d/boot.d/linkedlist): enable it.
        "doas dinitctl enable linkedlist", "doas dinitctl start linkedlist"]
    report = upgrade_report.parse_report(result.stdout)
    assert (report.before, report.ok, report.failed) == ({"linkedlist": "1.2.3-r4"},
                                                         {"linkedlist": "2.0-r0"}, {})


def test_install_script_leaves_an_unchanged_version_running(fake_host):
    result = fake_host.run(install("1.2.3-r4"), install_rules())
    assert result.returncode == 0, result.stderr
    assert root_calls(fake_host) == ["doas apk update", "doas dinitctl enable linkedlist",
                                     "doas dinitctl start linkedlist"]


def test_install_script_reloads_the_service_only_when_its_file_changed(fake_host):
    # dinit reads a service file once: a changed one must be reloaded before the restart.
    fake_host.file("/usr/lib/dinit.d").mkdir(parents=True)
    fake_host.file("/usr/lib/dinit.d/linkedlist").write_text("command = /usr/bin/linkedlistd\n")
    fake_host.env["STUB_SERVICE_FILE"] = "command = /usr/bin/linkedlistd"
    assert fake_host.run(install(), install_rules()).returncode == 0
    assert not any("reload" in call for call in fake_host.calls())

    del fake_host.env["STUB_SERVICE_FILE"]  # the next add writes another file
    result = fake_host.run(install("1.2.3-r4"), install_rules())
    assert result.returncode == 0, result.stderr
    calls = root_calls(fake_host)
    assert calls[1:4] == ["doas apk add linkedlist=1.2.3-r4", "doas dinitctl reload linkedlist",
                          "doas dinitctl restart --ignore-unstarted linkedlist"]


def test_a_service_file_dinit_refuses_keeps_the_old_one_and_the_host_goes_back(fake_host):
    # Real dinitctl says only "could not reload service"; the reason is in dinit's log. The
    # host fails as a failed gate does, and goes back to the version (and file) it ran.
    fake_host.file("/usr/lib/dinit.d").mkdir(parents=True)
    fake_host.file("/usr/lib/dinit.d/linkedlist").write_text("command = /usr/bin/linkedlistd\n")
    log = fake_host.file(base.DINIT_LOG)
    log.parent.mkdir(parents=True)
    log.write_text("dinit: an old line from before the step\n")
    fake_host.env["DINITCTL_REFUSE"] = "2.0-r0"
    result = fake_host.run(install(), install_rules())
    assert result.returncode == rollout.GATE_FAILED, result.stderr
    assert root_calls(fake_host) == [
        "doas apk update", "doas apk add linkedlist=2.0-r0",
        # Refused running, then refused stopped: started again with the old description,
        # and no restart (it would run the new program with the old description).
        "doas dinitctl reload linkedlist", "doas dinitctl stop linkedlist",
        "doas dinitctl reload linkedlist", "doas dinitctl start linkedlist",
        "doas dinitctl enable linkedlist", "doas dinitctl start linkedlist",
        # Back: the version before, whose service file dinit takes.
        "doas apk add linkedlist=1.2.3-r4", "doas dinitctl reload linkedlist",
        "doas dinitctl restart --ignore-unstarted linkedlist",
        "doas dinitctl enable linkedlist", "doas dinitctl start linkedlist"]
    report = upgrade_report.parse_report(result.stdout)
    assert report.refused == {"linkedlist"}
    assert report.failed == {"linkedlist": ("2.0-r0", "dinit refused its new service file: "
                                            "dinitctl: could not reload service; service in "
                                            "wrong state, incompatible change, or bad service "
                                            "description.")}
    assert report.back == {"linkedlist": "1.2.3-r4"}
    assert report.dinit_log == ["dinit: Error in service description for 'linkedlist': "
                                "run-as: no such user"] * 2  # not the old line
    message = upgrade_report.gate_failure(make_host(), report)
    assert "host au: linkedlist 2.0-r0 was not loaded (dinit refused" in message
    assert "it is back on 1.2.3-r4" in message
    assert message.endswith("dinit logged (/var/log/dinit.log):\n  dinit: Error in service "
                            "description for 'linkedlist': run-as: no such user\n  dinit: Error "
                            "in service description for 'linkedlist': run-as: no such user")


class Health(threading.Thread):
    """The app's health path on 127.0.0.1 for the fake host: the version the stub apk has
    installed, except `bad`, which answers 502 (a daemon that never comes up)."""

    def __init__(self, installed: Path, bad: str):
        import http.server
        installed_version = lambda: installed.read_text().strip()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                version = installed_version()
                body = f'{{"version": "{version}"}}'.encode()
                self.send_response(502 if version == bad else 200)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(daemon=True)
        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def run(self):
        self.server.serve_forever()


def test_a_host_left_on_a_failed_version_goes_back_to_the_last_that_passed(fake_host):
    # The host runs 2.0-r0, which never passed its gate (that gate was cut short: the host went
    # down). Going back means the last version that passed there (back_to, from this
    # machine's record), not "the version installed before", which is the failed one.
    installed = fake_host.file("/var/lib/stub-apk-version")
    installed.parent.mkdir(parents=True)
    installed.write_text("2.0-r0\n")
    health = Health(installed, bad="2.0-r0")
    health.start()
    try:
        script = rollout.install_script([rollout.Install(
            "linkedlist", "2.0-r0", "linkedlist", health.port, None, None, back_to="1.5-r0")],
            health_timeout=5)
        rules = rules_text(USER, rollout.doas_commands("linkedlist", ["2.0-r0", "1.5-r0"],
                                                       "linkedlist", None))
        result = fake_host.run(script, rules)
    finally:
        health.server.shutdown()
    assert result.returncode == rollout.GATE_FAILED, result.stderr
    report = upgrade_report.parse_report(result.stdout)
    assert report.before == {"linkedlist": "2.0-r0"}
    version, reason = report.failed["linkedlist"]
    assert version == "2.0-r0" and reason.startswith("the health path does not answer: curl")
    assert "502" in reason
    assert report.back == {"linkedlist": "1.5-r0"}
    assert "doas apk add linkedlist=1.5-r0" in root_calls(fake_host)
    assert "it is back on 1.5-r0" in upgrade_report.gate_failure(make_host(), report)


def test_the_report_of_a_job_an_earlier_session_left():
    output = ("outpost: earlier before linkedlist 1.0-r0\n"
              "outpost: earlier gate linkedlist 2.0-r0\n"
              "outpost: earlier failed linkedlist 2.0-r0: the health path does not answer\n"
              "outpost: earlier back linkedlist 1.0-r0\n"
              "outpost: earlier exit 70\n"
              "outpost: before linkedlist 1.0-r0\n"
              "outpost: ok linkedlist 1.0-r0\n")
    report = upgrade_report.parse_report(output)
    assert (report.before, report.ok, report.failed) == ({"linkedlist": "1.0-r0"},
                                                         {"linkedlist": "1.0-r0"}, {})
    assert report.earlier.failed == {"linkedlist": ("2.0-r0", "the health path does not answer")}
    assert upgrade_report.earlier_outcome(report.earlier) == (
        "linkedlist 2.0-r0 failed the health gate (the health path does not answer); it is back "
        "on 1.0-r0")
    assert upgrade_report.parse_report("outpost: ok linkedlist 1.0-r0\n").earlier is None
    # A job that never wrote its exit line: the host went down under it.
    cut = upgrade_report.parse_report("outpost: earlier before linkedlist 1.0-r0\n"
                               "outpost: earlier gate linkedlist 2.0-r0\n").earlier
    assert upgrade_report.earlier_outcome(cut) == ("it was cut short (the host went down, or the job "
                                            "was killed) in the gate of linkedlist 2.0-r0")


def test_install_script_drops_the_apk_new_copy_of_an_env_file_config_owns(fake_host):
    env_file = rollout.env_file("linkedlist", {"/etc/default/linkedlist", "/etc/nginx/x.conf"})
    assert env_file == "/etc/default/linkedlist"
    assert rollout.env_file("linkedlist", {"/etc/nginx/nginx.conf"}) is None
    rules = install_rules(env_file)
    assert f"permit nopass {USER} as root cmd rm args -f /etc/default/linkedlist.apk-new" in rules
    leftover = fake_host.file("/etc/default/linkedlist.apk-new")
    leftover.parent.mkdir(parents=True)
    leftover.write_text("the package's defaults\n")
    result = fake_host.run(install(env_file=env_file), rules)
    assert result.returncode == 0, result.stderr
    assert "doas rm -f /etc/default/linkedlist.apk-new" in fake_host.calls()
    # overlayfs marks a removed lower file with a whiteout (a character device) in the upper layer
    assert not leftover.is_file()


def test_install_script_stops_when_apk_fails(fake_host):
    fake_host.env["APK_FAIL"] = "add"
    result = fake_host.run(install(), install_rules())
    assert result.returncode == 1
    assert "unable to select packages" in result.stderr
    assert not any(call.startswith("dinitctl") for call in fake_host.calls())


def test_install_script_without_a_service(fake_host):
    rules = rules_text(USER, rollout.doas_commands("linkedlist", ["2.0-r0"], None, None))
    result = fake_host.run(install(service=None), rules)
    assert result.returncode == 0, result.stderr
    assert not any("dinitctl" in call for call in fake_host.calls())


def test_install_script_refused_for_a_version_the_rules_do_not_name(fake_host):
    result = fake_host.run(install("9.9-r9"), install_rules())
    assert result.returncode == 1
    assert fake_host.calls()[-1] == "doas apk add linkedlist=9.9-r9"  # refused: apk never ran


# --- the content digest matches the app's -----------------------------------------------------

# --- config: staged, checked by nginx -t, switched only when changed ---------------------------
