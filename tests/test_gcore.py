"""outpost.commands.gcore and outpost.gcore: the GeoDNS map as Gcore's DNS API request, and the runner that sends it.

The expected bodies are written out by hand from Gcore's API documentation (see the module's
docstring), not computed by outpost's code. `apply` is tested against a local HTTP server that
records what it receives; no Gcore server is reachable here."""
import http.server
import json
import socket
import threading

import pytest

from outpost import gcore
from outpost.commands import gcore as gcore_commands
from outpost.errors import OutpostError

# The seed's map as the inventory gives it: each list complete (the default and the remaining
# hosts appended). North America -> ny; Europe, Africa and South America -> fr; the rest -> au.
SEED_ROUTES = [
    ("NA", ["ny", "fr", "au"]),
    ("EU", ["fr", "ny", "au"]),
    ("AF", ["fr", "au", "ny"]),
    ("SA", ["fr", "ny", "au"]),
]
ADDRESSES = {"au": "198.18.0.11", "ny": "198.18.0.12", "fr": "198.18.0.13"}
HEALTH = gcore_commands.Health(interval=2.0, timeout=1.0, path="/_health", port=80,
                      vhost="linkedlist.org")
TOKEN = "4242$0123456789abcdefSECRET"

SEED_BODY = {
    "ttl": 30,
    "resource_records": [
        {"content": ["198.18.0.11"], "enabled": True, "meta": {"default": True}},
        {"content": ["198.18.0.12"], "enabled": True, "meta": {"continents": ["na"]}},
        {"content": ["198.18.0.13"], "enabled": True,
         "meta": {"continents": ["eu", "af", "sa"]}},
    ],
    "pickers": [
        {"type": "healthcheck", "strict": False},
        {"type": "geodns", "strict": False},
        {"type": "default"},
        {"type": "first_n", "limit": 1},
    ],
    "meta": {"failover": {
        "protocol": "HTTP", "port": 80, "frequency": 10, "timeout": 1, "method": "GET",
        "url": "/_health", "tls": False, "http_status_code": 200, "host": "linkedlist.org",
    }},
}


def seed_requests():
    return gcore_commands.geodns_requests("linkedlist.org", SEED_ROUTES, "au", ADDRESSES, HEALTH, 30)


# --- builders ----------------------------------------------------------------------------------

def test_seed_map_is_one_put_of_the_apex_a_rrset():
    [request] = seed_requests()
    assert request.method == "PUT"
    assert request.path == "/dns/v2/zones/linkedlist.org/linkedlist.org/A"
    assert request.body == SEED_BODY


def test_a_country_goes_in_countries_and_the_default_may_serve_regions_too():
    routes = [("EU", ["fr", "au"]), ("EU/DE", ["ny", "fr", "au"]), ("OC", ["au", "fr"])]
    records = gcore_commands.resource_records(routes, "au", ADDRESSES)
    assert records == [
        {"content": ["198.18.0.11"], "enabled": True,
         "meta": {"continents": ["oc"], "default": True}},
        {"content": ["198.18.0.13"], "enabled": True, "meta": {"continents": ["eu"]}},
        {"content": ["198.18.0.12"], "enabled": True, "meta": {"countries": ["de"]}},
    ]


def test_a_host_first_nowhere_gets_a_record_with_no_geo_meta():
    routes = [("NA", ["ny", "fr", "au"])]
    records = gcore_commands.resource_records(routes, "au", ADDRESSES)
    assert [r["content"] for r in records] == [["198.18.0.11"], ["198.18.0.12"],
                                               ["198.18.0.13"]]
    assert records[2]["meta"] == {}


