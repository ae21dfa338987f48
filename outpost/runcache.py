"""The one per-run cache (probe.RUN holds the run's): what a run has asked its hosts, kept for
the rest of the run."""
from __future__ import annotations

import threading
import time


class RunCache:
    """What this run has already asked. Each question is asked once, also when threads (doit
    runs the hosts' tasks in threads) ask it at the same moment: the others wait for the first
    one's answer. A failure is not kept: the next caller asks again. A run is one process, so
    nothing here outlives it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict = {}  # key -> [lock, answered at (monotonic) or None, answer]

    def get(self, key, make, max_age: float | None = None):
        """The answer kept for key, or make()'s, kept; an answer older than max_age seconds
        is asked again."""
        with self._lock:
            entry = self._entries.setdefault(key, [threading.Lock(), None, None])
        with entry[0]:
            if entry[1] is None or (max_age is not None and time.monotonic() - entry[1] >= max_age):
                entry[2] = make()
                entry[1] = time.monotonic()
            return entry[2]

    def forget(self, kind: str):
        """Forget every answer whose key starts with kind (a test that restarts a server)."""
        with self._lock:
            for key in [k for k in self._entries if k[0] == kind]:
                del self._entries[key]
