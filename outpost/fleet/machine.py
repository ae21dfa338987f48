"""Starting and stopping one fleet host: one process tree started by `unshare` in its own
user, network, mount, PID, UTS and IPC namespaces, with its state in `<state>/hosts/<name>`.

- mount: an overlay whose lower layer is this machine's `/` and whose upper layer is the
  host's own folder, so a package installed on `au` is not on `ny`. The upper layer lives in
  the state folder and SURVIVES down/up: a host keeps what was installed on it, like a
  rebooted server. Delete `<state>/hosts/<name>` to reset a host. Fresh /proc, /run and /tmp;
  /dev is this machine's. The state folder and the other `private` paths (the project with
  its signing key) are hidden under an empty read-only tmpfs.
- user: once its root is built, the host moves into a user namespace of its own, every id
  mapped to itself (files keep their owners; root is uid 0), with a mount namespace copied
  from the first and a network namespace of its own. Its root then has capabilities over its
  own namespaces only: the mounts made before (the masks among them) are locked and can't be
  unmounted, nor bound or overlaid without them, and it can't mount a disk or make a device
  node. So root on a host can't reach the controller's keys.
- PID: PID 1 is the service manager (real `dinit` where local.find_chimera_tools found it,
  else the stand-in in outpost/standins), logging to /var/log/dinit.log. It starts `boot`, which, as on Chimera, waits for every service enabled
  in /etc/dinit.d/boot.d (`dinitctl enable NAME` links it there): sshd is enabled so, and so is
  whatever the pipeline enables, so a restarted host runs them all again. Stopping a host kills
  PID 1, and the kernel then ends everything in its PID namespace; the network and mount
  namespaces (veth, overlay) go with it, so a host that died leaves nothing to clean up but
  its pid file.
"""
from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path, PurePosixPath

from outpost.errors import OutpostError
from outpost.fleet import network
from outpost.fleet.host import FleetHost
from outpost.fleet.local import HOST_ENVIRONMENT, ChimeraTools
from outpost.fleet.provision import DINIT_LOG, HOST_PACKAGE, SSH_PORT, SSHD_LOG, STANDINS

# How long a host may take from launch to its sshd greeting.
READY_TIMEOUT = 15.0
# How long a host's namespaces may take to go after SIGKILL to its PID 1 (slow on a loaded
# machine: the kernel ends every process in them, then tears down the network namespace).
STOP_TIMEOUT = 15.0


# --- Where a host's state is -------------------------------------------------------------------

