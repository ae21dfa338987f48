"""outpost.remote against a real OpenSSH sshd on 127.0.0.1 (a random port, a throwaway host
key, our own authorized_keys; it logs in as the current user). Needs root and
`apt-get install openssh-server rsync`.
"""
import base64
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from outpost import openssh, remote, sshconnect
from outpost.commands import base
from outpost.inventory import Host, Ssh
from outpost.remote import RemoteError

REPO = Path(__file__).resolve().parents[1]
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f",
                    str(path)], check=True)
    return path.with_name(path.name + ".pub").read_text().strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Sshd:
    dir: Path
    port: int
    host_public_key: str
    log: Path

    def accepted(self) -> int:
        """How many logins sshd has accepted so far: one per SSH connection."""
        return self.log.read_text().count("Accepted publickey")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not os.path.exists(SSHD) or not shutil.which("ssh-keygen"):
        pytest.fail("these tests need OpenSSH's sshd: apt-get install openssh-server")
    if not shutil.which("rsync"):
        pytest.fail("these tests need rsync: apt-get install rsync")
    assert os.geteuid() == 0, "sshd needs root to switch to the logged-in user"
    folder = tmp_path_factory.mktemp("sshd")
    host_public_key = keygen(folder / "host_key")
    (folder / "authorized_keys").write_text(keygen(folder / "client_key") + "\n")
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {folder}/host_key
PidFile {folder}/sshd.pid
AuthorizedKeysFile {folder}/authorized_keys
# The files live under /tmp, which StrictModes would reject as world-writable.
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel VERBOSE
""")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    assert check.returncode == 0, f"sshd -t: {check.stderr}"
    log = folder / "sshd.log"
    log.touch()
    proc = subprocess.Popen([SSHD, "-D", "-f", str(config), "-E", str(log)])
    try:
        wait_for_port(port, proc, log)
        yield Sshd(folder, port, host_public_key, log)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def wait_for_port(port, proc, log):
    for _ in range(200):
        if proc.poll() is not None:
            pytest.fail(f"sshd exited {proc.returncode}: {log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"sshd never listened on port {port}: {log.read_text()}")


@pytest.fixture(autouse=True)
def fresh_connections():
    remote.close_all()
    yield
    remote.close_all()


def make_host(port):
    return Host(name="testhost", address="127.0.0.1", user=pwd.getpwuid(os.geteuid()).pw_name,
                port=port, arch="x86_64", region="here", groups=())


@pytest.fixture
def target(sshd, tmp_path):
    """(host, ssh) that reach the test sshd, with its key pinned."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{sshd.port} {sshd.host_public_key}\n")
    ssh = Ssh(known_hosts=known_hosts, identity=sshd.dir / "client_key", connect_timeout=5,
              command_timeout=30)
    return make_host(sshd.port), ssh


def console_fingerprint(public_key: Path) -> str:
    """What `ssh-keygen -lf` shows for a key on the host's console: "SHA256:..." """
    shown = subprocess.run(["ssh-keygen", "-lf", str(public_key)], capture_output=True,
                           text=True, check=True).stdout
    return shown.split()[1]


def presents(sshd) -> str:
    """The part of a refusal that names the test sshd's key and the command that checks it."""
    return (f"It presents the ED25519 key {console_fingerprint(sshd.dir / 'host_key.pub')}; "
            "if `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on the host's console shows "
            "the same, ")


def pin_other_key(ssh, tmp_path):
    """ssh with a known_hosts that pins a different key for the same host and port."""
    line = ssh.known_hosts.read_text().split()
    other = keygen(tmp_path / "other_host_key")
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"{line[0]} {other}\n")
    return replace(ssh, known_hosts=changed)


# --- import cost ------------------------------------------------------------------------------

