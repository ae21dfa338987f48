"""The dinit stand-in: a small service supervisor that reads dinit service files.

Real dinit can't be had on this machine, so fleet hosts run this instead (see README.md beside
this file for the list of real behaviours it honours). Anything in a service file that it does
not honour is an error when the service loads: it never skips a setting.

The daemon (`serve`) and the client (`dinitctl`) speak one JSON object per line over a unix
socket: a request {"cmd": ..., "service": ..., "force": ...} and one reply. The reply carries
facts (states, pids, reasons); the client words them the way real dinitctl does.
"""
from __future__ import annotations

import collections
import dataclasses
import errno
import json
import os
import pwd
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

# dinit(8): the system instance's service directories, searched in this order. On merged-/usr
# systems (Chimera, Debian 12) /lib/dinit.d is /usr/lib/dinit.d, where packages put services.
SYSTEM_SERVICE_DIRS = ("/etc/dinit.d", "/run/dinit.d", "/usr/local/lib/dinit.d", "/lib/dinit.d")
# Linux builds of dinit (and Chimera's, via --syscontrolsocket) use this control socket.
SYSTEM_SOCKET = "/run/dinitctl"

# dinit's built-in defaults (configure: DEFAULT_AUTO_RESTART=ALWAYS, DEFAULT_STOP_TIMEOUT=10;
# dinit-service(5): restart-delay 0.2, restart-limit-interval 10, restart-limit-count 3).
STOP_TIMEOUT = 10.0
RESTART_DELAY = 0.2
RESTART_LIMIT_INTERVAL = 10.0
RESTART_LIMIT_COUNT = 3
# Signals that mean "deliberately terminated" for restart = on-failure (dinit-service(5)).
DELIBERATE_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM}

HONOURED_SETTINGS = ("type", "command", "working-dir", "run-as", "env-file", "logfile", "restart",
                     "smooth-recovery", "depends-on", "waits-for", "depends-on.d", "waits-for.d",
                     "capabilities")
# Settings real dinit knows that the stand-in does not honour: loading one is an error that says so.
UNHONOURED_SETTINGS = (
    "stop-command", "restart-delay", "restart-limit-interval", "restart-limit-count",
    "start-timeout", "stop-timeout", "pid-file", "prepared-by", "depends-ms", "depends-ms.d",
    "after", "before", "chain-to", "socket-listen", "socket-permissions", "socket-uid",
    "socket-gid", "term-signal", "termsignal", "ready-notification", "log-type", "logfile-permissions",
    "logfile-uid", "logfile-gid", "log-buffer-size", "consumer-of", "options", "load-options",
    "inittab-id", "inittab-line", "rlimit-nofile", "rlimit-core", "rlimit-data",
    "rlimit-addrspace", "nice", "run-in-cgroup", "securebits", "secure-bits",
    "ioprio", "oom-score-adj", "description")
SUPPORTED_TYPES = ("process", "internal")
KNOWN_TYPES = ("process", "bgprocess", "scripted", "internal", "triggered")
SERVICE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
SETTING_LINE = re.compile(r"([A-Za-z0-9_.-]+)\s*(\+=|=|:)\s*(.*)$", re.S)

# Service states and stop reasons, named as dinitctl prints them.
STOPPED, STARTING, STARTED, STOPPING = "STOPPED", "STARTING", "STARTED", "STOPPING"
NORMAL, DEPFAILED, EXECFAILED, TERMINATED = "normal", "depfailed", "execfailed", "terminated"


class ServiceLoadError(Exception):
    """A service (or a dependency) could not be loaded. kind: 'missing' (no such file),
    'description' (the file is wrong) or 'load' (something it names is wrong)."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


# -- reading service files (pure) ---------------------------------------------------------


@dataclass(frozen=True)
class Description:
    name: str
    path: str
    type: str
    command: tuple = ()
    working_dir: str | None = None
    run_as: str | None = None
    env_file: str | None = None
    logfile: str | None = None
    restart: str = "yes"
    smooth_recovery: bool = False
    depends_on: tuple = ()
    waits_for: tuple = ()
    depends_on_dirs: tuple = ()
    waits_for_dirs: tuple = ()
    capabilities: tuple = ()  # (prefix, name) pairs of the IAB string: ("^", "net_bind_service")


# libcap's IAB text, as dinit's `capabilities` takes it (cap_iab_from_text): comma-separated
# capability names, each with an optional prefix: "%" (or none) inheritable, "^" ambient (and
# inheritable), "!" dropped from the bounding set.
IAB_ENTRY = re.compile(r"([%^!]?)cap_([a-z_]+)")


def parse_iab(text):
    """[(prefix, capability name without cap_)] for an IAB string; ValueError if malformed."""
    entries = []
    for item in text.split(","):
        match = IAB_ENTRY.fullmatch(item.strip().lower())
        if not match:
            raise ValueError(f"invalid capability specification '{item.strip()}'")
        entries.append((match.group(1) or "%", match.group(2)))
    return tuple(entries)


def setpriv_argv(capabilities, user):
    """util-linux setpriv's argv that switches to `user` (uid, gid, groups) keeping the
    capabilities given: how the stand-in applies `run-as` together with `capabilities`."""
    uid, gid, groups = user or (None, None, None)
    argv = ["setpriv"]
    if uid is not None:
        argv.append(f"--reuid={uid}")
        if gid is not None:
            argv.append(f"--regid={gid}")
        argv.append(f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups")
    inheritable = [name for prefix, name in capabilities if prefix in "%^"]
    ambient = [name for prefix, name in capabilities if prefix == "^"]
    dropped = [name for prefix, name in capabilities if prefix == "!"]
    if inheritable:
        argv.append("--inh-caps=" + ",".join(f"+{name}" for name in inheritable))
    if ambient:
        argv.append("--ambient-caps=" + ",".join(f"+{name}" for name in ambient))
    if dropped:
        argv.append("--bounding-set=" + ",".join(f"-{name}" for name in dropped))
    return argv + ["--"]


def logical_lines(text):
    """(line number, line) pairs; a backslash-newline joins the next line (dinit-service(5))."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i]
        while _ends_with_escape(line) and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i]
        yield number, line
        i += 1


