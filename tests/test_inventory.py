"""inventory.toml: the schema, its defaults, and one clear error per kind of mistake."""
from pathlib import Path

import pytest

from outpost.errors import OutpostError
from outpost.inventory import InventoryError, load

REPO = Path(__file__).resolve().parent.parent

VALID = """\
[site]
name = "linkedlist.test"

[repository]
signing_key = "keys/outpost.rsa"
path = "/var/lib/outpost/repo"

[builder]
kind = "local"

[ssh]
user = "deploy"
port = 22
known_hosts = "state/known_hosts"
identity = "state/deploy_key"

[[packages]]
name = "linkedlist"
service = "linkedlist"
content = "content"
content_dir = "/var/lib/linkedlist/content"
port = 8080

[[hosts]]
name = "au"
address = "198.18.0.11"
arch = "x86_64"
region = "oceania"

[[hosts]]
name = "ny"
address = "198.18.0.12"
arch = "x86_64"
region = "north-america"
"""

HOST_KEYS = "address, arch, groups, location, name, port, region, user"


def variant(old: str, new: str) -> str:
    """VALID with one piece of text replaced (it must occur exactly once)."""
    assert VALID.count(old) == 1, old
    return VALID.replace(old, new)


def repo_inventory_error(tmp_path, old: str, new: str) -> str:
    """The message load() raises for the repo's inventory.toml with one piece of text
    replaced, without the '<file>: ' prefix (for tables VALID lacks: [fleet], [acme] ...)."""
    text = (REPO / "inventory.toml").read_text()
    assert text.count(old) == 1, old
    path = tmp_path / "inventory.toml"
    path.write_text(text.replace(old, new))
    with pytest.raises(InventoryError) as raised:
        load(path)
    return str(raised.value).removeprefix(f"{path}: ")


@pytest.fixture
def write(tmp_path):
    def write(text: str) -> Path:
        path = tmp_path / "inventory.toml"
        path.write_text(text)
        return path
    return write


@pytest.fixture
def error(write):
    """The message load() raises for this inventory text, without the '<file>: ' prefix."""
    def error(text: str) -> str:
        path = write(text)
        with pytest.raises(InventoryError) as raised:
            load(path)
        message = str(raised.value)
        assert message.startswith(f"{path}: "), message
        return message.removeprefix(f"{path}: ")
    return error


def test_valid_inventory_loads_with_defaults(write, tmp_path):
    inventory = load(write(VALID))
    assert inventory.path == tmp_path / "inventory.toml"
    assert inventory.root == tmp_path
    assert [host.name for host in inventory.hosts] == ["au", "ny"]
    au = inventory.host("au")
    assert (au.user, au.port, au.groups) == ("deploy", 22, ())
    assert inventory.fleet is None
    assert (inventory.ssh.connect_timeout, inventory.ssh.command_timeout) == (10.0, 300.0)
    assert inventory.ssh.keep_connection == 0  # a host's connection ends with the run
    (package,) = inventory.packages
    assert package.category == "user"
    assert package.template_dir == tmp_path / "cports-overlay" / "user" / "linkedlist"


def test_host_user_and_port_default_from_ssh_and_can_be_overridden(write):
    text = variant('user = "deploy"\nport = 22', 'user = "admin"\nport = 2200')
    text += 'user = "root"\nport = 2222\n'  # for the last host, ny
    inventory = load(write(text))
    assert (inventory.host("au").user, inventory.host("au").port) == ("admin", 2200)
    assert (inventory.host("ny").user, inventory.host("ny").port) == ("root", 2222)


def test_absent_builder_table_means_the_local_builder(write):
    inventory = load(write(variant('[builder]\nkind = "local"\n', "")))
    assert (inventory.builder.kind, inventory.builder.cports, inventory.builder.args) == (
        "local", None, ())


