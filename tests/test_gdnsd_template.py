"""cports-overlay/user/gdnsd: the cports template for gdnsd, which Chimera does not package.

cbuild can't run here, so these tests only read the template and its files: what they check is
the shape cbuild and the fleet rely on (cports core_fields_priority order, the hooks, the dinit
service that runs gdnsd unprivileged with only CAP_NET_BIND_SERVICE)."""
from pathlib import Path

from outpost.template import load_template

REPO = Path(__file__).resolve().parents[1]
OVERLAY = REPO / "cports-overlay/user"
GDNSD = OVERLAY / "gdnsd"

# cports src/cbuild/core/template.py core_fields_priority, in order (cbuild's lint refuses
# top-level fields out of this order); only the fields our templates may use.
FIELD_ORDER = [
    "pkgname", "pkgver", "pkgrel", "archs", "build_wrksrc", "build_style",
    "prepare_after_patch", "configure_script", "configure_args", "configure_env",
    "configure_gen", "make_cmd", "make_dir", "make_env", "make_build_target", "make_build_args",
    "make_install_target", "make_install_args", "make_check_target", "make_check_args",
    "hostmakedepends", "makedepends", "checkdepends", "depends", "provides", "replaces",
    "pkgdesc", "license", "url", "source", "sha256", "hardening", "options",
]


def settings(text):
    """A dinit service file's settings as (name, operator, value), comments and blanks left out."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        for op in (" = ", ": "):
            name, sep, value = line.partition(op)
            if sep and " " not in name:
                found.append((name, op.strip(), value))
                break
        else:
            raise AssertionError(f"not a setting line: {line!r}")
    return found


def test_template_loads_with_name_version_and_build_style():
    template = load_template(GDNSD)
    assert (template.pkgname, template.pkgver, template.pkgrel) == ("gdnsd", "3.8.1", 0)
    assert template.version == "3.8.1-r0"
    assert template.license == "GPL-3.0-or-later"
    # gdnsd 3.8 is autotools (configure.ac), built from the release tarball's configure
    assert template.fields["build_style"] == "gnu_configure"
    assert template.fields["configure_gen"] == []
    assert template.source == ("https://github.com/gdnsd/gdnsd/releases/download/v3.8.1/"
                               "gdnsd-3.8.1.tar.xz")
    assert {"libev-devel", "userspace-rcu-devel", "libsodium-devel", "libmaxminddb-devel",
            "dinit-chimera"} <= set(template.fields["makedepends"])
    assert "maintainer" not in template.fields  # removed from cports templates (FACTS.md)
    assert set(template.hooks) == {"post_install"}
    # Native code from a tarball: the local builder says to use cbuild.
    assert "build_style = 'gnu_configure'" in template.local_build_problem()


def test_every_overlay_template_keeps_cports_field_order():
    for folder in sorted(p for p in OVERLAY.iterdir() if (p / "template.py").is_file()):
        names = list(load_template(folder).fields)
        unknown = [n for n in names if n not in FIELD_ORDER]
        assert unknown == [], f"{folder.name}: fields missing from FIELD_ORDER: {unknown}"
        assert names == sorted(names, key=FIELD_ORDER.index), folder.name


def test_service_runs_gdnsd_unprivileged_with_only_the_port_53_capability():
    assert settings((GDNSD / "files/gdnsd").read_text()) == [
        ("type", "=", "process"),
        ("command", "=", "/usr/bin/gdnsd -c /etc/gdnsd start"),
        ("run-as", "=", "_gdnsd"),
        # dinit's IAB string: '^' puts the capability in the inheritable and ambient sets
        ("capabilities", "=", "^cap_net_bind_service"),
        ("logfile", "=", "/var/log/gdnsd.log"),
        ("depends-on", ":", "local.target"),
        ("smooth-recovery", "=", "true"),
    ]


def test_user_and_directories():
    sysusers = [line.split() for line in (GDNSD / "files/sysusers.conf").read_text().splitlines()
                if line and not line.startswith("#")]
    assert sysusers == [["u", "_gdnsd", "-", '"gdnsd', 'user"', "/var/lib/gdnsd",
                         "/usr/bin/nologin"]]
    tmpfiles = [line.split() for line in (GDNSD / "files/tmpfiles.conf").read_text().splitlines()
                if line and not line.startswith("#")]
    assert tmpfiles == [
        ["d", "/var/lib/gdnsd", "0755", "_gdnsd", "_gdnsd", "-"],   # state_dir
        ["d", "/run/gdnsd", "0700", "_gdnsd", "_gdnsd", "-"],       # run_dir: the daemon's alone
        ["d", "/etc/gdnsd", "0755", "root", "root", "-"],
        ["d", "/etc/gdnsd/zones", "0755", "root", "root", "-"],
        ["d", "/etc/gdnsd/geoip", "0755", "root", "root", "-"],
    ]