def host_state(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / "hosts" / name


def upper_layer(state_dir: Path, name: str) -> Path:
    return host_state(state_dir, name) / "upper"


def on_host(state_dir: Path, name: str, path: PurePosixPath) -> Path:
    """Where a file that the host wrote is, seen from this machine (its upper layer)."""
    return upper_layer(state_dir, name) / path.relative_to("/")


def running_pid(state_dir: Path, name: str) -> int | None:
    """PID 1 of a running fleet host (as this machine sees it), or None. Reads only its pid
    file and /proc, so the pipeline's no-op check that the fleet is up stays cheap."""
    try:
        pid, start = (host_state(state_dir, name) / "pid").read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    # The start time tells a reused pid from ours.
    return int(pid) if _start_time(int(pid)) == start else None


def _start_time(pid: int) -> str | None:
    """A live process's start time (field 22 of /proc/PID/stat); None if gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else fields[19]


# --- Pure: how a host boots --------------------------------------------------------------------

def init_command(tools: ChimeraTools) -> list[str] | None:
    """PID 1 of a host: real dinit where `tools` has it, else the stand-in; either logs to
    DINIT_LOG, where a user (and the upgrade step) reads why a service failed to load."""
    if tools.dinit:
        program = tools.dinit
    elif (STANDINS / "dinit").exists():
        program = str(HOST_PACKAGE / "standins" / "dinit")
    else:
        return None
    return [program, "--container", "--log-file", str(DINIT_LOG)]


def boot_script(host: FleetHost, upper: Path, work: Path, merged: Path,
                private: list[Path], init: list[str], setup=()) -> str:
    """PID 1's first act: build the host's root, run the `setup` shell lines (apk's database,
    the packages' users and folders), then leave this machine's root behind: from the user
    namespace on, root is root of the host's own namespaces only, and every mount above (the
    masks over the private paths among them) is locked to it, so it can't be undone. Then wait
    for its veth (in the new network namespace), and exec the init."""
    q = shlex.quote
    hide = "\n".join(f"if [ -d {q(str(p))} ]; then mount -t tmpfs -o ro,size=4k,mode=0755 "
                     f"outpost-private {q(str(p))}; fi" for p in private)
    host_root = f"""\
set -eu
# The fleet writes a line once it has mapped this user namespace and plugged in the veth.
read -r ready
if [ -e /proc/sys/net/ipv6/conf/all/disable_ipv6 ]; then echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; fi
ip link set lo up
ip addr add {q(host.address)}/24 dev eth0
ip link set eth0 up
exec {shlex.join(init)} </dev/null
"""
    return f"""\
set -eu
mount -t overlay outpost-{q(host.name)} -o lowerdir=/,upperdir={q(str(upper))},workdir={q(str(work))} {q(str(merged))}
cd {q(str(merged))}
mount -t proc proc proc
mount --rbind /dev dev
mount -t tmpfs -o mode=0755 tmpfs run
mount -t tmpfs -o mode=1777 tmpfs tmp
pivot_root . .
umount -l .
cd /
{hide}
mkdir -m 0755 /run/sshd
{"".join(line + chr(10) for line in setup)}hostname {q(host.name)}
exec unshare --user --mount --net -- sh -c {q(host_root)}
"""


# --- Start -------------------------------------------------------------------------------------

def launch(state_dir: Path, host: FleetHost, bridge: str, private: list[Path],
           tools: ChimeraTools, setup=()) -> subprocess.Popen:
    """Start the host's namespaces and PID 1 on its (provisioned) upper layer, and plug it
    into the bridge. `setup`: shell lines run once its root is in place (boot_script)."""
    state = host_state(state_dir, host.name)
    (state / "pid").unlink(missing_ok=True)  # a stale one: its namespaces died with it
    for sub in ("upper", "work", "merged"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    script = boot_script(host, state / "upper", state / "work", state / "merged",
                         private, init_command(tools), setup)
    with open(state / "boot.log", "wb") as log:
        process = subprocess.Popen(
            ["unshare", "--fork", "--pid", "--mount", "--net", "--uts", "--ipc",
             "--propagation", "private", "--", "sh", "-c", script],
            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=HOST_ENVIRONMENT)
    try:
        pid = _init_pid(state_dir, host, process)
        (state / "pid").write_text(f"{pid} {_start_time(pid)}\n")
        _map_root(state_dir, host, process, pid)
        network.plug_in(bridge, host, pid)
        process.stdin.write(b"ready\n")
        process.stdin.close()
    except BaseException:
        # A half-started host would pass for a running one: end it.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        (state / "pid").unlink(missing_ok=True)
        raise
    return process


def _init_pid(state_dir: Path, host: FleetHost, process: subprocess.Popen) -> int:
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _boot_failed(state_dir, host, "its boot script exited")
        pids = children.read_text().split() if children.exists() else []
        if pids:
            return int(pids[0])
        time.sleep(0.005)
    raise _boot_failed(state_dir, host, "its PID 1 never appeared")


# Every uid and gid is itself in a host's user namespace: files keep their owners, root is 0.
IDENTITY_MAP = "0 0 4294967295\n"


def _map_root(state_dir: Path, host: FleetHost, process: subprocess.Popen, pid: int):
    """Once PID 1 is in its own user and network namespaces (after its setup lines), map
    every id to itself. Only a process outside may write a mapping of more than its own id."""
    # This machine's user namespace; the network namespace the boot script started in (the
    # unshare that forked PID 1 holds it).
    outside = [os.stat("/proc/self/ns/user").st_ino,
               os.stat(f"/proc/{process.pid}/ns/net").st_ino]
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _boot_failed(state_dir, host, "its boot script exited")
        try:
            inside = [os.stat(f"/proc/{pid}/ns/{kind}").st_ino for kind in ("user", "net")]
        except FileNotFoundError:
            inside = outside
        if all(mine != theirs for mine, theirs in zip(outside, inside)):
            Path(f"/proc/{pid}/uid_map").write_text(IDENTITY_MAP)
            Path(f"/proc/{pid}/gid_map").write_text(IDENTITY_MAP)
            return
        time.sleep(0.005)
    raise _boot_failed(state_dir, host, "it never entered its user namespace")


def wait_ready(state_dir: Path, host: FleetHost, bridge: str, process: subprocess.Popen):
    """Wait for the host's sshd greeting; stop the host if it never comes."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _boot_failed(state_dir, host, "it stopped while booting")
        try:
            # The greeting comes 2 round trips after the connect (delay.py).
            with socket.create_connection((host.address, SSH_PORT),
                                          timeout=1 + 2 * host.rtt_ms / 1000) as conn:
                if conn.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.01)
    stop(state_dir, host.name, bridge)
    raise _boot_failed(state_dir, host, f"sshd did not answer on {host.address}:{SSH_PORT}")


