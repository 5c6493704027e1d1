"""SIGTERM and SIGINT stop a run gracefully: the current step finishes, a checkpoint is
saved, the JSON is flushed, and the process exits with 128 + the signal number (143 for
SIGTERM, 130 for SIGINT), as schedulers expect. A second signal exits at once.
"""

from __future__ import annotations

import os
import signal
import sys


class GracefulStop:
    """Context manager; `requested` holds the signal number once one has arrived."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.requested: int | None = None
        self.previous = {}

    def __enter__(self):
        for signum in self.SIGNALS:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        return False

    def _handle(self, signum, frame):
        if self.requested is not None:
            print(f"slimcore: second signal ({signal.Signals(signum).name}): exiting now",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.requested = signum
        print(f"slimcore: {signal.Signals(signum).name}: finishing this step, then saving a "
              "checkpoint (send it again to exit at once)", file=sys.stderr, flush=True)