def _ends_with_escape(line):
    trailing = len(line) - len(line.rstrip("\\"))
    return trailing % 2 == 1


def split_value(value):
    """dinit's value syntax: whitespace separates tokens, double quotes and backslash escape,
    and a '#' at the start of a token begins a comment. Returns the tokens."""
    tokens, current, in_token, quoted, i = [], [], False, False, 0
    while i < len(value):
        c = value[i]
        if c == "\\":
            if i + 1 == len(value):
                raise ValueError("backslash at end of value")
            current.append(value[i + 1])
            in_token, i = True, i + 2
            continue
        if c == '"':
            quoted, in_token, i = not quoted, True, i + 1
            continue
        if not quoted and c.isspace():
            if in_token:
                tokens.append("".join(current))
                current, in_token = [], False
            i += 1
            continue
        if not quoted and c == "#" and not in_token:
            break
        current.append(c)
        in_token, i = True, i + 1
    if quoted:
        raise ValueError("unterminated quote")
    if in_token:
        tokens.append("".join(current))
    return tokens


def _no_variables(tokens):
    """dinit substitutes $NAME in values; the stand-in doesn't, so a '$' is an error ($$ is '$')."""
    out = []
    for token in tokens:
        if "$" in token.replace("$$", ""):
            raise ValueError(f"'{token}': variable substitution is not supported by the dinit stand-in")
        out.append(token.replace("$$", "$"))
    return out


def parse_description(name, path, text):
    """The Description in `text`, the service file of `name` at `path`.
    Raises ServiceLoadError('description', ...) naming the file, line and setting at fault."""
    values = {"depends_on": [], "waits_for": [], "depends_on_dirs": [], "waits_for_dirs": [],
              "command": []}
    service_dir = os.path.dirname(path)

    def fail(line, message, setting=None):
        where = f"setting '{setting}' " if setting else ""
        position = f"file {path}, line {line}" if line else f"file {path}"
        raise ServiceLoadError("description", f"Error in service description for '{name}': "
                               f"{where}({position}): {message}")

    for number, line in logical_lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("@"):
            if stripped.split()[0] == "@meta":  # for other tools; dinit itself ignores it
                continue
            fail(number, f"meta-command '{stripped.split()[0]}' is not supported by the dinit stand-in")
        match = SETTING_LINE.match(stripped)
        if not match:
            fail(number, "badly formed line")
        setting, op, raw = match.groups()
        if setting in UNHONOURED_SETTINGS:
            fail(number, "not supported by the dinit stand-in", setting)
        if setting not in HONOURED_SETTINGS:
            fail(number, f"unknown setting: '{setting}'.")
        if op == "+=" and setting != "command":
            fail(number, f"cannot use '+=' with setting '{setting}'")
        try:
            tokens = _no_variables(split_value(raw))
        except ValueError as err:
            fail(number, str(err), setting)
        joined = " ".join(tokens)
        key = setting.replace("-", "_").replace(".d", "_dirs")
        if setting == "type":
            if joined not in KNOWN_TYPES:
                fail(number, "service type must be one of: " + ", ".join(KNOWN_TYPES), setting)
            if joined not in SUPPORTED_TYPES:
                fail(number, f"service type '{joined}' is not supported by the dinit stand-in",
                     setting)
            values["type"] = joined
        elif setting == "command":
            values["command"] = (values["command"] if op == "+=" else []) + tokens
        elif setting in ("depends-on", "waits-for"):
            for dep in tokens:
                if not SERVICE_NAME.fullmatch(dep):
                    fail(number, f"invalid dependency name '{dep}'", setting)
            values[key].extend(tokens)
        elif setting in ("depends-on.d", "waits-for.d"):
            values[key].append(os.path.join(service_dir, joined))
        elif setting == "restart":
            if joined not in ("yes", "true", "on-failure", "no", "false"):
                fail(number, 'restart must be one of: "yes", "true", "no", "false" or "on-failure"',
                     setting)
            values["restart"] = {"true": "yes", "false": "no"}.get(joined, joined)
        elif setting == "smooth-recovery":
            if joined not in ("yes", "true", "no", "false"):
                fail(number, 'smooth-recovery must be one of: "yes", "true", "no" or "false"',
                     setting)
            values["smooth_recovery"] = joined in ("yes", "true")
        elif setting == "env-file":
            values["env_file"] = os.path.join(service_dir, joined)
        elif setting == "capabilities":
            try:
                values["capabilities"] = parse_iab(joined)
            except ValueError as err:
                fail(number, str(err), setting)
        else:  # working-dir, run-as, logfile
            values[key] = joined
    if "type" not in values:
        # dinit's default type is process; say so when the command is missing too.
        values["type"] = "process"
    if values["type"] == "process" and not values["command"]:
        fail(None, "service command not specified")
    for key in ("command", "depends_on", "waits_for", "depends_on_dirs", "waits_for_dirs"):
        values[key] = tuple(values[key])
    return Description(name=name, path=path, **values)


def enable_via(name, path, text):
    """The service named by `@meta enable-via NAME` in a service file, or None (dinitctl.cc:
    `enable` without --from links the service from it, else from `boot`)."""
    for number, line in logical_lines(text):
        words = line.split()
        if words[:2] == ["@meta", "enable-via"]:
            if len(words) != 3 or not SERVICE_NAME.fullmatch(words[2]):
                raise ServiceLoadError("description", f"error loading {name}: '@meta enable-via' "
                                       f"argument missing or malformed (file {path}, line {number})")
            return words[2]
    return None


