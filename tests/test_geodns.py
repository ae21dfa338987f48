"""GeoDNS without a network: the [dns] table, the map's fallback orders, what gdnsd gets
(checked by the real `gdnsd checkconf`), the country database and its errors, the DNS table,
and the stand-in dinit's `capabilities`."""
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from outpost import geoip, inventory, probe, report
from outpost.commands import bundle
from outpost.commands import dns as geodns
from outpost.errors import OutpostError
from outpost.fleet import provision
from outpost.standins import _dinit

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def inv():
    return inventory.load(REPO / "inventory.toml")


def with_dns(tmp_path, dns_text: str, fleet=True) -> Path:
    """The default inventory with its [dns] tables replaced by dns_text."""
    text = (REPO / "inventory.toml").read_text()
    text = re.sub(r"\n\[dns\].*?(?=\n\[\[packages\]\])", "\n" + dns_text, text, flags=re.S)
    if not fleet:
        text = re.sub(r"\n\[fleet\]\n.*?(?=\n\[)", "\n", text, flags=re.S)
    path = tmp_path / "inventory.toml"
    path.write_text(text)
    return path


# --- the inventory ----------------------------------------------------------------------------

def test_the_default_inventory_is_the_seeds_map(inv):
    # North America -> ny; Europe, Africa and South America -> fr; everything else -> au.
    expected = {"NA": "ny", "EU": "fr", "AF": "fr", "SA": "fr", "AS": "au", "OC": "au",
                "AN": "au"}
    assert {c: geodns.expected_host(inv.dns, inv.hosts, c) for c in expected} == expected
    assert inv.dns.provider == "gdnsd" and inv.dns.database is None
    assert inv.dns.health == inventory.DnsHealth(2, 1, 1, 1, 1)


def test_every_order_falls_back_to_the_default_then_every_other_host(inv):
    assert dict(geodns.region_orders(inv.dns, inv.hosts)) == {
        "NA": ["ny", "fr", "au"], "EU": ["fr", "ny", "au"], "AF": ["fr", "au", "ny"],
        "SA": ["fr", "ny", "au"]}
    assert geodns.default_order(inv.dns, inv.hosts) == ["au", "ny", "fr"]


def test_a_new_host_needs_its_hosts_entry_and_one_line(tmp_path):
    text = (REPO / "inventory.toml").read_text()
    text = text.replace('SA = ["fr", "ny"]', 'SA = ["fr", "ny"]\nAS = ["sg"]')
    text += ('\n[[hosts]]\nname = "sg"\naddress = "198.18.0.14"\narch = "x86_64"\n'
             'region = "asia"\n')
    path = tmp_path / "inventory.toml"
    path.write_text(text)
    inv = inventory.load(path)
    assert geodns.expected_host(inv.dns, inv.hosts, "AS") == "sg"
    assert dict(geodns.region_orders(inv.dns, inv.hosts))["AS"] == ["sg", "au", "ny", "fr"]
    # and the other regions fall back to it last
    assert dict(geodns.region_orders(inv.dns, inv.hosts))["NA"] == ["ny", "fr", "au", "sg"]


