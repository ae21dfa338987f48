"""config's builders: the web host's files, rendered from templates/ with values from the
inventory, and the bundle that switches them in. Pure: steps.config renders and sends them.

    host_context(inventory, host)   everything the templates read, as plain JSON-able data
                                    (so it can also be a doit config_changed value)
    host_files(inventory, host)     which template (or local file) becomes which file on the
                                    host, and which service must reload or restart when that
                                    file changes
    config_bundle(host, files)      the helper's bundle: stage, nginx -t, switch, reload

The templates belong to the project (they know what the pipeline's steps need), so they are
read from the project's templates/ folder; the inventory only gives the values.
"""
from __future__ import annotations

from pathlib import PurePosixPath

from outpost import render, tls
from outpost.commands import acme, bundle, content, dns
from outpost.commands.base import ACCESS_LOG, ENV_DIR, NGINX_CONF
from outpost.commands.bundle import HostFile
from outpost.errors import OutpostError

NGINX_SITES = "outpost"               # the site files' folder, relative to NGINX_CONF's folder


def served_package(inventory):
    """The package nginx proxies the site to: the one with a port."""
    with_port = [p for p in inventory.packages if p.port is not None]
    if len(with_port) != 1:
        found = ", ".join(p.name for p in with_port) or "none"
        raise OutpostError(f"{inventory.path}: [[packages]]: nginx serves [site] "
                           f"{inventory.site.name} from the one package with a `port`; "
                           f"packages with a port: {found}")
    return with_port[0]


def _package(package) -> dict:
    # content_root: what the app serves, the `current` release of content_dir (commands.content).
    return {"name": package.name, "service": package.service, "port": package.port,
            "content_dir": package.content_dir,
            "content_root": (content.current_path(package.content_dir)
                             if package.content_dir else None)}


def tls_paths(inventory) -> dict:
    """The site's certificate (PEM, the chain nginx sends) and key, as nginx.conf names them,
    and the local CA's certificate (client_ca) that nginx verifies the check's client
    certificate with. From ACME: the one file the cert host's lego pushes, chain and key
    together. From the local CA: relative paths, so beside the site file; nginx resolves them
    against the folder of the nginx.conf it runs with, so a staged copy of the whole folder is
    checked (nginx -t -c) with its own certificate, before anything is switched."""
    client_ca = f"{NGINX_SITES}/client-ca.pem"
    if inventory.acme is not None:
        return {"certificate": acme.SITE_PEM, "key": acme.SITE_PEM, "client_ca": client_ca}
    site_name = inventory.site.name
    return {"certificate": f"{NGINX_SITES}/{site_name}.pem",
            "key": f"{NGINX_SITES}/{site_name}.key", "client_ca": client_ca}


def _nginx(site_name: str) -> dict:
    return {
        "conf": NGINX_CONF,
        "site": f"{NGINX_SITES}/{site_name}.conf",
        "pid": "/run/nginx.pid",
        "error_log": "/var/log/nginx/error.log",
        "access_log": ACCESS_LOG,
    }


def host_context(inventory, host) -> dict:
    """Everything a host's templates use, as dicts, lists, strings and numbers in a fixed
    order: a doit config_changed value that changes exactly when a rendered file may."""
    site = inventory.site
    return {
        "host": {"name": host.name, "address": host.address, "region": host.region,
                 "arch": host.arch, "user": host.user},
        "site": {"name": site.name, "url": f"https://{site.name}"},
        "packages": {p.name: _package(p) for p in inventory.packages},
        "app": _package(served_package(inventory)),
        "tls": tls_paths(inventory),
        "nginx": _nginx(site.name),
        "health_path": dns.HEALTH_PATH,
    }


def config_inputs(inventory, host) -> dict:
    """The config step's doit config_changed value."""
    return host_context(inventory, host)


def _rendered(template: str, remote_path: str, mode: int, service, action) -> HostFile:
    return HostFile(remote_path, mode, service=service, action=action, template=template)


def _copied(source, remote_path: str, mode: int) -> HostFile:
    """A local file sent as it is; nginx reloads when it changes."""
    return HostFile(remote_path, mode, service="nginx", action="reload", source=source)


def host_files(inventory, host) -> list[HostFile]:
    """The files a host gets from templates/: nginx's pair, the local CA's certificate (nginx
    verifies the check's client certificate with it) and, without ACME, the site certificate
    and key (copied, not rendered; nginx reloads when any of these changes), and an env-file
    for each package that has a templates/<package>.env.j2 (restart its service)."""
    nginx = _nginx(inventory.site.name)
    nginx_dir = PurePosixPath(nginx["conf"]).parent
    tls_on_host = tls_paths(inventory)
    files = [
        _rendered("nginx/nginx.conf.j2", nginx["conf"], 0o644, "nginx", "reload"),
        _rendered("nginx/site.conf.j2", str(nginx_dir / nginx["site"]), 0o644, "nginx", "reload"),
        # Public: the CA's key stays on this machine (keys/ca), with ACME too.
        _copied(tls.ca_paths(inventory.site.ca)[0], str(nginx_dir / tls_on_host["client_ca"]),
                0o644),
    ]
    if inventory.acme is None:
        # The local CA's site certificate and key (the same on every host), beside the site
        # file. An ACME certificate comes from the cert host instead, never through here.
        certificate, key = tls.site_paths(inventory.site.certificates)
        files += [
            _copied(certificate, str(nginx_dir / tls_on_host["certificate"]), 0o644),
            _copied(key, str(nginx_dir / tls_on_host["key"]), 0o600),
        ]
    for package in inventory.packages:
        if (render.TEMPLATES / f"{package.name}.env.j2").is_file():
            files.append(_rendered(f"{package.name}.env.j2", f"{ENV_DIR}/{package.name}", 0o644,
                                   package.service, "restart" if package.service else None))
    return files


def config_bundle(host, files: list[HostFile]) -> bundle.Bundle:
    """The helper's bundle of the host's files (with their content): staged, checked by
    nginx -t when nginx.conf is among them, switched, and the services reloaded or restarted
    that their files name."""
    checks = ((("nginx", NGINX_CONF),) if any(f.remote_path == NGINX_CONF for f in files) else ())
    return bundle.Bundle(host.name, "config", files=tuple(files), checks=checks,
                         actions=bundle.actions_of(files))