def enable_link_target(name, waits_for_dir, service_path):
    """What `dinitctl enable` makes the waits-for.d link point to (dinitctl.cc): `../` and the
    rest of the service's path when it shares the folder's parent, else its absolute path."""
    cut = waits_for_dir.rfind("/")
    if cut != -1 and service_path[:cut] == waits_for_dir[:cut]:
        return "../" + service_path[cut + 1:]
    return service_path if service_path.startswith("/") else "../" + name


def parse_env_file(text):
    """dinit's environment file: NAME=VALUE lines (the value is the rest of the line), '#'
    comments, and !clear / !unset NAME... / !import NAME... Returns (assignments, warnings):
    assignments is a list of ('set', name, value) / ('unset', name) / ('clear',) /
    ('import', name)."""
    actions, warnings = [], []
    for number, line in enumerate(text.split("\n"), 1):
        body = line.lstrip()
        if not body or body.startswith("#"):
            continue
        if body.startswith("!"):
            words = body[1:].split()
            command, args = (words[0], words[1:]) if words else ("", [])
            if command == "clear":
                actions.append(("clear",))
            elif command in ("unset", "import"):
                actions.extend((command, arg) for arg in args)
            else:
                warnings.append(f"line {number}: unknown command '!{command}'")
            continue
        match = re.match(r"([^=\s]+)\s*=(.*)$", body, re.S)
        if not match:
            warnings.append(f"line {number}: invalid assignment")
            continue
        actions.append(("set", match.group(1), match.group(2)))
    return actions, warnings


def apply_env(actions, base):
    """The environment `actions` (from parse_env_file) make from `base`."""
    env = dict(base)
    for action in actions:
        if action[0] == "set":
            env[action[1]] = action[2]
        elif action[0] == "unset":
            env.pop(action[1], None)
        elif action[0] == "clear":
            env.clear()
        elif action[0] == "import" and action[1] in base:
            env[action[1]] = base[action[1]]
    return env


def restart_wanted(restart, exitcode):
    """Whether a process that ended with `exitcode` (negative: signal) restarts automatically."""
    if restart == "yes":
        return True
    if restart == "on-failure":
        if exitcode < 0:
            return -exitcode not in DELIBERATE_SIGNALS
        return exitcode != 0
    return False


# -- the supervisor -----------------------------------------------------------------------


@dataclass
class Service:
    desc: Description
    env: dict
    user: tuple | None  # (uid, gid or None, supplementary groups or None)
    state: str = STOPPED
    explicit: bool = False
    process: subprocess.Popen | None = None
    stop_reason: str = NORMAL
    exitcode: int | None = None  # of the last process; negative = killed by that signal
    exec_stage: str | None = None
    exec_error: str | None = None
    failed_dep: str | None = None
    restarts: collections.deque = field(default_factory=collections.deque)


def log(message):
    print(f"dinit: {message}", file=sys.stderr, flush=True)


def console(status, name):
    print(f"[{status}] {name}", flush=True)