def test_importing_remote_loads_neither_fabric_nor_paramiko():
    code = ("import sys, outpost.remote, outpost.commands.base\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in"
            " ('fabric', 'paramiko', 'invoke')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


# --- run_script -------------------------------------------------------------------------------

def test_scripts_share_one_connection(sshd, target):
    host, ssh = target
    before = sshd.accepted()
    script = "set -eu\nword=\"it's $HOME\"\nprintf '%s\\n' \"$word\"\necho to-stderr >&2\n"
    first = remote.run_script(host, script, ssh, step="sync")
    assert first.stdout == f"it's {pwd.getpwuid(os.geteuid()).pw_dir}\n"
    assert first.stderr == "to-stderr\n"
    assert first.exited == 0
    # stdin is /dev/null: a command that reads it ends instead of waiting.
    assert remote.run_script(host, "cat; echo done", ssh).stdout == "done\n"
    assert remote.run_script(host, "echo third", ssh).stdout == "third\n"
    assert sshd.accepted() - before == 1

    remote.close_all()
    remote.run_script(host, "true", ssh)
    assert sshd.accepted() - before == 2


def test_failing_script_names_host_step_and_stderr(target):
    host, ssh = target
    with pytest.raises(RemoteError) as caught:
        remote.run_script(host, "echo out; echo 'apk: no such package' >&2; exit 3", ssh,
                          step="upgrade")
    message = str(caught.value)
    assert message.startswith("upgrade on host testhost (127.0.0.1) failed (exit 3)")
    assert "apk: no such package" in message
    assert "out" not in message.replace("upgrade", "")


def test_script_is_not_on_any_command_line(target):
    # Scripts carry secrets (config's carry the site's TLS key): every user of a host can read
    # command lines in /proc, so the script goes over stdin.
    host, ssh = target
    script = ("# marker token-9f3a\n"
              "if grep -qa -e 'token-9f3[a]' /proc/[0-9]*/cmdline; then echo seen; "
              "else echo unseen; fi\n")
    assert remote.run_script(host, script, ssh).stdout == "unseen\n"


def test_command_timeout(target):
    host, ssh = target
    with pytest.raises(RemoteError, match=r"upgrade on host testhost .*did not finish within "
                                          r"0.5 s"):
        remote.run_script(host, "sleep 5", replace(ssh, command_timeout=0.5), step="upgrade")


def test_changed_host_key_is_refused_and_nothing_runs(sshd, target, tmp_path):
    host, ssh = target
    ssh = pin_other_key(ssh, tmp_path)
    marker = tmp_path / "ran"
    before = sshd.accepted()
    with pytest.raises(RemoteError) as caught:
        remote.run_script(host, f"touch {marker}", ssh, step="sync")
    assert str(caught.value) == (
        f"host key for testhost (127.0.0.1) does not match the pinned key in {ssh.known_hosts}; "
        f"nothing was sent to it. {presents(sshd)}the host was rebuilt: replace its line in "
        f"{ssh.known_hosts}")
    assert not marker.exists()
    assert sshd.accepted() == before  # refused before authenticating


def test_unknown_host_is_refused_and_nothing_runs(sshd, target, tmp_path):
    host, ssh = target
    other_port = tmp_path / "other_port_known_hosts"
    other_port.write_text(f"[127.0.0.1]:{sshd.port + 1} {sshd.host_public_key}\n"
                          f"127.0.0.1 {sshd.host_public_key}\n")
    marker = tmp_path / "ran"
    before = sshd.accepted()
    with pytest.raises(RemoteError) as caught:
        remote.run_script(host, f"touch {marker}", replace(ssh, known_hosts=other_port))
    assert str(caught.value) == (
        f"host key for testhost (127.0.0.1) is unknown: {other_port} has no line for "
        f"[127.0.0.1]:{sshd.port}; nothing was sent to it. {presents(sshd)}add the host's line "
        f"to {other_port}")
    assert not marker.exists()
    assert sshd.accepted() == before


def test_the_client_refuses_an_unpinned_key_by_its_own_policy(sshd, target, tmp_path):
    # Straight to Fabric's open(), past everything else of Outpost's: the paramiko client it
    # builds must refuse the key by itself (Fabric's own default accepts any key).
    from paramiko import RejectPolicy

    host, ssh = target
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    connection = sshconnect.pinned_connection(host, replace(ssh, known_hosts=empty), "sync")
    assert isinstance(connection.client._policy, RejectPolicy)
    before = sshd.accepted()
    try:
        with pytest.raises(RemoteError) as caught:
            connection.open()
        assert not connection.is_connected
    finally:
        connection.close()
    assert presents(sshd) in str(caught.value)
    assert sshd.accepted() == before


def test_missing_or_broken_known_hosts_file(target, tmp_path):
    host, ssh = target
    missing = tmp_path / "nope" / "known_hosts"
    with pytest.raises(RemoteError, match=rf"host testhost .*cannot read the pinned host keys "
                                          rf"in {missing}"):
        remote.run_script(host, "true", replace(ssh, known_hosts=missing))
    ssh.known_hosts.write_text("127.0.0.1 ssh-ed25519 AAAAC3Nza-not-base64\n")
    with pytest.raises(RemoteError, match=rf"{ssh.known_hosts}: not a valid known_hosts line"):
        remote.run_script(host, "true", ssh)


def test_wrong_identity_is_an_authentication_failure(target, tmp_path):
    host, ssh = target
    keygen(tmp_path / "stranger")
    with pytest.raises(RemoteError, match=r"content on host testhost \(127.0.0.1\): \w+@127.0.0.1"
                                          r" port \d+ refused the key .*stranger"):
        remote.run_script(host, "true", replace(ssh, identity=tmp_path / "stranger"),
                          step="content")


def test_a_missing_identity_file_is_named_not_an_authentication_failure(target, tree, tmp_path):
    host, ssh = target
    missing = replace(ssh, identity=tmp_path / "no-such-key")
    said = (rf"content on host testhost \(127.0.0.1\): the SSH identity {tmp_path}/no-such-key "
            r"does not exist \(identity in \[ssh\]\)$")
    with pytest.raises(RemoteError, match=said):  # a script with a payload, as content's push
        remote.run_script(host, "true", missing, step="content", payload=b"x")
    with pytest.raises(RemoteError, match=said):  # rsync's relay
        remote.relay_command(host, missing, step="content")
    with pytest.raises(RemoteError, match=said):
        remote.run_script(host, "true", missing, step="content")


def test_closed_port_is_unreachable(sshd, target, tmp_path):
    host, ssh = target
    closed = replace(host, port=free_port())
    # The known_hosts has a line for it, so only reaching it can fail.
    ssh.known_hosts.write_text(f"[127.0.0.1]:{closed.port} {sshd.host_public_key}\n")
    with pytest.raises(RemoteError, match=rf"sync on host testhost \(127.0.0.1\): cannot reach "
                                          rf"127.0.0.1 port {closed.port}: connection refused"):
        remote.run_script(closed, "true", ssh, step="sync")


def test_silent_port_fails_at_the_connect_timeout(sshd, target):
    host, ssh = target
    with socket.socket() as silent:  # accepts TCP (backlog) but never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        ssh.known_hosts.write_text(f"[127.0.0.1]:{port} {sshd.host_public_key}\n")
        with pytest.raises(RemoteError, match=rf"cannot reach 127.0.0.1 port {port}: "
                                              rf"no SSH handshake within 0.5 s"):
            remote.run_script(replace(host, port=port), "true",
                              replace(ssh, connect_timeout=0.5))


# --- rsync on a channel of the run's connection ----------------------------------------------

@pytest.fixture
def tree(tmp_path):
    src = tmp_path / "src"
    (src / "x86_64").mkdir(parents=True)
    (src / "x86_64" / "Packages.adb").write_bytes(b"ADB index")
    os.link(src / "x86_64" / "Packages.adb", src / "x86_64" / "APKINDEX.tar.gz")
    (src / "x86_64" / "old.apk").write_bytes(b"old")
    return src


def rsync(tree, host, dest, ssh, step=None, **options):
    """What the sync step does: rsync over the relay to the run's connection."""
    argv = base.rsync_argv(tree, host, str(dest), ssh, remote.relay_command(host, ssh, step),
                           **options)
    return remote.run_local(argv, host, ssh, step=step)


def test_rsync_keeps_hardlinks_and_deletes(target, tree, tmp_path):
    host, ssh = target
    dest = tmp_path / "repo"
    rsync(tree, host, dest, ssh, "sync", hardlinks=True)
    index = dest / "x86_64" / "Packages.adb"
    assert index.read_bytes() == b"ADB index"
    assert index.stat().st_ino == (dest / "x86_64" / "APKINDEX.tar.gz").stat().st_ino
    assert (dest / "x86_64" / "old.apk").exists()

    (tree / "x86_64" / "old.apk").unlink()
    rsync(tree, host, dest, ssh, "sync", hardlinks=True)
    assert not (dest / "x86_64" / "old.apk").exists()


def test_scripts_payloads_and_rsync_share_one_login(sshd, target, tree, tmp_path):
    host, ssh = target
    before = sshd.accepted()
    remote.run_script(host, "true", ssh, step="sync")
    rsync(tree, host, tmp_path / "one", ssh, "sync")
    rsync(tree, host, tmp_path / "two", ssh, "sync")
    remote.run_script(host, "cat > /dev/null", ssh, step="content", payload=b"x" * 100_000)
    assert (tmp_path / "two" / "x86_64" / "old.apk").read_bytes() == b"old"
    assert sshd.accepted() - before == 1


def test_rsync_first_opens_the_connection_itself(sshd, target, tree, tmp_path):
    host, ssh = target
    before = sshd.accepted()
    rsync(tree, host, tmp_path / "d", ssh, "sync")
    remote.run_script(host, "true", ssh)
    assert sshd.accepted() - before == 1


def test_the_relays_socket_is_private_and_gone_after_the_run(target, tree, tmp_path):
    host, ssh = target
    relay_argv = remote.relay_command(host, ssh, "sync")
    folder = Path(relay_argv[-1]).parent
    assert folder.stat().st_mode & 0o777 == 0o700 and folder.stat().st_uid == os.getuid()
    remote.close_all()
    assert not folder.exists()


def test_rsync_refuses_a_changed_host_key(sshd, target, tree, tmp_path):
    host, ssh = target
    ssh = pin_other_key(ssh, tmp_path)
    dest = tmp_path / "dest"
    before = sshd.accepted()
    with pytest.raises(RemoteError) as caught:
        rsync(tree, host, dest, ssh, "content")
    assert str(caught.value) == (
        f"host key for testhost (127.0.0.1) does not match the pinned key in {ssh.known_hosts}; "
        f"nothing was sent to it. {presents(sshd)}the host was rebuilt: replace its line in "
        f"{ssh.known_hosts}")
    assert not dest.exists()
    assert sshd.accepted() == before


def test_rsync_refuses_an_unknown_host(sshd, target, tree, tmp_path):
    host, ssh = target
    ssh.known_hosts.write_text("")
    with pytest.raises(RemoteError) as caught:
        rsync(tree, host, tmp_path / "d", ssh)
    assert str(caught.value) == (
        f"host key for testhost (127.0.0.1) is unknown: "
        f"{ssh.known_hosts} has no line for [127.0.0.1]:{sshd.port}; nothing was sent to it. "
        f"{presents(sshd)}add the host's line to {ssh.known_hosts}")
    assert not (tmp_path / "d").exists()


def test_rsync_wrong_identity_and_closed_port(target, tree, tmp_path):
    host, ssh = target
    keygen(tmp_path / "stranger")
    stranger = replace(ssh, identity=tmp_path / "stranger")
    with pytest.raises(RemoteError, match=r"refused the key .*stranger \(authentication"):
        rsync(tree, host, tmp_path / "d", stranger)

    closed = replace(host, port=free_port())
    with pytest.raises(RemoteError, match=rf"sync on host testhost \(127.0.0.1\): cannot reach "
                                          rf"127.0.0.1 port {closed.port}: connection refused"):
        rsync(tree, closed, tmp_path / "d", ssh, "sync")


def test_rsync_failure_on_the_host_names_the_exit_code(target, tree):
    host, ssh = target
    # The destination's parent is a file: rsync on the host can't create the folder.
    with pytest.raises(RemoteError, match=r"content on host testhost \(127.0.0.1\): rsync exited"
                                          r" \d+ \(.+\):\n  .*"):
        rsync(tree, host, "/etc/hostname/sub", ssh, "content")


def test_a_connection_lost_under_rsync_is_rsyncs_failure_with_the_relays_reason(target, tree,
                                                                                tmp_path):
    host, ssh = target
    argv = base.rsync_argv(tree, host, str(tmp_path / "d"), ssh,
                           remote.relay_command(host, ssh, "sync"))
    remote._links[(host, ssh)].connection.close()  # the host went away after the login
    with pytest.raises(RemoteError) as caught:
        remote.run_local(argv, host, ssh, step="sync")
    said = str(caught.value)
    assert said.startswith("sync on host testhost (127.0.0.1): rsync exited "), said
    assert "outpost relay: " in said


def test_stop_children_ends_rsync_and_its_relay(target, tmp_path):
    host, ssh = target
    # A "remote rsync" that never answers: rsync waits on the relay, the relay on the host.
    rsh = remote.relay_command(host, ssh, "sync")
    argv = ["rsync", "-a", "--rsync-path=sleep 600; rsync", "-e", " ".join(rsh), f"{tmp_path}/",
            f"{host.user}@{host.address}:{tmp_path}/never/"]
    done = []
    runner = threading.Thread(target=lambda: done.append(_failure(
        lambda: remote.run_local(argv, host, ssh, step="sync"))))
    runner.start()
    deadline = time.monotonic() + 20
    while not _running(rsh[-1]):
        assert time.monotonic() < deadline, "the relay never started"
        time.sleep(0.05)
    assert remote.stop_children() == 1
    runner.join(20)
    assert not runner.is_alive() and isinstance(done[0], RemoteError)
    assert not _running(rsh[-1])


def _failure(call):
    try:
        call()
    except Exception as error:
        return error


def _running(socket_path: str) -> bool:
    """A relay to that socket is running."""
    found = subprocess.run(["pgrep", "-f", "--", f"outpost.relay {socket_path}"],
                           capture_output=True)
    return found.returncode == 0


# --- a script with a payload after it, in the same round trip -------------------------------

def test_a_script_reads_the_payload_after_it_in_one_login(sshd, target, tmp_path):
    host, ssh = target
    before = sshd.accepted()
    payload = bytes(range(256)) * 4096 + b"\nno newline at the end"
    out = tmp_path / "payload"
    result = remote.run_script(host, f"set -eu\ncat > {out}\necho got $(wc -c < {out})", ssh,
                               step="content", payload=payload)
    assert out.read_bytes() == payload
    assert result.stdout == f"got {len(payload)}\n"
    assert sshd.accepted() == before + 1


def test_a_failing_script_raises_script_failed_with_its_exit_status_and_stderr(target):
    host, ssh = target
    for payload in (None, b"data"):
        with pytest.raises(remote.ScriptFailed) as caught:
            remote.run_script(host, "echo the base is gone >&2; exit 75", ssh, step="content",
                              payload=payload)
        assert caught.value.exited == 75
        assert str(caught.value) == ("content on host testhost (127.0.0.1) failed (exit 75):\n"
                                     "  the base is gone")


def test_a_login_started_early_is_the_one_the_script_uses(sshd, target):
    host, ssh = target
    before = sshd.accepted()
    remote.connect_soon(host, ssh, "content")
    remote.connect_soon(host, ssh, "content")
    assert remote.run_script(host, "echo hi", ssh, step="content").stdout == "hi\n"
    assert sshd.accepted() - before == 1


def test_a_failed_early_login_is_raised_once_not_tried_again(sshd, target):
    host, ssh = target
    with socket.socket() as silent:  # accepts TCP (backlog) but never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        ssh.known_hosts.write_text(f"[127.0.0.1]:{port} {sshd.host_public_key}\n")
        quiet, slow = replace(host, port=port), replace(ssh, connect_timeout=0.5)
        remote.connect_soon(quiet, slow, "content")
        with pytest.raises(RemoteError, match=rf"^content on host testhost \(127.0.0.1\): "
                                              rf"cannot reach 127.0.0.1 port {port}: no SSH"):
            remote.run_script(quiet, "true", slow, step="content")
        silent.setblocking(False)
        tried = 0
        while True:
            try:
                silent.accept()[0].close()
                tried += 1
            except BlockingIOError:
                break
        assert tried == 1


# --- host key fingerprints and the programs' environment (pure) ------------------------------

@pytest.mark.parametrize("key_type, kind", [
    ("ssh-ed25519", "ed25519"), ("ED25519", "ed25519"),
    ("ecdsa-sha2-nistp256", "ecdsa"), ("ecdsa-sha2-nistp521", "ecdsa"), ("ECDSA", "ecdsa"),
    ("ssh-rsa", "rsa"), ("rsa-sha2-512", "rsa"), ("RSA", "rsa"), ("ssh-dss", "dsa"),
])
def test_key_kind_names_sshds_key_file(key_type, kind):
    assert openssh.key_kind(key_type) == kind


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa", "rsa"])
def test_fingerprint_is_what_ssh_keygen_shows(tmp_path, key_type):
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(tmp_path / "key")],
                   check=True)
    public = tmp_path / "key.pub"
    blob = base64.b64decode(public.read_text().split()[1])
    assert openssh.fingerprint(blob) == console_fingerprint(public)


