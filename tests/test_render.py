"""outpost.render, outpost.commands.config and templates/: what each host's files say, that rendering is strict, and
that the nginx pair is a configuration real nginx accepts and serves as meant.

The nginx tests need Debian's nginx (apt: nginx-light) and, for the one that serves requests,
root, unshare (util-linux) and ip (iproute2): nginx runs in a private network namespace so
ports 80 and 443 are its own.
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from outpost import render, tls
from outpost.commands import acme
from outpost.commands import base
from outpost.commands import config as config_commands
from outpost.commands import sync as sync_commands
from outpost.commands import upgrade as upgrade_commands
from outpost.steps import config as config_step
from outpost.errors import OutpostError
from outpost.inventory import load

REPO = Path(__file__).resolve().parents[1]
SITE = "linkedlist.test"


@pytest.fixture
def inventory():
    return load(REPO / "inventory.toml")


@pytest.fixture
def local_ca_inventory(tmp_path):
    """The default inventory with certificates from the local CA instead of ACME."""
    from helpers import without_acme
    path = tmp_path / "inventory.toml"
    path.write_text(without_acme((REPO / "inventory.toml").read_text()))
    inventory = load(path)
    assert inventory.acme is None
    return inventory


def inventory_variant(tmp_path, old, new, name="inventory.toml"):
    """The default inventory with one piece of text replaced, in tmp_path."""
    text = (REPO / "inventory.toml").read_text()
    assert text.count(old) == 1, old
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    # The templates the doas rules read (the service's log file), as in the project.
    if not (tmp_path / "cports-overlay").exists():
        (tmp_path / "cports-overlay").symlink_to(REPO / "cports-overlay")
    return load(path)


@pytest.fixture
def templates_copy(tmp_path, monkeypatch):
    """A copy of templates/ that render reads instead; tests break it on purpose."""
    copy = tmp_path / "templates"
    shutil.copytree(render.TEMPLATES, copy)
    monkeypatch.setattr(render, "TEMPLATES", copy)
    render._environment.cache_clear()
    yield copy
    render._environment.cache_clear()


def line_of(path, text):
    lines = path.read_text().splitlines()
    return [number for number, line in enumerate(lines, start=1) if text in line] [0]


# --- what the files say -------------------------------------------------------------------------

def test_host_files_map_templates_to_paths_and_services(local_ca_inventory):
    inventory = local_ca_inventory
    files = config_commands.host_files(inventory, inventory.host("au"))
    assert [(f.template, f.remote_path, oct(f.mode), f.service, f.action) for f in files] == [
        ("nginx/nginx.conf.j2", "/etc/nginx/nginx.conf", "0o644", "nginx", "reload"),
        ("nginx/site.conf.j2", f"/etc/nginx/outpost/{SITE}.conf", "0o644", "nginx", "reload"),
        # The local CA's certificate, which nginx verifies the check's client certificate with.
        (None, "/etc/nginx/outpost/client-ca.pem", "0o644", "nginx", "reload"),
        # The certificate and key are copied, not rendered; the key readable by root only.
        (None, f"/etc/nginx/outpost/{SITE}.pem", "0o644", "nginx", "reload"),
        (None, f"/etc/nginx/outpost/{SITE}.key", "0o600", "nginx", "reload"),
        ("linkedlist.env.j2", "/etc/default/linkedlist", "0o644", "linkedlist", "restart"),
    ]
    assert files[1].local_path(Path("/b/hosts/au")) == Path(f"/b/hosts/au/etc/nginx/outpost/{SITE}.conf")
    # Only the CA's certificate: its key never leaves this machine.
    assert files[2].source == tls.ca_paths(inventory.site.ca)[0]


def test_with_acme_no_certificate_or_key_goes_through_config(inventory):
    # The cert host pushes them to each host; the deploy machine never holds the key.
    files = config_commands.host_files(inventory, inventory.host("au"))
    assert [f.remote_path for f in files] == [
        "/etc/nginx/nginx.conf", f"/etc/nginx/outpost/{SITE}.conf",
        "/etc/nginx/outpost/client-ca.pem", "/etc/default/linkedlist"]
    # The check's client certificate is from the local CA, with ACME too.
    assert files[2].source == tls.ca_paths(inventory.site.ca)[0]
    site = render.render("nginx/site.conf.j2", config_commands.host_context(inventory, inventory.host("au")))
    # Chain and key in one file, switched in by one rename.
    assert 'ssl_certificate "/var/lib/lego/site.pem";' in site
    assert 'ssl_certificate_key "/var/lib/lego/site.pem";' in site


@pytest.mark.parametrize("name, served_by", [
    ("au", "au (oceania)"), ("ny", "ny (north-america)"), ("fr", "fr (europe)")])
def test_nginx_site_for_each_default_host(local_ca_inventory, name, served_by):
    inventory = local_ca_inventory
    context = config_commands.host_context(inventory, inventory.host(name))
    site = render.render("nginx/site.conf.j2", context)
    assert f'add_header X-Served-By "{served_by}" always;' in site
    assert site.count(f"server_name {SITE};") == 2
    assert f"return 301 https://{SITE}$request_uri;" in site
    assert "proxy_pass http://127.0.0.1:8080;" in site
    # Relative to nginx.conf's folder, so a staged copy of the folder is checked whole.
    assert f'ssl_certificate "outpost/{SITE}.pem";' in site
    assert f'ssl_certificate_key "outpost/{SITE}.key";' in site
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in site
    assert "{{" not in site and "{#" not in site
    main = render.render("nginx/nginx.conf.j2", context)
    assert f'include "outpost/{SITE}.conf";' in main
    assert "daemon" not in main  # the service passes -g "daemon off;"; twice is an error


def nginx_blocks(text):
    """An nginx config's top level: (statements, blocks). A statement is its words ("ssl_protocols
    TLSv1.2 TLSv1.3"); a block is (its words, its own statements and blocks), e.g. ("server",
    ...) or ("location = /_health", ...). Enough for the files Outpost writes (no quoted
    braces or semicolons; comments on lines of their own)."""
    words = " ".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    position = 0

    def level():
        nonlocal position
        statements, blocks, current = [], [], ""
        while position < len(words):
            char = words[position]
            position += 1
            if char == ";":
                statements.append(" ".join(current.split()))
                current = ""
            elif char == "{":
                head = " ".join(current.split())
                blocks.append((head, level()))
                current = ""
            elif char == "}":
                return statements, blocks
            else:
                current += char
        return statements, blocks

    return level()


def servers(text):
    """The server blocks of a site file, by their listen line ("443 ssl default_server")."""
    _, blocks = nginx_blocks(text)
    found = {}
    for head, (statements, inner) in blocks:
        if head == "server":
            listen = next(s for s in statements if s.startswith("listen "))
            found[listen.removeprefix("listen ")] = (statements, dict(inner))
    return found


MOZILLA_INTERMEDIATE_TLS12 = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


def test_nginx_site_has_mozillas_intermediate_tls_for_every_server_of_the_address(inventory):
    site = render.render("nginx/site.conf.j2", config_commands.host_context(inventory, inventory.host("au")))
    statements, _ = nginx_blocks(site)
    # At http level: nginx negotiates with the default server's settings, which is the one
    # that refuses unknown names, so they can't live in the site's server alone.
    assert {"ssl_protocols TLSv1.2 TLSv1.3", f"ssl_ciphers {MOZILLA_INTERMEDIATE_TLS12}",
            "ssl_prefer_server_ciphers off", "ssl_ecdh_curve X25519:prime256v1:secp384r1",
            "ssl_session_timeout 1d", "ssl_session_cache shared:outpost:10m",
            "ssl_session_tickets off"} <= set(statements)
    for statements, _ in servers(site).values():
        assert not [s for s in statements if s.startswith(("ssl_protocols", "ssl_ciphers"))]
    # Every TLS 1.2 suite has forward secrecy and an AEAD: no CBC, no SHA-1 MAC, no DHE
    # (so no ssl_dhparam is needed).
    for suite in MOZILLA_INTERMEDIATE_TLS12.split(":"):
        assert suite.startswith("ECDHE-") and ("GCM" in suite or "CHACHA20" in suite), suite
    assert "ssl_dhparam" not in site
    # The file on the host says which guideline it follows.
    assert "# TLS: Mozilla's intermediate profile, guideline 5.7" in site


def test_nginx_site_refuses_unknown_names_on_both_ports(inventory):
    site = render.render("nginx/site.conf.j2", config_commands.host_context(inventory, inventory.host("au")))
    found = servers(site)
    assert sorted(found) == ["443 ssl", "443 ssl default_server", "80", "80 default_server"]
    assert found["80 default_server"] == (["listen 80 default_server", "return 444"], {})
    assert found["443 ssl default_server"] == (
        ["listen 443 ssl default_server", "ssl_reject_handshake on"], {})
    # The site's name is served by the two others only.
    for listen in ("80", "443 ssl"):
        assert f"server_name {SITE}" in found[listen][0]


def test_nginx_site_headers_reach_every_answer_of_the_tls_server(inventory):
    site = render.render("nginx/site.conf.j2", config_commands.host_context(inventory, inventory.host("au")))
    statements, locations = servers(site)["443 ssl"]
    headers = [s for s in statements if s.startswith("add_header")]
    for header in ('add_header Strict-Transport-Security "max-age=63072000" always',
                   'add_header X-Content-Type-Options "nosniff" always',
                   'add_header Referrer-Policy "strict-origin-when-cross-origin" always'):
        assert header in headers
    # A location with an add_header of its own would drop all of the server's.
    for head, (inner, blocks) in locations.items():
        assert not [s for s in inner if s.startswith("add_header")], head
        for _, (if_inner, _) in blocks:
            assert not [s for s in if_inner if s.startswith("add_header")], head
    assert "proxy_hide_header X-Linkedlist-Version" in statements


def test_nginx_site_gives_health_details_to_the_checks_client_certificate_only(inventory):
    site = render.render("nginx/site.conf.j2", config_commands.host_context(inventory, inventory.host("au")))
    found = servers(site)
    statements, locations = found["443 ssl"]
    assert 'ssl_client_certificate "outpost/client-ca.pem"' in statements
    assert "ssl_verify_client optional" in statements
    inner, blocks = locations["location = /_health"]
    assert blocks == [("if ($ssl_client_verify != SUCCESS)", (["return 403"], []))]
    assert inner == ["proxy_pass http://127.0.0.1:8080"]
    # Port 80 (gdnsd's checker): the app is asked, but the answer is a fixed "ok".
    statements, locations = found["80"]
    assert locations["location = /_health"][0] == [
        "auth_request /_outpost_app_health",
        "try_files /_outpost_no_such_file @outpost_healthy"]
    assert 'return 200 "ok\\n"' in locations["location @outpost_healthy"][0]
    assert "internal" in locations["location = /_outpost_app_health"][0]


def test_env_file_sends_the_app_behind_nginx_to_the_current_release(inventory):
    context = config_commands.host_context(inventory, inventory.host("au"))
    text = render.render("linkedlist.env.j2", context)
    settings = [line for line in text.splitlines() if not line.startswith("#")]
    assert settings == [
        "LINKEDLIST_CONTENT=/srv/linkedlist/current",
        "LINKEDLIST_LISTEN=127.0.0.1:8080",
        f"LINKEDLIST_SITE_URL=https://{SITE}",
    ]
    # The same keys the package's default env-file sets, so none is left at its default.
    shipped = (REPO / "cports-overlay/user/linkedlist/files/linkedlist.env").read_text()
    assert ({line.split("=")[0] for line in settings}
            == {line.split("=")[0] for line in shipped.splitlines() if "=" in line})


def test_apk_list_line_follows_the_builder(inventory, tmp_path):
    assert sync_commands.list_line(inventory) == sync_commands.repo_list_line("v2", "/var/lib/outpost/repo")
    cbuild = inventory_variant(tmp_path, 'kind = "local"', 'kind = "cbuild"\ncports = "cports"')
    assert sync_commands.list_line(cbuild) == "v3 /var/lib/outpost/repo"


def test_doas_conf_is_the_helper_the_upgrade_and_legos_two(inventory):
    host = inventory.host("au")
    permits = base.doas_permits("deploy", installs=upgrade_commands.install_commands(inventory, host))
    assert sync_commands.doas_conf(inventory, host) == base.doas_conf_text(
        permits + acme.lego_permits())
    # No rule takes a path: the helper has none, the others name fixed files only.
    assert permits[0] == ("deploy", ["/usr/libexec/outpost/apply"])
    assert not any(argv[0] in ("install", "tee", "nginx", "cp", "mv") for _, argv in permits)


def test_doas_words_with_spaces_or_quotes_are_quoted():
    text = render.render("doas.conf.j2", {"doas_rules": [
        {"user": "lego", "as": "root", "argv": ["dinitctl", "restart", "nginx"]},
        {"user": "deploy", "as": "root", "argv": ["tee", '/srv/a "b"']},
        {"user": "deploy", "as": "root", "argv": ["apk"]},
        base.doas_rule("deploy", ["-u", "_gdnsd", "gdnsdctl", "reload-zones"])]})
    assert text.splitlines()[1:] == [
        "permit nopass lego as root cmd dinitctl args restart nginx",  # the seed's rule
        'permit nopass deploy as root cmd tee args "/srv/a \\"b\\""',
        "permit nopass deploy as root cmd apk args",  # no arguments at all
        "permit nopass deploy as _gdnsd cmd gdnsdctl args reload-zones",
    ]
    assert text.endswith("\n")


def test_host_context_is_json_and_stable(inventory):
    context = config_commands.host_context(inventory, inventory.host("au"))
    again = config_commands.host_context(load(REPO / "inventory.toml"), inventory.host("au"))
    assert json.dumps(context) == json.dumps(again)
    assert json.loads(json.dumps(context)) == context  # nothing JSON can't carry


def test_nginx_serves_the_one_package_with_a_port(tmp_path):
    two = inventory_variant(tmp_path, "port = 8080\n", "port = 8080\n\n[[packages]]\n"
                                                      'name = "other"\nport = 8081\n')
    with pytest.raises(OutpostError, match="packages with a port: linkedlist, other"):
        config_commands.host_context(two, two.host("au"))


# --- one host's change stays on that host -------------------------------------------------------

def test_changing_one_hosts_region_changes_only_that_hosts_site_file(tmp_path):
    # Both in one folder: the same project, so the same repository (build/) behind them.
    inventory = inventory_variant(tmp_path, 'region = "north-america"',
                                  'region = "north-america"', name="original.toml")
    changed = inventory_variant(tmp_path, 'region = "north-america"', 'region = "americas"')
    for host in inventory.hosts:
        # What config's doit task compares (the repository's versions aside: they live in
        # each project's build/, which differs between these two).
        same = config_commands.config_inputs(inventory, host) == config_commands.config_inputs(
            changed, changed.host(host.name))
        assert same == (host.name != "ny"), host.name

    before = {h.name: config_step.render_host(inventory, h, tmp_path / "build" / h.name)
              for h in inventory.hosts}
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
              for paths in before.values() for p in paths}
    after = {h.name: config_step.render_host(changed, h, tmp_path / "build" / h.name)
             for h in changed.hosts}
    assert after == before  # the same paths
    rewritten = [p for p in stamps
                 if (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) != stamps[p]]
    assert rewritten == [tmp_path / f"build/ny/etc/nginx/outpost/{SITE}.conf"]
    assert 'X-Served-By "ny (americas)"' in rewritten[0].read_text()


def test_render_host_writes_each_file_at_its_host_path(inventory, tmp_path):
    host = inventory.host("fr")
    paths = config_step.render_host(inventory, host, tmp_path / "fr")
    context = config_commands.host_context(inventory, host)
    rendered = [f for f in config_commands.host_files(inventory, host) if f.template is not None]
    assert len(paths) == len(rendered)
    for f, path in zip(rendered, paths):
        assert path == tmp_path / "fr" / f.remote_path.lstrip("/")
        assert path.read_text() == render.render(f.template, context)
    assert not list((tmp_path / "fr").rglob(".*.tmp"))


def test_a_failing_template_leaves_the_rendered_files_as_they_were(inventory, tmp_path,
                                                                    templates_copy):
    host = inventory.host("au")
    paths = config_step.render_host(inventory, host, tmp_path / "au")
    before = [p.read_bytes() for p in paths]
    (templates_copy / "linkedlist.env.j2").write_text("{{ nothing_here }}\n")
    site = templates_copy / "nginx" / "site.conf.j2"
    site.write_text(site.read_text().replace("TLSv1.2 TLSv1.3", "TLSv1.3"))
    with pytest.raises(OutpostError, match="linkedlist.env.j2"):
        config_step.render_host(inventory, host, tmp_path / "au")
    assert [p.read_bytes() for p in paths] == before  # site.conf not half-updated


# --- strictness ---------------------------------------------------------------------------------

def test_undefined_variable_names_template_line_and_variable(inventory, templates_copy):
    site = templates_copy / "nginx" / "site.conf.j2"
    site.write_text(site.read_text().replace("return 301 https://{{ site.name }}",
                                             "return 301 https://{{ site.nmae }}"))
    context = config_commands.host_context(inventory, inventory.host("au"))
    with pytest.raises(OutpostError) as raised:
        render.render("nginx/site.conf.j2", context)
    assert str(raised.value) == (f"templates/nginx/site.conf.j2:{line_of(site, 'site.nmae')}: "
                                 "undefined variable 'site.nmae'")


def test_missing_context_names_the_variable(inventory):
    context = config_commands.host_context(inventory, inventory.host("au"))
    del context["tls"]
    with pytest.raises(render.RenderError,
                       match=r"^templates/nginx/site.conf.j2:\d+: undefined variable 'tls'$"):
        render.render("nginx/site.conf.j2", context)
    del context["packages"]["linkedlist"]["port"]
    with pytest.raises(render.RenderError, match=r"^templates/linkedlist.env.j2:\d+: "
                                                 r"undefined variable 'packages.linkedlist.port'$"):
        render.render("linkedlist.env.j2", context)


def test_a_value_that_is_none_is_an_error_not_the_word_none(inventory):
    context = config_commands.host_context(inventory, inventory.host("au"))
    context["packages"]["linkedlist"]["content_root"] = None
    with pytest.raises(render.RenderError, match=r"^templates/linkedlist.env.j2:\d+: variable "
                                                 r"'packages.linkedlist.content_root' is not set"):
        render.render("linkedlist.env.j2", context)


def test_syntax_error_names_template_and_line(templates_copy):
    env = templates_copy / "linkedlist.env.j2"
    env.write_text(env.read_text().replace("{{ site.url }}", "{{ site.url ) }}"))
    with pytest.raises(render.RenderError) as raised:
        render.render("linkedlist.env.j2", {})
    assert str(raised.value) == (f"templates/linkedlist.env.j2:{line_of(env, 'site.url )')}: "
                                 "template syntax error: unexpected ')'")


def test_unknown_template():
    with pytest.raises(render.RenderError, match=r"^templates/nginx/nope.j2: no such template"):
        render.render("nginx/nope.j2", {})


def test_a_region_nginx_would_expand_is_refused(tmp_path):
    odd = inventory_variant(tmp_path, 'region = "europe"', 'region = "$europe"')
    with pytest.raises(render.RenderError, match=r"^templates/nginx/site.conf.j2:\d+: "
                                                 r"'fr \(\$europe\)' can't be an nginx string"):
        render.render("nginx/site.conf.j2", config_commands.host_context(odd, odd.host("fr")))


def test_regions_with_quotes_are_quoted_for_nginx(tmp_path):
    odd = inventory_variant(tmp_path, 'region = "europe"', "region = 'the \"old\" world'")
    site = render.render("nginx/site.conf.j2", config_commands.host_context(odd, odd.host("fr")))
    assert 'add_header X-Served-By "fr (the \\"old\\" world)" always;' in site


# --- real nginx ---------------------------------------------------------------------------------

def nginx_tree(tmp_path, inventory, host, certificate=None):
    """The host's nginx pair in tmp_path/etc-nginx, as on the host but with the pid, logs and
    TLS files in tmp_path: nginx.conf next to outpost/<site>.conf."""
    assert shutil.which("nginx"), "these tests need nginx (apt-get install nginx-light)"
    cert, key = certificate or tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls",
                                                           inventory.site.name)
    context = config_commands.host_context(inventory, host)
    context["nginx"].update(pid=str(tmp_path / "nginx.pid"),
                            error_log=str(tmp_path / "error.log"),
                            access_log=str(tmp_path / "access.log"))
    context["tls"] = {"certificate": str(cert), "key": str(key),
                      "client_ca": str(tls.ca_paths(tmp_path / "ca")[0])}
    conf = tmp_path / "etc-nginx" / "nginx.conf"
    site = conf.parent / context["nginx"]["site"]
    site.parent.mkdir(parents=True)
    conf.write_text(render.render("nginx/nginx.conf.j2", context))
    site.write_text(render.render("nginx/site.conf.j2", context))
    return conf


def nginx_argv(conf, *extra):
    # -g "daemon off;" as the service passes it: the pair must not set it a second time.
    return ["nginx", "-c", str(conf), "-e", str(conf.parent / "startup.log"),
            "-g", "daemon off;", *extra]


def test_nginx_accepts_the_rendered_pair(inventory, tmp_path):
    conf = nginx_tree(tmp_path, inventory, inventory.host("au"))
    result = subprocess.run(nginx_argv(conf, "-t"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"configuration file {conf} test is successful" in result.stderr


def test_nginx_test_catches_a_certificate_without_its_key(inventory, tmp_path):
    cert, _ = tls.ensure_site_certificate(tmp_path / "ca", tmp_path / "tls", SITE)
    _, ca_key = tls.ca_paths(tmp_path / "ca")
    conf = nginx_tree(tmp_path, inventory, inventory.host("au"), certificate=(cert, ca_key))
    result = subprocess.run(nginx_argv(conf, "-t"), capture_output=True, text=True)
    assert result.returncode != 0
    assert "key values mismatch" in result.stderr


# Runs inside the network namespace: an app stand-in that echoes the headers it got (404 under
# /missing), nginx, then the requests; prints what it saw as JSON.
SERVE_SCRIPT = textwrap.dedent("""\
    import http.client, http.server, json, socket, ssl, subprocess, sys, threading, time
    conf, ca, site, port, client_cert, client_key = sys.argv[1:7]
    port = int(port)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
            self.send_response(404 if self.path.startswith("/missing") else 200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Linkedlist-Version", "9.9.9-r9")
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass

    app = http.server.ThreadingHTTPServer(("127.0.0.1", port), Echo)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    nginx = subprocess.Popen(["nginx", "-c", conf, "-e", conf + ".log", "-g", "daemon off;"])

    class ToLoopback(http.client.HTTPSConnection):
        # The site's name as SNI and Host, the connection to this namespace's nginx.
        def connect(self):
            sock = socket.create_connection(("127.0.0.1", 443), timeout=5)
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)

    def https(path, context, name=site):
        connection = ToLoopback(name, 443, context=context, timeout=5)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            try:
                body = json.loads(body)
            except ValueError:
                body = body.decode()
            return {"status": response.status, "headers": dict(response.getheaders()),
                    "body": body, "tls": connection.sock.version(),
                    "cipher": connection.sock.cipher()[0]}
        except ssl.SSLError as error:
            return {"refused": error.reason}
        finally:
            connection.close()

    def plain(path, host):
        connection = http.client.HTTPConnection("127.0.0.1", 80, timeout=5)
        try:
            connection.request("GET", path, headers={"Host": host})
            response = connection.getresponse()
            return {"status": response.status, "location": response.getheader("Location"),
                    "body": response.read().decode()}
        except (http.client.RemoteDisconnected, ConnectionError):
            return "closed"
        finally:
            connection.close()

    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", 443), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        visitor = ssl.create_default_context(cafile=ca)  # verifies the chain and the name
        check = ssl.create_default_context(cafile=ca)
        check.load_cert_chain(client_cert, client_key)
        tls12 = ssl.create_default_context(cafile=ca)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        cbc_only = ssl.create_default_context(cafile=ca)
        cbc_only.maximum_version = ssl.TLSVersion.TLSv1_2
        cbc_only.set_ciphers("ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA:AES128-SHA")
        no_sni = ssl.create_default_context(cafile=ca)
        no_sni.check_hostname = False

        seen = {path: https(path, check) for path in ("/", "/static/style.css", "/_health")}
        seen["visitor /_health"] = https("/_health", visitor)
        seen["visitor /missing"] = https("/missing", visitor)
        seen["tls 1.2"] = https("/", tls12)
        seen["cbc only"] = https("/", cbc_only)
        seen["unknown name"] = https("/", visitor, name="other.test")
        seen["no sni"] = https("/", no_sni, name="127.0.0.1")  # an address is never sent as SNI
        seen["http"] = plain("/entries/x/?a=1", site)
        seen["http unknown host"] = plain("/_health", "127.0.0.1")
        seen["http /_health"] = plain("/_health", site)
        app.shutdown()
        app.server_close()
        seen["http /_health, app down"] = plain("/_health", site)
        print(json.dumps(seen))
    finally:
        nginx.terminate()
        nginx.wait(10)
