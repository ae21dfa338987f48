"""outpost.frames (pure), and outpost.relay with outpost.channels around it, without SSH: the
"channel" of these tests runs the command here as a local process, so the relay, the socket
server and real rsync are the ones a deploy uses."""
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from outpost import channels, frames, relay


# --- frames -----------------------------------------------------------------------------------

def test_frames_come_out_whole_whatever_the_pieces():
    stream = (frames.frame(frames.COMMAND, b"rsync --server") + frames.frame(frames.INPUT, b"")
              + b"".join(frames.frames(frames.INPUT, bytes(range(256)) * 300))
              + frames.frame(frames.END) + frames.status_frame(23))
    for size in (1, 2, 5, 7, 4096, len(stream)):
        reader, got = frames.Reader(), []
        for at in range(0, len(stream), size):
            got += reader.feed(stream[at:at + size])
        assert not reader.pending
        assert got[0] == (frames.COMMAND, b"rsync --server")
        assert got[1] == (frames.INPUT, b"")
        data = b"".join(d for k, d in got[2:-2])
        assert data == bytes(range(256)) * 300
        assert all(len(d) <= frames.CHUNK for k, d in got[2:-2])
        assert got[-2] == (frames.END, b"")
        assert got[-1][0] == frames.STATUS and frames.status_of(got[-1][1]) == 23


def test_a_frame_cut_short_is_pending():
    reader = frames.Reader()
    assert reader.feed(frames.frame(frames.OUTPUT, b"abcdef")[:-2]) == []
    assert reader.pending


@pytest.mark.parametrize("stream", [b"Z\0\0\0\0", b"O\xff\xff\xff\xff"])
def test_what_is_not_a_frame_is_refused(stream):
    with pytest.raises(ValueError, match="not a frame"):
        frames.Reader().feed(stream)


def test_frame_refuses_unknown_kinds_and_huge_data():
    with pytest.raises(ValueError):
        frames.frame(b"Z")
    with pytest.raises(ValueError):
        frames.frame(frames.OUTPUT, b"x" * (frames.MAX_DATA + 1))


@pytest.mark.parametrize("args, command", [
    (["-l", "deploy", "198.18.0.11", "rsync", "--server", "-slHogDtpre.iLsfxCIvu", "."],
     "rsync --server -slHogDtpre.iLsfxCIvu ."),
    (["fd00::5", "rsync", "--server"], "rsync --server"),
    (["-4", "-p", "2222", "host", "echo", "a b"], "echo a b"),
])
def test_remote_command_is_what_ssh_would_run(args, command):
    assert frames.remote_command(args) == command


def test_remote_command_needs_a_host_and_a_command():
    with pytest.raises(ValueError):
        frames.remote_command(["-l", "deploy", "host"])


# --- the relay and the server, around a local "channel" --------------------------------------

