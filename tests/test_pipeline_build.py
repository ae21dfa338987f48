"""The build half of the pipeline, driven by real doit runs in a copy of the project:
keygen -> build:<arch> -> index:<arch>, incremental re-runs, the version-bump rule, clean."""
import re

from helpers import ran_tasks, run_doit, template_version
from outpost import apk

APK = "build/apks/noarch/linkedlist-{}.apk"


def bump_pkgrel(project):
    template = project / "cports-overlay/user/linkedlist/template.py"
    text = template.read_text()
    text = re.sub(r"^pkgrel = (\d+)", lambda m: f"pkgrel = {int(m.group(1)) + 1}", text, flags=re.M)
    template.write_text(text)


def change_app(project):
    app = project / "cports-overlay/user/linkedlist/files/linkedlistd"
    app.write_text(app.read_text() + "\n# a code change\n")


def test_first_run_builds_signs_and_verifies(project):
    proc = run_doit(project, "index")
    assert ran_tasks(proc.stdout) == ["build:noarch", "index:x86_64", "keygen"]

    keys = {"outpost.rsa.pub": (project / "keys/outpost.rsa.pub").read_bytes()}
    package = apk.verify_package(project / APK.format(template_version(project)), keys)
    assert package.info["pkgname"] == "linkedlist"
    entries = apk.verify_index(project / "build/repo/x86_64/APKINDEX.tar.gz", keys)
    assert [(e.fields["P"], e.fields["V"]) for e in entries] == [
        ("linkedlist", template_version(project))]
    # The package in the repository is the one that was built.
    published = project / "build/repo/x86_64" / f"linkedlist-{template_version(project)}.apk"
    assert published.read_bytes() == (project / APK.format(template_version(project))).read_bytes()


def test_second_run_does_nothing(project):
    run_doit(project, "index")
    apk_file = project / APK.format(template_version(project))
    before = apk_file.stat().st_mtime_ns
    proc = run_doit(project, "index")
    assert ran_tasks(proc.stdout) == []
    assert apk_file.stat().st_mtime_ns == before
    # doit's own dry run agrees: nothing would run.
    # (Group tasks such as "build" have no inputs of their own, so doit always lists them as R.)
    status = run_doit(project, "list", "--status", "--all", "keygen", "build", "index").stdout
    would_run = re.findall(r"^R (\S+)", status, re.M)
    assert [t for t in would_run if t not in ("build", "index")] == [], status


def test_app_change_with_bump_rebuilds_that_package_only(project):
    run_doit(project, "index")
    old = template_version(project)
    key_before = (project / "keys/outpost.rsa").read_bytes()
    change_app(project)
    bump_pkgrel(project)
    new = template_version(project)
    assert new != old

    # doit info says why build:noarch runs again.
    info = run_doit(project, "info", "build:noarch", check=False).stdout
    assert "linkedlistd" in info

    proc = run_doit(project, "index")
    assert ran_tasks(proc.stdout) == ["build:noarch", "index:x86_64"]
    assert (project / "keys/outpost.rsa").read_bytes() == key_before
    keys = project / "keys"
    entries = apk.verify_index(project / "build/repo/x86_64/APKINDEX.tar.gz",
                               {"outpost.rsa.pub": (keys / "outpost.rsa.pub").read_bytes()})
    assert ("linkedlist", new) in [(e.fields["P"], e.fields["V"]) for e in entries]