""")


def test_nginx_serves_the_site_over_tls_in_front_of_the_app(inventory, tmp_path):
    missing = [tool for tool in ("unshare", "ip", "nginx") if not shutil.which(tool)]
    assert not missing, f"this test needs {', '.join(missing)}"
    assert os.geteuid() == 0, "this test needs root (a network namespace for ports 80 and 443)"
    conf = nginx_tree(tmp_path, inventory, inventory.host("ny"))
    client = tls.ensure_client_certificate(tmp_path / "ca", tmp_path / "tls")
    script = tmp_path / "serve.py"
    script.write_text(SERVE_SCRIPT)
    result = subprocess.run(
        ["unshare", "--net", sys.executable, str(script), str(conf),
         str(tls.ca_paths(tmp_path / "ca")[0]), SITE, str(inventory.packages[0].port),
         *map(str, client)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)

    hardening = {"Strict-Transport-Security": "max-age=63072000",
                 "X-Content-Type-Options": "nosniff",
                 "Referrer-Policy": "strict-origin-when-cross-origin"}
    for path, cache in (("/", "public, max-age=60"), ("/static/style.css", "public, max-age=86400"),
                        ("/_health", "no-store")):
        assert seen[path]["status"] == 200, path
        headers = seen[path]["headers"]
        assert headers["X-Served-By"] == "ny (north-america)"
        assert headers["Cache-Control"] == cache, path
        assert {name: headers.get(name) for name in hardening} == hardening, path
        assert "X-Linkedlist-Version" not in headers  # the version is /_health's to tell
        assert seen[path]["tls"] in ("TLSv1.2", "TLSv1.3")
    app_saw = seen["/"]["body"]
    assert app_saw["host"] == SITE
    assert app_saw["x-forwarded-proto"] == "https"
    assert app_saw["x-forwarded-for"] == "127.0.0.1"
    assert seen["http"]["status"] == 301
    assert seen["http"]["location"] == f"https://{SITE}/entries/x/?a=1"

    # Without the check's client certificate: nginx's 403, nothing of the app's.
    assert seen["visitor /_health"]["status"] == 403
    assert "x-forwarded-proto" not in seen["visitor /_health"]["body"]
    # Errors, nginx's own and the app's, carry the headers too (`always`).
    for error in ("visitor /_health", "visitor /missing"):
        headers = seen[error]["headers"]
        assert {name: headers.get(name) for name in hardening} == hardening, error
        assert headers["X-Served-By"] == "ny (north-america)"
    assert seen["visitor /missing"]["status"] == 404

    # TLS 1.2 with an AEAD suite works; offering only CBC suites is refused.
    assert seen["tls 1.2"]["tls"] == "TLSv1.2"
    assert seen["tls 1.2"]["cipher"] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    assert seen["cbc only"] == {"refused": "SSLV3_ALERT_HANDSHAKE_FAILURE"}
    # Another name, or none, gets no handshake (so never the site's certificate).
    assert seen["unknown name"] == {"refused": "TLSV1_UNRECOGNIZED_NAME"}
    assert seen["no sni"] == {"refused": "TLSV1_UNRECOGNIZED_NAME"}

    # Port 80: an unknown Host gets its connection closed; gdnsd's check gets the status only,
    # 200 while the app answers and an error when it is down.
    assert seen["http unknown host"] == "closed"
    assert seen["http /_health"] == {"status": 200, "location": None, "body": "ok\n"}
    assert seen["http /_health, app down"]["status"] == 500
