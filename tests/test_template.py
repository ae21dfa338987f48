"""outpost.template: reading cports templates and running their install hooks like cbuild.

Expected destinations and modes come from cports src/cbuild/core/template.py (install_file,
install_bin, install_license, install_service, install_sysusers, install_tmpfiles,
install_dir, install_link) and FACTS.md, not from outpost's code."""
import os
import stat
import subprocess
import textwrap
from pathlib import Path

import pytest

from outpost.errors import OutpostError
from outpost.template import FALLBACK_EPOCH, install, load_template, source_date_epoch

REPO = Path(__file__).resolve().parents[1]
LINKEDLIST = REPO / "cports-overlay/user/linkedlist"

HEADER = '''\
pkgname = "demo"
pkgver = "1.2.3"
pkgrel = 4
pkgdesc = "A demo package"
license = "custom:none"
url = "https://example.org/demo"
'''


def make_template(tmp_path, body="", header=HEADER, files=None, name="demo"):
    folder = tmp_path / "user" / name
    (folder / "files").mkdir(parents=True)
    (folder / "template.py").write_text(header + textwrap.dedent(body))
    for fname, content in (files or {}).items():
        (folder / "files" / fname).write_bytes(content)
    return folder


def built(template, tmp_path):
    destdir = tmp_path / "destdir"
    destdir.mkdir()
    install(template, destdir)
    return destdir