def test_program_environment_is_fixed():
    assert openssh.program_environment("/home/wes", ["/opt/rsync/bin/rsync", None,
                                                    "/usr/bin/ssh-keyscan"]) == {
        "PATH": "/opt/rsync/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/bin",
        "HOME": "/home/wes", "LANG": "C", "LC_ALL": "C"}


OPERATOR_ENVIRONMENT = {"RSYNC_OLD_ARGS": "1", "RSYNC_PROTECT_ARGS": "0",
                        "RSYNC_RSH": "ssh -o StrictHostKeyChecking=no",
                        "SSH_AUTH_SOCK": "/tmp/agent.sock", "LD_PRELOAD": "/tmp/x.so",
                        "LANG": "de_DE.UTF-8"}


@pytest.fixture
def operator_environment(monkeypatch):
    """Variables in the operator's shell that would change what rsync and ssh do."""
    for name, value in OPERATOR_ENVIRONMENT.items():
        monkeypatch.setenv(name, value)


def test_local_programs_run_with_the_fixed_environment_only(target, operator_environment):
    host, ssh = target
    shown = remote.run_local(["env"], host, ssh).stdout
    environment = dict(line.split("=", 1) for line in shown.splitlines())
    assert environment == openssh.program_environment(
        pwd.getpwuid(os.getuid()).pw_dir, [shutil.which(p) for p in openssh.LOCAL_PROGRAMS])
    assert set(environment) == {"PATH", "HOME", "LANG", "LC_ALL"}


