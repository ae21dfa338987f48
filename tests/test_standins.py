"""The apk, dinit and dinitctl stand-ins, run as the fleet runs them: as programs.

apk works on a --root in tmp_path against a repository built here with outpost.apk. dinit runs
as a plain subprocess (not PID 1) with its own service folder and control socket. Every wait
polls for a state; nothing asserts on timing.
"""
import os
import pwd
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import wait_for
from outpost import apk

STANDINS = Path(__file__).resolve().parents[1] / "outpost" / "standins"
ARCH = "x86_64"


def run(tool, *args, check=True):
    proc = subprocess.run([sys.executable, str(STANDINS / tool), *map(str, args)],
                          capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} {args} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


# ------------------------------------------------------------------------------------ apk


class Repo:
    """A signed v2 repository in tmp_path/repo/<arch>, and a root whose apk trusts its key."""

    def __init__(self, tmp_path):
        self.key, self.public = apk.generate_key(tmp_path / "keys" / "outpost.rsa")
        self.dir = tmp_path / "repo"
        (self.dir / ARCH).mkdir(parents=True)
        self.stage = tmp_path / "stage"
        self.root = tmp_path / "root"
        run("apk", "--root", self.root, "--initdb")
        (self.root / "etc/apk/arch").write_text(ARCH + "\n")
        shutil.copy(self.public, self.root / "etc/apk/keys" / self.public.name)
        (self.root / "etc/apk/repositories.d/outpost.list").write_text(f"v2 {self.dir}\n")

    def package(self, name, version, files, depends=(), key=None):
        destdir = self.stage / f"{name}-{version}"
        for rel, content in files.items():
            (destdir / rel).parent.mkdir(parents=True, exist_ok=True)
            (destdir / rel).write_text(content)
        info = apk.PackageInfo(pkgname=name, pkgver=version, pkgdesc=f"{name} for tests",
                               url="https://example.org", builddate=1700000000,
                               packager="tests", arch=ARCH, license="MIT", origin=name,
                               depends=tuple(depends))
        out = self.dir / ARCH / f"{name}-{version}.apk"
        return apk.write_package(out, info, destdir, key or self.key)

    def index(self, key=None):
        apk.write_index(self.dir / ARCH / "APKINDEX.tar.gz", sorted((self.dir / ARCH).glob("*.apk")),
                        key or self.key, description="outpost test repo", arch=ARCH)

    def apk(self, *args, check=True):
        return run("apk", "--root", self.root, *args, check=check)


@pytest.fixture
def repo(tmp_path):
    return Repo(tmp_path)


def test_apk_installs_and_records_the_package(repo):
    repo.package("app", "1.0-r0", {"usr/bin/app": "one\n", "usr/share/app/data": "d\n"})
    repo.index()
    update = repo.apk("update")
    assert "OK: 1 distinct packages available" in update.stdout
    added = repo.apk("add", "app")
    assert "(1/1) Installing app (1.0-r0)" in added.stdout
    assert (repo.root / "usr/bin/app").read_text() == "one\n"
    assert repo.apk("info", "-e", "-v", "app").stdout == "app-1.0-r0\n"
    assert repo.apk("info", "-e", "app").stdout == "app\n"
    assert repo.apk("info", "-v", "app").stdout.splitlines() == [
        "app: app for tests", "app: https://example.org", "app: 6 B"]  # 4 + 2 bytes
    assert (repo.root / "etc/apk/world").read_text() == "app\n"
    db = (repo.root / "lib/apk/db/installed").read_text()
    assert "P:app\nV:1.0-r0\n" in db and "F:usr/bin\nR:app\n" in db


def test_apk_upgrade_replaces_files_and_removes_stale_ones(repo):
    repo.package("app", "1.0-r0", {"usr/bin/app": "one\n", "usr/share/app/old": "gone\n"})
    repo.index()
    repo.apk("add", "app")
    repo.package("app", "1.0-r1", {"usr/bin/app": "two\n"})
    repo.index()
    plain = repo.apk("add", "app")  # without -u, apk keeps what is installed
    assert "Upgrading" not in plain.stdout
    upgraded = repo.apk("add", "-u", "app")
    assert "(1/1) Upgrading app (1.0-r0 -> 1.0-r1)" in upgraded.stdout
    assert upgraded.stdout.rstrip().splitlines()[-1].startswith("OK: ")
    assert (repo.root / "usr/bin/app").read_text() == "two\n"
    assert not (repo.root / "usr/share/app/old").exists()
    assert not (repo.root / "usr/share/app").exists()
    assert repo.apk("info", "-e", "-v", "app").stdout == "app-1.0-r1\n"