def tree(destdir):
    """{relative path: (kind, mode, content or link target)} of everything in destdir."""
    found = {}
    for path in sorted(destdir.rglob("*")):
        st = path.lstat()
        rel = path.relative_to(destdir).as_posix()
        if stat.S_ISLNK(st.st_mode):
            found[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            found[rel] = ("dir", stat.S_IMODE(st.st_mode))
        else:
            found[rel] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
    return found


# --- metadata ----------------------------------------------------------------------------------

def test_metadata_version_and_apk_name(tmp_path):
    template = load_template(make_template(tmp_path, 'depends = ["python"]\n'))
    assert (template.pkgname, template.pkgver, template.pkgrel) == ("demo", "1.2.3", 4)
    assert template.pkgdesc == "A demo package"
    assert template.license == "custom:none"
    assert template.url == "https://example.org/demo"
    assert template.depends == ["python"]
    assert template.version == "1.2.3-r4"
    assert template.apk_name == "demo-1.2.3-r4.apk"
    assert template.files_path == tmp_path / "user/demo/files"
    assert template.path == tmp_path / "user/demo/template.py"


def test_private_names_and_helpers_are_not_fields(tmp_path):
    template = load_template(make_template(tmp_path, '''
        import os
        _gitrev = "5e1aed8"
        def _helper(self):
            pass
        def install(self):
            pass
    '''))
    assert "_gitrev" not in template.fields and "os" not in template.fields
    assert set(template.hooks) == {"install"}


@pytest.mark.parametrize("missing", ["pkgname", "pkgver", "pkgrel", "pkgdesc", "license", "url"])
def test_missing_mandatory_field_is_named(tmp_path, missing):
    header = "".join(line + "\n" for line in HEADER.splitlines()
                     if not line.startswith(missing + " "))
    with pytest.raises(OutpostError) as err:
        load_template(make_template(tmp_path, header=header))
    assert "template.py" in str(err.value) and f"missing field {missing!r}" in str(err.value)


def test_pkgrel_must_be_an_int(tmp_path):
    with pytest.raises(OutpostError, match="'pkgrel' must be a int"):
        load_template(make_template(tmp_path, header=HEADER.replace("pkgrel = 4", 'pkgrel = "4"')))


def test_pkgname_must_match_folder(tmp_path):
    with pytest.raises(OutpostError, match="does not match the template's folder 'other'"):
        load_template(make_template(tmp_path, name="other"))


def test_syntax_error_names_file_and_line(tmp_path):
    folder = make_template(tmp_path, "def install(self)\n    pass\n")
    with pytest.raises(OutpostError) as err:
        load_template(folder)
    assert f"{folder / 'template.py'}:7" in str(err.value)


def test_top_level_self_offers_get_data_only(tmp_path):
    template = load_template(make_template(tmp_path, '_token = self.get_data("forge_token")\n'))
    assert template.data_keys == ("forge_token",)
    with pytest.raises(OutpostError) as err:
        load_template(make_template(tmp_path / "b", '_arch = self.profile().arch\n'))
    assert "template.py" in str(err.value) and "self.profile" in str(err.value)


# --- what the local builder refuses ------------------------------------------------------------

@pytest.mark.parametrize("body, words", [
    ('build_style = "cargo"\n', "build_style = 'cargo'"),
    ('source = "https://example.org/demo.tar.gz"\n', "source"),
    ('_token = self.get_data("forge_token")\n', "self.get_data('forge_token')"),
    ("def build(self):\n    pass\n", "hook build()"),
    ("def configure(self):\n    pass\n", "hook configure()"),
    ("def pre_install(self):\n    pass\n", "hook pre_install()"),
    ("@subpackage('demo-doc')\ndef _(self):\n    return []\n", "subpackages"),
])
def test_local_build_problems(tmp_path, body, words):
    problem = load_template(make_template(tmp_path, body)).local_build_problem()
    assert problem is not None and words in problem


@pytest.mark.parametrize("body", [
    "", 'build_style = "meta"\n',
    "def install(self):\n    pass\ndef post_install(self):\n    pass\n",
    "def do_install(self):\n    pass\n",
])
def test_local_build_accepts(tmp_path, body):
    assert load_template(make_template(tmp_path, body)).local_build_problem() is None


# --- the install helpers -----------------------------------------------------------------------

def test_helpers_put_files_where_cbuild_does(tmp_path):
    files = {"tool": b"#!/bin/sh\n", "COPYING": b"license text\n", "demo": b"type = process\n",
             "sysusers.conf": b"u _demo -\n", "tmpfiles.conf": b"d /var/lib/demo\n",
             "agent.user": b"type = process\n", "conf": b"x = 1\n"}
    template = load_template(make_template(tmp_path, '''
        def install(self):
            self.install_bin(self.files_path / "tool")
            self.install_bin(self.files_path / "tool", name="tool2", mode=0o700)
            self.install_license(self.files_path / "COPYING")
            self.install_file(self.files_path / "conf", "etc/demo", name="demo.conf")
            self.install_file(self.files_path / "conf", "usr/share/demo", mode=0o600)
            self.install_dir("var/lib/demo", mode=0o750)
        def post_install(self):
            self.install_service(self.files_path / "demo", enable=True)
            self.install_service(self.files_path / "demo", name="demo-other")
            self.install_service(self.files_path / "agent.user")
            self.install_sysusers(self.files_path / "sysusers.conf")
            self.install_tmpfiles(self.files_path / "tmpfiles.conf")
            self.install_tmpfiles(self.files_path / "tmpfiles.conf", name="extra")
    ''', files=files))
    old_umask = os.umask(0o077)  # folder modes must not depend on the builder's umask
    try:
        found = tree(built(template, tmp_path))
    finally:
        os.umask(old_umask)
    expected_files = {
        "usr/bin/tool": (0o755, files["tool"]),
        "usr/bin/tool2": (0o700, files["tool"]),
        "usr/share/licenses/demo/COPYING": (0o644, files["COPYING"]),
        "etc/demo/demo.conf": (0o644, files["conf"]),
        "usr/share/demo/conf": (0o600, files["conf"]),
        "usr/lib/dinit.d/demo": (0o644, files["demo"]),
        "usr/lib/dinit.d/demo-other": (0o644, files["demo"]),
        "usr/lib/dinit.d/user/agent": (0o644, files["agent.user"]),
        "usr/lib/sysusers.d/demo.conf": (0o644, files["sysusers.conf"]),
        "usr/lib/tmpfiles.d/demo.conf": (0o644, files["tmpfiles.conf"]),
        "usr/lib/tmpfiles.d/extra.conf": (0o644, files["tmpfiles.conf"]),
    }
    assert {p: v[1:] for p, v in found.items() if v[0] == "file"} == expected_files
    assert {p: v[1] for p, v in found.items() if v[0] == "link"} == {
        "usr/lib/dinit.d/boot.d/demo": "../demo"}
    dirs = {p: v[1] for p, v in found.items() if v[0] == "dir"}
    assert dirs["var/lib/demo"] == 0o750
    assert {mode for path, mode in dirs.items() if path != "var/lib/demo"} == {0o755}


def test_do_install_is_the_old_name_of_install_and_post_install_runs_after(tmp_path):
    template = load_template(make_template(tmp_path, '''
        def post_install(self):
            (self.destdir / "order").write_text((self.destdir / "order").read_text() + "post\\n")
        def do_install(self):
            (self.destdir / "order").write_text("install\\n")
    '''))
    assert (built(template, tmp_path) / "order").read_text() == "install\npost\n"


def test_hook_sees_template_names(tmp_path):
    template = load_template(make_template(tmp_path, '''
        def install(self):
            self.install_dir("v")
            (self.destdir / "v/x").write_text(f"{self.pkgname} {self.pkgver} {self.pkgrel}")
    '''))
    assert (built(template, tmp_path) / "v/x").read_text() == "demo 1.2.3 4"


@pytest.mark.parametrize("call, words", [
    ('self.install_man(self.files_path / "x.1")', "self.install_man is not something the local"),
    ('self.do("make")', "self.do is not something the local"),
    ('self.install_file("LICENSE", "usr/share/doc")', "source tree"),
    ('self.install_file(self.files_path / "x", "/usr/bin")', "must not be absolute"),
    ('self.install_file(self.files_path / "missing", "usr/bin")', "is not a file"),
])
def test_unsupported_helpers_name_the_template_and_cbuild(tmp_path, call, words):
    template = load_template(make_template(tmp_path, f"def install(self):\n    {call}\n",
                                           files={"x": b"x"}))
    with pytest.raises(OutpostError) as err:
        built(template, tmp_path)
    message = str(err.value)
    assert str(template.path) in message and words in message
    if "not something" in words or "source tree" in words:
        assert "cbuild" in message


def test_installing_over_a_file_is_refused(tmp_path):
    template = load_template(make_template(tmp_path, '''
        def install(self):
            self.install_bin(self.files_path / "x")
            self.install_bin(self.files_path / "x")
    ''', files={"x": b"x"}))
    with pytest.raises(OutpostError, match="already exists"):
        built(template, tmp_path)


def test_failing_hook_names_the_template_line(tmp_path):
    template = load_template(make_template(tmp_path, "def install(self):\n    1 / 0\n"))
    with pytest.raises(OutpostError) as err:
        built(template, tmp_path)
    assert f"{template.path}:8: install() failed: ZeroDivisionError" in str(err.value)


def test_native_code_is_refused(tmp_path):
    elf = b"\x7fELF\x02\x01\x01" + bytes(57)
    template = load_template(make_template(tmp_path, '''
        def install(self):
            self.install_bin(self.files_path / "tool")
    ''', files={"tool": elf}))
    with pytest.raises(OutpostError) as err:
        built(template, tmp_path)
    message = str(err.value)
    assert str(template.path) in message and "/usr/bin/tool is an ELF file" in message
    assert "cbuild" in message


# --- the build date ----------------------------------------------------------------------------

def test_source_date_epoch_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert source_date_epoch(tmp_path) == 1700000000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(OutpostError, match="SOURCE_DATE_EPOCH"):
        source_date_epoch(tmp_path)


def test_build_date_is_the_templates_last_commit(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    folder = make_template(tmp_path)
    (tmp_path / "other").write_text("x")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}

    def commit(paths, when):
        subprocess.run(["git", "add", *paths], cwd=tmp_path, check=True, env=env)
        subprocess.run(["git", "commit", "-q", "-m", "x"], cwd=tmp_path, check=True,
                       env={**env, "GIT_COMMITTER_DATE": f"{when} +0000"})

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert source_date_epoch(folder) == FALLBACK_EPOCH  # not committed yet
    commit(["user"], 1600000000)
    commit(["other"], 1650000000)  # a later commit elsewhere does not count
    assert source_date_epoch(folder) == 1600000000


def test_build_date_outside_git_is_fixed(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert source_date_epoch(make_template(tmp_path)) == FALLBACK_EPOCH == 315532800


# --- the linkedlist template -------------------------------------------------------------------

# cports core_fields_priority, in order (src/cbuild/core/template.py); names on one line share
# a rank. Only the fields a simple template uses are listed.
CPORTS_FIELD_ORDER = [["pkgname"], ["pkgver"], ["pkgrel"], ["archs"], ["build_style"],
                      ["hostmakedepends"], ["makedepends"], ["checkdepends", "depends"],
                      ["pkgdesc"], ["license"], ["url"], ["source"], ["sha256"], ["options"]]


def test_linkedlist_template_follows_cports_rules():
    template = load_template(LINKEDLIST)
    assert "maintainer" not in template.fields  # removed from cports templates (FACTS.md)
    assert template.local_build_problem() is None
    assert template.depends == ["python"]
    # The service depends on local.target: its provider must be in makedepends (FACTS.md).
    assert "dinit-chimera" in template.fields["makedepends"]
    # It ships a file in /etc (the env-file), which cports lint allows only with etcfiles.
    assert "etcfiles" in template.fields["options"]

    rank = {name: i for i, names in enumerate(CPORTS_FIELD_ORDER) for name in names}
    order = []
    for line in (LINKEDLIST / "template.py").read_text().splitlines():
        if not line:
            break  # cports lints the leading block only
        name = line.split("=")[0].strip()
        if "=" in line and not line.startswith("#") and not name.startswith("_"):
            assert name in rank, f"{name} is not a field this test knows the rank of"
            order.append(rank[name])
    assert order == sorted(order)


def service_settings(text):
    """A dinit service's settings: `key = value` or `key: value`, whichever separator comes
    first (as cbuild's service scan reads them, hooks/pkg/001_runtime_deps.py)."""
    settings = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cut = min(i for i in (line.find("="), line.find(":")) if i >= 0)
        settings.setdefault(line[:cut].strip(), []).append(line[cut + 1:].strip())
    return settings


def test_linkedlist_package_contents(tmp_path):
    template = load_template(LINKEDLIST)
    found = tree(built(template, tmp_path))
    files = {p: v for p, v in found.items() if v[0] == "file"}
    assert sorted(files) == [
        "etc/default/linkedlist",
        "usr/bin/linkedlistd",
        "usr/lib/dinit.d/linkedlist",
        "usr/lib/sysusers.d/linkedlist.conf",
        "usr/lib/tmpfiles.d/linkedlist.conf",
        "usr/share/linkedlist/version",
    ]
    assert files["usr/bin/linkedlistd"][1] == 0o755
    assert files["usr/bin/linkedlistd"][2] == (LINKEDLIST / "files/linkedlistd").read_bytes()
    assert files["usr/share/linkedlist/version"][1:] == (
        0o644, f"{template.pkgver}-r{template.pkgrel}\n".encode())

    service = service_settings(files["usr/lib/dinit.d/linkedlist"][2].decode())
    assert service["type"] == ["process"]
    assert service["command"] == ["/usr/bin/linkedlistd"]
    assert service["run-as"] == ["_linkedlist"]
    assert service["logfile"] == ["/var/log/linkedlist.log"]
    assert service["depends-on"] == ["local.target"]
    assert service["smooth-recovery"] == ["true"]
    # The env-file the service reads is one the package ships, outside the package-owned
    # /usr/lib/dinit.d, so the admin's edits survive upgrades.
    env_file = service["env-file"][0]
    assert env_file.startswith("/etc/") and env_file.lstrip("/") in files
    env = dict(line.split("=", 1) for line in files[env_file.lstrip("/")][2].decode().splitlines()
               if line and not line.startswith("#"))
    assert env["LINKEDLIST_CONTENT"] == "/srv/linkedlist/current"

    sysusers = files["usr/lib/sysusers.d/linkedlist.conf"][2].decode()
    assert 'u _linkedlist - "linkedlist user" /var/lib/linkedlist /usr/bin/nologin' in sysusers
    tmpfiles = files["usr/lib/tmpfiles.d/linkedlist.conf"][2].decode().splitlines()
    made = {line.split()[1] for line in tmpfiles if line.startswith("d ")}
    assert "/var/lib/linkedlist" in made
    # The content folder is the deploy user's (the sync step makes it), not the package's: a
    # tmpfiles line would hand it back to _linkedlist on every upgrade.
    assert env["LINKEDLIST_CONTENT"] not in made
