"""A job the host finishes by itself, built by a pure function: the upgrade's install, health
gate and way back must not die with the SSH session that started them. A deploy machine that
goes away mid-gate (Ctrl-C, kill -9, a lost network) would otherwise leave the host on a
version that failed its gate, with dinit giving up on the service.

The session's script (detached_script) writes the job to a file in JOBS (in the SSH user's
home) and starts it with nohup, its stdin, stdout and stderr on files: nothing of the session
is left for it to die of (sshd closing the pipes, a SIGHUP). The session then only waits for
the job, prints what the job printed and exits with the job's status, and removes the job's
files once that output is out.

A session that is cut leaves the job running and its output in JOBS (sshd sends the job no
signal: it would die only writing to the session's pipes, and it has none). The next session for
the same job name waits for it to end first (two never run at once), prints its output with
each `outpost: LINE` as `outpost: earlier LINE`, and removes it. Files, per job NAME.ID (ID
the starting session's shell PID):

    NAME.ID.sh    the job          NAME.ID.out   its stdout, then `outpost: exit STATUS`
    NAME.ID.pid   its PID          NAME.ID.err   its stderr
"""
from __future__ import annotations

JOBS = ".outpost/jobs"  # under the SSH user's home: no root command is needed
EARLIER = "earlier"
_END = "OUTPOST_JOB_END"


def detached_script(name: str, job: str) -> str:
    """The session's script for `job` (a POSIX sh script): wait for and print an earlier
    session's NAME job, start this one detached, wait for it, print its output (stderr on
    stderr), exit with its status."""
    if any(line == _END for line in job.splitlines()):
        raise ValueError(f"a job may not hold a line {_END!r}")
    return f"""set -u
mkdir -p "$HOME/{JOBS}" && cd "$HOME/{JOBS}" || exit 1
# Its output printed: removed. Not before, for a session cut meanwhile (its writes fail)
# leaves the job's output to the next session.
outpost_job_done() {{
  rm -f "$outpost_job.sh" "$outpost_job.out" "$outpost_job.err" "$outpost_job.pid"
}}
# Not ended: no exit line yet, and its PID is still that job's (not a zombie, not reused).
outpost_job_runs() {{
  ! grep -q '^outpost: exit ' "$1.out" 2>/dev/null \\
    && grep -qF "$1.sh" "/proc/$(cat "$1.pid" 2>/dev/null)/cmdline" 2>/dev/null
}}
for outpost_job in {name}.*.out; do
  [ -e "$outpost_job" ] || continue
  outpost_job=${{outpost_job%.out}}
  while outpost_job_runs "$outpost_job"; do sleep 0.2; done
  sed -n 's/^outpost: /outpost: {EARLIER} /p' "$outpost_job.out" && outpost_job_done
done
outpost_job={name}.$$
cat > "$outpost_job.sh" <<'{_END}'
{job.rstrip(chr(10))}
{_END}
nohup sh -c 'sh "$1"; echo "outpost: exit $?"' sh "$outpost_job.sh" \\
  > "$outpost_job.out" 2> "$outpost_job.err" < /dev/null &
echo $! > "$outpost_job.pid"
wait $!
outpost_status=$(sed -n 's/^outpost: exit //p' "$outpost_job.out")
cat "$outpost_job.err" >&2 && sed '/^outpost: exit /d' "$outpost_job.out" && outpost_job_done
exit "${{outpost_status:-1}}"
"""
