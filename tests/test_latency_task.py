"""`doit latency`, run by real doit in a subprocess on a project copy whose hosts sit on
loopback addresses where nothing listens (no fleet): the report from the inventory, a measured
round trip and the last check's timings, healthy hosts as a local health server answers, the
picture in build/latency/, and bad input as one line. The log counting runs on the fleet
(tests/test_latency_fleet.py)."""
import http.server
import json
import threading
import xml.etree.ElementTree as ET

import pytest

from conftest import copy_project
from helpers import fleet_project, run_doit
from outpost.commands import latency as latency_commands

ADDRESSES = {"au": "127.77.0.11", "ny": "127.77.0.12", "fr": "127.77.0.13"}


@pytest.fixture
def project(tmp_path):
    return fleet_project(tmp_path, ADDRESSES, "outpost-lt")


@pytest.fixture
def healthy():
    """A health server on port 80 of au's and ny's addresses, as nginx would answer gdnsd's
    checker; fr has none, so it is down."""
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/_health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    servers = [http.server.ThreadingHTTPServer((ADDRESSES[name], 80), Health)
               for name in ("au", "ny")]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield
    for server in servers:
        server.shutdown()
        server.server_close()


def with_latency(project, table: str):
    path = project / "inventory.toml"
    path.write_text(path.read_text() + "\n[latency]\n" + table)


def test_doit_latency_prints_the_plan_and_draws_the_map(project, healthy):
    with_latency(project, 'measured = "rtts.csv"\norigin = "Sydney"\n')
    (project / "rtts.csv").write_text("a,b,rtt_ms\nUS,New York,11\n")
    # The last check's median for au, as check:au keeps it.
    (project / "build/check").mkdir(parents=True)
    (project / "build/check/au.json").write_text(json.dumps({"median_ms": 12.5, "at": 0}))
    out = run_doit(project, "latency").stdout
    assert "Hosts: au (Sydney), ny (New York), fr (Paris)" in out
    assert "Not healthy, left out of the map: fr" in out
    assert "Visitors: the seed's GoatCounter top ten, assumed to fall as 1/rank (Zipf)." in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith("  ") and "ms" in line and "%" in line}
    # fr is down, so Europe goes to ny, its map's next host; Oceania stays on au.
    assert rows["Germany"][2] == "ny" and rows["France"][2] == "ny"
    assert rows["Australia"][2] == "au"
    # The measured round trip replaces the model's for its pair.
    united = next(line for line in out.splitlines() if line.startswith("  United States"))
    assert united.split()[3:5] == ["ny", "11"] and united.endswith("(measured)")
    assert "weighted mean first visit: " in out
    assert "Monitoring locations (unweighted):" in out and "  mean first visit: " in out
    assert "Where the next host should go" in out
    # The check's median beside the model's request from Sydney to the Sydney host.
    assert "au       measured 12.5 ms, model 0.3 ms" in out
    assert out.rstrip().endswith("Picture: build/latency/map.svg and build/latency/map.png")
    root = ET.fromstring((project / "build/latency/map.svg").read_text())
    assert {g.get("data-host") for g in root.iter("{http://www.w3.org/2000/svg}g")
            if g.get("class") == "host"} == {"au", "ny", "fr"}
    assert (project / "build/latency/map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_map_that_minimises_the_mean_names_the_lines_to_change(project, healthy):
    # Europe first to au: the plan sends it back to fr and says which [dns.map] line changes.
    text = (project / "inventory.toml").read_text()
    (project / "inventory.toml").write_text(text.replace('EU = ["fr", "ny"]', 'EU = ["au"]'))
    out = run_doit(project, "latency").stdout
    changes = [line.strip() for line in out.splitlines() if line.startswith("  + ")]
    assert changes == ['+ EU = ["fr", "ny", "au"]']


def test_shares_from_the_inventory_are_named_as_the_source(project, healthy):
    with_latency(project, 'visitors = { AU = 50, "United States" = 30, DE = 20 }\n')
    out = run_doit(project, "latency").stdout
    assert "Visitors: the table in inventory.toml [latency] visitors." in out
    assert " 50.0%  au" in out


@pytest.mark.parametrize("csv, message", [
    ("Sydney,Paris\n", 'rtts.csv, line 1: expected 3 fields "a,b,rtt_ms", got 2'),
    ("Sydney,Atlantis,30\n", "rtts.csv, line 1: 'Atlantis' is neither a known city"),
])
def test_a_malformed_csv_fails_the_task_in_one_line(project, csv, message):
    with_latency(project, 'measured = "rtts.csv"\n')
    (project / "rtts.csv").write_text(csv)
    proc = run_doit(project, "latency", check=False)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "rtts.csv" in line]
    assert lines and all(message in line for line in lines), proc.stdout + proc.stderr