@pytest.mark.parametrize("interval, timeout, frequency, check_timeout", [
    (2.0, 1.0, 10, 1),      # gdnsd's fast defaults: Gcore's minimum frequency is 10 s
    (30.0, 5.0, 30, 5),     # inside Gcore's ranges: unchanged
    (12.5, 0.5, 13, 1),     # whole seconds, rounded up; at least 1 s
    (7200.0, 20.0, 3600, 10),
])
def test_health_check_fits_gcores_ranges(interval, timeout, frequency, check_timeout):
    health = gcore_commands.Health(interval, timeout, "/_health", 80, "linkedlist.org")
    meta = gcore_commands.failover_meta(health)
    assert (meta["frequency"], meta["timeout"]) == (frequency, check_timeout)


def test_ttl_and_names_are_passed_through():
    [request] = gcore_commands.geodns_requests("example.org", [("NA", ["ny"])], "ny", ADDRESSES,
                                      HEALTH, 120)
    assert request.path == "/dns/v2/zones/example.org/example.org/A"
    assert request.body["ttl"] == 120
    assert request.body["resource_records"] == [
        {"content": ["198.18.0.12"], "enabled": True,
         "meta": {"continents": ["na"], "default": True}}]


def test_regions_where_gcore_falls_back_otherwise_than_gdnsd():
    # ny down: gdnsd answers North America with fr (its list), Gcore with the default au.
    # fr down: Europe and South America get ny from gdnsd, au from Gcore; Africa gets au from both.
    assert gcore_commands.unexpressed_fallbacks(SEED_ROUTES, "au") == [
        ("NA", "fr", "au"), ("EU", "ny", "au"), ("SA", "ny", "au")]


def test_a_country_falls_back_to_its_continents_first_host_on_gcore():
    routes = [("EU", ["fr", "au", "ny"]), ("EU/DE", ["ny", "fr", "au"]),
              ("EU/CH", ["ny", "au", "fr"]), ("AS/JP", ["ny", "au", "fr"])]
    # DE with ny down: fr (EU's first) on both. CH: gdnsd au, Gcore fr. JP: au on both.
    assert gcore_commands.unexpressed_fallbacks(routes, "au") == [("EU/CH", "au", "fr")]


@pytest.mark.parametrize("routes, default, addresses, expected", [
    ([("XX", ["ny"])], "au", ADDRESSES, "region 'XX' is neither a continent code"),
    ([("EU/de", ["ny"])], "au", ADDRESSES, "region 'EU/de' is neither"),
    ([("EU/DEU", ["ny"])], "au", ADDRESSES, "region 'EU/DEU' is neither"),
    ([("NA", ["ny"]), ("NA", ["fr"])], "au", ADDRESSES, "region 'NA' appears twice"),
    ([("NA", [])], "au", ADDRESSES, "region 'NA' names no host"),
    ([("NA", ["sg"])], "au", ADDRESSES, "host 'sg' is in the map but has no address"),
    ([("NA", ["ny"])], "au", {"ny": "198.18.0.12"}, "host 'au' is in the map but has no address"),
    ([("NA", ["ny"])], "au", {**ADDRESSES, "ny": "2001:db8::1"}, "'2001:db8::1' is not an IPv4"),
    ([("NA", ["ny"])], "au", {**ADDRESSES, "ny": "198.18.0.11"},
     "hosts 'au' and 'ny' have the same address 198.18.0.11"),
])
def test_bad_input_is_one_clear_error(routes, default, addresses, expected):
    with pytest.raises(OutpostError) as err:
        gcore_commands.geodns_requests("linkedlist.org", routes, default, addresses, HEALTH, 30)
    assert expected in str(err.value)
    assert str(err.value).startswith('[dns] provider = "gcore": ')


# --- apply, against a local server that records what it gets ---------------------------------