def _boot_failed(state_dir: Path, host: FleetHost, why: str) -> OutpostError:
    logs = []
    for log in (host_state(state_dir, host.name) / "boot.log",
                on_host(state_dir, host.name, SSHD_LOG)):
        if log.exists():
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            logs.append(f"--- {log}\n" + "\n".join(tail))
    return OutpostError(f"fleet host {host.name} did not start: {why}\n" + "\n".join(logs))


# --- Stop, and running a command inside ----------------------------------------------------------

def stop(state_dir: Path, name: str, bridge: str) -> bool:
    """Stop a host: kill its PID 1, so the kernel ends everything in its PID namespace.
    True if it was running."""
    pid = kill(state_dir, name)
    wait_stopped(state_dir, name, bridge, pid)
    return pid is not None


def kill(state_dir: Path, name: str) -> int | None:
    """SIGKILL to a host's PID 1; the kernel then ends the rest of its PID namespace in its
    own time (wait_stopped). The PID, or None if the host was down."""
    pid = running_pid(state_dir, name)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it died since running_pid looked
            pass
    return pid


def wait_stopped(state_dir: Path, name: str, bridge: str, pid: int | None):
    """Wait until the killed PID 1 `pid` is reaped and the host's veth pair is gone, then
    forget its pid. A veth left by a host that was already down is deleted. Past the deadline
    the pid file stays, so that the next stop tries again."""
    if pid is None and network.has_veth(bridge, name):
        network.remove_veth(bridge, name)
    deadline = time.monotonic() + STOP_TIMEOUT
    pause = 0.005
    while True:
        alive = pid is not None and _start_time(pid) is not None
        if not alive and not network.has_veth(bridge, name):
            break
        if time.monotonic() > deadline:
            left = (f"PID 1 ({pid}) still running" if alive else
                    f"its veth {network.veth_name(bridge, name)} still there")
            raise OutpostError(f"fleet host {name}: {left} {STOP_TIMEOUT:.0f} s after SIGKILL")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)  # quick for the usual few ms, light on a long wait
    (host_state(state_dir, name) / "pid").unlink(missing_ok=True)


def run_on(state_dir: Path, name: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run argv as root inside a running host, through its namespaces (no SSH)."""
    pid = running_pid(state_dir, name)
    if pid is None:
        raise OutpostError(f"fleet host {name} is down; start it with `doit fleet:up`")
    kwargs.setdefault("env", HOST_ENVIRONMENT)
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    return subprocess.run(["nsenter", "-t", str(pid), "-a", "--", *argv], **kwargs)