def test_apk_add_name_equals_version_pins_it_and_goes_back_to_an_older_one(repo):
    for release in ("1.0-r0", "1.0-r1"):
        repo.package("app", release, {"usr/bin/app": f"{release}\n"})
    repo.index()
    repo.apk("add", "-u", "app")
    assert repo.apk("info", "-e", "-v", "app").stdout == "app-1.0-r1\n"
    back = repo.apk("add", "app=1.0-r0")
    assert "(1/1) Downgrading app (1.0-r1 -> 1.0-r0)" in back.stdout
    assert (repo.root / "usr/bin/app").read_text() == "1.0-r0\n"
    # world holds one constraint per name: the new one replaced "app"
    assert (repo.root / "etc/apk/world").read_text() == "app=1.0-r0\n"
    # the pin holds against -u; a new pin moves it
    assert "Upgrading" not in repo.apk("add", "-u", "app=1.0-r0").stdout
    assert "Upgrading app (1.0-r0 -> 1.0-r1)" in repo.apk("add", "app=1.0-r1").stdout
    assert (repo.root / "etc/apk/world").read_text() == "app=1.0-r1\n"


def test_apk_del_removes_files_and_the_record(repo):
    repo.package("app", "1.0-r0", {"usr/bin/app": "one\n"})
    repo.index()
    repo.apk("add", "app")
    deleted = repo.apk("del", "app")
    assert "Purging app (1.0-r0)" in deleted.stdout
    assert not (repo.root / "usr/bin/app").exists()
    assert repo.apk("info", "-e", "app", check=False).returncode == 1
    assert "P:app" not in (repo.root / "lib/apk/db/installed").read_text()


def test_apk_depends_need_an_installed_provided_or_available_package(repo):
    repo.package("app", "1.0-r0", {"usr/bin/app": "x\n"}, depends=["lib", "python3>=3.9"])
    repo.index()
    refused = repo.apk("add", "app", check=False)
    assert refused.returncode != 0
    assert "lib (no such package)" in refused.stderr
    assert "python3>=3.9 (no such package)" in refused.stderr
    assert not (repo.root / "usr/bin/app").exists()

    (repo.root / "etc/apk/provided").write_text("python3=3.11.2\n")
    repo.package("lib", "2.0-r0", {"usr/lib/libx": "l\n"})
    repo.index()
    added = repo.apk("add", "app")
    assert "Installing lib (2.0-r0)" in added.stdout
    assert added.stdout.index("lib (2.0-r0)") < added.stdout.index("app (1.0-r0)")
    assert repo.apk("info", "-v").stdout == "app-1.0-r0\nlib-2.0-r0\n"


def test_apk_add_of_a_name_the_base_system_provides_installs_nothing(repo):
    repo.package("app", "1.0-r0", {"usr/bin/app": "x\n"})
    repo.index()
    refused = repo.apk("add", "nginx", check=False)
    assert "nginx (no such package)" in refused.stderr
    (repo.root / "etc/apk/provided").write_text("nginx\nrsync\n")
    for args in (("add", "nginx", "rsync"), ("add", "-u", "nginx")):
        added = repo.apk(*args)
        assert added.stdout == "OK: 0 B in 0 packages\n"
    assert (repo.root / "etc/apk/world").read_text() == "nginx\nrsync\n"
    assert repo.apk("info", "-e", "nginx", check=False).returncode == 1  # not a package


def test_apk_refuses_an_index_signed_by_an_untrusted_key(repo, tmp_path):
    other, _ = apk.generate_key(tmp_path / "other" / "other.rsa")
    repo.package("app", "1.0-r0", {"usr/bin/app": "x\n"}, key=other)
    repo.index(key=other)
    update = repo.apk("update")  # apk only warns about a local repository it can't open
    assert "UNTRUSTED signature" in update.stderr and "WARNING" in update.stderr
    refused = repo.apk("add", "app", check=False)
    assert refused.returncode != 0
    assert "app (no such package)" in refused.stderr
    assert not (repo.root / "usr/bin/app").exists()


def test_apk_refuses_a_package_signed_by_an_untrusted_key(repo, tmp_path):
    other, _ = apk.generate_key(tmp_path / "other" / "other.rsa")
    repo.package("app", "1.0-r0", {"usr/bin/app": "x\n"}, key=other)
    repo.index()  # a trusted index listing a package whose own signature isn't trusted
    refused = repo.apk("add", "app", check=False)
    assert refused.returncode != 0
    assert "ERROR: app-1.0-r0: UNTRUSTED signature" in refused.stderr
    assert not (repo.root / "usr/bin/app").exists()
    assert repo.apk("info", "-e", "app", check=False).returncode == 1