class Supervisor:
    def __init__(self, service_dirs, environ):
        self.service_dirs = tuple(service_dirs)
        self.environ = dict(environ)
        self.services: dict[str, Service] = {}
        self.cond = threading.Condition(threading.RLock())
        self.shutting_down = False
        self.finished = threading.Event()
        self.pending_restarts = 0

    # loading

    def find_file(self, name):
        for folder in self.service_dirs:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
        return None

    def load(self, name, loading=()):
        """The loaded service `name`, loading it and its dependencies when needed."""
        if name in self.services:
            return self.services[name]
        if name in loading:
            raise ServiceLoadError("load", f"service '{name}': dependency cycle: "
                                   + " -> ".join(loading + (name,)))
        if not SERVICE_NAME.fullmatch(name):
            raise ServiceLoadError("missing", f"'{name}' is not a service name the stand-in "
                                   "accepts (letters, digits, '_', '-', '.'; no '@' arguments)")
        path = self.find_file(name)
        if path is None:
            raise ServiceLoadError("missing", f"service '{name}': no service description in "
                                   + ", ".join(self.service_dirs))
        with open(path, encoding="utf-8") as f:
            desc = parse_description(name, path, f.read())
        service = self._prepare(desc, loading + (name,))
        self.services[name] = service
        return service

    def _prepare(self, desc, loading):
        """Resolve what a description names (dependencies, env-file, user) into a Service."""
        env = dict(self.environ)
        if desc.env_file:
            try:
                with open(desc.env_file, encoding="utf-8") as f:
                    actions, warnings = parse_env_file(f.read())
            except OSError as err:
                raise ServiceLoadError("load", f"service '{desc.name}': could not load "
                                       f"environment file: {desc.env_file}: {err.strerror}")
            for warning in warnings:
                log(f"{desc.env_file}: {warning} (ignored, as dinit does)")
            env = apply_env(actions, env)
        user = resolve_user(desc) if desc.run_as else None
        for dep in desc.depends_on + desc.waits_for:
            self.load(dep, loading)
        depends_on = desc.depends_on + self._load_entries(desc.name, desc.depends_on_dirs, loading)
        waits_for = desc.waits_for + self._load_entries(desc.name, desc.waits_for_dirs, loading)
        desc = dataclasses.replace(desc, depends_on=depends_on, waits_for=waits_for)
        return Service(desc=desc, env=env, user=user)

    def _load_entries(self, name, folders, loading):
        """The services named in depends-on.d / waits-for.d folders, loaded. An entry that names
        no service is skipped; any other load error is one (dinit-service(5), load-service.cc)."""
        found = []
        for dep in _dir_entries(folders):
            try:
                self.load(dep, loading)
            except ServiceLoadError as err:
                if err.kind != "missing":
                    raise
                log(f"{name}: dependency folder entry skipped: {err}")
                continue
            found.append(dep)
        return tuple(found)

    def reload(self, name):
        with self.cond:
            old = self.services.get(name)
            if old is None:
                return self.load(name)
            try:
                new = self._reloaded(name, old)
            except ServiceLoadError as err:
                # dinit keeps the loaded description; dinitctl gives one message for every cause.
                raise ServiceLoadError("reload", f"Could not reload service {name}: {err}") from None
            for attr in ("state", "explicit", "process", "stop_reason", "exitcode", "restarts"):
                setattr(new, attr, getattr(old, attr))
            self.services[name] = new
            return new

    def _reloaded(self, name, old):
        """The service `name` from its file read again, if dinit would take it in its state."""
        with open(old.desc.path, encoding="utf-8") as f:
            desc = parse_description(name, old.desc.path, f.read())
        new = self._prepare(desc, (name,))
        if old.state != STOPPED:  # dinit's check_settings_for_reload (load-service.cc)
            if new.desc.type != old.desc.type:
                raise ServiceLoadError("load", "cannot change type of non-stopped service.")
            if bool(new.desc.logfile) != bool(old.desc.logfile):
                raise ServiceLoadError("load", "cannot change log-type for running service.")
            for dep in new.desc.depends_on:
                if self.services[dep].state != STARTED:
                    raise ServiceLoadError("load", f"cannot add non-started dependency '{dep}'.")
        return new

    # starting

    def start(self, name, explicit=True):
        """Start `name` and its dependencies. Returns a reply dict."""
        with self.cond:
            service = self.load(name)
            if self.shutting_down:
                return {"ok": False, "error": "shutting-down"}
            already = service.state == STARTED
            if explicit:
                service.explicit = True
            if not self._bring_up(service):
                service.explicit = False
                return {"ok": False, "error": "failed-start", **self.status_of(service)}
            return {"ok": True, "already": already, **self.status_of(service)}

    def _bring_up(self, service):
        while service.state in (STOPPING, STARTING):
            self.cond.wait()
        if service.state == STARTED:
            return True
        service.state = STARTING
        service.exitcode = service.exec_stage = service.exec_error = service.failed_dep = None
        for dep in service.desc.depends_on:
            if not self._bring_up(self.services[dep]):
                service.state, service.stop_reason, service.failed_dep = STOPPED, DEPFAILED, dep
                console("FAILED", service.desc.name)
                self.cond.notify_all()
                return False
        for dep in service.desc.waits_for:
            self._bring_up(self.services[dep])
        ok = self._launch(service) if service.desc.type == "process" else True
        service.state = STARTED if ok else STOPPED
        console("  OK  " if ok else "FAILED", service.desc.name)
        self.cond.notify_all()
        return ok

    def _launch(self, service):
        """Start the service's process; a process service is started once its command runs."""
        desc = service.desc
        cwd = desc.working_dir or os.path.dirname(desc.path)
        stage = "opening log file"
        try:
            if desc.logfile:
                output = os.open(desc.logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                os.fchown(output, os.getuid(), os.getgid())
                os.fchmod(output, 0o600)
            else:
                output = os.open(os.devnull, os.O_WRONLY)
            stage = "executing command"
            try:
                uid, gid, groups = service.user or (None, None, None)
                command = list(desc.command)
                if desc.capabilities:
                    # Ambient capabilities must be raised before the switch to the user and
                    # kept through it: setpriv does both, then runs the command.
                    command = setpriv_argv(desc.capabilities, service.user) + command
                    uid = gid = groups = None
                service.process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                    cwd=cwd, env=service.env, start_new_session=True, close_fds=True,
                    user=uid, group=gid, extra_groups=groups)
            finally:
                os.close(output)
        except (OSError, subprocess.SubprocessError) as err:
            if isinstance(err, OSError) and err.filename == cwd:
                stage = "changing directory"
            service.stop_reason = EXECFAILED
            service.exec_stage = stage
            service.exec_error = getattr(err, "strerror", None) or str(err)
            log(f"{desc.name}: execution of service process failed: {stage}: {service.exec_error}")
            return False
        service.stop_reason = NORMAL
        return True

    # stopping

    def stop(self, name, force=False):
        with self.cond:
            service = self.load(name)
            dependents = self.hard_dependents(service)
            if dependents and not force:
                return {"ok": False, "error": "dependents", "dependents": dependents}
            service.explicit = False
            already = service.state == STOPPED
            self._bring_down(service, NORMAL)
            self._release_unneeded()
            self._exit_if_idle()
            return {"ok": True, "already": already, **self.status_of(service)}

    def restart(self, name, force=False):
        with self.cond:
            service = self.load(name)
            if service.state != STARTED:
                return {"ok": False, "error": "not-started"}
            dependents = self.hard_dependents(service)
            if dependents and not force:
                return {"ok": False, "error": "dependents", "dependents": dependents}
            # --force: the dependents restart too, keeping their explicit activation
            restart_after = [(self.services[d], self.services[d].explicit) for d in dependents]
            self._bring_down(service, NORMAL, keep_explicit=True)
            ok = self._bring_up(service)
            for dependent, explicit in restart_after:
                dependent.explicit = explicit
                self._bring_up(dependent)
            reply = {"ok": ok, "stopped": True, **self.status_of(service)}
            if not ok:
                reply["error"] = "failed-start"
            return reply

    def hard_dependents(self, service):
        name = service.desc.name
        return sorted(s.desc.name for s in self.services.values()
                      if s.state != STOPPED and name in s.desc.depends_on)

    # enabling (dinitctl enable/disable) and signals

    def enable(self, name, source_name, enable):
        """`dinitctl enable|disable [--from SOURCE] NAME`: add or remove SOURCE's waits-for
        dependency on NAME, both in the running dinit and as a link in SOURCE's one waits-for.d
        folder. SOURCE defaults to NAME's `@meta enable-via`, else `boot` (dinitctl.cc)."""
        with self.cond:
            service = self.load(name)
            if source_name is None:
                with open(service.desc.path, encoding="utf-8") as f:
                    source_name = enable_via(name, service.desc.path, f.read()) or "boot"
            source = self.load(source_name)
            # dinitctl reads the source's file afresh for its fixed dependencies and waits-for.d.
            with open(source.desc.path, encoding="utf-8") as f:
                written = parse_description(source_name, source.desc.path, f.read())
            reply = {"from": source_name}
            if name in written.depends_on or name in written.waits_for:
                return {**reply, "ok": False, "error": "fixed-dependency"}
            if len(written.waits_for_dirs) != 1:
                return {**reply, "ok": False, "error": "multiple-waits-for-d"
                        if written.waits_for_dirs else "no-waits-for-d"}
            reply["link"] = os.path.join(written.waits_for_dirs[0], name)
            if enable:
                if os.path.lexists(reply["link"]):
                    return {**reply, "ok": False, "error": "already-enabled"}
                return self._enable(service, source, reply)
            return self._disable(service, source, reply)

    def _enable(self, service, source, reply):
        name, link = service.desc.name, reply["link"]
        reply["warning"] = source.state != STARTED
        if service is source or self._needs(service, source):
            return {**reply, "ok": False, "error": "circular"}
        if name not in source.desc.waits_for:
            source.desc = dataclasses.replace(source.desc, waits_for=source.desc.waits_for + (name,))
        # Started for the source, not explicitly: it stops again if the source stops.
        reply["waited"] = service.state != STARTED and source.state in (STARTED, STARTING) \
            and not self.shutting_down
        started = self._bring_up(service) if reply["waited"] else True
        try:
            os.symlink(enable_link_target(name, os.path.dirname(link), service.desc.path), link)
        except OSError as err:
            return {**reply, "ok": False, "error": "link-failed", "detail": err.strerror}
        if not started:
            return {**reply, "ok": False, "error": "failed-start", **self.status_of(service)}
        return {**reply, "ok": True, **self.status_of(service)}

    def _disable(self, service, source, reply):
        name = service.desc.name
        if name not in source.desc.waits_for:
            return {**reply, "ok": False, "error": "not-enabled"}
        source.desc = dataclasses.replace(
            source.desc, waits_for=tuple(dep for dep in source.desc.waits_for if dep != name))
        self._release_unneeded()
        self._exit_if_idle()
        try:
            os.unlink(reply["link"])
        except OSError as err:
            return {**reply, "ok": False, "error": "unlink-failed", "detail": err.strerror}
        return {**reply, "ok": True, **self.status_of(service)}

    def _needs(self, service, target):
        """Whether `service` depends on `target`, directly or through other services."""
        seen, queue = set(), [service]
        while queue:
            desc = queue.pop().desc
            for dep in desc.depends_on + desc.waits_for:
                if dep == target.desc.name:
                    return True
                if dep not in seen:
                    seen.add(dep)
                    queue.append(self.services[dep])
        return False

    def signal(self, name, number):
        """`dinitctl signal`: send signal `number` to the service's process (not its group)."""
        with self.cond:
            process = self.load(name).process
            if process is None:
                return {"ok": False, "error": "no-pid"}
            try:
                os.kill(process.pid, number)
            except OSError as err:
                if err.errno == errno.EINVAL:
                    log("Requested signal not in valid signal range.")
                    return {"ok": False, "error": "bad-signal"}
                log(f"Error sending signal to process: {err.strerror}")
                return {"ok": False, "error": "kill-failed"}
            return {"ok": True}

    def _bring_down(self, service, reason, keep_explicit=False):
        """Stop the service's hard dependents, then the service (waits for its process)."""
        while service.state == STARTING:
            self.cond.wait()
        if service.state == STOPPED:
            return
        for dependent in self.hard_dependents(service):
            dep = self.services[dependent]
            dep.explicit = False
            self._bring_down(dep, DEPFAILED if reason != NORMAL else NORMAL)
        if not keep_explicit:
            service.explicit = False
        if service.state == STOPPING:
            while service.state == STOPPING:
                self.cond.wait()
            return
        service.state = STOPPING
        self._end_process(service)
        service.state, service.stop_reason = STOPPED, reason
        console("STOPPD", service.desc.name)
        self.cond.notify_all()

    def _end_process(self, service):
        """TERM the process group, KILL it after the stop timeout; wait for the reaper."""
        process = service.process
        if process is None:
            return
        _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while service.process is process:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _signal_group(process.pid, signal.SIGKILL)
                deadline = float("inf")
                remaining = None
            self.cond.wait(remaining)

    def _release_unneeded(self):
        """Stop started services that nothing needs: not explicit, no started dependents."""
        changed = True
        while changed:
            changed = False
            for service in list(self.services.values()):
                if service.state != STARTED or service.explicit:
                    continue
                name = service.desc.name
                if any(s.state != STOPPED and (name in s.desc.depends_on or name in s.desc.waits_for)
                       for s in self.services.values()):
                    continue
                self._bring_down(service, NORMAL)
                changed = True

    def _exit_if_idle(self):
        """dinit(8): once all services stop, dinit terminates."""
        if self.pending_restarts == 0 and all(s.state == STOPPED for s in self.services.values()):
            log("all services stopped; exiting")
            self.shutting_down = True
            self.finished.set()

    def shutdown(self):
        """Stop every service (dependents first), then let the daemon exit."""
        with self.cond:
            self.shutting_down = True
            for service in list(self.services.values()):
                service.explicit = False
                self._bring_down(service, NORMAL)
            self.finished.set()

    # process exits

    def reaped(self, pid, exitcode):
        """The reaper saw `pid` end. Called with the lock held; never waits."""
        for service in self.services.values():
            if service.process is not None and service.process.pid == pid:
                service.process.returncode = exitcode  # stops Popen from waiting on it again
                service.process = None
                service.exitcode = exitcode
                self.cond.notify_all()
                if service.state == STARTED and not self.shutting_down:
                    threading.Thread(target=self._recover, args=(service, exitcode),
                                     daemon=True).start()
                return

    def _recover(self, service, exitcode):
        """A started service's process ended without a stop order."""
        with self.cond:
            if service.state != STARTED or service.process is not None:
                return
            name = service.desc.name
            log(f"{name}: process terminated ({_describe_exit(exitcode)})")
            if service.desc.smooth_recovery and self._may_restart(service):
                self._restart_later(self._relaunch, service)
                return
            if not service.desc.smooth_recovery and restart_wanted(service.desc.restart, exitcode) \
                    and self._may_restart(service):
                dependents = [self.services[d] for d in self.hard_dependents(service)]
                self._bring_down(service, TERMINATED, keep_explicit=True)
                self._restart_later(self._auto_restart, service, dependents)
                return
            self._bring_down(service, TERMINATED)
            self._release_unneeded()
            self._exit_if_idle()

    def _may_restart(self, service):
        now = time.monotonic()
        while service.restarts and now - service.restarts[0] > RESTART_LIMIT_INTERVAL:
            service.restarts.popleft()
        if len(service.restarts) >= RESTART_LIMIT_COUNT:
            log(f"{service.desc.name}: restarting too quickly; not restarting it")
            return False
        service.restarts.append(now)
        return True

    def _restart_later(self, action, *args):
        self.pending_restarts += 1

        def run():
            with self.cond:
                self.pending_restarts -= 1
                if not self.shutting_down:
                    action(*args)
                self._exit_if_idle()

        timer = threading.Timer(RESTART_DELAY, run)
        timer.daemon = True
        timer.start()

    def _relaunch(self, service):
        """smooth-recovery: a new process, with no change of state and no dependent stopped."""
        if service.state != STARTED or service.process is not None:
            return
        if self._launch(service):
            log(f"{service.desc.name}: process restarted (smooth recovery)")
            return
        self._bring_down(service, TERMINATED)
        self._release_unneeded()

    def _auto_restart(self, service, dependents):
        if service.state == STOPPED and self._bring_up(service):
            for dependent in dependents:
                if dependent.desc.restart == "yes":
                    self._bring_up(dependent)

    # reporting

    def status_of(self, service):
        process = service.process
        return {
            "service": service.desc.name, "file": service.desc.path, "state": service.state,
            "explicit": service.explicit, "pid": process.pid if process else None,
            "stop_reason": service.stop_reason, "exitcode": service.exitcode,
            "exec_stage": service.exec_stage, "exec_error": service.exec_error,
            "failed_dep": service.failed_dep,
        }

    def handle(self, request):
        """One control request -> one reply (both dicts)."""
        command = request.get("cmd")
        name = request.get("service")
        force = bool(request.get("force"))
        try:
            if command == "start":
                return self.start(name)
            if command == "stop":
                return self.stop(name, force)
            if command == "restart":
                return self.restart(name, force)
            if command == "reload":
                with self.cond:
                    return {"ok": True, **self.status_of(self.reload(name))}
            if command == "status":
                with self.cond:
                    return {"ok": True, **self.status_of(self.load(name))}
            if command == "list":
                with self.cond:
                    return {"ok": True, "services": [self.status_of(s)
                                                     for s in self.services.values()]}
            if command in ("enable", "disable"):
                return self.enable(name, request.get("from"), command == "enable")
            if command == "signal":
                return self.signal(name, int(request["signal"]))
            if command == "shutdown":
                threading.Thread(target=self.shutdown, daemon=True).start()
                return {"ok": True}
            return {"ok": False, "error": "unknown-command", "detail": str(command)}
        except ServiceLoadError as err:
            log(str(err))
            return {"ok": False, "error": err.kind, "detail": str(err)}
        except OSError as err:
            return {"ok": False, "error": "load", "detail": f"{name}: {err}"}