class LocalChannel:
    """What channels.serve uses of a paramiko channel, running the command here: its output
    in paramiko's own buffers, with the poll pipe a channel's fileno() gives."""
    opened = []
    made = []

    def exec_command(self, command):
        from paramiko import pipe
        from paramiko.buffered_pipe import BufferedPipe

        self.proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out, self.err = BufferedPipe(), BufferedPipe()
        self._pipe = pipe.make_pipe()
        on_out, on_err = pipe.make_or_pipe(self._pipe)
        self.out.set_event(on_out)
        self.err.set_event(on_err)
        self.eof_received = self.closed = False
        self._ended = 0
        for stream, buffer in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            threading.Thread(target=self._feed, args=(stream, buffer), daemon=True).start()
        LocalChannel.opened.append(command)
        LocalChannel.made.append(self)

    def _feed(self, stream, buffer):
        while data := os.read(stream.fileno(), 4096):
            buffer.feed(data)
        self._ended += 1
        if self._ended == 2:  # as paramiko does at the channel's EOF
            self.eof_received = True
            self.out.close()
            self.err.close()
            self._pipe.set_forever()

    def fileno(self):
        return self._pipe.fileno()

    def recv(self, n):
        return self.out.read(n)

    def recv_stderr(self, n):
        return self.err.read(n)

    def recv_ready(self):
        return self.out.read_ready()

    def recv_stderr_ready(self):
        return self.err.read_ready()

    def sendall(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def shutdown_write(self):
        self.proc.stdin.close()

    def recv_exit_status(self):
        return self.proc.wait()

    def close(self):
        self.closed = True
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class LocalTransport:
    def __init__(self, refuse=None):
        self.refuse = refuse

    def open_session(self, timeout=None):
        if self.refuse:
            raise EOFError(self.refuse)
        return LocalChannel()


@pytest.fixture
def server(tmp_path):
    LocalChannel.opened, LocalChannel.made = [], []
    made = []

    def start(transport=None):
        made.append(channels.Server(str(tmp_path / "s"), lambda: transport or LocalTransport(), 5))
        return made[-1]
    yield start
    for each in made:
        each.close()


def relay_argv(path, *command):
    return [sys.executable, "-I", "-m", "outpost.relay", path, "-l", "deploy", "host", *command]


def test_the_relay_pumps_stdin_stdout_stderr_and_the_exit_status(server):
    path = server().path
    data = os.urandom(200_000)
    proc = subprocess.run(relay_argv(path, "cat; echo done >&2; exit 7"), input=data,
                          capture_output=True, timeout=30)
    assert proc.stdout == data
    assert proc.stderr == b"done\n"
    assert proc.returncode == 7
    assert LocalChannel.opened == ["cat; echo done >&2; exit 7"]


def test_a_refused_channel_is_the_relays_exit_255_with_why(server):
    path = server(LocalTransport(refuse="SSH session not active")).path
    proc = subprocess.run(relay_argv(path, "true"), capture_output=True, text=True, timeout=30)
    assert proc.returncode == relay.LOST
    assert proc.stderr == "outpost relay: SSH session not active\n"
    with pytest.raises(relay.Lost) as lost:
        relay.exchange(path, "true", b"", 5)
    assert not lost.value.started


def test_nothing_at_the_socket_is_a_lost_relay_that_ran_nothing(tmp_path):
    proc = subprocess.run(relay_argv(str(tmp_path / "none"), "true"), capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == relay.LOST and proc.stderr.startswith("outpost relay: ")
    with pytest.raises(relay.Lost) as lost:
        relay.exchange(str(tmp_path / "none"), "true", b"", 5)
    assert not lost.value.started


class Preloaded(LocalChannel):
    """A channel whose command already wrote stdout, then stderr, and ended."""

    def exec_command(self, command):
        from paramiko import pipe
        from paramiko.buffered_pipe import BufferedPipe

        self.out, self.err = BufferedPipe(), BufferedPipe()
        self._pipe = pipe.make_pipe()
        on_out, on_err = pipe.make_or_pipe(self._pipe)
        self.out.set_event(on_out)
        self.err.set_event(on_err)
        self.out.feed(b"protocol: the host failed\n")
        self.err.feed(b"why it failed\n")
        self.out.close()
        self.err.close()
        self.eof_received, self.closed = True, False
        self._pipe.set_forever()

    def recv_exit_status(self):
        return 3

    def shutdown_write(self):
        pass

    def close(self):
        self.closed = True


class PreloadedTransport:
    def open_session(self, timeout=None):
        return Preloaded()


def test_stderr_waiting_with_stdout_goes_first(server):
    # rsync ends its remote shell as soon as the protocol (stdout) says the host failed: the
    # host's reason on stderr must be out before it, or rsync never shows it.
    path = server(PreloadedTransport()).path
    order = []
    for _ in range(20):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(path)
            exited = relay.run(sock, "rsync --server", [], lambda d: order.append(("out", d)),
                               lambda d: order.append(("err", d)))
        assert exited == 3
        assert order == [("err", b"why it failed\n"), ("out", b"protocol: the host failed\n")]
        order.clear()


def test_exchange_runs_a_command_with_its_stdin(server):
    path = server().path
    assert relay.exchange(path, "wc -c; echo e >&2", b"x" * 100_000, 10) == (
        b"100000\n", b"e\n", 0)


def test_a_client_gone_before_its_answer_ends_the_command(server, tmp_path):
    path = server().path
    marker = tmp_path / "finished"
    proc = subprocess.Popen(relay_argv(path, f"cat; touch {marker}"), stdin=subprocess.PIPE)
    deadline_poll(lambda: LocalChannel.opened)
    proc.kill()  # stdin never ended: the command is waiting for it
    proc.wait()
    # The server closed the channel (here: killed the command) rather than ending its stdin,
    # which would have let it go on to the touch.
    deadline_poll(lambda: LocalChannel.made[0].proc.poll() is not None)
    assert LocalChannel.made[0].proc.returncode < 0
    assert not marker.exists()


def test_a_server_closing_when_idle_greets_no_one_more(server):
    srv = server()
    closer = threading.Thread(target=srv.close_when_idle, args=(0,))
    closer.start()
    closer.join(10)
    assert not closer.is_alive() and not Path(srv.path).exists()
    with pytest.raises(relay.Lost) as lost:
        relay.exchange(srv.path, "true", b"", 5)
    assert not lost.value.started


def test_real_rsync_through_the_relay(server, tmp_path):
    path = server().path
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a").write_bytes(os.urandom(300_000))
    (src / "b").write_text("b\n")
    os.link(src / "b", src / "b-link")
    dest = tmp_path / "dest"
    rsh = " ".join(relay_argv(path)[:5])
    subprocess.run(["rsync", "-a", "-s", "-H", "--delete", "-e", rsh, f"{src}/",
                    f"deploy@host:{dest}/"], check=True, capture_output=True, timeout=60)
    assert (dest / "sub" / "a").read_bytes() == (src / "sub" / "a").read_bytes()
    assert (dest / "b").stat().st_ino == (dest / "b-link").stat().st_ino
    assert LocalChannel.opened[0].startswith("rsync --server")


def deadline_poll(condition, seconds=10):
    import time
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
