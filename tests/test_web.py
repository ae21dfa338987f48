"""The web tier against a real fleet with real nginx: TLS with the shared certificate, the
health check's table, a per-host template variable, a broken template, strict rendering, clean.
Real doit runs in a subprocess; the tests share one fleet and run in order."""
import hashlib
import http.client
import json
import re
import socket
import ssl
import threading

import pytest

from helpers import fleet_project, ran_tasks, run_doit, template_version, wait_for
from outpost import fleet, inventory, probe, tls

HOSTS = ("au", "fr", "ny")
ADDRESSES = {"au": "198.19.78.11", "ny": "198.19.78.12", "fr": "198.19.78.13"}


@pytest.fixture(scope="module")
def site(tmp_path_factory, request):
    project = fleet_project(tmp_path_factory.mktemp("web"), ADDRESSES, "outpost-t2")
    request.addfinalizer(lambda: run_doit(project, "fleet:down", check=False))
    run_doit(project, "deploy")
    return project


def load(project):
    return inventory.load(project / "inventory.toml")


def host_tasks(ran):
    # certificate:<host> always runs: a TLS handshake (it pushes only to a host that lacks the
    # current certificate).
    return sorted(t for t in ran if t.partition(":")[2] in HOSTS
                  and not t.startswith(("deploy:", "certificate:")))


def served_certificate(inv, host) -> str:
    """sha256 of the certificate the host's nginx presents for the site's name, verified
    against the ACME server's root (pebble's, from its management port)."""
    context = probe.site_context(inv)
    connection = probe.SiteConnection(host.address, inv.site.name, context, 5)
    connection.connect()
    try:
        return hashlib.sha256(connection.sock.getpeercert(binary_form=True)).hexdigest()
    finally:
        connection.close()


def test_every_host_serves_the_content_over_https_with_the_shared_certificate(site):
    inv = load(site)
    certificates = set()
    for host in inv.hosts:
        # Verified against the ACME server's root with the site's name: no check is off.
        status, headers, body = probe.site_request(inv, host, "/")
        assert status == 200
        assert headers["X-Served-By"] == f"{host.name} ({host.region})"
        assert b"Linked List" in body
        certificates.add(served_certificate(inv, host))
        # Plain http redirects to https.
        assert http_redirect(inv, host) == f"301 https://{inv.site.name}/entries/"
    assert len(certificates) == 1


def http_redirect(inv, host):
    connection = http.client.HTTPConnection(host.address, 80, timeout=5)
    connection.request("GET", "/entries/", headers={"Host": inv.site.name})
    response = connection.getresponse()
    return f"{response.status} {response.getheader('Location')}"


def handshake(host, context, name):
    """The TLS version and cipher nginx at host agrees to with context for SNI `name`, or the
    reason it refused."""
    with socket.create_connection((host.address, 443), timeout=5) as sock:
        try:
            with context.wrap_socket(sock, server_hostname=name) as tls_sock:
                return tls_sock.version(), tls_sock.cipher()[0]
        except ssl.SSLError as error:
            return error.reason


def test_tls_12_with_only_cbc_suites_is_refused_and_an_aead_suite_is_taken(site):
    inv = load(site)
    cbc_only = ssl.create_default_context(cadata=probe.acme_roots(inv))
    cbc_only.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc_only.set_ciphers("ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:AES128-SHA")
    aead = ssl.create_default_context(cadata=probe.acme_roots(inv))
    aead.maximum_version = ssl.TLSVersion.TLSv1_2
    for host in inv.hosts:
        assert handshake(host, cbc_only, inv.site.name) == "SSLV3_ALERT_HANDSHAKE_FAILURE"
        version, cipher = handshake(host, aead, inv.site.name)
        assert version == "TLSv1.2" and cipher.startswith("ECDHE-ECDSA-") and (
            "GCM" in cipher or "CHACHA20" in cipher), cipher