def resolve_user(desc):
    """run-as: a user name (its group and supplementary groups) or a numeric uid (dinit keeps
    its own group and drops supplementary groups). dinit-service(5), run-child-proc.cc."""
    value = desc.run_as
    if value.isdigit():
        return int(value), None, []
    try:
        entry = pwd.getpwnam(value)
    except KeyError:
        raise ServiceLoadError("description", f"Error in service description for '{desc.name}': "
                               f"setting 'run-as' (file {desc.path}): specified user \"{value}\" "
                               "does not exist in system database.")
    return entry.pw_uid, entry.pw_gid, os.getgrouplist(entry.pw_name, entry.pw_gid)


def _dir_entries(folders):
    names = []
    for folder in folders:
        try:
            names.extend(sorted(n for n in os.listdir(folder) if not n.startswith(".")))
        except OSError:
            pass  # dinit-service(5): failure to read the folder is not fatal
    return names


def _signal_group(pid, sig):
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _describe_exit(exitcode):
    if exitcode is not None and exitcode < 0:
        return f"signalled - signal {-exitcode}"
    return f"exited - status {exitcode}"


# -- the daemon's main loop ---------------------------------------------------------------


def serve(supervisor, socket_path, initial_services):
    """Run as dinit: listen on `socket_path`, start `initial_services`, reap every child,
    and on SIGTERM/SIGINT stop all services and return. Returns the exit status: 1 when an
    initial service failed to start."""
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, lambda *_: None)  # the wakeup fd carries the signal to the loop
    listener = _listen(socket_path)

    failed = []

    def start_initial():
        for name in initial_services:
            reply = supervisor.handle({"cmd": "start", "service": name})
            if not reply["ok"]:
                failed.append(name)
                log(f"could not start '{name}': {reply.get('detail') or reply.get('error')}")
        with supervisor.cond:
            supervisor._exit_if_idle()

    threading.Thread(target=start_initial, daemon=True).start()
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(wake_read, selectors.EVENT_READ, "signal")
    try:
        while not supervisor.finished.is_set():
            for key, _ in selector.select(timeout=0.5):
                if key.data == "accept":
                    conn, _ = listener.accept()
                    threading.Thread(target=_serve_client, args=(supervisor, conn),
                                     daemon=True).start()
                    continue
                try:
                    signals = wake_read.recv(64)
                except BlockingIOError:
                    signals = b""
                _reap(supervisor)
                if signal.SIGQUIT in signals:
                    log("SIGQUIT: exiting at once")
                    return 1
                if (signal.SIGTERM in signals or signal.SIGINT in signals) \
                        and not supervisor.shutting_down:
                    log("stopping all services")
                    threading.Thread(target=supervisor.shutdown, daemon=True).start()
            _reap(supervisor)  # a signal can be missed while the wakeup fd was full
    finally:
        listener.close()
        try:
            os.unlink(socket_path)
        except OSError:
            pass
    return 1 if failed else 0