def test_apk_refuses_a_tampered_package(repo):
    path = repo.package("app", "1.0-r0", {"usr/bin/app": "x\n"})
    repo.index()
    data = bytearray(path.read_bytes())
    data[-30] ^= 0xFF  # inside the data member, which the signed datahash covers
    path.write_bytes(bytes(data))
    refused = repo.apk("add", "app", check=False)
    assert refused.returncode != 0
    assert "ERROR: app-1.0-r0:" in refused.stderr
    assert not (repo.root / "usr/bin/app").exists()


def test_apk_says_it_cannot_read_v3_or_remote_repositories(repo):
    listing = repo.root / "etc/apk/repositories.d/outpost.list"
    listing.write_text(f"v3 {repo.dir}\n")
    v3 = repo.apk("update", check=False)
    assert v3.returncode != 0 and "can't read v3 indexes" in v3.stderr
    listing.write_text("v2 https://example.org/repo\n")
    remote = repo.apk("update", check=False)
    assert remote.returncode != 0 and "only reads local repositories" in remote.stderr


def test_apk_applies_sysusers_and_tmpfiles_after_install(repo):
    (repo.root / "etc").mkdir(exist_ok=True)
    (repo.root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (repo.root / "etc/group").write_text("root:x:0:\n")
    for name in ("shadow", "gshadow"):
        (repo.root / "etc" / name).write_text("")
    repo.package("app", "1.0-r0", {
        "usr/lib/sysusers.d/app.conf": 'u _app - "app daemon" /var/lib/app\n',
        "usr/lib/tmpfiles.d/app.conf": "d /var/lib/app/content 0750 _app _app -\n"})
    repo.index()
    repo.apk("add", "app")
    entry = next(line for line in (repo.root / "etc/passwd").read_text().splitlines()
                 if line.startswith("_app:"))
    uid = int(entry.split(":")[2])
    content = repo.root / "var/lib/app/content"
    assert content.is_dir()
    assert oct(content.stat().st_mode & 0o777) == "0o750"
    assert content.stat().st_uid == uid


def test_apk_refuses_to_overwrite_another_packages_file(repo):
    repo.package("one", "1.0-r0", {"usr/bin/shared": "one\n"})
    repo.package("two", "1.0-r0", {"usr/bin/shared": "two\n"})
    repo.index()
    repo.apk("add", "one")
    refused = repo.apk("add", "two", check=False)
    assert refused.returncode != 0
    assert "trying to overwrite usr/bin/shared owned by one." in refused.stderr
    assert (repo.root / "usr/bin/shared").read_text() == "one\n"


def test_apk_del_refuses_a_package_others_depend_on(repo):
    repo.package("lib", "1.0-r0", {"usr/lib/libx": "l\n"})
    repo.package("app", "1.0-r0", {"usr/bin/app": "a\n"}, depends=["lib"])
    repo.index()
    repo.apk("add", "app")
    refused = repo.apk("del", "lib", check=False)
    assert refused.returncode != 0 and "needed by app" in refused.stderr
    assert (repo.root / "usr/lib/libx").exists()
    missing = repo.apk("del", "nope", check=False)
    assert missing.returncode != 0 and "No such package: nope" in missing.stderr


def test_apk_without_a_database_fails_as_real_apk_does(tmp_path):
    # Real apk 3.0.6: it locks the database to change it and reads it for info; exit 99.
    root = tmp_path / "bare"
    root.mkdir()
    for args, how in ((("add", "-u", "app"), "lock"), (("update",), "lock"),
                      (("info", "-e", "-v", "app"), "read")):
        refused = run("apk", "--root", root, *args, check=False)
        assert (refused.returncode, refused.stdout) == (99, ""), args
        assert refused.stderr == (f"ERROR: Unable to {how} database: No such file or directory\n"
                                  "ERROR: Failed to open apk database: No such file or "
                                  "directory\n"), args
    made = run("apk", "--root", root, "add", "--initdb")
    assert made.returncode == 0 and (root / "lib/apk/db/installed").is_file()
    assert run("apk", "--root", root, "info").stdout == ""


def test_apk_keeps_a_changed_config_file_and_writes_the_new_one_as_apk_new(repo):
    repo.package("app", "1.0-r0", {"etc/default/app": "PORT=1\n", "usr/bin/app": "one\n"})
    repo.index()
    repo.apk("add", "app")
    repo.package("app", "1.0-r1", {"etc/default/app": "PORT=2\n", "usr/bin/app": "two\n"})
    repo.index()
    repo.apk("add", "-u", "app")  # unchanged since installed: replaced
    assert (repo.root / "etc/default/app").read_text() == "PORT=2\n"
    assert not (repo.root / "etc/default/app.apk-new").exists()
    (repo.root / "etc/default/app").write_text("PORT=8080\n")  # the admin's (config's) own
    repo.package("app", "1.0-r2", {"etc/default/app": "PORT=3\n", "usr/bin/app": "three\n"})
    repo.index()
    repo.apk("add", "-u", "app")
    assert (repo.root / "etc/default/app").read_text() == "PORT=8080\n"
    assert (repo.root / "etc/default/app.apk-new").read_text() == "PORT=3\n"
    assert (repo.root / "usr/bin/app").read_text() == "three\n"  # not a protected path
    (repo.root / "etc/default/app.apk-new").unlink()
    repo.package("app", "1.0-r3", {"etc/default/app": "PORT=8080\n", "usr/bin/app": "4\n"})
    repo.index()
    repo.apk("add", "-u", "app")  # the new one is what the admin has: nothing to keep apart
    assert not (repo.root / "etc/default/app.apk-new").exists()


def test_apk_versions_compare_as_apk_orders_them():
    from outpost.standins import _apk
    ordered = ["1.0_rc1-r0", "1.0-r0", "1.0-r1", "1.0-r10", "1.0_p1-r0", "1.0.1-r0", "1.2-r0",
               "1.10-r0"]
    assert sorted(ordered, key=_apk.version_key) == ordered


# ---------------------------------------------------------------------------------- dinit


class Dinit:
    def __init__(self, tmp_path):
        self.dir = tmp_path / "dinit.d"
        self.dir.mkdir()
        self.socket = tmp_path / "dinitctl.sock"
        self.log = tmp_path / "dinit.out"  # its stdout and stderr
        self.dinit_log = tmp_path / "dinit.log"  # its log (--log-file)
        self.proc = None

    def service(self, name, text):
        (self.dir / name).write_text(text)

    def start(self, *services):
        self.proc = subprocess.Popen(
            [sys.executable, str(STANDINS / "dinit"), "-d", self.dir, "-p", self.socket,
             "-l", self.dinit_log, *services], stdout=self.log.open("w"),
            stderr=subprocess.STDOUT)
        wait_for(lambda: self.socket.exists() or self.proc.poll() is not None, "dinit's socket")
        assert self.proc.poll() is None, self.log.read_text()

    def logged(self):
        return self.dinit_log.read_text() if self.dinit_log.exists() else ""

    def ctl(self, *args, check=True):
        return run("dinitctl", "-p", self.socket, *args, check=check)

    def status(self, name):
        fields = {}
        for line in self.ctl("status", name).stdout.splitlines():
            key, _, value = line.strip().partition(": ")
            fields[key] = value
        return fields

    def pid(self, name):
        value = self.status(name).get("Process ID")
        return int(value) if value else None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


@pytest.fixture
def dinit(tmp_path):
    d = Dinit(tmp_path)
    yield d
    d.stop()


# real dinitctl's words (dinitctl.cc) when dinit could not load a service; the reason is logged.
DESCRIPTION_ERROR = ("dinitctl: error in service description.\n"
                     "dinitctl: try 'dinit-check <service-name>' or check log for more "
                     "information.\n")
LOAD_ERROR = ("dinitctl: error loading service (or dependency of service).\n"
              "dinitctl: try 'dinit-check <service-name>' or check log for more information.\n")
RELOAD_ERROR = ("dinitctl: could not reload service; service in wrong state, incompatible change, "
                "or bad service description.\n")
SLEEPER = f"type = process\ncommand = {sys.executable} -c \"import time; time.sleep(600)\"\n"


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); dinit reaps its children, so check the state too
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_dinit_starts_boot_and_its_dependencies(dinit):
    dinit.service("boot", "type = internal\nwaits-for: web\n")
    dinit.service("web", SLEEPER)
    dinit.start()
    pid = wait_for(lambda: dinit.pid("web"), "web to start")
    assert alive(pid)
    assert dinit.status("web")["State"] == "STARTED"
    listing = dinit.ctl("list").stdout
    assert "[[+]     ] boot" in listing
    assert f"[{{+}}     ] web (pid: {pid})" in listing


