"""The stall watchdog: if no step completes within `run.stall_timeout_s` of the time the
process ran, dump every thread's stack (so the hang can be diagnosed), let observers flush
(`on_stall(message)`), and exit with status 3.
A hung data stream or a deadlocked collective otherwise burns a reservation silently. Time
the process was stopped (Ctrl-Z, SIGSTOP, a suspended job or virtual machine) is not a stall:
the watchdog sees it as one wake far later than it asked for, and does not count it.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time

# A wake this much later than asked for means the process was not running in between.
STOPPED_AFTER_S = 2.0


class StallWatchdog:
    def __init__(self, timeout_s: float | None, on_stall):
        self.timeout_s = timeout_s
        self.on_stall = on_stall  # on_stall(message), from the watchdog thread, before exiting
        self.last_beat = time.monotonic()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True, name="stall_watchdog")

    def __enter__(self):
        if self.timeout_s:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        return False

    def beat(self) -> None:
        """A step completed."""
        self.last_beat = time.monotonic()

    def _watch(self) -> None:
        tick = min(1.0, self.timeout_s / 4)
        woke = time.monotonic()
        while not self.done.wait(tick):
            now = time.monotonic()
            stopped = now - woke - tick
            if stopped > STOPPED_AFTER_S:
                self.last_beat += stopped  # the time it was stopped is no step's fault
            woke = now
            stalled = now - self.last_beat
            if stalled > self.timeout_s:
                message = (f"no step completed in {stalled:.0f} s (run.stall_timeout_s = "
                           f"{self.timeout_s:g})")
                print(f"slimcore: error: {message}; stacks of every thread:", file=sys.stderr,
                      flush=True)
                faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
                try:
                    self.on_stall(message)
                finally:
                    sys.stderr.flush()
                    sys.stdout.flush()
                    os._exit(3)
