"""The files a host needs, rendered from templates/ (jinja2) with values from the inventory.

    host_context(inventory, host)   everything the templates read, as plain JSON-able data
                                    (so it can also be a doit config_changed value)
    host_files(inventory, host)     which template becomes which file on the host, and which
                                    service must reload or restart when that file changes
    render(template_name, context)  one template's text
    render_host(inventory, host, out_dir)
                                    every file of a host under out_dir/<path on the host>

Rendering is strict: an undefined variable, a None value or a syntax error raises a
RenderError naming the template file, the line and the variable, e.g.

    templates/nginx/site.conf.j2:31: undefined variable 'site.nmae'

The templates belong to the project (they know what the pipeline's steps need, as
outpost.commands does), so they are read from the project's templates/ folder; the inventory
only gives the values.
"""
from __future__ import annotations

import functools
import os
import re
import shlex
import traceback
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from outpost import acme, commands, geodns, releases, repo, rollout, tls
from outpost.errors import OutpostError

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"

# Paths on the hosts.
NGINX_CONF = "/etc/nginx/nginx.conf"  # what both Chimera's and Debian's nginx read by default
NGINX_SITES = "outpost"               # the site files' folder, relative to NGINX_CONF's folder
ENV_DIR = "/etc/default"              # <package>.env.j2 becomes /etc/default/<package>

# Which index the repository has, by builder: the local builder writes a v2 APKINDEX.tar.gz,
# cbuild a v3 Packages.adb (FACTS.md). Known from the inventory, so the list line is known
# before anything is built.
INDEX_FORMATS = {"local": "v2", "cbuild": "v3"}


class RenderError(OutpostError):
    """A template can't be rendered: syntax error, undefined variable, missing template."""


@dataclass(frozen=True)
class HostFile:
    template: str | None  # under templates/; None for a file copied as it is (source)
    remote_path: str      # absolute path on the host
    mode: int
    service: str | None   # the service that must act when the file changes
    action: str | None    # "reload" (re-read config, keep serving) or "restart"
    source: Path | None = None  # the local file to copy, when template is None

    def local_path(self, out_dir: Path) -> Path:
        """Where the host's copy is here: its source, or where render_host writes it
        (out_dir/<remote_path without its leading />)."""
        if self.source is not None:
            return self.source
        return Path(out_dir) / self.remote_path.lstrip("/")