def test_dinitctl_restart_replaces_the_process(dinit):
    dinit.service("boot", "type = internal\n")
    dinit.service("web", SLEEPER)
    dinit.start()
    started = dinit.ctl("start", "web")
    assert started.stdout == "Service 'web' started.\n"
    first = dinit.pid("web")
    restarted = dinit.ctl("restart", "web")
    assert restarted.stdout == "Service 'web' stopped.\nService 'web' started.\n"
    second = dinit.pid("web")
    assert second != first and alive(second)
    wait_for(lambda: not alive(first), "the old process to end")
    stopped = dinit.ctl("stop", "web")
    assert stopped.stdout == "Service 'web' stopped.\n"
    assert dinit.status("web")["State"] == "STOPPED"
    wait_for(lambda: not alive(second), "the process to end")


def test_dinitctl_restart_of_a_stopped_service_fails_as_dinitctl_does(dinit):
    dinit.service("boot", "type = internal\n")
    dinit.service("web", SLEEPER)
    dinit.start()
    refused = dinit.ctl("restart", "web", check=False)
    assert refused.returncode == 1
    assert refused.stderr == "dinitctl: cannot restart service; service not started.\n"
    ignored = dinit.ctl("restart", "--ignore-unstarted", "web")
    assert ignored.stdout == "Service 'web' is not currently started.\n"
    assert dinit.status("web")["State"] == "STOPPED"


