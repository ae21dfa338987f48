"""outpost.commands.hostjob: a job the host finishes by itself, run for real with /bin/sh on
this machine as a host runs a step's script (the shell of outpost.remote's RUN_STDIN, the
script on its stdin),
in a home of its own. The session is cut for real: its shell is killed, its pipes closed."""
import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import wait_for
from outpost import remote
from outpost.commands import hostjob


@pytest.fixture
def home(tmp_path):
    return tmp_path


def session(home, script, sigpipe_ignored=False):
    """A host session running script, as sshd starts one: its own session, stdin a pipe;
    with SIGPIPE ignored (as this process has it), a write to a closed pipe fails instead of
    ending the shell."""
    proc = subprocess.Popen(shlex.split(remote.RUN_STDIN), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={"PATH": os.environ["PATH"], "HOME": str(home)},
                            start_new_session=True, restore_signals=not sigpipe_ignored)
    proc.stdin.write(script.encode())
    proc.stdin.close()
    proc.stdin = None  # sent: communicate() only reads
    return proc


# Waits for a file the test makes: the job can be held mid-way with no timing guess.
JOB = """echo "outpost: begun"
while [ ! -e "$HOME/go" ]; do sleep 0.05; done
echo "outpost: done $(cat "$HOME/go")"
echo "to stderr" >&2
exit 3
"""


def children(pid) -> list[str]:
    """The names of pid's child processes."""
    names = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(" (")[2].rpartition(") ")
        if int(rest.split()[1]) == pid:
            names.append(name)
    return names


def jobs(home):
    folder = home / hostjob.JOBS
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_the_session_prints_the_jobs_output_and_exits_with_its_status(home):
    (home / "go").write_text("now")
    proc = session(home, hostjob.detached_script("upgrade", JOB))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert out.decode().splitlines() == ["outpost: begun", "outpost: done now"]
    assert err.decode() == "to stderr\n"
    assert jobs(home) == []  # read, so removed


@pytest.mark.parametrize("cut", ["shell killed", "pipes closed"])
def test_a_cut_session_leaves_the_job_running_and_the_next_one_waits_and_prints_it(home, cut):
    first = session(home, hostjob.detached_script("upgrade", JOB),
                    sigpipe_ignored=cut == "pipes closed")
    wait_for(lambda: any(name.endswith(".out") and "begun" in (home / hostjob.JOBS / name)
                         .read_text() for name in jobs(home)), "the job to begin")
    # The session goes away as a dropped connection leaves it: its pipes closed, and its
    # shell killed or left to find out when it writes (then it must leave the job's output
    # for the next session). The job is in the shell's process group: only the shell goes.
    first.stdout.close()
    first.stderr.close()
    if cut == "shell killed":
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    [pid_file] = [name for name in jobs(home) if name.endswith(".pid")]
    job_pid = int((home / hostjob.JOBS / pid_file).read_text())
    os.kill(job_pid, 0)  # still running, held at its wait

    second = session(home, hostjob.detached_script("upgrade", 'echo "outpost: second"\n'))
    # The second session waits for the first job (its poll's sleep), and the first job only
    # ends when told to: then the second prints what it said, and only then runs its own.
    wait_for(lambda: "sleep" in children(second.pid), "the second session to wait")
    assert second.poll() is None
    (home / "go").write_text("later")
    out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert out.decode().splitlines() == [
        "outpost: earlier begun", "outpost: earlier done later", "outpost: earlier exit 3",
        "outpost: second"]
    first.wait(timeout=30)
    assert jobs(home) == []


def test_a_job_that_died_without_its_exit_line_is_printed_and_not_waited_for(home):
    first = session(home, hostjob.detached_script("upgrade", JOB))
    wait_for(lambda: any(name.endswith(".out") and "begun" in (home / hostjob.JOBS / name)
                         .read_text() for name in jobs(home)), "the job to begin")
    os.killpg(first.pid, signal.SIGKILL)  # the session, and the job with it: a host gone down
    first.communicate(timeout=30)
    [pid_file] = [name for name in jobs(home) if name.endswith(".pid")]
    job_pid = int((home / hostjob.JOBS / pid_file).read_text())
    wait_for(lambda: not os.path.exists(f"/proc/{job_pid}")
             or "Z" in open(f"/proc/{job_pid}/stat").read().rpartition(")")[2].split()[0],
             "the job to end")
    out, _ = session(home, hostjob.detached_script("upgrade", 'echo "outpost: next"\n')) \
        .communicate(timeout=30)
    assert out.decode().splitlines() == ["outpost: earlier begun", "outpost: next"]


def test_a_job_may_not_hold_the_end_line():
    with pytest.raises(ValueError, match="OUTPOST_JOB_END"):
        hostjob.detached_script("upgrade", "echo\nOUTPOST_JOB_END\n")
