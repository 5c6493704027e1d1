"""A record stream that never hangs silently.

Records are read on a background thread (so reading, decompression and parsing overlap the
training step) into a bounded queue, each paired with its position (the position to read from
next). Every record must arrive within `data.timeout_s`; a stall or a read error restarts the
stream after a backoff from the position after the last record delivered, so no document is
lost or repeated. After `data.max_retries` restarts in a row without progress the run stops
with one line.

`datasets` retries reads on its own, 20 times 5 seconds apart; slimcore turns that off
(one attempt) and retries at the record level, where it controls the timing.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

from slimcore import UserError

# Records read ahead per reader: enough to cover a slow read, few enough that long documents
# (books run to megabytes) do not pile up, and that a short run does not pay for reading far
# past what it trains on (1,024 read four passes of the bundled corpus ahead).
PREFETCH_RECORDS = 256
STOP_TIMEOUT_S = 10.0
END = object()  # the end of a reader's items
Position = TypeVar("Position")


class StreamStalled(Exception):
    pass


class PrefetchingReader:
    """Iterates `make_items()` on a daemon thread into a queue of `capacity`; `get(timeout)`
    takes the next item (`END` at the end; an exception the iteration raised is handed
    over as the item). Also the batch thread of the sources (background.py).

    A reader stuck in a hung network read cannot be interrupted from Python; `abandon()`
    leaves it to finish or hang alone, and it never hands over another item."""

    def __init__(self, make_items: Callable[[], Iterable], capacity: int = PREFETCH_RECORDS,
                 name: str = "slimcore_reader"):
        self.queue: queue.Queue = queue.Queue(maxsize=capacity)
        self.abandoned = threading.Event()
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
        while not self.abandoned.is_set():
            try:
                self.queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout_s: float | None = None):
        try:
            return self.queue.get(timeout=timeout_s)
        except queue.Empty:
            raise StreamStalled(f"no record within {timeout_s:g} s") from None

    def abandon(self) -> None:
        self.abandoned.set()

    def stop(self) -> None:
        """Abandon and wait (briefly) for the thread to leave the reading library: a thread
        still inside pyarrow's or SentencePiece's C++ when the interpreter exits aborts the
        process."""
        self.abandon()
        if self.thread is not threading.current_thread():
            self.thread.join(timeout=STOP_TIMEOUT_S)


def resilient_records(read_from: Callable[[Position], Iterable[tuple[Position, dict]]],
                      start: Position, where: str, timeout_s: float, max_retries: int,
                      backoff_s: float) -> Iterator[tuple[Position, dict]]:
    """`read_from(position)` yields (position after, record) pairs; this yields the same
    pairs from `start` to the end, restarted after stalls and errors (see module doc)."""
    position = start
    delivered = 0
    failures = 0
    while True:
        reader = PrefetchingReader(lambda: read_from(position))
        try:
            while True:
                item = reader.get(timeout_s)
                if item is END:
                    return
                if isinstance(item, ValueError):  # malformed data: retrying cannot help
                    raise UserError(f"data.path: cannot parse the records of {where} "
                                    f"({type(item).__name__}: {str(item)[:200]})")
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
                    f"data.path: {where} stopped delivering after {delivered} records "
                    f"({reason}; {max_retries} retries, data.timeout_s = {timeout_s:g}); check "
                    "the network or the files, or raise data.timeout_s / data.max_retries"
                ) from None
            wait = backoff_s * 2 ** (failures - 1)
            print(f"slimcore: warning: {where}: {reason}; retry {failures}/{max_retries} in "
                  f"{wait:g} s from {position}", file=sys.stderr, flush=True)
            time.sleep(wait)
        finally:
            reader.abandon()