def test_env_file_and_logfile_are_honoured(dinit, tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    dinit.service("boot", "type = internal\n")
    dinit.service("web", "type = process\n"
                  f"command = {sys.executable} -c \"import os, sys, time; "
                  "print('out', os.environ['GREETING'], flush=True); "
                  "print('err', file=sys.stderr, flush=True); time.sleep(600)\"\n"
                  "env-file = web.env\n"  # relative: to the service's folder
                  f"logfile = {logs}/web.log\n")
    (dinit.dir / "web.env").write_text("# settings\nGREETING=hello there\n")
    dinit.start()
    dinit.ctl("start", "web")
    wait_for(lambda: "err" in (logs / "web.log").read_text(), "the service's output")
    assert (logs / "web.log").read_text().splitlines() == ["out hello there", "err"]
    assert oct((logs / "web.log").stat().st_mode & 0o777) == "0o600"


def test_missing_env_file_or_log_folder_fails_the_start(dinit, tmp_path):
    dinit.service("boot", "type = internal\n")
    dinit.service("noenv", SLEEPER + "env-file = /nonexistent/web.env\n")
    dinit.service("nolog", SLEEPER + f"logfile = {tmp_path}/missing/web.log\n")
    dinit.start()
    noenv = dinit.ctl("start", "noenv", check=False)
    assert noenv.returncode == 1
    # As real dinitctl: no reason on its own output; dinit's log has it.
    assert noenv.stderr == LOAD_ERROR
    assert "could not load environment file: /nonexistent/web.env" in dinit.logged()
    nolog = dinit.ctl("start", "nolog", check=False)
    assert nolog.returncode == 1
    assert "Service 'nolog' failed to start." in nolog.stdout
    assert "Stage: opening log file" in nolog.stdout
    assert dinit.status("nolog")["State"].startswith("STOPPED")


def test_smooth_recovery_restarts_a_killed_process(dinit):
    dinit.service("boot", "type = internal\n")
    dinit.service("web", SLEEPER + "smooth-recovery = true\n")
    dinit.service("front", SLEEPER + "depends-on: web\n")
    dinit.start()
    dinit.ctl("start", "front")
    first, front = dinit.pid("web"), dinit.pid("front")
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (dinit.pid("web") or first) != first and dinit.pid("web"),
                      "a new web process")
    assert alive(second)
    assert dinit.pid("front") == front  # its dependent was not stopped


def test_a_killed_process_without_smooth_recovery_restarts_with_its_dependents_stopped(dinit):
    dinit.service("boot", "type = internal\n")
    dinit.service("web", SLEEPER)  # restart defaults to yes, as in dinit's Linux build
    dinit.service("front", SLEEPER + "depends-on: web\nrestart = no\n")
    dinit.start()
    dinit.ctl("start", "front")
    first, front = dinit.pid("web"), dinit.pid("front")
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: (dinit.pid("web") or first) != first, "web to come back")
    wait_for(lambda: not alive(front), "front to be stopped")
    assert dinit.status("front")["State"].startswith("STOPPED")


@pytest.mark.parametrize("line, message", [
    ("stop-timeout = 5\n", "setting 'stop-timeout' (file {path}, line 3): not supported by the "
                           "dinit stand-in"),
    ("bogus = 1\n", "(file {path}, line 3): unknown setting: 'bogus'."),
    ("type = scripted\n", "setting 'type' (file {path}, line 3): service type 'scripted' is not "
                          "supported by the dinit stand-in"),
])
def test_a_setting_the_stand_in_does_not_honour_is_an_error_naming_it(dinit, line, message):
    dinit.service("boot", "type = internal\n")
    dinit.service("web", SLEEPER + line)
    dinit.start()
    refused = dinit.ctl("start", "web", check=False)
    assert refused.returncode == 1
    assert refused.stderr == DESCRIPTION_ERROR
    assert message.format(path=dinit.dir / "web") in dinit.logged()