def test_an_unknown_city_stops_every_command_in_one_line(project):
    path = project / "inventory.toml"
    path.write_text(path.read_text().replace('location = "Paris"', 'location = "Atlantis"'))
    proc = run_doit(project, "list", check=False)
    assert proc.returncode != 0
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("outpost: inventory.toml: [[hosts]] #3 (fr): key 'location': "
                           "'Atlantis': unknown city")


def test_a_host_without_a_location_is_named(project):
    path = project / "inventory.toml"
    path.write_text(path.read_text().replace('location = "New York"\n', ""))
    proc = run_doit(project, "latency", check=False)
    assert proc.returncode != 0
    assert ("[[hosts]] ny: no key 'location' (a city or \"lat,lon\"), which the latency plan "
            "needs") in proc.stdout + proc.stderr


def test_the_count_script_counts_each_address_once_and_prints_only_counts(tmp_path):
    # The host's script with this machine's sh, awk and mmdblookup, on a log and the fleet's
    # test database put where the script reads them.
    from outpost import geoip
    database = tmp_path / "country.mmdb"
    geoip.write_fleet_database(database)
    log = tmp_path / "access.log"
    line = '{} - - [01/Dec/2026:12:00:00 +0000] "{} {} HTTP/1.1" 200 612 "-" "curl/7.88.1"\n'
    log.write_text("".join(line.format(*fields) for fields in [
        ("202.12.28.10", "GET", "/"), ("202.12.28.10", "GET", "/a"),   # AU, twice: one visitor
        ("202.12.28.11", "GET", "/"), ("193.0.0.5", "HEAD", "/"),      # AU, NL
        ("198.18.0.11", "GET", "/"),                                    # a host: gdnsd's checks
        ("198.18.0.1", "GET", "/_health"),                              # the health path only
        ("198.18.0.2", "GET", "/"),                                     # not in the database
        ("localhost", "GET", "/"),                                      # never looked up
    ]))
    script = (latency_commands.count_script(["198.18.0.11", "198.18.0.12"])
              .replace(latency_commands.ACCESS_LOG, str(log))
              .replace(latency_commands.DATABASE, str(database)))
    import subprocess
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["?? 1", "AU 2", "NL 1"]
    assert latency_commands.parse_counts(done.stdout, "au") == ({"AU": 2, "NL": 1}, 1)


def test_counts_that_are_not_counts_are_one_line_naming_the_host():
    from outpost.errors import OutpostError
    with pytest.raises(OutpostError) as error:
        latency_commands.parse_counts("AU 2\n202.12.28.10 1\n", "au")
    assert str(error.value) == ("host au, step latency: the visitor count printed "
                                "'202.12.28.10 1', not `COUNTRY COUNT`")


def test_hosts_with_gdnsd_get_mmdblookup_from_the_bootstrap_and_the_fleet(tmp_path):
    from outpost import fleet, inventory
    from outpost.commands import bootstrap
    inv = inventory.load(copy_project(tmp_path) / "inventory.toml")
    assert bootstrap.host_plan(inv, inv.hosts[0]).packages[-2:] == ("gdnsd", "libmaxminddb")
    # The fleet's Debian base has it (mmdb-bin): apk counts Chimera's package as installed.
    names = [p.name for p in fleet.from_inventory(inv).provision.base_packages]
    assert names == ["gdnsd", "libmaxminddb"]
    assert fleet.REQUIRED_PROGRAMS["mmdblookup"] == "mmdb-bin"


def test_the_deploys_line_follows_the_checks_with_failed_hosts_left_out(tmp_path):
    # The reporter doit makes for this inventory, fed the check results of a run.
    import io
    from types import SimpleNamespace
    from outpost import inventory
    from outpost.report import reporter_for
    inv = inventory.load(copy_project(tmp_path) / "inventory.toml")
    out = io.StringIO()
    reporter = reporter_for(inv)(out, {})
    for name in ("au", "ny"):
        reporter.add_success(SimpleNamespace(name=f"check:{name}", values={
            "host": name, "status": "ok", "median_ms": 1.0}))
    reporter.checks.append({"host": "fr", "status": "FAIL"})   # as add_failure records it
    reporter.complete_run()
    (line,) = [line for line in out.getvalue().splitlines() if line.startswith("Latency: ")]
    # fr's check failed: the plan with fr unhealthy (Europe on ny, as gdnsd would send it).
    from outpost.latency import inputs, visitors
    without_fr = inputs.plan(inv, {"au", "ny"}, visitors.seed_default()).mean
    assert without_fr > inputs.plan(inv, {"au", "ny", "fr"}, visitors.seed_default()).mean
    assert line.startswith(f"Latency: {without_fr:.0f} ms weighted mean first visit under the "
                           "current map, fr left out; visitors: the seed's GoatCounter top ten")
    assert line.endswith("`doit latency` for the whole plan.")
