"""outpost.steps.build and outpost.repo: the local builder, the cbuild builder (against the cbuild
stand-in in a fake cports clone), and publishing into build/repo/<arch>/."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from outpost import apk, inventory, repo
from outpost.steps.build import LocalBuilder, CbuildBuilder, make_builder
from outpost.errors import OutpostError
from outpost.template import load_template

REPO = Path(__file__).resolve().parents[1]
OVERLAY = REPO / "cports-overlay/user/linkedlist"
STANDIN = REPO / "outpost/standins/cbuild"

INVENTORY = '''
[repository]
signing_key = "keys/outpost.rsa"
path = "/var/lib/outpost/repo"

[builder]
{builder}

[site]
name = "linkedlist.test"

[ssh]
user = "deploy"
known_hosts = "known_hosts"
identity = "id"

[[packages]]
name = "linkedlist"

[[hosts]]
name = "au"
address = "198.18.0.11"
arch = "x86_64"
region = "oceania"

[[hosts]]
name = "pi"
address = "198.18.0.12"
arch = "aarch64"
region = "europe"
'''


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory):
    return apk.generate_key(tmp_path_factory.mktemp("key") / "outpost.rsa")[0]


@pytest.fixture
def project(tmp_path, signing_key, monkeypatch):
    """A project folder with the linkedlist overlay and a signing key; not in git."""
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    root = tmp_path / "project"
    shutil.copytree(OVERLAY, root / "cports-overlay/user/linkedlist",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (root / "keys").mkdir()
    shutil.copy(signing_key, root / "keys/outpost.rsa")
    shutil.copy(apk.public_key_path(signing_key), root / "keys/outpost.rsa.pub")
    return root


def load(root, builder='kind = "local"'):
    path = root / "inventory.toml"
    path.write_text(INVENTORY.format(builder=builder))
    return inventory.load(path)


def public_keys(root):
    return {"outpost.rsa.pub": (root / "keys/outpost.rsa.pub").read_bytes()}


def apk_name():
    return load_template(OVERLAY).apk_name


# --- the local builder -------------------------------------------------------------------------

def test_make_builder_picks_by_kind(project):
    assert isinstance(make_builder(load(project)), LocalBuilder)
    (project / "cports").mkdir()
    assert isinstance(make_builder(load(project, 'kind = "cbuild"\ncports = "cports"')),
                      CbuildBuilder)


def test_local_builds_noarch_once_for_all_arches(project):
    builder = make_builder(load(project))
    assert builder.index_format == "v2"
    assert builder.build_arches(("aarch64", "x86_64")) == ["noarch"]
    assert builder.sources("x86_64") == builder.sources("aarch64") == ["noarch"]


def test_local_targets_are_pure(project):
    builder = make_builder(load(project))
    assert builder.targets("noarch") == [project / "build/apks/noarch" / apk_name()]
    assert not (project / "build").exists()


def test_local_build_writes_a_verified_package(project):
    builder = make_builder(load(project))
    written = builder.build("noarch")
    assert written == builder.targets("noarch")

    package = apk.verify_package(written[0], public_keys(project))
    template = load_template(OVERLAY)
    assert package.info["pkgname"] == "linkedlist"
    assert package.info["pkgver"] == template.version
    assert package.info["arch"] == "noarch"
    assert package.info["depend"] == ["python"]
    assert "maintainer" not in package.info
    files = {f.path: (f.type, f.mode) for f in package.files}
    assert {path: v for path, v in files.items() if v[0] == "file"} == {
        "etc/default/linkedlist": ("file", 0o644),
        "usr/bin/linkedlistd": ("file", 0o755),
        "usr/lib/dinit.d/linkedlist": ("file", 0o644),
        "usr/lib/sysusers.d/linkedlist.conf": ("file", 0o644),
        "usr/lib/tmpfiles.d/linkedlist.conf": ("file", 0o644),
        "usr/share/linkedlist/version": ("file", 0o644),
    }
    # It was staged where DESIGN.md says.
    assert (project / "build/stage/noarch/linkedlist/usr/bin/linkedlistd").is_file()


def test_local_build_is_reproducible(project):
    builder = make_builder(load(project))
    first = builder.build("noarch")[0].read_bytes()
    shutil.rmtree(project / "build")
    # mtimes change on a clone or copy; they must not change the package.
    for path in (project / "cports-overlay").rglob("*"):
        os.utime(path, (2_000_000_000, 2_000_000_000))
    assert builder.build("noarch")[0].read_bytes() == first


def test_build_date_comes_from_source_date_epoch(project, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    written = make_builder(load(project)).build("noarch")[0]
    assert apk.read_package(written).info["builddate"] == "1700000000"


def test_same_version_with_other_contents_is_refused(project):
    builder = make_builder(load(project))
    target = builder.build("noarch")[0]
    before = target.read_bytes()
    app = project / "cports-overlay/user/linkedlist/files/linkedlistd"
    app.write_text(app.read_text() + "\n# changed\n")
    with pytest.raises(OutpostError) as err:
        builder.build("noarch")
    message = str(err.value)
    assert str(project / "cports-overlay/user/linkedlist/template.py") in message
    assert "pkgrel" in message and str(target) in message
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no leftovers


def test_unchanged_rebuild_keeps_the_file(project):
    builder = make_builder(load(project))
    target = builder.build("noarch")[0]
    inode = target.stat().st_ino
    builder.build("noarch")
    assert target.stat().st_ino == inode


def test_local_refusal_says_to_use_cbuild(project):
    template = project / "cports-overlay/user/linkedlist/template.py"
    template.write_text(re.sub(r"^pkgrel = \d+\n", lambda m: m.group(0) + 'build_style = "cargo"\n',
                               template.read_text(), flags=re.M))
    with pytest.raises(OutpostError) as err:
        make_builder(load(project)).build("noarch")
    message = str(err.value)
    assert str(template) in message and "build_style = 'cargo'" in message
    assert '[builder] kind = "cbuild"' in message


def test_local_builder_builds_no_arch_packages(project):
    with pytest.raises(OutpostError, match="noarch packages only, not x86_64"):
        make_builder(load(project)).build("x86_64")


# --- publishing --------------------------------------------------------------------------------

def test_publish_v2_indexes_noarch_packages_per_arch(project):
    inv = load(project)
    builder = make_builder(inv)
    apks = builder.build("noarch")
    for arch in inv.arches:
        repo_dir = repo.repo_dir(inv, arch)
        repo.publish(arch, apks, repo_dir, builder, inv.repository.signing_key)
        entries = apk.verify_index(repo_dir / "APKINDEX.tar.gz", public_keys(project))
        template = load_template(OVERLAY)
        # apk fetches <repo>/<A:>/<file>, so the entry names this folder's arch.
        assert [(e.fields["P"], e.fields["V"], e.fields["A"]) for e in entries] == [
            ("linkedlist", template.version, arch)]
        published = repo_dir / apk_name()
        assert published.read_bytes() == apks[0].read_bytes()
        apk.verify_package(published, public_keys(project))


def test_publish_refuses_other_contents_under_a_published_name(project):
    inv = load(project)
    builder = make_builder(inv)
    apks = builder.build("noarch")
    repo_dir = repo.repo_dir(inv, "x86_64")
    repo_dir.mkdir(parents=True)
    (repo_dir / apks[0].name).write_bytes(b"an older build")
    with pytest.raises(OutpostError) as err:
        repo.publish("x86_64", apks, repo_dir, builder, inv.repository.signing_key)
    assert "pkgrel" in str(err.value)
    assert str(project / "cports-overlay/user/linkedlist/template.py") in str(err.value)
    assert (repo_dir / apks[0].name).read_bytes() == b"an older build"


# --- the cbuild builder, against the stand-in --------------------------------------------------

@pytest.fixture
def clone(project, monkeypatch):
    """A fake cports clone: a git repo with the stand-in as ./cbuild and a signing key."""
    cports = project.parent / "cports"
    (cports / "etc/keys").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=cports, check=True)
    # The stand-in itself, run by this test's Python (which has outpost's dependencies).
    text = STANDIN.read_text().split("\n", 1)[1]
    (cports / "cbuild").write_text(f"#!{sys.executable}\n{text}")
    (cports / "cbuild").chmod(0o755)
    shutil.copy(project / "keys/outpost.rsa", cports / "etc/keys/test.rsa")
    (cports / "etc/config.ini").write_text("[build]\ncategories = main user\n"
                                           "[signing]\nkey = test.rsa\n")
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("OUTPOST_STANDIN_CBUILD_LOG", str(project.parent / "cbuild.log"))
    return cports


CBUILD = 'kind = "cbuild"\ncports = "../cports"\nconfig = "etc/config.ini"\nargs = ["-N"]'


def recorded(project):
    log = project.parent / "cbuild.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_cbuild_builds_every_arch(project, clone):
    builder = make_builder(load(project, CBUILD))
    assert builder.index_format == "v3"
    assert builder.build_arches(("aarch64", "x86_64")) == ["aarch64", "x86_64"]
    assert builder.sources("x86_64") == ["x86_64"]


def test_keys_are_made_here_only_for_the_local_builder(project, clone, tmp_path):
    make_builder(load(project)).make_key(tmp_path / "new.rsa")
    assert (tmp_path / "new.rsa.pub").is_file()
    with pytest.raises(OutpostError) as raised:
        make_builder(load(project, CBUILD)).make_key(tmp_path / "other.rsa")
    assert "./cbuild keygen" in str(raised.value) and "signing_key" in str(raised.value)
    assert not (tmp_path / "other.rsa").exists()


def test_cbuild_command_overlay_and_outputs(project, clone):
    stale = clone / "user/linkedlist/files/removed-from-overlay"
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    builder = make_builder(load(project, CBUILD))
    targets = builder.targets("x86_64")
    assert not (project / "build").exists()  # targets() builds nothing

    written = builder.build("x86_64")

    assert recorded(project) == [{
        "argv": ["./cbuild", "-c", "etc/config.ini", "-N", "-a", "x86_64", "pkg",
                 "user/linkedlist"],
        "cwd": str(clone)}]
    # The overlay was copied in, replacing what was there.
    for path in OVERLAY.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            assert (clone / "user/linkedlist" / path.relative_to(OVERLAY)).read_bytes() == \
                path.read_bytes()
    assert not stale.exists()

    out = project / "build/apks/x86_64"
    assert sorted(written) == sorted(targets) == sorted(
        [out / apk_name(), out / "Packages.adb", out / "APKINDEX.tar.gz"])
    assert os.path.samefile(out / "APKINDEX.tar.gz", out / "Packages.adb")
    # cbuild signs with the clone's key ([signing] key), not the inventory's.
    cbuild_key = {"test.rsa.pub": (project / "keys/outpost.rsa.pub").read_bytes()}
    package = apk.verify_package(out / apk_name(), cbuild_key)
    assert package.info["arch"] == "x86_64"
    apk.verify_index(out / "Packages.adb", cbuild_key)
    # Copies, not links into the clone (cbuild may rewrite its files in place).
    assert not os.path.samefile(out / "Packages.adb",
                                clone / "packages/user/x86_64/Packages.adb")


def test_cbuild_publish_keeps_its_index_and_hardlink(project, clone):
    inv = load(project, CBUILD)
    builder = make_builder(inv)
    outputs = builder.build("x86_64")
    repo_dir = repo.repo_dir(inv, "x86_64")
    repo.publish("x86_64", outputs, repo_dir, builder, inv.repository.signing_key)
    assert sorted(p.name for p in repo_dir.iterdir()) == sorted(
        ["APKINDEX.tar.gz", "Packages.adb", apk_name()])
    assert os.path.samefile(repo_dir / "APKINDEX.tar.gz", repo_dir / "Packages.adb")
    assert (repo_dir / "Packages.adb").read_bytes() == \
        (clone / "packages/user/x86_64/Packages.adb").read_bytes()


def test_cbuild_repository_path_from_args(project, clone):
    builder = make_builder(load(project, CBUILD.replace('["-N"]', '["-N", "-r", "my-repo"]')))
    builder.build("aarch64")
    assert (clone / "my-repo/user/aarch64" / apk_name()).is_file()
    assert (project / "build/apks/aarch64" / apk_name()).is_file()


def test_cbuild_exit_32_is_explained(project, clone, monkeypatch):
    monkeypatch.setenv("OUTPOST_STANDIN_CBUILD_REFUSE_UNSTAGE", "1")
    with pytest.raises(OutpostError) as err:
        make_builder(load(project, CBUILD)).build("x86_64")
    message = str(err.value)
    assert "cbuild left the packages in pkgstage/" in message and "exit 32" in message
    assert "unstag" in message and "./cbuild -c etc/config.ini -N -a x86_64" in message
    assert (clone / "pkgstage/user/x86_64" / apk_name()).is_file()
    assert not (project / "build/apks").exists()


def test_cbuild_failure_shows_exit_code_command_and_output(project, clone):
    template = project / "cports-overlay/user/linkedlist/template.py"
    template.write_text(template.read_text().replace("def install(self):",
                                                     "def install(self):\n    1 / 0"))
    with pytest.raises(OutpostError) as err:
        make_builder(load(project, CBUILD)).build("x86_64")
    message = str(err.value)
    assert "exit code 1" in message
    assert "./cbuild -c etc/config.ini -N -a x86_64 pkg user/linkedlist" in message
    assert str(clone) in message
    assert "ZeroDivisionError" in message  # the tail of cbuild's output


def test_cbuild_without_signing_key_fails_like_cbuild(project, clone):
    (clone / "etc/config.ini").write_text("[build]\ncategories = main user\n")
    with pytest.raises(OutpostError, match="no signing key set"):
        make_builder(load(project, CBUILD)).build("x86_64")


def test_cbuild_category_must_be_enabled(project, clone):
    (clone / "etc/config.ini").write_text("[build]\ncategories = main\n"
                                          "[signing]\nkey = test.rsa\n")
    with pytest.raises(OutpostError, match="category 'user' is not in"):
        make_builder(load(project, CBUILD)).build("x86_64")


def test_cbuild_skips_built_packages_unless_forced(project, clone):
    builder = make_builder(load(project, CBUILD))
    builder.build("x86_64")
    package = clone / "packages/user/x86_64" / apk_name()
    inode = package.stat().st_ino
    builder.build("x86_64")
    assert package.stat().st_ino == inode
    make_builder(load(project, CBUILD.replace('["-N"]', '["-N", "-f"]'))).build("x86_64")
    assert package.stat().st_ino != inode


def test_cbuild_stand_in_refuses_to_run_outside_a_git_clone(project, clone):
    shutil.rmtree(clone / ".git")
    proc = subprocess.run([str(clone / "cbuild"), "-a", "x86_64", "pkg", "user/linkedlist"],
                          cwd=clone, capture_output=True, text=True)
    assert proc.returncode == 1 and "git clone" in proc.stderr


@pytest.mark.parametrize("setup, words", [
    (lambda clone: shutil.rmtree(clone), "no such folder"),
    (lambda clone: shutil.rmtree(clone / ".git"), "is not a git clone"),
    (lambda clone: (clone / "cbuild").unlink(), "has no ./cbuild"),
])
def test_cbuild_clone_problems_name_the_key(project, clone, setup, words):
    setup(clone)
    with pytest.raises(OutpostError) as err:
        make_builder(load(project, CBUILD)).build("x86_64")
    message = str(err.value)
    assert "[builder] cports" in message and words in message
    assert str(project / "inventory.toml") in message
    assert recorded(project) == []