def test_unknown_service_is_an_error(dinit):
    dinit.service("boot", "type = internal\n")
    dinit.start()
    refused = dinit.ctl("start", "nope", check=False)
    assert refused.returncode == 1
    assert "dinitctl: failed to find service description." in refused.stderr


def test_sigterm_stops_every_service_and_dinit_exits(dinit):
    dinit.service("boot", "type = internal\ndepends-on: web\n")
    dinit.service("web", SLEEPER)
    dinit.start()
    pid = wait_for(lambda: dinit.pid("web"), "web to start")
    dinit.proc.send_signal(signal.SIGTERM)
    assert dinit.proc.wait(timeout=30) == 0
    assert not alive(pid)
    assert not dinit.socket.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="run-as needs root")
def test_run_as_runs_the_process_as_that_user(dinit, tmp_path):
    nobody = pwd.getpwnam("nobody")
    dinit.service("boot", "type = internal\n")
    # nobody can't enter pytest's private tmp folders (the default working-dir) or the venv
    dinit.service("web", "type = process\ncommand = /bin/sleep 600\nrun-as = nobody\n"
                  "working-dir = /\n")
    dinit.start()
    dinit.ctl("start", "web")
    pid = dinit.pid("web")
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    gid_line = next(line for line in status.splitlines() if line.startswith("Gid:"))
    assert uid_line.split()[1:] == [str(nobody.pw_uid)] * 4
    assert gid_line.split()[1:] == [str(nobody.pw_gid)] * 4


def test_stop_refuses_a_service_with_started_dependents_unless_forced(dinit):
    dinit.service("boot", "type = internal\n")
    dinit.service("web", SLEEPER)
    dinit.service("front", SLEEPER + "depends-on = web\n")
    dinit.start()
    dinit.ctl("start", "front")
    refused = dinit.ctl("stop", "web", check=False)
    assert refused.returncode == 1
    assert "cannot stop service 'web' due to the following dependents:" in refused.stderr
    assert "front" in refused.stderr
    dinit.ctl("stop", "--force", "web")
    assert dinit.status("front")["State"] == "STOPPED"


def test_waits_for_a_failing_service_still_starts_the_dependent(dinit, tmp_path):
    dinit.service("boot", "type = internal\n")
    dinit.service("broken", SLEEPER + f"logfile = {tmp_path}/missing/log\n")
    dinit.service("web", SLEEPER + "waits-for: broken\n")
    dinit.service("front", SLEEPER + "depends-on: broken\n")
    dinit.start()
    assert dinit.ctl("start", "web").returncode == 0
    failed = dinit.ctl("start", "front", check=False)
    assert failed.returncode == 1
    assert "a dependency of the service failed to start" in failed.stdout


def test_dependency_folders_skip_entries_that_name_no_service(dinit):
    dinit.service("boot", "type = internal\ndepends-on.d = needs.d\n")
    (dinit.dir / "needs.d").mkdir()
    for name in ("web", "ghost", ".hidden"):
        (dinit.dir / "needs.d" / name).touch()  # the entries' contents don't matter
    dinit.service("web", SLEEPER)
    dinit.service(".hidden", SLEEPER)
    dinit.start()
    wait_for(lambda: dinit.pid("web"), "web to start with boot")
    assert dinit.status("boot")["State"] == "STARTED"
    assert ".hidden" not in dinit.ctl("list").stdout


def test_a_dependency_cycle_is_a_load_error(dinit):
    dinit.service("boot", "type = internal\n")
    dinit.service("a", "type = internal\ndepends-on: b\n")
    dinit.service("b", "type = internal\ndepends-on: a\n")
    dinit.start()
    refused = dinit.ctl("start", "a", check=False)
    assert refused.returncode == 1 and "dependency cycle" in dinit.logged()


def test_a_changed_service_file_takes_effect_on_reload(dinit, tmp_path):
    dinit.service("boot", "type = internal\n")
    dinit.service("web", SLEEPER + f"logfile = {tmp_path}/old.log\n")
    dinit.start()
    dinit.ctl("start", "web")
    dinit.service("web", SLEEPER + f"logfile = {tmp_path}/new.log\n")
    dinit.ctl("restart", "web")
    assert not (tmp_path / "new.log").exists()  # still the description loaded first
    assert dinit.ctl("reload", "web").stdout == "Service 'web' reloaded.\n"
    dinit.ctl("restart", "web")
    assert (tmp_path / "new.log").exists()