def test_relative_paths_resolve_against_the_inventory_folder_not_the_cwd(
        write, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    inventory = load(write(VALID))
    assert inventory.repository.signing_key == tmp_path / "keys" / "outpost.rsa"
    assert inventory.repository.public_key == tmp_path / "keys" / "outpost.rsa.pub"
    assert inventory.repository.key_name == "outpost.rsa.pub"
    assert inventory.ssh.known_hosts == tmp_path / "state" / "known_hosts"
    assert inventory.packages[0].content == tmp_path / "content"


def test_site_defaults_are_paths_under_the_inventory_folder(write, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    site = load(write(VALID)).site
    assert (site.name, site.ca, site.certificates) == (
        "linkedlist.test", tmp_path / "keys" / "ca", tmp_path / "build" / "tls")


def test_site_paths_can_be_set(write, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    site = load(write(variant('name = "linkedlist.test"\n',
                              'name = "linkedlist.test"\nca = "~/ca"\ncertificates = "tls"\n'))).site
    assert (site.ca, site.certificates) == (tmp_path / "home" / "ca", tmp_path / "tls")


def test_tilde_means_the_home_folder(write, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    inventory = load(write(variant('identity = "state/deploy_key"',
                                   'identity = "~/.ssh/id_ed25519"')))
    assert inventory.ssh.identity == tmp_path / "home" / ".ssh" / "id_ed25519"


def test_integer_timeouts_become_floats(write):
    inventory = load(write(variant('identity = "state/deploy_key"',
                                   'identity = "state/deploy_key"\nconnect_timeout = 3')))
    assert inventory.ssh.connect_timeout == 3.0
    assert isinstance(inventory.ssh.connect_timeout, float)


def test_arches_are_sorted_and_unique(write):
    inventory = load(write(VALID + '[[hosts]]\nname = "de"\naddress = "203.0.113.40"\n'
                                   'arch = "aarch64"\nregion = "europe"\n'))
    assert inventory.arches == ("aarch64", "x86_64")


# --- One test per kind of error ------------------------------------------------------------------

def test_toml_syntax_error_gives_line_and_column(error):
    message = error(variant('region = "oceania"', 'region = oceania'))
    assert message.startswith("not valid TOML: ")
    assert "(at line 28, column 10)" in message


def test_error_names_the_file_as_given(write, monkeypatch, tmp_path):
    write(variant('name = "ny"', 'name = "ny"\nadress = "x"'))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutpostError) as raised:  # an OutpostError: shown without a traceback
        load("inventory.toml")
    assert str(raised.value) == (
        f"inventory.toml: [[hosts]] #2 (ny): unknown key 'adress'; allowed: {HOST_KEYS}")


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.toml"
    with pytest.raises(InventoryError) as raised:
        load(path)
    assert str(raised.value) == f"{path}: cannot read the inventory: No such file or directory"


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "inventory.toml"
    path.write_bytes(VALID.replace("oceania", "oc\xe9ania").encode("latin-1"))
    with pytest.raises(InventoryError) as raised:
        load(path)
    assert str(raised.value) == f"{path}: not valid TOML: the file is not UTF-8"


def test_missing_key(error):
    assert error(variant('arch = "x86_64"\nregion = "north-america"',
                         'region = "north-america"')) == (
        "[[hosts]] #2 (ny): missing key 'arch' (a string)")


def test_missing_key_in_a_single_table(error):
    assert error(variant('path = "/var/lib/outpost/repo"\n', "")) == (
        "[repository]: missing key 'path' (a string)")


def test_fleet_bridge_name_must_fit_an_interface_name(tmp_path):
    assert repo_inventory_error(tmp_path, 'state = "build/fleet"',
                                'state = "build/fleet"\nbridge = "outpost-bridge-0"') == (
        "[fleet]: key 'bridge': 'outpost-bridge-0' is not a usable bridge name; "
        "use up to 10 lowercase letters, digits and -")


def test_fleet_hosts_have_no_round_trip_unless_named():
    fleet = load(REPO / "inventory.toml").fleet
    assert fleet.rtt_ms == () and fleet.rtt("ny") == 0


def test_fleet_round_trips_by_host_name(tmp_path):
    text = (REPO / "inventory.toml").read_text().replace(
        'state = "build/fleet"', 'state = "build/fleet"\nrtt_ms = { ny = 200, fr = 280 }')
    (tmp_path / "inventory.toml").write_text(text)
    fleet = load(tmp_path / "inventory.toml").fleet
    assert fleet.rtt_ms == (("ny", 200), ("fr", 280))
    assert (fleet.rtt("au"), fleet.rtt("ny"), fleet.rtt("fr")) == (0, 200, 280)


@pytest.mark.parametrize("value, message", [
    ("{ sydney = 30 }", "key 'rtt_ms': no host named 'sydney'; hosts: au, ny, fr, home"),
    ("{ ny = -1 }", "key 'rtt_ms': ny = -1: a round trip is from 0 to 2000 ms"),
    ("{ ny = 2001 }", "key 'rtt_ms': ny = 2001: a round trip is from 0 to 2000 ms"),
    ('{ ny = "200ms" }', "key 'rtt_ms' must be a table of integers (milliseconds by host name), "
                         "found a table"),
    ("200", "key 'rtt_ms' must be a table of integers (milliseconds by host name), "
            "found an integer (200)"),
])
def test_fleet_round_trips_must_name_hosts_and_be_milliseconds(tmp_path, value, message):
    assert repo_inventory_error(tmp_path, 'state = "build/fleet"',
                                f'state = "build/fleet"\nrtt_ms = {value}') == (
        f"[fleet]: {message}")


def test_site_table_is_required(error):
    assert error(variant('[site]\nname = "linkedlist.test"\n', "")) == "missing table [site]"


def test_site_needs_a_name(error):
    assert error(variant('name = "linkedlist.test"\n', "")) == (
        "[site]: missing key 'name' (a string)")


@pytest.mark.parametrize("name", [
    "LinkedList.org",    # the certificate, server_name and Host must agree exactly
    "https://linkedlist.org",
    "linkedlist.org.",   # a trailing dot would not match the Host header
    "linked_list.org",
    "linkedlist..org",
    "-linkedlist.org",
    "192.0.2.10",        # an address, not a name
    "",
])
def test_site_name_must_be_a_dns_name(error, name):
    assert error(variant('name = "linkedlist.test"', f'name = "{name}"')) == (
        f"[site]: key 'name': {name!r} is not a DNS name; use lowercase letters, digits, "
        "'-' and '.', e.g. \"linkedlist.org\"")


@pytest.mark.parametrize("name", ["linkedlist.org", "localhost", "a-1.b2.example"])
def test_good_site_names(write, name):
    assert load(write(variant('name = "linkedlist.test"', f'name = "{name}"'))).site.name == name


def test_missing_table(error):
    assert error(variant('[repository]\nsigning_key = "keys/outpost.rsa"\n'
                         'path = "/var/lib/outpost/repo"\n', "")) == "missing table [repository]"


def test_unknown_key_lists_the_allowed_keys(error):
    assert error(variant('address = "198.18.0.12"', 'adress = "198.18.0.12"')) == (
        f"[[hosts]] #2 (ny): unknown key 'adress'; allowed: {HOST_KEYS}")


def test_unknown_key_in_ssh(error):
    assert error(variant('port = 22\n', 'prot = 22\n')) == (
        "[ssh]: unknown key 'prot'; allowed: bootstrap_identity, command_timeout, connect_timeout, identity, "
        "keep_connection, known_hosts, port, user")


def test_unknown_table(error):
    assert error(VALID + "[hostz]\nname = 'x'\n") == (
        "unknown table 'hostz'; allowed: acme, builder, cert_host, dns, fleet, hosts, latency, "
        "packages, repository, rollout, site, ssh")


def test_rollout_defaults_to_the_first_host_then_a_quarter_at_a_time(write):
    inv = load(write(VALID))
    # None: commands.upgrade.batches takes a quarter of the hosts (tests/test_batches.py).
    assert (inv.canary.name, inv.rollout.batch_size, inv.repository.keep) == ("au", None, 3)
    inv = load(write(VALID + "[rollout]\ncanary = 'ny'\nbatch_size = 2\n"))
    assert (inv.canary.name, inv.rollout.batch_size) == ("ny", 2)


def test_rollout_canary_must_be_a_host(error):
    assert error(VALID + "[rollout]\ncanary = 'zz'\n").startswith(
        "[rollout]: key 'canary': no host named 'zz'; hosts: ")


def test_rollout_and_keep_values_are_checked(error):
    assert error(VALID + "[rollout]\nbatch_size = 0\n") == (
        "[rollout]: key 'batch_size': must be 1 or more, found 0")
    assert error(VALID + "[rollout]\nbatch_size = true\n") == (
        "[rollout]: key 'batch_size' must be an integer, found a boolean (True)")
    assert error(VALID + "[rollout]\nbatch_size = 'a quarter'\n") == (
        "[rollout]: key 'batch_size' must be an integer, found a string ('a quarter')")
    assert error(variant('path = "/var/lib/outpost/repo"',
                         'path = "/var/lib/outpost/repo"\nkeep = 1')) == (
        "[repository]: key 'keep': must be 2 or more, found 1")


def test_wrong_type_says_expected_and_found(error):
    assert error(variant('name = "ny"', 'name = "ny"\nport = "22"')) == (
        "[[hosts]] #2 (ny): key 'port' must be an integer, found a string ('22')")


def test_boolean_is_not_an_integer(error):
    assert error(variant("port = 8080", "port = true")) == (
        "[[packages]] #1 (linkedlist): key 'port' must be an integer, found a boolean (True)")


def test_wrong_type_in_an_array(error):
    assert error(variant('name = "au"', 'name = "au"\ngroups = ["web", 1]')) == (
        "[[hosts]] #1 (au): key 'groups' must be an array of strings, found an array")


def test_wrong_type_of_path(error):
    assert error(variant('identity = "state/deploy_key"', "identity = 5")) == (
        "[ssh]: key 'identity' must be a string (a path on this machine), found an integer (5)")


def test_table_given_where_an_array_of_tables_belongs(error):
    text = variant('[[packages]]', '[packages]')
    assert error(text) == (
        "'packages' must be one or more [[packages]] tables, found a table")


def test_duplicate_host_name(error):
    assert error(variant('name = "ny"', 'name = "au"')) == (
        "[[hosts]] #2 (au): duplicate host name 'au' (also [[hosts]] #1)")


def test_duplicate_package_name(error):
    text = VALID + '[[packages]]\nname = "linkedlist"\n'
    assert error(text) == (
        "[[packages]] #2 (linkedlist): duplicate package name 'linkedlist' "
        "(also [[packages]] #1)")


def test_arch_no_builder_can_target(error):
    assert error(variant('name = "ny"\naddress = "198.18.0.12"\narch = "x86_64"',
                         'name = "ny"\naddress = "198.18.0.12"\narch = "amd64"')) == (
        "[[hosts]] #2 (ny): key 'arch': 'amd64' is not an arch any builder can target; "
        "Chimera Linux arches: aarch64 armv7 loongarch64 ppc ppc64 ppc64le riscv64 x86_64")


@pytest.mark.parametrize("address", [
    "198.18.0.300",        # looks like IPv4, isn't
    "deploy@198.18.0.12",  # a user belongs in `user`
    "ny.example.org:22",   # a port belongs in `port`
    "-ny.example.org",
    "",
])
def test_bad_address(error, address):
    assert error(variant('address = "198.18.0.12"', f'address = "{address}"')) == (
        f"[[hosts]] #2 (ny): key 'address': {address!r} is neither an IP address nor a DNS name")


@pytest.mark.parametrize("address", ["ny.example.org", "ny", "2001:db8::12", "192.0.2.20"])
def test_good_addresses(write, address):
    inventory = load(write(variant('address = "198.18.0.12"', f'address = "{address}"')))
    assert inventory.host("ny").address == address


@pytest.mark.parametrize("port", [0, 65536])
def test_port_out_of_range(error, port):
    assert error(variant('name = "ny"', f'name = "ny"\nport = {port}')) == (
        f"[[hosts]] #2 (ny): key 'port': port {port} is out of range (1-65535)")


def test_ssh_port_out_of_range(error):
    assert error(variant("port = 22\n", "port = 70000\n")) == (
        "[ssh]: key 'port': port 70000 is out of range (1-65535)")


def test_negative_timeout(error):
    assert error(variant('identity = "state/deploy_key"',
                         'identity = "state/deploy_key"\ncommand_timeout = -1')) == (
        "[ssh]: key 'command_timeout': must be more than 0, found -1")


def test_keep_connection_is_whole_seconds_from_zero(error):
    keep = variant('identity = "state/deploy_key"', 'identity = "state/deploy_key"\n'
                   'keep_connection = {}')
    assert error(keep.format(-1)) == "[ssh]: key 'keep_connection': must be 0 or more, found -1"
    assert error(keep.format(1.5)) == ("[ssh]: key 'keep_connection' must be an integer, "
                                       "found a float (1.5)")
    assert error(keep.format('"60"')).startswith("[ssh]: key 'keep_connection' must be an "
                                                 "integer, found a str")


def test_cbuild_needs_a_cports_clone(error):
    assert error(variant('kind = "local"', 'kind = "cbuild"')) == (
        "[builder]: missing key 'cports' (the path of a cports git clone), "
        'needed when kind = "cbuild"')


def test_cbuild_with_cports_loads(write, tmp_path):
    inventory = load(write(variant(
        'kind = "local"',
        'kind = "cbuild"\ncports = "../cports"\nargs = ["-N"]\nconfig = "etc/config.ini"')))
    assert inventory.builder.kind == "cbuild"
    assert inventory.builder.cports == tmp_path / ".." / "cports"
    assert inventory.builder.args == ("-N",)
    assert inventory.builder.config == "etc/config.ini"


def test_cbuild_options_with_the_local_builder(error):
    assert error(variant('kind = "local"', 'kind = "local"\ncports = "../cports"')) == (
        "[builder]: key 'cports' is only used when kind = \"cbuild\" (kind is \"local\")")


def test_unknown_builder_kind(error):
    assert error(variant('kind = "local"', 'kind = "docker"')) == (
        "[builder]: key 'kind': unknown builder kind 'docker'; use one of: cbuild, local")


def test_content_dir_must_be_absolute(error):
    assert error(variant('content_dir = "/var/lib/linkedlist/content"',
                         'content_dir = "linkedlist/content"')) == (
        "[[packages]] #1 (linkedlist): key 'content_dir': "
        "'linkedlist/content' must be an absolute path")


# --- Values that reach a host: remote paths and names ----------------------------------------

CONTENT_DIR = 'content_dir = "/var/lib/linkedlist/content"'
REPO_PATH = 'path = "/var/lib/outpost/repo"'
IN_PACKAGE = "[[packages]] #1 (linkedlist): key 'content_dir': "
CONTROL = "contains a control character (a newline, tab or the like)"
CHARACTERS = ("may contain only letters, digits and / . _ + - (it is written unquoted into the "
              "hosts' doas.conf, scripts and env-files)")
NOT_NORMALISED = "is not normalised: write it without '.' or '..' segments, '//' or a trailing '/'"
SYSTEM = "is a system folder; give the data a folder of its own, e.g. under /srv or /var/lib"


@pytest.mark.parametrize("toml, problem", [
    ('"/etc"', f"'/etc' {SYSTEM}"),
    ('"/"', f"'/' {SYSTEM}"),
    ('"/var/lib"', f"'/var/lib' {SYSTEM}"),
    ('"/srv"', f"'/srv' {SYSTEM}"),
    ('"/home"', f"'/home' {SYSTEM}"),
    ('"/etc/linkedlist"', "'/etc/linkedlist' is inside /etc, which never holds a deploy's data"),
    ('"/usr/share/linkedlist"',
     "'/usr/share/linkedlist' is inside /usr, which never holds a deploy's data"),
    ('"/var/log/linkedlist"',
     "'/var/log/linkedlist' is inside /var/log, which never holds a deploy's data"),
    ('"/tmp/content"', "'/tmp/content' is inside /tmp, which never holds a deploy's data"),
    ('"/var/lib/x/../../etc"', f"'/var/lib/x/../../etc' {NOT_NORMALISED}"),
    ('"/srv/./linkedlist"', f"'/srv/./linkedlist' {NOT_NORMALISED}"),
    ('"/srv//linkedlist"', f"'/srv//linkedlist' {NOT_NORMALISED}"),
    ('"/srv/linkedlist/"', f"'/srv/linkedlist/' {NOT_NORMALISED}"),
    ('"relative/path"', "'relative/path' must be an absolute path"),
    ('"/srv/linkedlist\\n"', f"'/srv/linkedlist\\n' {CONTROL}"),
    ('"/srv/link\\tedlist"', f"'/srv/link\\tedlist' {CONTROL}"),
    ('"/srv/$(id)"', f"'/srv/$(id)' {CHARACTERS}"),
    ('"/srv/linked list"', f"'/srv/linked list' {CHARACTERS}"),
    ('"/srv/a;reboot"', f"'/srv/a;reboot' {CHARACTERS}"),
    ('"/srv/cont\u00e9nt"', f"'/srv/cont\u00e9nt' {CHARACTERS}"),
])
def test_bad_content_dir(error, toml, problem):
    assert error(variant(CONTENT_DIR, f"content_dir = {toml}")) == IN_PACKAGE + problem


@pytest.mark.parametrize("toml, problem", [
    ('"/var"', f"'/var' {SYSTEM}"),
    ('"/var/lib/outpost/../../../etc"', f"'/var/lib/outpost/../../../etc' {NOT_NORMALISED}"),
    ('"/boot/repo"', "'/boot/repo' is inside /boot, which never holds a deploy's data"),
    ('"/srv/repo\\nx"', f"'/srv/repo\\nx' {CONTROL}"),
    ('"/srv/repo $(id)"', f"'/srv/repo $(id)' {CHARACTERS}"),
])
def test_bad_repository_path(error, toml, problem):
    assert error(variant(REPO_PATH, f"path = {toml}")) == f"[repository]: key 'path': {problem}"


@pytest.mark.parametrize("path", [
    "/var/lib/linkedlist/content",
    "/srv/linkedlist/content",             # folders with root-owned parents, as the lead plans
    "/var/lib/outpost/content/linkedlist",
    "/var/www/linkedlist",
    "/opt/linkedlist/content",
    "/srv/linked_list+2.0/content-1",
])
def test_good_content_dirs(write, path):
    assert load(write(variant(CONTENT_DIR, f'content_dir = "{path}"'))).packages[0].content_dir \
        == path


def test_a_newline_in_content_dir_cannot_add_a_line_to_the_apps_env_file(error):
    # templates/linkedlist.env.j2 writes LINKEDLIST_CONTENT=<content_dir>/current: a newline in
    # the value would give the app a setting of the inventory's choosing.
    crafted = "/srv/linkedlist\nLINKEDLIST_LISTEN=0.0.0.0:8080\n#"
    toml = crafted.replace("\n", "\\n")
    assert error(variant(CONTENT_DIR, f'content_dir = "{toml}"')) == (
        f"{IN_PACKAGE}{crafted!r} {CONTROL}")


@pytest.mark.parametrize("content_dir, problem", [
    ("/var/lib/outpost/repo", "'/var/lib/outpost/repo' is [repository] path "
                              "'/var/lib/outpost/repo'"),
    ("/var/lib/outpost/repo/content", "'/var/lib/outpost/repo/content' is inside [repository] "
                                      "path '/var/lib/outpost/repo'"),
    ("/var/lib/outpost", "'/var/lib/outpost' holds [repository] path '/var/lib/outpost/repo'"),
])
def test_content_dir_and_repository_path_are_apart(error, content_dir, problem):
    assert error(variant(CONTENT_DIR, f'content_dir = "{content_dir}"')) == (
        f"{IN_PACKAGE}{problem}; each needs a folder of its own")


def test_content_dirs_of_two_packages_are_apart(error, write):
    second = ('[[packages]]\nname = "docs"\ncontent = "docs"\n'
              'content_dir = "{}"\n')
    packages = VALID.index("[[hosts]]")
    text = VALID[:packages] + second.format("/var/lib/linkedlist") + VALID[packages:]
    assert error(text) == (
        "[[packages]] #2 (docs): key 'content_dir': '/var/lib/linkedlist' holds [[packages]] #1 "
        "(linkedlist) content_dir '/var/lib/linkedlist/content'; each needs a folder of its own")
    text = VALID[:packages] + second.format("/var/lib/linkedlist/content/docs") + VALID[packages:]
    assert "is inside [[packages]] #1 (linkedlist) content_dir" in error(text)
    text = VALID[:packages] + second.format("/var/lib/linkedlist/docs") + VALID[packages:]
    assert load(write(text)).packages[1].content_dir == "/var/lib/linkedlist/docs"


USER_PROBLEM = ("is not a usable user name; use up to 32 lowercase letters, digits, '_' and "
                "'-', starting with a letter or '_'")


@pytest.mark.parametrize("user", ["deploy\\nroot", "Deploy", "-deploy", "de ploy", "$(id)",
                                  "a" * 33, ""])
def test_ssh_user_must_be_a_user_name(error, user):
    shown = repr(user.replace("\\n", "\n"))
    assert error(variant('user = "deploy"', f'user = "{user}"')) == (
        f"[ssh]: key 'user': {shown} {USER_PROBLEM}")


def test_host_user_must_be_a_user_name(error):
    assert error(variant('name = "ny"', 'name = "ny"\nuser = "deploy\\nx"')) == (
        f"[[hosts]] #2 (ny): key 'user': 'deploy\\nx' {USER_PROBLEM}")


@pytest.mark.parametrize("user", ["deploy", "root", "_lego", "web-1", "a" * 32])
def test_good_user_names(write, user):
    assert load(write(variant('user = "deploy"', f'user = "{user}"'))).host("au").user == user


@pytest.mark.parametrize("service", ["linkedlist\\nx", "linkedlist reboot", "linked;list",
                                     "-linkedlist", "../linkedlist", ""])
def test_service_must_be_a_service_name(error, service):
    shown = repr(service.replace("\\n", "\n"))
    assert error(variant('service = "linkedlist"', f'service = "{service}"')) == (
        f"[[packages]] #1 (linkedlist): key 'service': {shown} is not a usable service name; "
        "use letters, digits and . _ @ -, starting with a letter or digit")


@pytest.mark.parametrize("service", ["linkedlist", "nginx", "agetty@tty1", "Web_2.0"])
def test_good_service_names(write, service):
    assert load(write(variant('service = "linkedlist"', f'service = "{service}"'))
                ).packages[0].service == service


def test_region_is_one_line(error):
    assert error(variant('region = "oceania"', 'region = "oceania\\nX-Evil: 1"')) == (
        f"[[hosts]] #1 (au): key 'region': 'oceania\\nX-Evil: 1' {CONTROL}")
    assert error(variant('region = "oceania"', 'region = ""')) == (
        "[[hosts]] #1 (au): key 'region': must not be empty")


def test_cert_host_region_is_one_line(tmp_path):
    assert repo_inventory_error(tmp_path, 'name = "home"',
                                'name = "home"\nregion = "home\\roffice"') == (
        f"[cert_host]: key 'region': 'home\\roffice' {CONTROL}")


@pytest.mark.parametrize("region", ["north-america", 'the \\"old\\" world', "$europe", "Île"])
def test_regions_are_free_text_on_one_line(write, region):
    # nginx_quote quotes the region for X-Served-By, or refuses what it can't (test_render).
    inventory = load(write(variant('region = "oceania"', f'region = "{region}"')))
    assert inventory.host("au").region == region.replace('\\"', '"')


@pytest.mark.parametrize("key, old, new, problem", [
    ("directory", 'directory = "https://198.18.0.30:14000/dir"',
     'directory = "https://198.18.0.30:14000/dir$(id)"',
     "'https://198.18.0.30:14000/dir$(id)' is not a URL made of letters, digits and "
     ". _ ~ / % + = , : @ - (http:// or https://)"),
    ("directory", 'directory = "https://198.18.0.30:14000/dir"',
     'directory = "https://198.18.0.30:14000/dir --hook=x"',
     "'https://198.18.0.30:14000/dir --hook=x' is not a URL made of letters, digits and "
     ". _ ~ / % + = , : @ - (http:// or https://)"),
    ("email", 'email = "hostmaster@linkedlist.test"', 'email = "a;reboot@linkedlist.test"',
     "'a;reboot@linkedlist.test' is not an email address (letters, digits and . _ % + - around "
     "one @)"),
])
def test_acme_values_that_reach_the_cert_host_are_plain_words(tmp_path, key, old, new, problem):
    # templates/acme/acme.j2 writes both unquoted into lego's command line on the cert host.
    assert repo_inventory_error(tmp_path, old, new) == f"[acme]: key {key!r}: {problem}"


def test_content_needs_content_dir(error):
    assert error(variant('content_dir = "/var/lib/linkedlist/content"\n', "")) == (
        "[[packages]] #1 (linkedlist): keys 'content' and 'content_dir' go together "
        "(what to push and where hosts keep it); give both or neither")


def test_keep_releases_is_at_least_one(error):
    assert error(variant('port = 8080', 'port = 8080\nkeep_releases = 0')) == (
        "[[packages]] #1 (linkedlist): key 'keep_releases': must be more than 0, found 0")


def test_repository_path_must_be_absolute(error):
    assert error(variant('path = "/var/lib/outpost/repo"', 'path = "outpost/repo"')) == (
        "[repository]: key 'path': 'outpost/repo' must be an absolute path")


def test_at_least_one_host(error):
    hosts = VALID[VALID.index("[[hosts]]"):]
    # A top-level key must come before the first table.
    assert error("hosts = []\n" + variant(hosts, "")) == (
        "'hosts' must be one or more [[hosts]] tables, found an empty array")


def test_hosts_table_is_required(error):
    hosts = VALID[VALID.index("[[hosts]]"):]
    assert error(variant(hosts, "")) == "missing table [[hosts]]"


def test_at_least_one_package(error):
    packages = VALID[VALID.index("[[packages]]"):VALID.index("[[hosts]]")]
    assert error("packages = []\n" + variant(packages, "")) == (
        "'packages' must be one or more [[packages]] tables, found an empty array")


@pytest.mark.parametrize("name", ["NY", "ny_1", "sync:ny", "-ny", "ny-"])
def test_host_name_must_suit_tasks_and_hostnames(error, name):
    assert error(variant('name = "ny"', f'name = "{name}"')) == (
        f"[[hosts]] #2 ({name}): key 'name': {name!r} is not a usable host name; "
        "use lowercase letters, digits and '-' (it names tasks such as sync:<host>)")


def test_package_name_cannot_leave_the_overlay(error):
    assert error(variant('name = "linkedlist"', 'name = "../linkedlist"')) == (
        "[[packages]] #1 (../linkedlist): key 'name': '../linkedlist' is not a usable name; "
        "use lowercase letters, digits and . _ + -")


def test_unknown_host_names_the_known_ones(write, tmp_path):
    inventory = load(write(VALID))
    with pytest.raises(InventoryError) as raised:
        inventory.host("fr")
    assert str(raised.value) == (
        f"{tmp_path / 'inventory.toml'}: no host named 'fr'; known hosts: au, ny")


# --- The inventories shipped with the repo -------------------------------------------------------

def test_repo_inventory_is_the_local_fleet():
    inventory = load(REPO / "inventory.toml")
    assert inventory.root == REPO
    assert [(h.name, h.address, h.region, h.arch) for h in inventory.hosts] == [
        ("au", "198.18.0.11", "oceania", "x86_64"),
        ("ny", "198.18.0.12", "north-america", "x86_64"),
        ("fr", "198.18.0.13", "europe", "x86_64"),
    ]
    assert all((h.user, h.port, h.groups) == ("deploy", 22, ("linkedlist_servers",))
               for h in inventory.hosts)
    assert inventory.builder.kind == "local"
    assert inventory.fleet.state == REPO / "build" / "fleet"
    assert inventory.fleet.bridge == "outpost0"
    assert inventory.ssh.known_hosts == REPO / "build" / "fleet" / "known_hosts"
    assert inventory.ssh.identity == REPO / "build" / "fleet" / "deploy_key"
    assert (inventory.ssh.connect_timeout, inventory.ssh.command_timeout) == (5.0, 120.0)
    assert inventory.repository.signing_key == REPO / "keys" / "outpost.rsa"
    assert inventory.repository.path == "/var/lib/outpost/repo"
    (package,) = inventory.packages
    assert (package.name, package.service, package.port) == ("linkedlist", "linkedlist", 8080)
    assert package.content == REPO / "content"
    assert package.content_dir == "/srv/linkedlist"
    assert package.keep_releases == 5
    assert package.template_dir == REPO / "cports-overlay" / "user" / "linkedlist"
    assert inventory.arches == ("x86_64",)
    assert inventory.site.name == "linkedlist.test"
    assert inventory.site.ca == REPO / "keys" / "ca"
    assert inventory.site.certificates == REPO / "build" / "tls"


def test_example_inventory_is_real_servers_built_by_cbuild(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    inventory = load(REPO / "inventory.example.toml")
    assert inventory.fleet is None
    assert inventory.builder.kind == "cbuild"
    assert inventory.builder.cports == tmp_path / "src" / "cports"
    assert inventory.builder.config == "etc/config.ini"
    assert inventory.repository.key_name == "wes@example.org-67a0c3d1.rsa.pub"
    assert inventory.repository.public_key == (
        tmp_path / "src" / "cports" / "etc" / "keys" / "wes@example.org-67a0c3d1.rsa.pub")
    assert [(h.name, h.address, h.port, h.arch) for h in inventory.hosts] == [
        ("au", "203.0.113.10", 22, "x86_64"),
        ("ny", "192.0.2.20", 2222, "x86_64"),
        ("fr", "192.0.2.30", 22, "x86_64"),
        ("de", "203.0.113.40", 22, "aarch64"),
    ]
    assert inventory.arches == ("aarch64", "x86_64")
    assert inventory.ssh.identity == tmp_path / ".ssh" / "id_ed25519"
    assert inventory.site.name == "linkedlist.org"
    assert inventory.site.ca == REPO / "keys" / "ca"
    # Four hosts: after the canary, one at a time (a quarter), unless batch_size says otherwise.
    assert (inventory.canary.name, inventory.rollout.batch_size) == ("au", None)


# --- [latency] and each host's location (`doit latency`) --------------------------------------

def test_latency_defaults_and_locations(write):
    inv = load(write(variant('region = "oceania"', 'region = "oceania"\nlocation = "sydney"')
                     + '\n[dns]\ndefault = "au"\ndatabase = "country.mmdb"\n'
                     + '\n[latency]\nvisitors = "logs"\nmeasured = "rtts.csv"\n'))
    assert [h.location for h in inv.hosts] == ["sydney", None]
    assert inv.latency.visitors == "logs"
    assert inv.latency.measured == inv.root / "rtts.csv"
    assert (inv.latency.monitors, inv.latency.candidates, inv.latency.origin) == (None,) * 3
    shares = load(write(VALID + '\n[latency]\nvisitors = { AU = 60, "United States" = 40 }\n'))
    assert shares.latency.visitors == (("AU", 60), ("United States", 40))


@pytest.mark.parametrize("text, message", [
    ('[latency]\nvisitors = { AU = 50, US = 30 }\n',
     "[latency]: key 'visitors': visitor shares add up to 80, not 1 or 100"),
    ('[latency]\nvisitors = "log"\n',
     "[latency]: key 'visitors': must be \"logs\" or a table of shares by country, found 'log'"),
    ('[latency]\nvisitors = { Narnia = 100 }\n',
     "[latency]: key 'visitors': visitor country 'Narnia': unknown country; give its ISO 3166 "
     "alpha-2 code (e.g. DE) or its English name"),
    ('[latency]\nmonitors = ["45.3,-73.9"]\n',
     "[latency]: key 'monitors': '45.3,-73.9': coordinates need a country code to be routed "
     "by [dns.map], e.g. \"45.3,-73.9,CA\""),
    ('[latency]\ncandidates = ["Atlantis"]\n',
     "[latency]: key 'candidates': 'Atlantis': unknown city; give one of Sydney, New York, "),
    # VALID has no [dns]: the hosts have no country database to count with.
    ('[latency]\nvisitors = "logs"\n',
     "[latency]: key 'visitors': \"logs\" counts with the country database the hosts have for "
     "gdnsd ([dns] provider = \"gdnsd\"); without it, give shares by country"),
])
def test_a_bad_latency_value_is_one_line_naming_the_key(error, text, message):
    found = error(VALID + "\n" + text)
    assert "\n" not in found
    assert found.startswith(message)


def test_an_unknown_location_names_the_host_and_key(error):
    found = error(variant('region = "oceania"', 'region = "oceania"\nlocation = "Atlantis"'))
    assert found.startswith("[[hosts]] #1 (au): key 'location': 'Atlantis': unknown city; "
                            "give one of Sydney, New York, Paris")
    assert found.endswith('or coordinates as "lat,lon"')
    assert "latitude must be" in error(variant('region = "oceania"',
                                               'region = "oceania"\nlocation = "91,0"'))