@pytest.mark.parametrize("dns_text, message", [
    ('[dns]\ndefault = "xx"\n', "[dns]: key 'default': no host named 'xx'; hosts: au, ny, fr"),
    ('[dns]\ndefault = "au"\n[dns.map]\nNA = ["ny", "zz"]\n',
     "[dns.map]: NA: no host named 'zz'"),
    ('[dns]\ndefault = "au"\n[dns.map]\nEurope = ["fr"]\n',
     "[dns]: key 'map': 'Europe' is not a region; use a continent code"),
    ('[dns]\ndefault = "au"\n[dns.map]\n"EU/Germany" = ["fr"]\n',
     "'EU/Germany': 'Germany' is not an ISO 3166 country code"),
    ('[dns]\ndefault = "au"\n[dns.map]\nNA = []\n', "'NA' names no host"),
    ('[dns]\ndefault = "au"\n[dns.map]\nNA = ["ny", "ny"]\n', "'NA' names a host twice"),
    ('[dns]\ndefault = "au"\nprovider = "route53"\n', "unknown DNS provider 'route53'"),
    ('[dns]\ndefault = "au"\n[dns.health]\ninterval = 1\n',
     "[dns.health]: key 'interval': gdnsd checks at most every 2 seconds, found 1"),
    ('[dns]\ndefault = "au"\n[dns.health]\ninterval = 2\ntimeout = 2\n',
     "[dns.health]: key 'timeout' (2) must be less than 'interval' (2)"),
    ('[dns]\ndefault = "au"\n[dns.health]\ninterval = 2.5\n',
     "[dns.health]: key 'interval' must be an integer"),
    ('[dns]\ndefault = "au"\n[dns.health]\nretries = 3\n',
     "[dns.health]: unknown key 'retries'"),
])
def test_dns_mistakes_are_one_line_naming_the_key(tmp_path, dns_text, message):
    with pytest.raises(inventory.InventoryError) as error:
        inventory.load(with_dns(tmp_path, dns_text))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_real_hosts_get_gdnsds_own_health_defaults_and_the_fleet_keeps_its_fast_ones(tmp_path):
    # One lost packet between continents must not take a host out of DNS: gdnsd's defaults
    # (interval 10, timeout interval / 2, up 20, ok 10, down 10), for any inventory that says
    # nothing, the example's included. The fleet says its fast ones itself.
    gdnsds = inventory.DnsHealth(interval=10, timeout=5, up_thresh=20, ok_thresh=10,
                                 down_thresh=10)
    assert inventory.load(with_dns(tmp_path, '[dns]\ndefault = "au"\n')).dns.health == gdnsds
    example = REPO / "inventory.example.toml"
    assert inventory.load(example).dns.health == gdnsds
    assert "[dns.health]" in (REPO / "inventory.toml").read_text()
    assert inventory.load(REPO / "inventory.toml").dns.health == inventory.DnsHealth(2, 1, 1, 1, 1)
    # A shorter interval alone: the timeout follows it, as gdnsd's does.
    only_interval = with_dns(tmp_path, '[dns]\ndefault = "au"\n[dns.health]\ninterval = 4\n')
    assert inventory.load(only_interval).dns.health.timeout == 2


def test_the_fleet_database_is_refused_for_real_hosts(tmp_path):
    with pytest.raises(inventory.InventoryError, match=r'"fleet" is the local fleet\'s test '
                       r"database; real hosts need a real one"):
        inventory.load(with_dns(tmp_path, '[dns]\ndefault = "au"\n', fleet=False))
    path = with_dns(tmp_path, '[dns]\ndefault = "au"\ndatabase = "geo/dbip.mmdb"\n', fleet=False)
    assert inventory.load(path).dns.database == tmp_path / "geo/dbip.mmdb"


# --- what gdnsd gets --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fleet_database(tmp_path_factory):
    path = tmp_path_factory.mktemp("geoip") / "fleet.mmdb"
    geoip.write_fleet_database(path)
    return path


def write_files(root: Path, files):
    for f in files:
        target = root / f.remote_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(f.content)
    return root / geodns.CONF_DIR.lstrip("/")