def test_reload_refuses_a_new_log_type_for_a_running_service(dinit, tmp_path):
    # dinit (load-service.cc check_settings_for_reload): a logfile where there was none changes
    # the log-type, which a started service can't; stopped, it reloads.
    dinit.service("boot", "type = internal\n")
    dinit.service("web", SLEEPER)
    dinit.start()
    dinit.ctl("start", "web")
    dinit.service("web", SLEEPER + f"logfile = {tmp_path}/web.log\n")
    refused = dinit.ctl("reload", "web", check=False)
    assert (refused.returncode, refused.stderr) == (1, RELOAD_ERROR)
    assert "Could not reload service web: cannot change log-type for running service." in \
        dinit.logged()
    dinit.ctl("stop", "web")
    dinit.ctl("reload", "web")
    dinit.ctl("start", "web")
    assert (tmp_path / "web.log").exists()


def test_restart_on_failure_spares_deliberate_signals():
    from outpost.standins import _dinit
    assert _dinit.restart_wanted("on-failure", 1)
    assert _dinit.restart_wanted("on-failure", -signal.SIGKILL)
    assert not _dinit.restart_wanted("on-failure", -signal.SIGTERM)
    assert not _dinit.restart_wanted("on-failure", 0)
    assert _dinit.restart_wanted("yes", 0) and not _dinit.restart_wanted("no", 1)


