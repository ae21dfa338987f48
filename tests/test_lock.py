"""The project lock and the dependency-file check, without a fleet."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import run_doit
from outpost import depfile, lock

HOLDER = """
import sys, time
from pathlib import Path
from outpost import lock
lock.ProjectLock(Path(sys.argv[1])).hold()
print("held", flush=True)
time.sleep(60)
"""


def start_holder(path):
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                             text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_second_process_is_refused_at_once_naming_the_holder(tmp_path):
    path = tmp_path / "build" / "outpost.lock"
    holder = start_holder(path)
    try:
        with pytest.raises(lock.LockHeld) as refused:
            lock.ProjectLock(path).hold()
        message = str(refused.value)
        assert f"process {holder.pid}" in message
        assert str(path) in message and "since" in message and "s ago" in message
        assert f"kill -INT {holder.pid}" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_nothing_behind(tmp_path):
    path = tmp_path / "outpost.lock"
    holder = start_holder(path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    mine = lock.ProjectLock(path)
    mine.hold()  # no stale lock to clear
    assert mine.held
    assert json.loads(path.read_text())["pid"] == os.getpid()


def test_hold_is_once_per_process_from_any_thread(tmp_path):
    mine = lock.ProjectLock(tmp_path / "outpost.lock")
    mine.hold()
    mine.hold()
    assert mine.held


def test_held_message_without_a_record_yet():
    assert "has not said who it is" in lock.held_message("x.lock", "", time.time())


def make_depfile(path, rows):
    connection = sqlite3.connect(path)
    connection.execute("create table doit (task_id text not null primary key, task_data json)")
    connection.executemany("insert into doit values (?, ?)", rows)
    connection.commit()
    connection.close()


def test_a_sound_dependency_file_passes(tmp_path):
    path = tmp_path / depfile.NAME
    depfile.check(path)  # none yet: fine
    make_depfile(path, [("build:noarch", json.dumps({"a": 1}))])
    depfile.check(path)


@pytest.mark.parametrize("damage", ["garbage", "cut", "bad json", "not doit's"])
def test_a_damaged_dependency_file_is_one_line_with_the_fix(tmp_path, damage):
    path = tmp_path / depfile.NAME
    if damage == "bad json":
        make_depfile(path, [("upgrade:au", '{"installed": ')])
    elif damage == "not doit's":
        connection = sqlite3.connect(path)
        connection.execute("create table other (x)")
        connection.commit()
        connection.close()
    else:
        make_depfile(path, [(f"t{n}", json.dumps({"v": "x" * 500})) for n in range(200)])
        data = path.read_bytes()
        path.write_bytes(b"not a database at all" * 50 if damage == "garbage"
                         else data[:len(data) // 3] + b"\0" * 1000 + data[len(data) // 2:])
    with pytest.raises(depfile.DamagedDepFile) as damaged:
        depfile.check(path)
    message = str(damaged.value)
    assert "\n" not in message
    assert f"rm {path}" in message and "damaged" in message


def test_real_doit_on_a_damaged_dependency_file_says_one_line_with_the_fix(project):
    # A record cut in the middle and filled with zeros: what a full disk or a bad copy leaves.
    run_doit(project, "list")  # doit makes the file
    connection = sqlite3.connect(project / depfile.NAME)
    connection.executemany("insert into doit values (?, ?)",
                           [(f"t{n}", json.dumps({"v": "x" * 500})) for n in range(200)])
    connection.commit()
    connection.close()
    data = (project / depfile.NAME).read_bytes()
    (project / depfile.NAME).write_bytes(data[:len(data) // 3] + b"\0" * 1000
                                         + data[len(data) // 2:])
    # Commands that read the record (never one that could reach a host, should the check fail).
    for command in (["list", "--status"], ["info", "deploy"]):
        proc = run_doit(project, *command, check=False)
        assert proc.returncode != 0, command
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, (command, proc.stderr)
        assert lines[0].startswith(f"outpost: doit's dependency file {depfile.NAME} is damaged")
        assert f"rm {depfile.NAME}" in lines[0]
    (project / depfile.NAME).unlink()  # the fix it names
    assert run_doit(project, "list", "--status").returncode == 0


def test_the_readme_says_what_the_lock_covers_and_never_that_there_is_none():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "**One run at a time.**" in text and "build/outpost.lock" in text
    assert "no deploy lock" not in text