def test_an_unknown_name_gets_no_handshake_and_no_page(site):
    inv = load(site)
    # Verification off: a refusal here is nginx's, not this client's.
    anything = ssl.create_default_context()
    anything.check_hostname = False
    anything.verify_mode = ssl.CERT_NONE
    for host in inv.hosts:
        assert handshake(host, anything, "other.example") == "TLSV1_UNRECOGNIZED_NAME"
        assert handshake(host, anything, inv.site.name)[0] in ("TLSv1.2", "TLSv1.3")
        # Port 80: a Host that isn't the site's is closed unanswered (nginx's 444).
        connection = http.client.HTTPConnection(host.address, 80, timeout=5)
        connection.request("GET", "/", headers={"Host": host.address})
        with pytest.raises(http.client.RemoteDisconnected):
            connection.getresponse()
        connection.close()


HARDENING = {"Strict-Transport-Security": "max-age=63072000", "X-Content-Type-Options": "nosniff",
             "Referrer-Policy": "strict-origin-when-cross-origin"}


def test_pages_and_errors_carry_the_security_headers(site):
    inv = load(site)
    host = inv.host("fr")
    for path, status in (("/", 200), ("/no-such-page", 404), ("/_health", 200)):
        got, headers, _ = probe.site_request(inv, host, path)
        assert got == status, path
        assert {name: headers.get(name) for name in HARDENING} == HARDENING, path
        assert headers["X-Served-By"] == "fr (europe)"
        assert "X-Linkedlist-Version" not in headers, path


def plain_health(inv, host):
    """What gdnsd's checker asks: GET /_health on port 80 with the site's name as Host."""
    connection = http.client.HTTPConnection(host.address, 80, timeout=5)
    try:
        connection.request("GET", "/_health", headers={"Host": inv.site.name})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_health_details_go_to_the_checks_client_certificate_only(site):
    inv = load(site)
    host = inv.host("au")
    # The check, with the client certificate the local CA made: the details.
    status, _, body = probe.site_request(inv, host, "/_health")
    assert status == 200 and json.loads(body)["version"] == template_version(site)
    # A visitor: refused, with nginx's page and nothing of the app's.
    status, headers, body = probe.site_request(inv, host, "/_health",
                                               context=probe.site_context(inv))
    assert status == 403 and b"version" not in body and b"content" not in body
    assert {name: headers.get(name) for name in HARDENING} == HARDENING
    # A client certificate from another CA is no better: nginx refuses the request.
    other_ca = site / "build" / "other-ca"
    other = tls.ensure_client_certificate(other_ca, site / "build" / "other-client")
    context = ssl.create_default_context(cadata=probe.acme_roots(inv))
    context.load_cert_chain(*other)
    status, _, body = probe.site_request(inv, host, "/_health", context=context)
    assert status == 400 and b"version" not in body
    # The host verifies with the local CA's certificate, and holds no key of it.
    on_host = fleet.from_inventory(inv).run_on("au", ["cat", "/etc/nginx/outpost/client-ca.pem"])
    assert on_host.stdout == tls.ca_paths(inv.site.ca)[0].read_text()
    # Port 80 (gdnsd's checker): the status, no details.
    assert plain_health(inv, host) == (200, b"ok\n")


def test_port_80_health_is_200_only_while_the_app_answers(site):
    inv = load(site)
    host = inv.host("au")
    hosts_fleet = fleet.from_inventory(inv)
    assert plain_health(inv, host)[0] == 200
    result = hosts_fleet.run_on("au", ["dinitctl", "stop", "linkedlist"])
    assert result.returncode == 0, result.stderr
    try:
        status, body = plain_health(inv, host)
        assert status == 500 and b"version" not in body
    finally:
        result = hosts_fleet.run_on("au", ["dinitctl", "start", "linkedlist"])
    assert result.returncode == 0, result.stderr
    assert wait_for(lambda: plain_health(inv, host)[0] == 200, "au's app to answer again")


def test_check_alone_prints_the_table(site):
    proc = run_doit(site, "check")
    assert host_tasks(ran_tasks(proc.stdout)) == [f"check:{h}" for h in HOSTS]
    table = proc.stdout[proc.stdout.index("host "):].splitlines()
    assert table[0].split() == ["host", "region", "status", "version", "release", "median",
                                "requests", "certificate"]
    rows = {line.split()[0]: line.split() for line in table[1:4]}
    assert sorted(rows) == list(HOSTS)
    for row in rows.values():
        assert row[2] == "ok" and re.fullmatch(r"\d+\.\d+\.\d+-r\d+", row[3])
        assert re.fullmatch(r"[0-9a-f]{16}", row[4])  # the content release it serves
        assert row[6] == "ms" and float(row[5]) > 0
        # pebble issues for 90 days, as Let's Encrypt does.
        assert row[9] == "days" and 85 <= int(row[8]) <= 90