class Recorder(http.server.BaseHTTPRequestHandler):
    """Records each request; answers with the server's `reply` (status, body bytes)."""

    def do_PUT(self):
        length = int(self.headers.get("Content-Length", 0))
        self.server.received.append({
            "method": self.command,
            "path": self.path,
            "headers": dict(self.headers.items()),
            "body": json.loads(self.rfile.read(length)),
        })
        status, body = self.server.reply
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    httpd.received = []
    httpd.reply = (200, json.dumps({"name": "linkedlist.org", "type": "A"}).encode())
    # A short poll interval: shutdown() waits for the next poll.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def url(httpd):
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def test_apply_sends_exactly_the_built_request(server, monkeypatch):
    monkeypatch.setenv("GCORE_API_TOKEN", TOKEN)
    answers = gcore.apply(url(server) + "/", seed_requests())
    assert answers == [{"name": "linkedlist.org", "type": "A"}]
    [got] = server.received
    assert got["method"] == "PUT"
    assert got["path"] == "/dns/v2/zones/linkedlist.org/linkedlist.org/A"
    assert got["headers"]["Authorization"] == f"APIKey {TOKEN}"
    assert got["headers"]["Content-Type"] == "application/json"
    assert got["body"] == SEED_BODY


def test_apply_reads_the_token_from_the_named_variable(server, monkeypatch):
    monkeypatch.delenv("GCORE_API_TOKEN", raising=False)
    monkeypatch.setenv("MY_GCORE_TOKEN", "other-token")
    gcore.apply(url(server), seed_requests(), token_env="MY_GCORE_TOKEN")
    assert server.received[0]["headers"]["Authorization"] == "APIKey other-token"


@pytest.mark.parametrize("value", [None, "", "  "])
def test_missing_token_is_an_error_that_names_the_variable(server, monkeypatch, value):
    if value is None:
        monkeypatch.delenv("GCORE_API_TOKEN", raising=False)
    else:
        monkeypatch.setenv("GCORE_API_TOKEN", value)
    with pytest.raises(OutpostError) as err:
        gcore.apply(url(server), seed_requests())
    message = str(err.value)
    assert "GCORE_API_TOKEN" in message
    assert "API token" in message and "Gcore Customer Portal" in message
    assert server.received == []


def test_http_error_gives_status_and_gcores_message_never_the_token(server, monkeypatch):
    monkeypatch.setenv("GCORE_API_TOKEN", TOKEN)
    # A server that echoes the token back must not get it into the message either.
    server.reply = (400, json.dumps(
        {"error": f"filter healthcheck: frequency must be 10-3600 (key {TOKEN})"}).encode())
    with pytest.raises(OutpostError) as err:
        gcore.apply(url(server), seed_requests())
    message = str(err.value)
    assert "PUT" in message and "/dns/v2/zones/linkedlist.org/linkedlist.org/A" in message
    assert "HTTP 400" in message
    assert "filter healthcheck: frequency must be 10-3600" in message
    assert TOKEN not in message and "SECRET" not in message
    assert len(server.received) == 1


def test_http_error_with_a_plain_text_body(server, monkeypatch):
    monkeypatch.setenv("GCORE_API_TOKEN", TOKEN)
    server.reply = (403, b"forbidden: token has no DNS access\n")
    with pytest.raises(OutpostError) as err:
        gcore.apply(url(server), seed_requests())
    assert "HTTP 403" in str(err.value)
    assert "forbidden: token has no DNS access" in str(err.value)


def test_unreachable_api_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("GCORE_API_TOKEN", TOKEN)
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OutpostError) as err:
        gcore.apply(f"http://127.0.0.1:{port}", seed_requests())
    message = str(err.value)
    assert f"http://127.0.0.1:{port} is unreachable" in message
    assert TOKEN not in message


@pytest.mark.parametrize("api_url", ["http://api.gcore.com", "ftp://api.gcore.com",
                                     "api.gcore.com"])
def test_the_token_never_goes_out_in_clear(monkeypatch, api_url):
    monkeypatch.setenv("GCORE_API_TOKEN", TOKEN)
    with pytest.raises(OutpostError) as err:
        gcore.apply(api_url, seed_requests())
    assert "must be https://" in str(err.value)
    assert TOKEN not in str(err.value)
