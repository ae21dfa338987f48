"""GeoDNS on a real fleet with real gdnsd: every host a nameserver, answering each continent
with the host the inventory's map gives, failing over when a host's app stops, refusing a
broken zone while it keeps answering from the old one, a map change that touches only DNS, and
the managed alternative (Gcore) against a local server that records what it is sent.

The tests share one fleet and run in order; each leaves the fleet deployed for the next."""
import http.server
import json
import re
import threading

import pytest

from fleet_helpers import accepted_connections
from helpers import fleet_project, ran_tasks, run_doit, wait_for
from outpost import fleet, inventory
from outpost.commands import dns as geodns

HOSTS = ("au", "fr", "ny")
ADDRESSES = {"au": "198.19.82.11", "ny": "198.19.82.12", "fr": "198.19.82.13"}
# The seed's map, continent by continent.
SEED_MAP = {"NA": "ny", "EU": "fr", "AF": "fr", "SA": "fr", "AS": "au", "OC": "au"}


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    project = fleet_project(tmp_path_factory.mktemp("dns"), ADDRESSES, "outpost-t5")
    request.addfinalizer(lambda: run_doit(project, "fleet:down", check=False))
    proc = run_doit(project, "deploy")
    inv = inventory.load(project / "inventory.toml")
    return project, inv, fleet.from_inventory(inv), proc


def answer(inv, nameserver: str, continent: str) -> str:
    """The host a nameserver gives a visitor on `continent`: an ECS query from its network,
    sent and read by dnspython, independently of Outpost's own check."""
    import dns.edns
    import dns.message
    import dns.query
    _, network = geodns.PROBE_NETWORKS[continent]
    address, prefix = network.split("/")
    query = dns.message.make_query(inv.site.name, "A", use_edns=0,
                                   options=[dns.edns.ECSOption(address, int(prefix))])
    response = dns.query.udp(query, ADDRESSES[nameserver], timeout=2)
    names = {address: name for name, address in ADDRESSES.items()}
    return ",".join(sorted(names.get(item.address, item.address)
                           for rrset in response.answer for item in rrset))


def answers(inv, continent: str, nameservers=HOSTS) -> dict:
    return {ns: answer(inv, ns, continent) for ns in nameservers}


def test_every_nameserver_answers_each_continent_as_the_seed_maps_it(site):
    project, inv, _, proc = site
    # The rollout upgrades the hosts one batch after another, so gdnsd's own health checks
    # (every 2 s) may still be catching up with the last host's restart: poll, then assert.
    for continent, host in SEED_MAP.items():
        wait_for(lambda: answers(inv, continent) == {ns: host for ns in HOSTS},
                 f"every nameserver to answer {continent} with {host}", timeout=15)
        assert answers(inv, continent) == {ns: host for ns in HOSTS}, continent
    for name in HOSTS:  # a fresh host asked for the database, and got it
        assert f"{name}: changed: {geodns.DATABASE}" in proc.stdout
    # The check prints the table, one row per continent (asked now that gdnsd's checks have
    # seen every host up: during the deploy, a host being restarted is rightly skipped).
    proc = run_doit(project, "check")
    table = proc.stdout[proc.stdout.index("continent  expected"):].splitlines()
    assert table[0].split() == ["continent", "expected", "ns", "au", "ns", "fr", "ns", "ny"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:7]}
    assert rows == {c: [h, h, h, h] for c, h in SEED_MAP.items()}


def test_gdnsd_runs_as_its_own_user_with_only_the_bind_capability(site):
    _, _, hosts_fleet, _ = site
    for name in HOSTS:
        status = hosts_fleet.run_on(name, ["sh", "-c", "cat /proc/$(pgrep -x gdnsd)/status"])
        fields = dict(line.split(":\t", 1) for line in status.stdout.splitlines() if ":\t" in line)
        uid = hosts_fleet.run_on(name, ["id", "-u", "_gdnsd"]).stdout.strip()
        assert fields["Uid"].split()[0] == uid != "0"
        # CAP_NET_BIND_SERVICE is bit 10, and it is the only one.
        assert int(fields["CapEff"], 16) == 1 << 10
        assert int(fields["CapAmb"], 16) == 1 << 10


def app_signal(hosts_fleet, name, sig):
    """Send sig to the host's app process (its PID as dinit reports it)."""
    return hosts_fleet.run_on(name, ["sh", "-c", f"kill -{sig} $(dinitctl status linkedlist | "
                                                 "sed -n 's/.*Process ID: //p')"])


