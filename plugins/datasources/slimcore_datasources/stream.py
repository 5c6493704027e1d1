"""A record stream that never hangs silently.

Records are read on a background thread (so reading, decompression and parsing overlap the
training step) into a bounded queue, each paired with its position (the position to read from
next). Every record must arrive within `corpus.timeout_s`; a stall or a read error restarts the
stream after a backoff from the position after the last record delivered, so no document is
lost or repeated. After `corpus.max_retries` restarts in a row without progress the run stops
with one line.

Retries happen here, at the record level, where slimcore controls the timing; the
readers beneath (records.py) raise OSError for any failure to read bytes.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar

from slimcore import UserError

# Records read ahead per reader: enough to cover a slow read, few enough that a short run
# does not pay for reading far past what it trains on (1,024 read four passes of the bundled
# corpus ahead); and at most PREFETCH_CHARS of text, so that long documents (books run to
# megabytes) do not pile up.
PREFETCH_RECORDS = 256
PREFETCH_CHARS = 32 << 20
STOP_TIMEOUT_S = 10.0
END = object()  # the end of a reader's items
Position = TypeVar("Position")


class StreamStalled(Exception):
    pass


class PrefetchingReader:
    """Iterates `make_items()` on a daemon thread into a queue of `capacity` items and, with
    `weigh` (an item's size), of at most `budget` in all (an item larger than the budget
    still passes, alone); `get(timeout)` takes the next item (`END` at the end; an exception
    the iteration raised is handed over as the item). Also the batch thread of the sources
    (background.py).

    A reader stuck in a hung network read cannot be interrupted from Python; `abandon()`
    leaves it to finish or hang alone, and it never hands over another item."""

    def __init__(self, make_items: Callable[[], Iterable], capacity: int = PREFETCH_RECORDS,
                 name: str = "slimcore_reader", weigh: Callable[[Any], int] | None = None,
                 budget: int = PREFETCH_CHARS):
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.abandoned = threading.Event()
        self.weigh, self.budget = weigh, budget
        self.queued = 0  # the weight of what the queue holds
        self.room = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(make_items,), daemon=True,
                                       name=name)
        self.thread.start()

    def _read(self, make_items) -> None:
        items = None
        try:
            items = make_items()
            for item in items:
                if not self._put(item):
                    return
            self._put(END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer to decide
            self._put(e)
        finally:
            if hasattr(items, "close"):
                items.close()  # down a chain of generators: nested readers stop too

    def _put(self, item) -> bool:
        weight = self.weigh(item) if self.weigh and item is not END \
            and not isinstance(item, BaseException) else 0
        with self.room:
            while self.queued and self.queued + weight > self.budget:
                if self.abandoned.is_set():
                    return False
                self.room.wait(0.5)
            self.queued += weight
        while not self.abandoned.is_set():
            try:
                self.queue.put((item, weight), timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout_s: float | None = None):
        try:
            item, weight = self.queue.get(timeout=timeout_s)
        except queue.Empty:
            raise StreamStalled(f"no record within {timeout_s:g} s") from None
        if weight:
            with self.room:
                self.queued -= weight
                self.room.notify()
        return item

    def abandon(self) -> None:
        self.abandoned.set()

    def stop(self) -> None:
        """Abandon and wait (briefly) for the thread to leave the reading library: a thread
        still inside pyarrow's or SentencePiece's C++ when the interpreter exits aborts the
        process."""
        self.abandon()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=STOP_TIMEOUT_S)


def resilient_records(read_from: Callable[[Position], Iterable[tuple[Position, Any]]],
                      start: Position, where: str, timeout_s: float, max_retries: int,
                      backoff_s: float, weigh: Callable[[Any], int] | None = None
                      ) -> Iterator[tuple[Position, Any]]:
    """`read_from(position)` yields (position after, ...) tuples; this yields the same from
    `start` to the end, restarted after stalls and errors (see module doc). `weigh`: an
    item's size, to bound what is read ahead (PrefetchingReader)."""
    position = start
    delivered = 0
    failures = 0
    while True:
        reader = PrefetchingReader(lambda: read_from(position), weigh=weigh)
        try:
            while True:
                item = reader.get(timeout_s)
                if item is END:
                    return
                if isinstance(item, BaseException):
                    raise item  # read errors retry below; anything else (UserError) stops
                position = item[0]
                delivered += 1
                failures = 0
                yield item
        except GeneratorExit:  # the consumer is done with the stream
            reader.stop()
            raise
        except (StreamStalled, OSError, ConnectionError, TimeoutError) as e:
            failures += 1
            reason = f"{type(e).__name__}: {str(e)[:200]}"
            if failures > max_retries:
                raise UserError(
                    f"corpus.path: {where} stopped delivering after {delivered} records "
                    f"({reason}; {max_retries} retries, corpus.timeout_s = {timeout_s:g}); check "
                    "the network or the files, or raise corpus.timeout_s / corpus.max_retries"
                ) from None
            wait = backoff_s * 2 ** (failures - 1)
            print(f"slimcore: warning: {where}: {reason}; retry {failures}/{max_retries} in "
                  f"{wait:g} s from {position}", file=sys.stderr, flush=True)
            time.sleep(wait)
        finally:
            reader.abandon()
