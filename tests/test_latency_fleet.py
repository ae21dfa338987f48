"""`doit latency` on a real fleet: visitors counted in each host's real nginx log, from real
HTTPS requests made from addresses of the fleet's test country database, with the host's own
database and mmdblookup; one SSH round trip per host; only counts leave the hosts. Then the
deploy's one line, which opens no SSH connection.

The tests share one deployed fleet and run in order."""
import json

import pytest

from fleet_helpers import accepted_connections
from helpers import deployed_site, run_doit
from outpost.commands import dns as geodns

HOSTS = ("au", "ny", "fr")
ADDRESSES = {"au": "198.19.98.11", "ny": "198.19.98.12", "fr": "198.19.98.13"}
# Visitors: (host, country of the test database, how many addresses, requests from each).
VISITS = [("au", "AU", 2, 2), ("ny", "US", 1, 3), ("fr", "NL", 2, 1), ("fr", "JP", 1, 1)]
NETWORKS = {country: network for country, network in geodns.PROBE_NETWORKS.values()}


def visitor_addresses(country: str, count: int) -> list[str]:
    base = NETWORKS[country].split("/")[0].rsplit(".", 1)[0]
    return [f"{base}.{10 + n}" for n in range(count)]


def with_logs(project):
    path = project / "inventory.toml"
    path.write_text(path.read_text() + '\n[latency]\nvisitors = "logs"\norigin = "Paris"\n')


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    return deployed_site(tmp_path_factory, request, "latency", ADDRESSES, "outpost-hh",
                         prepare=with_logs)


def visit(hosts_fleet, inv, host: str, address: str, requests: int):
    """HTTPS requests to the host's own site from `address`, added to its loopback: nginx logs
    them as a visitor from there."""
    added = hosts_fleet.run_on(host, ["ip", "addr", "add", f"{address}/32", "dev", "lo"])
    assert added.returncode == 0, added.stderr
    for n in range(requests):
        # -k: the request is what is tested here, not the certificate.
        done = hosts_fleet.run_on(host, [
            "curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "--interface", address,
            "--resolve", f"{inv.site.name}:443:{ADDRESSES[host]}",
            f"https://{inv.site.name}/?visit={n}"])
        assert done.stdout == "200", (done.stdout, done.stderr)


def test_visitors_are_counted_per_country_on_each_host(site):
    project, inv, hosts_fleet = site
    for host, country, count, requests in VISITS:
        for address in visitor_addresses(country, count):
            visit(hosts_fleet, inv, host, address, requests)
    before = {name: accepted_connections(hosts_fleet, name) for name in HOSTS}
    out = run_doit(project, "latency").stdout
    # One SSH login per host.
    assert {name: accepted_connections(hosts_fleet, name) - before[name] for name in HOSTS} == {
        name: 1 for name in HOSTS}
    kept = json.loads((project / "build/latency/visitors.json").read_text())["hosts"]
    assert {name: kept[name]["counts"] for name in HOSTS} == {
        "au": {"AU": 2}, "ny": {"US": 1}, "fr": {"NL": 2, "JP": 1}}
    assert "Visitors: 6 visitors (client addresses) counted by country in the nginx logs of " \
           "au, fr, ny" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.startswith("  ") and "%" in line and "ms" in line}
    # Shares of the six, and the host the map gives each (Asia: the default, au).
    assert {name: (rows[name][1], rows[name][2]) for name in
            ("Australia", "Netherlands", "Japan")} == {
        "Australia": ("33.3%", "au"), "Netherlands": ("33.3%", "fr"), "Japan": ("16.7%", "au")}
    assert rows["United"][2:4] == ["16.7%", "ny"]     # United States
    # Every host healthy; the check's timings from this machine beside the model's from Paris.
    assert "Not healthy" not in out
    for name in HOSTS:
        assert any(line.startswith(f"  {name:8} measured ") for line in out.splitlines()), out
    # Only counts left the hosts: no visitor's address in the report or in what is kept.
    text = out + (project / "build/latency/visitors.json").read_text()
    for _, country, count, _ in VISITS:
        for address in visitor_addresses(country, count):
            assert address not in text
    print(out)


def test_a_no_op_deploy_shows_the_weighted_mean_and_opens_no_ssh(site):
    project, _, hosts_fleet = site
    before = {name: accepted_connections(hosts_fleet, name) for name in HOSTS}
    out = run_doit(project, "deploy").stdout
    assert {name: accepted_connections(hosts_fleet, name) for name in HOSTS} == before
    (line,) = [line for line in out.splitlines() if line.startswith("Latency: ")]
    assert " ms weighted mean first visit under the current map; visitors: 6 visitors " \
           "(client addresses) counted by country in the nginx logs of au, fr, ny " \
           "(" in line
    assert line.endswith("`doit latency` for the whole plan.")