# --- a crafted remote path, with the operator's RSYNC_OLD_ARGS=1 -----------------------------

def crafted_destination(base: Path) -> tuple[str, Path]:
    """A destination on the host that a shell would split, and in which it would run
    `touch <base>/ran` twice (after a ';' and in a '$()'); and that marker. Its parent
    folders are made here, so the literal path can be created by rsync as one folder."""
    marker = base / "ran"
    parent = Path(f"{base}/two words;touch {marker};$(touch {marker})")
    parent.mkdir(parents=True)
    return f"{parent}/dest", marker


def test_a_crafted_path_reaches_the_host_as_one_literal_path(target, tree, tmp_path,
                                                             monkeypatch):
    host, ssh = target
    monkeypatch.setenv("RSYNC_OLD_ARGS", "1")  # rsync's old way: paths through the host's shell
    dest, marker = crafted_destination(tmp_path)
    rsync(tree, host, dest, ssh, "sync")
    assert (Path(dest) / "x86_64" / "Packages.adb").read_bytes() == b"ADB index"
    assert not marker.exists()


def test_secluded_args_alone_keep_the_path_literal(target, tree, tmp_path):
    # The operator's whole environment, RSYNC_OLD_ARGS=1 included: -s still wins.
    host, ssh = target
    dest, marker = crafted_destination(tmp_path)
    argv = base.rsync_argv(tree, host, dest, ssh, remote.relay_command(host, ssh))
    subprocess.run(argv, env={**os.environ, "RSYNC_OLD_ARGS": "1"}, check=True,
                   capture_output=True)
    assert (Path(dest) / "x86_64" / "Packages.adb").exists()
    assert not marker.exists()


def test_the_fixed_environment_alone_keeps_the_path_literal(target, tree, tmp_path,
                                                            monkeypatch):
    host, ssh = target
    unprotected = [arg for arg in base.rsync_argv(tree, host, "DEST", ssh,
                                                  remote.relay_command(host, ssh))
                   if arg != "-s"]
    # Without -s and with the operator's RSYNC_OLD_ARGS=1, the host's shell runs the path:
    # what the two guards are for (and proof that this test can see it).
    dest, marker = crafted_destination(tmp_path / "inherited")
    subprocess.run([arg.replace("DEST", dest) for arg in unprotected],
                   env={**os.environ, "RSYNC_OLD_ARGS": "1"}, capture_output=True)
    assert marker.exists()

    monkeypatch.setenv("RSYNC_OLD_ARGS", "1")
    dest, marker = crafted_destination(tmp_path / "fixed")
    remote.run_local([arg.replace("DEST", dest) for arg in unprotected], host, ssh)
    assert (Path(dest) / "x86_64" / "Packages.adb").exists()
    assert not marker.exists()