def test_an_app_that_does_not_answer_fails_over_and_comes_back(site):
    project, inv, hosts_fleet, _ = site
    # Hung, not stopped: a run starts a stopped app again (services:<host>, see
    # tests/test_converge.py), so only a hung one stays down for the check to name.
    result = app_signal(hosts_fleet, "ny", "STOP")
    assert result.returncode == 0, result.stderr
    try:
        # The next host of North America's order, from every nameserver (all still up).
        wait_for(lambda: answers(inv, "NA") == {ns: "fr" for ns in HOSTS},
                 "North America to fail over to fr", timeout=30)
        # Nobody else moved.
        assert answers(inv, "EU") == {ns: "fr" for ns in HOSTS}
        assert answers(inv, "OC") == {ns: "au" for ns in HOSTS}
        # The check: ny fails (its app does not answer); the nameservers' answers are right,
        # and the table says why North America gets fr.
        proc = run_doit(project, "check", check=False)
        failed = re.findall(r"TaskFailed - taskid:(\S+)", proc.stdout + proc.stderr)
        assert failed == ["check:ny"], proc.stdout
        assert re.search(r"^NA +fr \(ny down\) +fr +fr", proc.stdout, re.M), proc.stdout
        assert "services:ny" not in ran_tasks(proc.stdout)  # nothing stopped to start
    finally:
        result = app_signal(hosts_fleet, "ny", "CONT")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: answers(inv, "NA") == {ns: "ny" for ns in HOSTS},
             "North America back on ny", timeout=30)


def test_a_nameserver_that_answers_a_continent_with_the_wrong_host_fails_the_check(site):
    # ny's own zone, changed on the host by hand: the site's name is fr's address for every
    # visitor, whatever the map says (the other nameservers are as they should be).
    project, inv, hosts_fleet, _ = site
    zone = geodns.zone_path(inv.site.name)
    original = hosts_fleet.run_on("ny", ["cat", zone]).stdout
    edited = re.sub(r"^@ \S+ DYNA geoip!site$", f"@ 30 A {ADDRESSES['fr']}", original,
                    flags=re.M)
    assert edited != original

    def put_zone(text):
        assert hosts_fleet.run_on("ny", ["sh", "-c", f"cat > {zone}"], input=text
                                  ).returncode == 0
        reloaded = hosts_fleet.run_on("ny", ["gdnsdctl", "-c", geodns.CONF_DIR, "reload-zones"])
        assert reloaded.returncode == 0, reloaded.stderr

    put_zone(edited)
    try:
        wait_for(lambda: answer(inv, "ny", "AS") == "fr", "ny to answer Asia with fr")
        proc = run_doit(project, "check", check=False)
    finally:
        put_zone(original)
    out = proc.stdout + proc.stderr
    assert re.findall(r"TaskFailed - taskid:(\S+)", out) == ["check:ny"], out
    for continent, host in SEED_MAP.items():
        network = geodns.PROBE_NETWORKS[continent][1]
        said = (f"host ny, step check: nameserver {ADDRESSES['ny']} answers {continent} "
                f"({network}) with fr, expected {host}")
        assert (said in out) == (host != "fr"), (continent, out)
    wait_for(lambda: answers(inv, "AS") == {ns: "au" for ns in HOSTS}, "ny's own zone again")


def test_a_no_op_deploy_opens_no_ssh_connection(site):
    project, _, hosts_fleet, _ = site
    before = {name: accepted_connections(hosts_fleet, name) for name in HOSTS}
    proc = run_doit(project, "deploy")
    assert [t for t in ran_tasks(proc.stdout) if t.startswith(("dns", "geoip"))] == []
    assert {name: accepted_connections(hosts_fleet, name) for name in HOSTS} == before


def test_a_map_change_reloads_dns_on_every_host_and_touches_nothing_else(site):
    project, inv, hosts_fleet, _ = site
    inventory_file = project / "inventory.toml"
    original = inventory_file.read_text()
    # The seed's "servers in Asia": here Asia goes to ny instead of the default.
    inventory_file.write_text(original.replace('SA = ["fr", "ny"]', 'SA = ["fr", "ny"]\n'
                                                                    'AS = ["ny"]'))
    try:
        proc = run_doit(project, "deploy")
        # certificate:<host> and check:<host> always run (a TLS handshake, the check).
        ran = [t for t in ran_tasks(proc.stdout)
               if not t.startswith(("deploy", "check", "certificate:"))]
        assert ran == ["dns:au", "dns:fr", "dns:ny"]
        # A config change: each gdnsd restarted, not just its zones reloaded.
        assert sorted(re.findall(r"^(\w+): restarted: gdnsd$", proc.stdout, re.M)) == list(HOSTS)
        # The database did not change, so it was not sent again.
        assert sorted(re.findall(r"^(\w+): changed: (\S+)$", proc.stdout, re.M)) == [
            (name, geodns.CONFIG) for name in HOSTS]
        assert answers(inv, "AS") == {ns: "ny" for ns in HOSTS}
        assert answers(inv, "NA") == {ns: "ny" for ns in HOSTS}
    finally:
        inventory_file.write_text(original)
    run_doit(project, "deploy")
    assert answers(inv, "AS") == {ns: "au" for ns in HOSTS}


