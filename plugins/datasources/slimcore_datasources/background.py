"""A data source as the core sees it: an iterator of batches with `state_dict()` and
`load_state_dict()`.

Batches are made on a background thread (tokenization and packing overlap the training
step), each paired with the source's state just after it; `state_dict()` is the state that
goes with the last batch handed to the trainer, so a checkpoint never counts batches that
were made ahead but not trained on.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref
from typing import Any, Callable, Iterator

from slimcore import Batch

BATCHES_AHEAD = 4
JOIN_TIMEOUT_S = 30.0
_END = object()
_LIVE: "weakref.WeakSet[BackgroundBatches]" = weakref.WeakSet()

Producer = Callable[[dict | None], Iterator[tuple[Batch, dict]]]


class BackgroundBatches:
    def __init__(self, produce: Producer, name: str):
        self.produce = produce
        self.name = name
        self.state: dict[str, Any] | None = None
        self.queue: queue.Queue = queue.Queue(maxsize=BATCHES_AHEAD)
        self.closed = threading.Event()
        self.thread: threading.Thread | None = None

    def state_dict(self) -> dict[str, Any] | None:
        """The state after the last batch taken; None before the first (and no restore)."""
        return self.state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.thread is not None:
            raise RuntimeError(f"{self.name}: load_state_dict() after batches were drawn")
        self.state = state

    def __iter__(self) -> "BackgroundBatches":
        return self

    def __next__(self) -> Batch:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, args=(self.state,), daemon=True,
                                           name=f"slimcore_{self.name}_batches")
            self.thread.start()
            _LIVE.add(self)
        item = self.queue.get()
        if item is _END:
            self.queue.put(_END)  # stays exhausted
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        batch, self.state = item
        return batch

    def close(self) -> None:
        """Stop making batches and wait for the thread (a thread left inside SentencePiece's
        C++ encoder at interpreter exit aborts the process)."""
        self.closed.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=JOIN_TIMEOUT_S)

    def _run(self, start: dict | None) -> None:
        batches = None
        try:
            batches = self.produce(start)
            for item in batches:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as e:  # noqa: BLE001 - raised in the consumer's thread
            self._put(e)
        finally:
            if batches is not None:
                batches.close()  # down the chain: the record reader stops and is joined

    def _put(self, item) -> bool:
        while not self.closed.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False


@atexit.register
def _close_live_sources() -> None:
    for source in list(_LIVE):
        source.close()