def test_dinit_exits_non_zero_when_boot_cannot_start(dinit):
    dinit.service("boot", "type = internal\ndepends-on: missing\n")
    proc = subprocess.run([sys.executable, str(STANDINS / "dinit"), "-d", dinit.dir,
                           "-p", dinit.socket], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "could not start 'boot'" in proc.stderr and "'missing'" in proc.stderr


# ------------------------------------------------------------ dinitctl enable, disable, signal


def boot_with_boot_d(dinit):
    """Chimera's boot: it waits for whatever `dinitctl enable` links into its waits-for.d."""
    dinit.service("boot", "type = internal\nwaits-for.d = boot.d\n")  # relative: to dinit.d
    (dinit.dir / "boot.d").mkdir()


def test_enable_links_the_service_into_boots_waits_for_d_and_starts_it(dinit):
    boot_with_boot_d(dinit)
    dinit.service("web", SLEEPER)
    dinit.start()
    enabled = dinit.ctl("enable", "web")
    assert (enabled.stdout, enabled.stderr) == (
        "Service 'web' has been enabled.\nService 'web' started.\n", "")
    assert os.readlink(dinit.dir / "boot.d" / "web") == "../web"
    assert dinit.status("web")["Activation"] == "start due to dependent(s)"
    again = dinit.ctl("enable", "web", check=False)
    assert (again.returncode, again.stdout, again.stderr) == (
        1, "", "dinitctl: service already enabled.\n")


def test_an_enabled_service_starts_when_dinit_starts_again(dinit):
    boot_with_boot_d(dinit)
    dinit.service("web", SLEEPER)
    dinit.start()
    dinit.ctl("enable", "web")
    first = dinit.pid("web")
    dinit.stop()
    assert not alive(first)
    dinit.start()
    second = wait_for(lambda: dinit.pid("web"), "web to start with boot")
    assert second != first and alive(second)


def test_disable_removes_the_link_and_stops_a_service_only_boot_held(dinit):
    boot_with_boot_d(dinit)
    dinit.service("web", SLEEPER)
    dinit.start()
    dinit.ctl("enable", "web")
    pid = dinit.pid("web")
    disabled = dinit.ctl("disable", "web")
    assert (disabled.stdout, disabled.stderr) == ("Service 'web' has been disabled.\n", "")
    assert not os.path.lexists(dinit.dir / "boot.d" / "web")
    assert dinit.status("web")["State"] == "STOPPED"
    wait_for(lambda: not alive(pid), "web's process to end")
    again = dinit.ctl("disable", "web", check=False)
    assert (again.returncode, again.stderr) == (1, "dinitctl: service not currently enabled\n")


def test_an_explicitly_started_service_keeps_running_when_disabled(dinit):
    boot_with_boot_d(dinit)
    dinit.service("web", SLEEPER)
    dinit.start()
    started = dinit.ctl("start", "web")
    assert started.stdout == "Service 'web' started.\n"
    # Already running: enable says nothing about starting it.
    assert dinit.ctl("enable", "web").stdout == "Service 'web' has been enabled.\n"
    disabled = dinit.ctl("disable", "web")
    assert disabled.stderr == "dinitctl: note: disabled service may have other dependents\n"
    assert dinit.status("web")["State"] == "STARTED"


def test_enable_from_another_service_or_its_enable_via(dinit, tmp_path):
    elsewhere = tmp_path / "other" / "elsewhere.d"  # another parent folder: the link is absolute
    elsewhere.mkdir(parents=True)
    boot_with_boot_d(dinit)
    dinit.service("late", f"type = internal\nwaits-for.d = {elsewhere}\n")
    dinit.service("web", SLEEPER)
    dinit.service("api", "@meta enable-via late\n" + SLEEPER)
    dinit.start()
    enabled = dinit.ctl("enable", "--from", "late", "web")
    # `late` isn't started, so neither is web: dinitctl warns, as for real.
    assert enabled.stderr == "dinitctl: warning: enabling dependency for non-started service\n"
    assert enabled.stdout == "Service 'web' has been enabled.\n"
    assert os.readlink(elsewhere / "web") == str(dinit.dir / "web")
    assert dinit.status("web")["State"] == "STOPPED"
    dinit.ctl("enable", "api")
    assert os.path.lexists(elsewhere / "api") and not os.path.lexists(dinit.dir / "boot.d" / "api")
    dinit.ctl("start", "late")
    assert dinit.status("web")["State"] == "STARTED"
    assert dinit.status("api")["State"] == "STARTED"


@pytest.mark.parametrize("source, message", [
    ("plain", "dinitctl: service 'plain' has no waits-for.d directory specified\n"),
    ("fixed", "dinitctl: there is a fixed dependency to service 'web' in the service "
              "description of 'fixed'.\n"),
    ("web", "dinitctl: could not enable service: possible circular dependency\n"),
])
def test_enable_refuses_what_dinitctl_refuses(dinit, source, message):
    boot_with_boot_d(dinit)
    dinit.service("plain", "type = internal\n")
    dinit.service("fixed", "type = internal\nwaits-for: web\nwaits-for.d = boot.d\n")
    dinit.service("web", SLEEPER + "waits-for.d = boot.d\n")
    dinit.start()
    refused = dinit.ctl("enable", "--from", source, "web", check=False)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.endswith(message)
    assert list((dinit.dir / "boot.d").iterdir()) == []


def test_enable_of_a_service_that_cannot_start_keeps_the_link_and_fails(dinit, tmp_path):
    boot_with_boot_d(dinit)
    dinit.service("web", SLEEPER + f"logfile = {tmp_path}/missing/web.log\n")
    dinit.start()
    failed = dinit.ctl("enable", "web", check=False)
    assert failed.returncode == 1
    assert failed.stdout.startswith("Service 'web' has been enabled.\nService 'web' failed to start.\n")
    assert "Stage: opening log file" in failed.stdout
    assert os.path.lexists(dinit.dir / "boot.d" / "web")


# A process that writes a line for each SIGHUP it gets and keeps running.
HUP_COUNTER = (f"type = process\ncommand = {sys.executable} -c \"import signal, time; "
               "signal.signal(signal.SIGHUP, lambda *_: print('hup', flush=True)); "
               "[time.sleep(1) for _ in iter(int, 1)]\"\nlogfile = {log}\n")


@pytest.mark.parametrize("name", ["HUP", "1"])
def test_signal_sends_a_named_or_numbered_signal_to_the_process(dinit, tmp_path, name):
    log = tmp_path / "web.log"
    dinit.service("boot", "type = internal\n")
    dinit.service("web", HUP_COUNTER.format(log=log))
    dinit.start()
    dinit.ctl("start", "web")
    pid = dinit.pid("web")
    sent = dinit.ctl("signal", name, "web")
    assert (sent.stdout, sent.stderr) == ("", "")
    wait_for(lambda: log.exists() and log.read_text() == "hup\n", "the process to see SIGHUP")
    assert dinit.pid("web") == pid and dinit.status("web")["State"] == "STARTED"


@pytest.mark.parametrize("args, message", [
    (("SIGHUP", "web"), "dinitctl: 'SIGHUP' is not a valid signal name/number\n"),
    (("HUP",), "dinitctl: service name must be specified\n"),
    ((), "dinitctl: signal number/name must be specified\n"),
    (("99", "web"), "dinitctl: provided signal was invalid.\n"),
    (("HUP", "idle"), "dinitctl: could not get valid PID of service; service is not "
                      "process-based or is in wrong state.\n"),
])
def test_signal_refuses_as_dinitctl_does(dinit, args, message):
    dinit.service("boot", "type = internal\n")
    dinit.service("web", SLEEPER)
    dinit.service("idle", SLEEPER)
    dinit.start()
    dinit.ctl("start", "web")
    refused = dinit.ctl("signal", *args, check=False)
    assert (refused.returncode, refused.stdout, refused.stderr) == (1, "", message)
    assert dinit.status("web")["State"] == "STARTED"