# --- the context ------------------------------------------------------------------------------

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
    # content_root: what the app serves, the `current` release of content_dir (releases.py).
    return {"name": package.name, "service": package.service, "port": package.port,
            "content_dir": package.content_dir,
            "content_root": (releases.current_path(package.content_dir)
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
        "access_log": "/var/log/nginx/access.log",
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
        "health_path": geodns.HEALTH_PATH,
    }


def config_inputs(inventory, host) -> dict:
    """The config step's doit config_changed value."""
    return host_context(inventory, host)


def list_line(inventory) -> str:
    """The repositories.d line, known from the builder before anything is built."""
    return commands.repo_list_line(INDEX_FORMATS[inventory.builder.kind],
                                   inventory.repository.path)


def install_commands(inventory, host) -> list[list[str]]:
    """The root commands the upgrade may run on host: apk add NAME=VERSION for each version
    the host's arch folder of the repository keeps, the env-file's .apk-new removed, the
    reload and restart, the service's log."""
    kept = repo.versions(repo.repo_dir(inventory, host.arch))
    config_files = {f.remote_path for f in host_files(inventory, host)}
    return [argv for p in inventory.packages
            for argv in rollout.doas_commands(p.name, kept.get(p.name, []), p.service,
                                              rollout.service_logfile(p.template_dir, p.service),
                                              rollout.env_file(p.name, config_files))]


def doas_permits(inventory, host) -> list[tuple[str, list[str]]]:
    """Every doas rule of a web host: the deploy user's (commands.doas_permits: the bundle
    helper, the upgrade's for the repository's versions); and lego's two when certificates
    come from ACME."""
    permits = commands.doas_permits(host.user, installs=install_commands(inventory, host))
    return permits + (acme.lego_permits() if inventory.acme is not None else [])


def doas_conf(inventory, host) -> str:
    """/etc/doas.conf for host (templates/doas.conf.j2), installed by the sync step's bundle."""
    return commands.doas_conf_text(doas_permits(inventory, host))


def host_files(inventory, host) -> list[HostFile]:
    """The files a host gets from templates/: nginx's pair, the local CA's certificate (nginx
    verifies the check's client certificate with it) and, without ACME, the site certificate
    and key (copied, not rendered; nginx reloads when any of these changes), and an env-file
    for each package that has a templates/<package>.env.j2 (restart its service)."""
    nginx = _nginx(inventory.site.name)
    nginx_dir = PurePosixPath(nginx["conf"]).parent
    tls_on_host = tls_paths(inventory)
    files = [
        HostFile("nginx/nginx.conf.j2", nginx["conf"], 0o644, "nginx", "reload"),
        HostFile("nginx/site.conf.j2", str(nginx_dir / nginx["site"]), 0o644, "nginx", "reload"),
        # Public: the CA's key stays on this machine (keys/ca), with ACME too.
        HostFile(None, str(nginx_dir / tls_on_host["client_ca"]), 0o644, "nginx", "reload",
                 tls.ca_paths(inventory.site.ca)[0]),
    ]
    if inventory.acme is None:
        # The local CA's site certificate and key (the same on every host), beside the site
        # file. An ACME certificate comes from the cert host instead, never through here.
        certificate, key = tls.site_paths(inventory.site.certificates)
        files += [
            HostFile(None, str(nginx_dir / tls_on_host["certificate"]), 0o644, "nginx",
                     "reload", certificate),
            HostFile(None, str(nginx_dir / tls_on_host["key"]), 0o600, "nginx", "reload", key),
        ]
    for package in inventory.packages:
        if (TEMPLATES / f"{package.name}.env.j2").is_file():
            files.append(HostFile(f"{package.name}.env.j2", f"{ENV_DIR}/{package.name}", 0o644,
                                  package.service, "restart" if package.service else None))
    return files


# --- rendering --------------------------------------------------------------------------------

class _Namespace(dict):
    """A context dict that knows its own name ("site", "packages.linkedlist"), so an undefined
    attribute is reported as 'site.nmae' rather than "'dict object' has no attribute"."""

    def __init__(self, name: str, items):
        super().__init__(items)
        self.outpost_name = name


# jinja2 is imported by the functions that render, not at the top: the task definitions
# import this module, and a no-op deploy renders nothing.

@functools.cache  # one class, made on the first render
def _undefined_type() -> type:
    import jinja2

    class Undefined(jinja2.StrictUndefined):
        """StrictUndefined whose message is the full name of the missing variable."""

        @property
        def _undefined_message(self) -> str:
            if self._undefined_hint is not None:
                return super()._undefined_message
            owner = getattr(self._undefined_obj, "outpost_name", None)
            name = self._undefined_name
            if owner is not None:
                name = f"{owner}.{name}" if isinstance(name, str) else f"{owner}[{name!r}]"
            elif self._undefined_obj is not jinja2.utils.missing:
                return super()._undefined_message  # e.g. an attribute of a string
            return f"undefined variable {name!r}"

    return Undefined


def _named(value, name: str):
    """The context with every dict a _Namespace, and every None an error when used: jinja2
    would print None as "None", a value nobody meant."""
    if value is None:
        return _undefined_type()(hint=f"variable {name!r} is not set (None) for this host")
    if isinstance(value, dict):
        return _Namespace(name, {k: _named(v, f"{name}.{k}") for k, v in value.items()})
    if isinstance(value, list):
        return [_named(item, f"{name}[{i}]") for i, item in enumerate(value)]
    return value


def nginx_quote(value) -> str:
    """A string as one nginx token: double-quoted, with " and \\ escaped."""
    text = str(value)
    if "$" in text or any(ord(c) < 32 for c in text):
        # nginx expands $name inside strings and has no escape for it.
        raise RenderError(f"{text!r} can't be an nginx string ($ and control characters)")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def doas_word(value) -> str:
    """A word of a doas.conf rule, quoted when it holds anything but plain characters."""
    word = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./:+=@-]+", word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.cache  # one per process: it caches the parsed templates
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=_undefined_type(),
        keep_trailing_newline=True,  # doas refuses a last line without its newline
        # A {% tag %} or {# comment #} on a line of its own leaves no blank line behind.
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # config files, not HTML
    )
    env.filters["nginx_quote"] = nginx_quote
    env.filters["doas_word"] = doas_word
    env.filters["sh_quote"] = shlex.quote
    return env


def _template_line(error: BaseException, filename: str) -> int | None:
    """The template line that was running: jinja2 rewrites tracebacks so that template code
    appears as frames of the template file."""
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if frame.filename == filename]
    return lines[-1] if lines else None


def render(template_name: str, context: dict) -> str:
    """The text of templates/<template_name> rendered with context."""
    import jinja2

    shown = f"{TEMPLATES.name}/{template_name}"
    try:
        template = _environment().get_template(template_name)
    except jinja2.TemplateNotFound:
        raise RenderError(f"{shown}: no such template in {TEMPLATES}") from None
    except jinja2.TemplateSyntaxError as error:
        raise RenderError(f"{shown}:{error.lineno}: template syntax error: {error.message}") \
            from None
    named = {key: _named(value, key) for key, value in context.items()}
    try:
        return template.render(named)
    except (jinja2.UndefinedError, RenderError) as error:
        line = _template_line(error, template.filename)
        where = f"{shown}:{line}" if line else shown
        message = error.message if isinstance(error, jinja2.UndefinedError) else str(error)
        raise RenderError(f"{where}: {message}") from None


def write_if_changed(path: Path, text: str) -> bool:
    """Write atomically, and only when the content differs, so an unchanged file keeps its
    mtime (doit and rsync see no change). True when it wrote."""
    data = text.encode()
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def render_host(inventory, host, out_dir: Path) -> list[Path]:
    """Render every file of host_files into out_dir (e.g. build/hosts/<host>) at its path on
    the host. Renders all before writing any, so a template error leaves the old set whole.
    Returns the local paths, in host_files order."""
    context = host_context(inventory, host)
    files = [f for f in host_files(inventory, host) if f.template is not None]
    texts = [render(f.template, context) for f in files]
    paths = [f.local_path(out_dir) for f in files]
    for path, text in zip(paths, texts):
        write_if_changed(path, text)
    return paths
