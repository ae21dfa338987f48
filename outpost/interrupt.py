"""Ctrl-C during a run: one line, the rsync (and its relay) it started stopped, its SSH
connections closed, and what had finished kept.

Python's default turns SIGINT into a KeyboardInterrupt and a traceback. Here the handler ends
the children first (they run in sessions of their own, so the terminal's SIGINT does not reach
them), then raises SystemExit(130) in doit's main loop: doit still saves the record of every
task that had finished, so the next run redoes only the rest.
"""
from __future__ import annotations

import signal
import sys
import threading

INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C


def _on_interrupt(signum, frame):
    # A second Ctrl-C while this one is handled is Python's default again.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from outpost import remote
    stopped = remote.stop_children()
    sys.stderr.write(f"outpost: interrupted; stopped {stopped} rsync process"
                     f"{'' if stopped == 1 else 'es'}. Steps that had finished are kept: run "
                     "the same command again to do the rest\n")
    raise SystemExit(INTERRUPTED)


def install():
    """Handle SIGINT as above (only the main thread can set a handler)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_interrupt)