def test_gdnsd_accepts_what_is_rendered_and_maps_it_as_the_inventory_says(inv, fleet_database,
                                                                          tmp_path):
    database = geoip.read_database(fleet_database)
    conf = write_files(tmp_path, geodns.dns_files(inv, inv.host("ny"), database))
    proc = subprocess.run(["gdnsd", "-c", str(conf), "checkconf"], capture_output=True,
                          text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode == 0, proc.stderr
    # gdnsd's own map test: the ordered answer for each continent's probe network.
    for continent, (_, network) in geodns.PROBE_NETWORKS.items():
        address = network.split("/")[0]
        out = subprocess.run(["gdnsd_geoip_test", "-c", str(conf), "site", address],
                             capture_output=True, text=True, check=True).stdout
        first = out.split("=>")[-1].split(",")[0].strip()  # "site => NET => ny, fr, au"
        assert first == geodns.expected_host(inv.dns, inv.hosts, continent), out


def test_the_zone_names_every_host_as_a_nameserver(inv, fleet_database):
    files = geodns.dns_files(inv, inv.host("au"), fleet_database.read_bytes())
    zone = next(f for f in files if f.remote_path == "/etc/gdnsd/zones/linkedlist.test")
    text = zone.content.decode()
    for host in inv.hosts:
        assert f"@ NS {host.name}.linkedlist.test." in text
        assert f"{host.name}.linkedlist.test. A {host.address}" in text
    assert "@ 30/10 DYNA geoip!site" in text


def test_a_map_change_changes_the_dns_context_and_nothing_of_config(inv, tmp_path):
    from outpost.commands import config as config_commands
    path = tmp_path / "inventory.toml"
    path.write_text((REPO / "inventory.toml").read_text().replace('NA = ["ny", "fr"]',
                                                                 'NA = ["fr"]'))
    changed = inventory.load(path)
    host = inv.host("au")
    assert geodns.dns_context(changed, host) != geodns.dns_context(inv, host)
    # What config's doit task compares (config_commands.config_inputs).
    assert (config_commands.config_inputs(changed, changed.host("au"))
            == config_commands.config_inputs(inv, host))


def test_countries_nest_under_their_continent(tmp_path, fleet_database):
    inv = inventory.load(with_dns(tmp_path, '[dns]\ndefault = "au"\n[dns.map]\n'
                                            'EU = ["fr"]\n"EU/DE" = ["ny"]\n"NA/MX" = ["fr"]\n'))
    conf = write_files(tmp_path / "root", geodns.dns_files(inv, inv.host("au"),
                                                            fleet_database.read_bytes()))
    text = (conf / "config").read_text()
    assert re.search(r"EU => \{\s*default => \[ fr, au, ny \]\s*DE => \[ ny, au, fr \]\s*\}", text)
    assert re.search(r"NA => \{\s*MX => \[ fr, au, ny \]\s*\}", text)
    proc = subprocess.run(["gdnsd", "-c", str(conf), "checkconf"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_the_bundle_sends_no_database_unless_asked(inv, fleet_database):
    data = fleet_database.read_bytes()
    without = geodns.dns_bundle("au", geodns.dns_files(inv, inv.host("au"), data,
                                                       send_database=False))
    with_db = geodns.dns_bundle("au", geodns.dns_files(inv, inv.host("au"), data))
    assert len(bundle.archive(without, 1)) < len(data) < len(bundle.archive(with_db, 1))
    digest = hashlib.sha256(data).hexdigest()
    assert f"keep 644 gdnsd {geodns.DATABASE} {digest}" in bundle.manifest(without, 1)
    assert f"file 644 gdnsd {geodns.DATABASE}" in bundle.manifest(with_db, 1)


def test_the_bundle_checks_then_enables_restarts_or_reloads_zones(inv, fleet_database):
    files = geodns.dns_files(inv, inv.host("au"), fleet_database.read_bytes())
    lines = bundle.manifest(geodns.dns_bundle("au", files), 1).splitlines()
    assert lines[3:] == [
        "file 644 gdnsd /etc/gdnsd/config",
        "file 644 zone /etc/gdnsd/zones/linkedlist.test",
        "file 644 gdnsd /etc/gdnsd/geoip/country.mmdb",
        "check gdnsd /etc/gdnsd",
        "enable gdnsd",
        "on gdnsd restart gdnsd",
        "on zone reload-zones gdnsd",
        "start gdnsd"]


# --- the check's query, against dnspython -----------------------------------------------------

def test_the_ecs_query_is_what_dnspython_reads():
    import dns.message
    query = dns.message.from_wire(geodns.ecs_query("linkedlist.test", "193.0.0.0/21", 4321))
    assert query.id == 4321 and query.edns == 0 and query.payload == geodns.UDP_PAYLOAD
    assert str(query.question[0]) == "linkedlist.test. IN A"
    [option] = query.options
    assert (option.address, option.srclen, option.scopelen) == ("193.0.0.0", 21, 0)


def test_the_answer_is_read_from_a_reply_dnspython_writes():
    import dns.edns
    import dns.message
    import dns.rrset
    query = dns.message.from_wire(geodns.ecs_query("linkedlist.test", "192.149.252.0/24", 7))
    reply = dns.message.make_response(query)
    reply.answer.append(dns.rrset.from_text("linkedlist.test.", 30, "IN", "A", "198.18.0.12"))
    reply.additional.append(dns.rrset.from_text("x.linkedlist.test.", 30, "IN", "A", "1.2.3.4"))
    wire = reply.to_wire()  # names compressed
    assert geodns.answer_addresses(wire, 7) == ["198.18.0.12"]
    with pytest.raises(geodns.DnsReplyError, match="another query"):
        geodns.answer_addresses(wire, 8)
    with pytest.raises(geodns.DnsReplyError, match="truncated"):
        geodns.answer_addresses(wire[:40], 7)
    reply.set_rcode(dns.rcode.REFUSED)
    with pytest.raises(geodns.DnsReplyError, match="rcode 5"):
        geodns.answer_addresses(reply.to_wire(), 7)


# --- the database -----------------------------------------------------------------------------

def test_the_fleet_database_places_each_probe_network_on_its_continent(fleet_database):
    import maxminddb
    with maxminddb.open_database(str(fleet_database)) as reader:
        assert "Country" in reader.metadata().database_type
        for continent, (country, network) in geodns.PROBE_NETWORKS.items():
            record = reader.get(network.split("/")[0])
            assert record == {"continent": {"code": continent}, "country": {"iso_code": country}}
        assert reader.get("198.18.0.11") is None  # the fleet's own addresses: the default


def test_a_missing_database_is_one_error_naming_the_file(tmp_path):
    path = tmp_path / "nope.mmdb"
    with pytest.raises(OutpostError, match=rf"^{re.escape(str(path))}: no such country database"):
        geoip.read_database(path)


def test_an_unreadable_database_is_one_error_naming_the_file(tmp_path, fleet_database):
    path = tmp_path / "locked.mmdb"
    shutil.copy(fleet_database, path)
    path.chmod(0)
    proc = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
         os.path.realpath(os.sys.executable), "-c",
         f"from outpost import geoip; from pathlib import Path; "
         f"geoip.read_database(Path({str(path)!r}))"],
        capture_output=True, text=True, cwd=REPO)
    assert f"{path}: cannot read the country database: Permission denied" in proc.stderr


def test_a_malformed_database_is_one_error_naming_the_file(tmp_path, fleet_database):
    path = tmp_path / "broken.mmdb"
    path.write_bytes(b"this is not a MaxMind database\n" * 10)
    with pytest.raises(OutpostError, match=rf"^{re.escape(str(path))}: not a MaxMind-format"):
        geoip.read_database(path)
    truncated = tmp_path / "truncated.mmdb"
    truncated.write_bytes(fleet_database.read_bytes()[:200])
    with pytest.raises(OutpostError, match=rf"^{re.escape(str(truncated))}: "):
        geoip.read_database(truncated)


def test_a_database_without_continents_is_refused(tmp_path):
    import netaddr
    from mmdb_writer import MMDBWriter
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN")
    writer.insert_network(netaddr.IPSet(["193.0.0.0/21"]), {"autonomous_system_number": 3333})
    path = tmp_path / "asn.mmdb"
    writer.to_db_file(str(path))
    with pytest.raises(OutpostError, match="a 'GeoLite2-ASN' database; gdnsd needs a Country"):
        geoip.read_database(path)


# --- the report -------------------------------------------------------------------------------

def test_the_dns_table_has_a_row_per_continent_and_a_column_per_nameserver():
    rows = [{"nameserver": ns, "continent": c, "answer": a, "expected": e, "first": f}
            for ns in ("au", "ny")
            for c, a, e, f in (("NA", "fr", "fr", "ny"), ("EU", "fr", "fr", "fr"))]
    rows[-1] = {**rows[-1], "answer": "au"}
    assert report.dns_table(rows).splitlines() == [
        "continent  expected      ns au  ns ny",
        "EU         fr            fr     au",
        "NA         fr (ny down)  fr     fr",
    ]


def test_the_expected_host_is_the_first_healthy_one_of_the_order(inv):
    assert geodns.expected_host(inv.dns, inv.hosts, "NA", {"au", "fr"}) == "fr"
    assert geodns.expected_host(inv.dns, inv.hosts, "NA", {"au"}) == "au"
    assert geodns.expected_host(inv.dns, inv.hosts, "OC", {"ny", "fr"}) == "ny"
    # None healthy: gdnsd answers as if all were.
    assert geodns.expected_host(inv.dns, inv.hosts, "NA", set()) == "ny"


def test_the_check_judges_health_as_gdnsd_does_and_waits_as_long_as_gdnsd_may(tmp_path,
                                                                               monkeypatch):
    # The expected answers come from the check's own look at each host's port-80 health: an
    # answer later than gdnsd's timeout is a failure to gdnsd, so to the check too.
    real = inventory.load(with_dns(tmp_path, '[dns]\ndefault = "au"\n'))
    asked = []
    monkeypatch.setattr(probe, "plain_health",
                        lambda inventory, host, timeout: asked.append(timeout) or True)
    assert probe.healthy_hosts(real) == {"au", "ny", "fr"}
    assert asked == [real.dns.health.timeout] * 3 == [5] * 3
    # A nameserver follows a host's change after its thresholds' worth of checks: 20 good
    # ones 10 s apart (and the last one's timeout) for a host that came back.
    assert geodns.agreement_time(real.dns.health) == 20 * 10 + 5
    fleet = inventory.load(REPO / "inventory.toml")
    assert geodns.agreement_time(fleet.dns.health) == 1 * 2 + 1


# --- the fleet's gdnsd and the stand-in dinit's capabilities ----------------------------------

def test_the_fleet_installs_the_templates_gdnsd_files_with_debians_path():
    package = provision.packaged_files("gdnsd", REPO / "cports-overlay/user/gdnsd/files",
                                       "/usr/sbin/gdnsd")
    files = dict(package.files)
    service = files["/usr/lib/dinit.d/gdnsd"]
    assert "command = /usr/sbin/gdnsd -c /etc/gdnsd start" in service
    assert "run-as = _gdnsd" in service and "capabilities = ^cap_net_bind_service" in service
    assert set(files) == {"/usr/lib/dinit.d/gdnsd", "/usr/lib/sysusers.d/gdnsd.conf",
                          "/usr/lib/tmpfiles.d/gdnsd.conf"}
    assert provision.boot_commands([package]) == [
        ["systemd-sysusers", "/usr/lib/sysusers.d/gdnsd.conf"],
        ["systemd-tmpfiles", "--create", "/usr/lib/tmpfiles.d/gdnsd.conf"]]
    assert "gdnsd\n" in provision.provided_packages("3.11.2", [package])


def test_a_missing_package_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(OutpostError, match=rf"{re.escape(str(tmp_path))}/gdnsd: cannot read"):
        provision.packaged_files("gdnsd", tmp_path, "/usr/sbin/gdnsd")


def test_iab_strings_become_setpriv_options():
    assert _dinit.parse_iab("^cap_net_bind_service") == (("^", "net_bind_service"),)
    caps = _dinit.parse_iab("^cap_net_bind_service, %cap_chown,!cap_sys_admin")
    assert _dinit.setpriv_argv(caps, (995, 994, [994])) == [
        "setpriv", "--reuid=995", "--regid=994", "--groups=994",
        "--inh-caps=+net_bind_service,+chown", "--ambient-caps=+net_bind_service",
        "--bounding-set=-sys_admin", "--"]
    with pytest.raises(ValueError, match="invalid capability specification 'net_bind'"):
        _dinit.parse_iab("net_bind")


def test_the_zone_says_which_ca_may_issue_and_that_none_may_issue_a_wildcard(inv, tmp_path,
                                                                           fleet_database):
    files = geodns.dns_files(inv, inv.host("au"), fleet_database.read_bytes())
    zone = next(f for f in files if f.remote_path == "/etc/gdnsd/zones/linkedlist.test")
    records = [line for line in zone.content.decode().splitlines() if " CAA " in line]
    # The fleet's pebble stands in for Let's Encrypt (it checks no CAA itself).
    assert records == ['@ CAA 0 issue "letsencrypt.org"', '@ CAA 0 issuewild ";"']
    conf = write_files(tmp_path, files)
    proc = subprocess.run(["gdnsd", "-c", str(conf), "checkconf"], capture_output=True,
                          text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert proc.returncode == 0, proc.stderr
    # Let's Encrypt, staging or not: its CAA identity. Another CA: no wildcard, at least.
    for directory, issue in (("https://acme-v02.api.letsencrypt.org/directory", ["letsencrypt.org"]),
                             ("https://acme-staging-v02.api.letsencrypt.org/directory",
                              ["letsencrypt.org"]),
                             ("https://ca.example.net/acme/directory", [])):
        path = tmp_path / "inventory.toml"
        path.write_text((REPO / "inventory.toml").read_text().replace(
            'directory = "https://198.18.0.30:14000/dir"', f'directory = "{directory}"'))
        caa = geodns.dns_context(inventory.load(path), inv.host("au"))["dns"]["caa"]
        assert caa == [{"tag": "issue", "value": v} for v in issue] + [
            {"tag": "issuewild", "value": ";"}], directory


def test_a_caa_change_changes_the_zones_serial(inv):
    context = geodns.dns_context(inv, inv.host("au"))
    changed = {**context, "dns": {**context["dns"], "caa": context["dns"]["caa"][1:]}}
    assert geodns.zone_serial(changed) != geodns.zone_serial(context)