def _listen(socket_path):
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(socket_path)
    except OSError:
        pass
    else:
        probe.close()
        raise SystemExit(f"dinit: control socket {socket_path} is in use: dinit already running?")
    probe.close()
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)  # the socket is root's alone, as dinit's is
    try:
        listener.bind(socket_path)
    finally:
        os.umask(old_umask)
    listener.listen(16)
    return listener


def _reap(supervisor):
    """Collect every ended child: service processes and orphans (dinit may be PID 1)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        with supervisor.cond:
            supervisor.reaped(pid, os.waitstatus_to_exitcode(status))


def _serve_client(supervisor, conn):
    with conn:
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        try:
            request = json.loads(data)
        except ValueError:
            reply = {"ok": False, "error": "protocol"}
        else:
            try:
                reply = supervisor.handle(request)
            except Exception as err:  # keep serving; tell this client what went wrong
                log(f"internal error handling {request}: {err!r}")
                reply = {"ok": False, "error": "internal", "detail": repr(err)}
        conn.sendall(json.dumps(reply).encode() + b"\n")


def request(socket_path, message):
    """Client side: send one request, return the reply (raises OSError if dinit isn't there)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.connect(socket_path)
        conn.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(65536)
            if not chunk:
                raise ConnectionError("dinit closed the control connection")
            data += chunk
    return json.loads(data)


# -- dinitctl's wording (dinitctl.cc), as pure functions ----------------------------------

EXEC_FAILED = "Reason: execution of service process failed:\n        Stage: {}\n        Error: {}\n"


def describe_termination(exitcode):
    if exitcode is None:
        return "unknown reason"
    if exitcode < 0:
        return f"signalled - signal {-exitcode}"
    return f"exited - status {exitcode}"


def failure_details(reply):
    if reply["stop_reason"] == DEPFAILED:
        return ("Reason: a dependency of the service failed to start. Check dinit log.\n"
                f"(stand-in: the dependency is '{reply['failed_dep']}')\n")
    if reply["stop_reason"] == EXECFAILED:
        return EXEC_FAILED.format(reply["exec_stage"], reply["exec_error"])
    return "Reason unknown/unrecognised. Check dinit log.\n"


def load_error_text(reply):
    """What dinitctl prints when the daemon could not load a service. As with real dinitctl,
    the reason is only in dinit's log."""
    kind = reply["error"]
    if kind == "missing":
        text = ("dinitctl: failed to find service description.\n"
                "dinitctl: check service description file exists / service name spelling.\n")
    elif kind == "description":
        text = ("dinitctl: error in service description.\n"
                "dinitctl: try 'dinit-check <service-name>' or check log for more information.\n")
    else:
        text = ("dinitctl: error loading service (or dependency of service).\n"
                "dinitctl: try 'dinit-check <service-name>' or check log for more information.\n")
    return text


def format_status(reply):
    lines = [f"Service: {reply['service']}", f"    File: {reply['file']}"]
    state = reply["state"]
    if state == STOPPED:
        reason = reply["stop_reason"]
        if reason == DEPFAILED:
            state += " (dependency failed/terminated)"
        elif reason == EXECFAILED:
            state += (f" (could not be launched)\n        Stage: {reply['exec_stage']}\n"
                      f"        Error: {reply['exec_error']}")
        elif reason == TERMINATED:
            state += f" (terminated; {describe_termination(reply['exitcode'])})"
    lines.append(f"    State: {state}")
    if reply["state"] in (STARTED, STARTING):
        lines.append("    Activation: " + ("explicitly started" if reply["explicit"]
                                         else "start due to dependent(s)"))
    if reply["pid"] is not None:
        lines.append(f"    Process ID: {reply['pid']}")
    return "\n".join(lines) + "\n"


def format_list_line(s):
    started, stopped = s["state"] == STARTED, s["state"] == STOPPED
    target_started = s["state"] in (STARTED, STARTING)
    left, right = ("[", "]") if s["explicit"] else (("{", "}") if target_started else (" ", " "))
    failed = stopped and s["stop_reason"] != NORMAL
    text = (f"[{left}{'+' if started else ' '}{right}"
            f"{'<<' if s['state'] == STARTING else '>>' if s['state'] == STOPPING else '  '}"
            f"{' ' if target_started else '{'}{('X' if failed else '-') if stopped else ' '}"
            f"{' ' if target_started else '}'}] {s['service']}")
    if not stopped and s["pid"] is not None:
        text += f" (pid: {s['pid']})"
    if stopped and s["stop_reason"] == TERMINATED and s["exitcode"] is not None:
        code = s["exitcode"]
        text += f" (signal: {-code})" if code < 0 else f" (exit status: {code})"
    return text


ENABLE_ERRORS = {
    "already-enabled": "dinitctl: service already enabled.\n",
    "not-enabled": "dinitctl: service not currently enabled\n",
    "circular": "dinitctl: could not enable service: possible circular dependency\n",
    "fixed-dependency": "dinitctl: there is a fixed dependency to service '{name}' in the "
                        "service description of '{from}'.\n",
    "no-waits-for-d": "dinitctl: service '{from}' has no waits-for.d directory specified\n",
    "multiple-waits-for-d": "dinitctl: service '{from}' has multiple waits-for.d directories "
                            "specified in service description\n",
    "link-failed": "dinitctl: could not create symlink at {link}: {detail}\n"
                   "dinitctl: note: service was enabled for now; persistent enable failed.\n",
    "unlink-failed": "dinitctl: could not unlink dependency entry {link}: {detail}\n"
                     "dinitctl: note: service was disabled for now; persistent disable failed.\n",
}
SIGNAL_ERRORS = {
    "no-pid": "dinitctl: could not get valid PID of service; service is not process-based or "
              "is in wrong state.\n",
    "bad-signal": "dinitctl: provided signal was invalid.\n",
    "kill-failed": "dinitctl: failed sending signal to service.\n",
}
# dinitctl signal: the names it knows (load-service.h signal_to_int_map), without "SIG".
SIGNAL_NAMES = {"HUP": signal.SIGHUP, "INT": signal.SIGINT, "QUIT": signal.SIGQUIT,
                "KILL": signal.SIGKILL, "USR1": signal.SIGUSR1, "USR2": signal.SIGUSR2,
                "TERM": signal.SIGTERM, "CONT": signal.SIGCONT, "STOP": signal.SIGSTOP}


def signal_number(text):
    """dinitctl's reading of a signal: one of SIGNAL_NAMES or a decimal number; None if neither."""
    if text in SIGNAL_NAMES:
        return int(SIGNAL_NAMES[text])
    if re.fullmatch(r"\s*\+?[0-9]+", text):  # as std::stoi reads it (a '-' is an option)
        return int(text)
    return None


def format_enable(command, name, reply):
    """(exit status, stdout, stderr) of `dinitctl enable|disable NAME` for the daemon's reply."""
    err = "dinitctl: warning: enabling dependency for non-started service\n" \
        if reply.get("warning") else ""
    error = reply.get("error")
    if error in ENABLE_ERRORS:
        return 1, "", err + ENABLE_ERRORS[error].format(name=name, **reply)
    out = f"Service '{name}' has been {command}d.\n"
    if command == "disable":
        if reply["state"] != STOPPED:
            err += "dinitctl: note: disabled service may have other dependents\n"
        return 0, out, err
    if error == "failed-start":
        return 1, out + f"Service '{name}' failed to start.\n" + failure_details(reply), err
    if reply["waited"]:
        out += f"Service '{name}' started.\n"
    return 0, out, err


def format_reply(command, name, reply, ignore_unstarted=False):
    """(exit status, stdout, stderr) that dinitctl gives for `reply` to `command name`.
    --ignore-unstarted: a service that isn't started or doesn't exist is not an error."""
    error = reply.get("error")
    if ignore_unstarted and error == "not-started":
        return 0, f"Service '{name}' is not currently started.\n", ""
    if ignore_unstarted and error in ("missing", "description", "load"):
        return 0, "", ""  # as real dinitctl: silent, exit 0, the reason in dinit's log
    if error in ("missing", "description", "load"):
        return 1, "", load_error_text(reply)
    if error == "reload":
        return 1, "", ("dinitctl: could not reload service; service in wrong state, incompatible "
                       "change, or bad service description.\n")
    if command in ("enable", "disable"):
        return format_enable(command, name, reply)
    if error in SIGNAL_ERRORS:
        return 1, "", SIGNAL_ERRORS[error]
    if error == "dependents":
        intro = f"dinitctl: cannot stop service '{name}' due to the following dependents:\n"
        if command != "restart":
            intro += ("(only direct dependents are listed. Exercise caution before using "
                      "'--force' !!)\n")
        return 1, "", intro + "  " + " ".join(reply["dependents"]) + "\n"
    if error == "not-started":
        return 1, "", "dinitctl: cannot restart service; service not started.\n"
    if error == "shutting-down":
        return 1, "", "dinitctl: cannot start/restart/wake service, shutdown is in progress.\n"
    if error == "failed-start":
        prefix = f"Service '{name}' stopped.\n" if command == "restart" else ""
        return 1, prefix + f"Service '{name}' failed to start.\n" + failure_details(reply), ""
    if error:
        return 1, "", f"dinitctl: {error}: {reply.get('detail', '')}\n"
    if command in ("start", "stop"):
        verb = "started" if command == "start" else "stopped"
        if reply["already"]:
            return 0, f"Service (already) {verb}.\n", ""
        return 0, f"Service '{name}' {verb}.\n", ""
    if command == "restart":
        return 0, f"Service '{name}' stopped.\nService '{name}' started.\n", ""
    if command == "reload":
        return 0, f"Service '{name}' reloaded.\n", ""
    if command == "status":
        return 0, format_status(reply), ""
    if command == "list":
        return 0, "".join(format_list_line(s) + "\n" for s in reply["services"]), ""
    return 0, "", ""
