"""Which Chimera tools the fleet's hosts run: the real apk and dinit/dinitctl found on PATH, or
the stand-ins. Fake "real" tools in a temporary folder exercise the selection without the real
binaries; what a host gets for the real apk (database, providers, commit hook) is checked here
too, the hook run for real with Debian's systemd-sysusers and systemd-tmpfiles."""
import os
import subprocess
from pathlib import Path

import pytest

from outpost.errors import OutpostError
from outpost.fleet import local, machine, provision
from outpost.fleet.local import ChimeraTools, find_chimera_tools

REAL_APK = "#!/bin/sh\necho 'apk-tools 3.0.6, compiled for x86_64.'\n"


def tool(folder: Path, name: str, text: str = "#!/bin/sh\nexit 0\n") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_nothing_on_path_means_every_stand_in(tmp_path):
    assert find_chimera_tools(str(tmp_path)) == ChimeraTools()


def test_tools_are_found_anywhere_on_path_not_only_in_system_folders(tmp_path):
    apk = tool(tmp_path / "opt/apk/bin", "apk", REAL_APK)
    dinit = tool(tmp_path / "opt/dinit/bin", "dinit")
    dinitctl = tool(tmp_path / "opt/dinit/bin", "dinitctl")
    path = os.pathsep.join([str(tmp_path / "empty"), str(tmp_path / "opt/apk/bin"),
                            str(tmp_path / "opt/dinit/bin")])
    assert find_chimera_tools(path) == ChimeraTools(apk=apk, dinit=dinit, dinitctl=dinitctl)


def test_the_first_apk_on_path_wins(tmp_path):
    first = tool(tmp_path / "a", "apk", REAL_APK)
    tool(tmp_path / "b", "apk", REAL_APK)
    assert find_chimera_tools(f"{tmp_path}/a:{tmp_path}/b").apk == first


def test_the_callers_path_is_read_by_default(tmp_path, monkeypatch):
    apk = tool(tmp_path, "apk", REAL_APK)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert find_chimera_tools().apk == apk


def test_the_stand_ins_folder_on_path_is_not_taken_for_real_tools(tmp_path):
    assert find_chimera_tools(str(local.STANDINS_DIR)) == ChimeraTools()


def test_an_apk_other_than_apk_tools_3_is_refused(tmp_path):
    tool(tmp_path, "apk", "#!/bin/sh\necho 'apk-tools 2.14.4, compiled for x86_64.'\n")
    with pytest.raises(OutpostError, match=r"apk` \(found on PATH\) is not apk-tools 3 but "
                                           r"'apk-tools 2\.14\.4"):
        find_chimera_tools(str(tmp_path))


@pytest.mark.parametrize("layout", [
    {"a": ["dinit"]},                      # dinit alone
    {"a": ["dinitctl"]},                   # dinitctl alone
    {"a": ["dinit"], "b": ["dinitctl"]},   # a pair split over two folders
])
def test_dinit_and_dinitctl_come_as_a_pair_from_one_folder(tmp_path, layout):
    for folder, names in layout.items():
        for name in names:
            tool(tmp_path / folder, name)
    path = os.pathsep.join(str(tmp_path / folder) for folder in layout)
    with pytest.raises(OutpostError, match="as a pair from one folder"):
        find_chimera_tools(path)


def test_a_host_links_the_real_tools_or_the_stand_ins(tmp_path):
    real = ChimeraTools(apk="/opt/x/bin/apk", dinit="/opt/x/bin/dinit",
                        dinitctl="/opt/x/bin/dinitctl")
    provision.install_tools(tmp_path / "real", real)
    bin_dir = tmp_path / "real/usr/local/bin"
    assert os.readlink(bin_dir / "apk") == "/opt/x/bin/apk"
    assert os.readlink(bin_dir / "dinitctl") == "/opt/x/bin/dinitctl"
    assert machine.init_command(real) == ["/opt/x/bin/dinit", "--container", "--log-file",
                                          "/var/log/dinit.log"]
    provision.install_tools(tmp_path / "standin", ChimeraTools())
    bin_dir = tmp_path / "standin/usr/local/bin"
    assert os.readlink(bin_dir / "apk") == str(provision.HOST_PACKAGE / "standins/apk")
    assert os.readlink(bin_dir / "dinitctl") == str(provision.HOST_PACKAGE / "standins/dinitctl")
    assert machine.init_command(ChimeraTools())[0] == str(provision.HOST_PACKAGE /
                                                          "standins/dinit")


def test_the_real_apk_gets_a_database_and_an_empty_package_for_each_provided_program():
    provided = provision.provided_packages("3.11.2")
    lines = provision.apk_database_lines(provided, real_apk=True)
    assert lines[0] == "[ -e /lib/apk/db/installed ] || apk add --quiet --initdb"
    assert lines[1:] == [
        "apk info -e python >/dev/null || apk add --quiet --virtual python=3.11.2",
        *(f"apk info -e {name} >/dev/null || apk add --quiet --virtual {name}"
          for name in ("openssh", "dinit-chimera", "nginx", "rsync", "curl", "openssl"))]
    # The stand-in reads /etc/apk/provided; it needs only the database.
    assert provision.apk_database_lines(provided, real_apk=False) == lines[:1]


HOOK_RUN = """set -eu
for top in etc var usr/lib; do
    mkdir -p "$WORK/upper/$top" "$WORK/work/$top"
    mount -t overlay overlay -o lowerdir=/$top,upperdir=$WORK/upper/$top,workdir=$WORK/work/$top /$top
done
mkdir -p /lib/apk/db
# apk's database: a package owning a sysusers.d and a tmpfiles.d file; Debian's own are not.
printf 'P:demo\\nV:1-r0\\nF:usr/lib/sysusers.d\\nR:outpost-demo.conf\\nF:usr/lib/tmpfiles.d\\nR:outpost-demo.conf\\n\\n' > /lib/apk/db/installed
echo 'u _outpostdemo - "demo" /var/lib/outpost-demo' > /usr/lib/sysusers.d/outpost-demo.conf
echo 'd /var/lib/outpost-demo 0750 _outpostdemo _outpostdemo -' > /usr/lib/tmpfiles.d/outpost-demo.conf
echo 'u _notapk - "not apk-s" /' > /usr/lib/sysusers.d/outpost-notapk.conf
sh "$HOOK" pre-commit
getent passwd _outpostdemo && exit 3
sh "$HOOK" post-commit
getent passwd _outpostdemo >/dev/null
getent passwd _notapk && exit 4
stat -c '%U %a' /var/lib/outpost-demo
"""


def test_the_commit_hook_applies_what_apk_installed_with_the_real_systemd_tools(tmp_path):
    assert os.geteuid() == 0, "this test needs root (a mount namespace and overlays)"
    hook = tmp_path / "hook"
    hook.write_text(provision.apk_commit_hook())
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             HOOK_RUN], env={"PATH": local.PROGRAM_DIRS, "WORK": str(tmp_path),
                                             "HOOK": str(hook)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "_outpostdemo 750\n"