def test_changed_package_without_bump_is_refused(project):
    run_doit(project, "index")
    version = template_version(project)
    built = project / APK.format(version)
    before = built.read_bytes()
    change_app(project)

    proc = run_doit(project, "index", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "template.py" in out and "pkgrel" in out, out
    assert "Traceback" not in out
    # The package that was published is kept as it was.
    assert built.read_bytes() == before


def test_clean_removes_build_output_and_keeps_key(project):
    run_doit(project, "index")
    key = (project / "keys/outpost.rsa").read_bytes()
    run_doit(project, "clean")
    assert not (project / "build/apks/noarch").exists() or not any((project / "build/apks/noarch").iterdir())
    assert not (project / "build/repo/x86_64").exists()
    assert not (project / "build/stage/noarch").exists()
    assert (project / "keys/outpost.rsa").read_bytes() == key
    # And a run after clean builds again, with the same key.
    proc = run_doit(project, "index")
    assert ran_tasks(proc.stdout) == ["build:noarch", "index:x86_64"]


def test_rebuild_after_clean_is_byte_identical(project):
    run_doit(project, "index")
    built = project / APK.format(template_version(project))
    first = built.read_bytes()
    run_doit(project, "clean")
    run_doit(project, "index")
    assert built.read_bytes() == first


def test_noarch_package_is_built_once_and_indexed_per_arch(project):
    inventory = project / "inventory.toml"
    inventory.write_text(inventory.read_text() + '''
[[hosts]]
name = "pi"
address = "198.18.0.14"
arch = "aarch64"
region = "europe"
''')
    proc = run_doit(project, "index")
    assert ran_tasks(proc.stdout) == ["build:noarch", "index:aarch64", "index:x86_64", "keygen"]
    keys = {"outpost.rsa.pub": (project / "keys/outpost.rsa.pub").read_bytes()}
    for arch in ("aarch64", "x86_64"):
        entries = apk.verify_index(project / f"build/repo/{arch}/APKINDEX.tar.gz", keys)
        assert [e.fields["P"] for e in entries] == ["linkedlist"]
        # apk fetches URL/<A:>/<file>, so the index names the folder's arch (abuild's --rewrite-arch).
        assert entries[0].fields["A"] == arch


def test_doit_list_documents_every_task(project):
    out = run_doit(project, "list", "--all").stdout
    for task in ("keygen", "build:noarch", "index:x86_64"):
        line = next((l for l in out.splitlines() if l.split() and l.split()[0] == task), None)
        assert line is not None, out
        assert len(line.split(None, 1)) == 2, f"{task} has no doc line: {out}"


def test_bad_inventory_is_one_clear_error(project):
    inventory = project / "inventory.toml"
    inventory.write_text(inventory.read_text().replace('arch = "x86_64"', 'arch = "amd64"', 1))
    proc = run_doit(project, "list", check=False)
    assert proc.returncode != 0
    assert "inventory.toml" in proc.stderr and "amd64" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_signing_key_in_build_is_made_by_keygen_not_overwritten(project):
    (project / "keys").mkdir()
    run_doit(project, "keygen")
    key = (project / "keys/outpost.rsa").read_bytes()
    proc = run_doit(project, "keygen")
    assert ran_tasks(proc.stdout) == []
    (project / "keys/outpost.rsa.pub").unlink()
    # A half-present key pair is not silently replaced: keygen refuses to overwrite.
    proc = run_doit(project, "keygen", check=False)
    assert proc.returncode != 0
    assert "keys/outpost.rsa" in proc.stdout + proc.stderr
    assert (project / "keys/outpost.rsa").read_bytes() == key


def test_the_repository_keeps_the_last_versions(project):
    text = (project / "inventory.toml").read_text()
    (project / "inventory.toml").write_text(
        text.replace('path = "/var/lib/outpost/repo"', 'path = "/var/lib/outpost/repo"\nkeep = 2'))
    versions = []
    for _ in range(3):
        run_doit(project, "index")
        versions.append(template_version(project))
        change_app(project)
        bump_pkgrel(project)
    kept = sorted(p.name for p in (project / "build/repo/x86_64").glob("*.apk"))
    assert kept == [f"linkedlist-{v}.apk" for v in versions[1:]]
    keys = {"outpost.rsa.pub": (project / "keys/outpost.rsa.pub").read_bytes()}
    entries = apk.verify_index(project / "build/repo/x86_64/APKINDEX.tar.gz", keys)
    assert sorted(e.fields["V"] for e in entries) == versions[1:]


def test_a_broken_template_stops_only_what_needs_the_package(project):
    template = project / "cports-overlay/user/linkedlist/template.py"
    template.write_text(template.read_text() + "\nthis is not python(\n")
    listed = run_doit(project, "list")  # still works, and says what is broken
    assert f"outpost: {template}:" in listed.stderr and "SyntaxError" in listed.stderr
    assert "fleet:down" in run_doit(project, "list", "--all").stdout
    build = run_doit(project, "build", check=False)
    assert build.returncode != 0
    assert "SyntaxError" in build.stdout + build.stderr
    assert "Traceback" not in build.stdout + build.stderr
