"""The shipped sources' base: a `slimcore.DataSource` whose batches are made on a background
thread (tokenization and packing overlap the training step).

A subclass implements `produce(state)`: the batches from the position `state` on (None: from
the start), each paired with the position just after it. `state_dict()` is the position that
goes with the last batch handed to the trainer, so a checkpoint never counts batches that
were made ahead but not trained on.
"""

from __future__ import annotations

import atexit
import weakref
from typing import Any, Iterator

from slimcore import Batch, DataSource

from .stream import END, PrefetchingReader

BATCHES_AHEAD = 4
_LIVE: "weakref.WeakSet[BackgroundSource]" = weakref.WeakSet()


class BackgroundSource(DataSource):
    resumable = True

    def __init__(self, run):
        super().__init__(run)
        self.state: dict[str, Any] | None = None
        self.reader: PrefetchingReader | None = None
        self.exhausted = False

    def produce(self, state: dict | None) -> Iterator[tuple[Batch, dict]]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any] | None:
        """The state after the last batch taken; None before the first (and no restore)."""
        return self.state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.reader is not None:
            raise RuntimeError(f"{self.name}: load_state_dict() after batches were drawn")
        self.state = state

    def __next__(self) -> Batch:
        if self.exhausted:
            raise StopIteration
        if self.reader is None:
            start = self.state
            self.reader = PrefetchingReader(lambda: self.produce(start), BATCHES_AHEAD,
                                            f"slimcore_{self.name}_batches")
            _LIVE.add(self)
        item = self.reader.get()
        if item is END:
            self.exhausted = True
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        batch, self.state = item
        return batch

    def close(self) -> None:
        """Stop making batches and wait for the thread (see PrefetchingReader.stop)."""
        if self.reader is not None:
            self.reader.stop()


@atexit.register
def _close_live_sources() -> None:
    for source in list(_LIVE):
        source.close()