def test_a_zone_only_change_reloads_zones_without_a_restart(site):
    project, inv, hosts_fleet, _ = site
    zone = project / "templates/gdnsd/zone.j2"
    original = zone.read_text()
    zone.write_text(original + "www 300 CNAME @\n")
    try:
        pids = {ns: hosts_fleet.run_on(ns, ["pgrep", "-x", "gdnsd"]).stdout for ns in HOSTS}
        proc = run_doit(project, "dns")
        assert ran_tasks(proc.stdout) == ["dns:au", "dns:fr", "dns:ny"]  # not config:<host>
        assert sorted(re.findall(r"^(\w+): reloaded: zones$", proc.stdout, re.M)) == list(HOSTS)
        assert "restarted: gdnsd" not in proc.stdout
        assert {ns: hosts_fleet.run_on(ns, ["pgrep", "-x", "gdnsd"]).stdout
                for ns in HOSTS} == pids
        import dns.resolver
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [ADDRESSES["au"]]
        assert str(resolver.resolve(f"www.{inv.site.name}", "CNAME")[0].target) \
            == f"{inv.site.name}."
    finally:
        zone.write_text(original)
    run_doit(project, "dns")


def test_a_zone_gdnsd_rejects_fails_the_step_and_the_old_one_keeps_answering(site):
    project, inv, _, _ = site
    zone = project / "templates/gdnsd/zone.j2"
    original = zone.read_text()
    zone.write_text(original + "broken 300 A 300.1.2.3\n")
    try:
        proc = run_doit(project, "dns", check=False)
        assert proc.returncode != 0
        for name in HOSTS:
            assert f"dns on host {name} ({ADDRESSES[name]}) failed (exit {geodns.REFUSED})" \
                in proc.stdout + proc.stderr
        out = proc.stdout + proc.stderr
        assert "300.1.2.3" in out  # gdnsd's own message names the bad record
        assert "apply: gdnsd refused the new files; the old ones stay in place" in out
        for continent, host in SEED_MAP.items():
            assert answers(inv, continent) == {ns: host for ns in HOSTS}
    finally:
        zone.write_text(original)
    proc = run_doit(project, "dns")
    assert ran_tasks(proc.stdout) == ["dns:au", "dns:fr", "dns:ny"]


@pytest.mark.parametrize("problem", ["missing", "unreadable", "malformed"])
def test_a_bad_database_is_one_error_naming_the_file(site, problem):
    project, _, _, _ = site
    database = project / "geo" / "country.mmdb"
    database.parent.mkdir(exist_ok=True)
    database.unlink(missing_ok=True)
    if problem == "malformed":
        database.write_text("not a database\n")
    elif problem == "unreadable":
        database.mkdir()  # root reads any file: a folder is what it can't read as one
    inventory_file = project / "inventory.toml"
    original = inventory_file.read_text()
    inventory_file.write_text(original.replace('database = "fleet"',
                                               'database = "geo/country.mmdb"'))
    try:
        proc = run_doit(project, "dns", check=False)
    finally:
        inventory_file.write_text(original)
        if database.is_dir():
            database.rmdir()
    assert proc.returncode != 0
    expected = {"missing": "no such country database",
                "unreadable": "cannot read the country database",
                "malformed": "not a MaxMind-format (.mmdb) database"}[problem]
    out = proc.stdout + proc.stderr
    assert f"{database}: {expected}" in out
    assert "Traceback" not in out


class Recorder(http.server.BaseHTTPRequestHandler):
    """A stand-in for Gcore's API that records each request and answers 200."""
    requests = []

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.requests.append({"path": self.path, "auth": self.headers["Authorization"],
                                  "body": json.loads(body)})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_gcore_gets_the_same_map_with_the_token_from_the_environment(site, tmp_path):
    project, _, _, _ = site
    server = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    inventory_file = project / "inventory.toml"
    original = inventory_file.read_text()
    inventory_file.write_text(original.replace(
        'default = "au"', f'default = "au"\nprovider = "gcore"\n'
                          f'api = "http://127.0.0.1:{server.server_port}"'))
    try:
        missing = run_doit(project, "dns", check=False, env={"GCORE_API_TOKEN": ""})
        assert missing.returncode != 0
        assert "the environment variable GCORE_API_TOKEN holds no Gcore API token" \
            in missing.stdout + missing.stderr
        assert Recorder.requests == []
        proc = run_doit(project, "dns", env={"GCORE_API_TOKEN": "s3cret-token"})
    finally:
        inventory_file.write_text(original)
        server.shutdown()
    assert ran_tasks(proc.stdout) == ["dns:gcore"]
    assert "s3cret-token" not in proc.stdout + proc.stderr
    [request] = Recorder.requests
    assert request["path"] == "/dns/v2/zones/linkedlist.test/linkedlist.test/A"
    assert request["auth"] == "APIKey s3cret-token"
    records = {r["content"][0]: r["meta"] for r in request["body"]["resource_records"]}
    assert records[ADDRESSES["ny"]]["continents"] == ["na"]
    assert sorted(records[ADDRESSES["fr"]]["continents"]) == ["af", "eu", "sa"]
    assert records[ADDRESSES["au"]].get("default") is True