def test_one_host_variable_reloads_nginx_there_only_and_the_site_stays_up(site):
    inv = load(site)
    ny = inv.host("ny")
    app_before = fleet.from_inventory(inv).run_on("ny", ["dinitctl", "status", "linkedlist"]).stdout
    nginx_before = fleet.from_inventory(inv).run_on("ny", ["dinitctl", "status", "nginx"]).stdout

    # Requests to ny throughout the deploy: every one must be answered.
    answers, stop = [], threading.Event()

    def keep_asking():
        while not stop.is_set():
            try:
                answers.append(probe.site_request(inv, ny, "/")[0])
            except OSError as error:
                answers.append(repr(error))

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        text = (site / "inventory.toml").read_text()
        (site / "inventory.toml").write_text(
            text.replace('region = "north-america"', 'region = "americas"'))
        proc = run_doit(site, "deploy")
    finally:
        stop.set()
        asker.join()

    assert host_tasks(ran_tasks(proc.stdout)) == ["check:au", "check:fr", "check:ny", "config:ny"]
    assert "ny: reloaded: nginx" in proc.stdout
    assert "restarted" not in proc.stdout
    assert answers and set(answers) == {200}, answers
    # A HUP'd nginx starts new workers while the old ones finish their requests: the new
    # header shows up within moments, not necessarily on the very next request.
    wait_for(lambda: probe.site_request(load(site), ny, "/")[1]["X-Served-By"] == "ny (americas)",
             "ny to serve with its new region")
    hosts_fleet = fleet.from_inventory(load(site))
    # The app was not restarted; nginx was reloaded, not restarted (same master process).
    assert hosts_fleet.run_on("ny", ["dinitctl", "status", "linkedlist"]).stdout == app_before
    assert hosts_fleet.run_on("ny", ["dinitctl", "status", "nginx"]).stdout == nginx_before


def test_broken_nginx_template_stops_with_nginx_message_and_old_config_serves(site):
    inv = load(site)
    template = site / "templates/nginx/site.conf.j2"
    good = template.read_text()
    template.write_text(good.replace("    location / {",
                                     "    no_such_directive on;\n    location / {", 1))
    try:
        proc = run_doit(site, "deploy", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert 'unknown directive "no_such_directive"' in out, out
        for name in HOSTS:
            assert re.search(rf"config on host {name} \(", out), out
        for host in inv.hosts:
            status, headers, _ = probe.site_request(inv, host, "/")
            assert status == 200 and headers["X-Served-By"].startswith(host.name)
            on_host = fleet.from_inventory(inv).run_on(
                host.name, ["cat", f"/etc/nginx/outpost/{inv.site.name}.conf"]).stdout
            assert "no_such_directive" not in on_host
    finally:
        template.write_text(good)
    proc = run_doit(site, "deploy")
    assert "config:au" in ran_tasks(proc.stdout)


def test_undefined_template_variable_names_template_and_variable(site):
    template = site / "templates/linkedlist.env.j2"
    good = template.read_text()
    template.write_text(good.replace("{{ site.url }}", "{{ site.urll }}"))
    try:
        proc = run_doit(site, "config:au", check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert "templates/linkedlist.env.j2" in out and "site.urll" in out, out
        assert "Traceback" not in out
    finally:
        template.write_text(good)


def test_clean_removes_rendered_files_and_keeps_ca_and_signing_key(site):
    inv = load(site)
    ca = (inv.site.ca / "ca.key").read_bytes()
    key = inv.repository.signing_key.read_bytes()
    assert (site / "build/hosts/au/etc/nginx/nginx.conf").exists()
    run_doit(site, "clean")
    assert not (site / "build/hosts").exists() or not any((site / "build/hosts").iterdir())
    assert (inv.site.ca / "ca.key").read_bytes() == ca
    assert inv.repository.signing_key.read_bytes() == key
