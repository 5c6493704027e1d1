"""The data-source contract: what `iterate_batches` returns, and what the core does with it.

A source is an iterator of `Batch`es. The core draws `optimizer.grad_accum_steps` batches for
each step, from the training thread, one step at a time, and takes the source's position
(`state_dict()`) after each step, so a position always counts exactly the batches the core
drew; batches a source made ahead on a thread of its own are not in it. On `--resume` the
core hands the saved position back (`load_state_dict`, before the first batch); a source
that cannot (`resumable` False), or a position saved by another number of ranks, is replayed
instead: `skip(n)` draws and drops the n batches already trained on. The core keeps this
object for the whole run, whatever the resume path, and calls `close()` at its end.

A data source plugin subclasses `DataSource` (or returns any iterator: the core wraps it).
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from .batch import Batch


class DataSource:
    """Subclass and implement `__next__`; for resume, set `resumable = True` and implement
    `state_dict` and `load_state_dict`."""

    resumable = False

    def __iter__(self) -> "DataSource":
        return self

    def __next__(self) -> Batch:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any] | None:
        """The position after the last batch drawn: JSON values and CPU tensors in nested
        dicts and lists; positions, not documents' text (it is saved by every rank at every
        checkpoint). None before the first batch, or when not resumable."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue after the position `state_dict()` gave; called before the first batch."""
        raise NotImplementedError(f"{type(self).__name__} is not resumable")

    def skip(self, batches: int) -> None:
        """Draw and drop `batches` batches: how a resume finds its place without a position.
        Override where a cheaper way exists."""
        for _ in range(batches):
            next(self)

    def close(self) -> None:
        """Stop reading and free what is held (threads, files): the run is over."""


class IteratorSource(DataSource):
    """A plain iterator (a generator, say) as a DataSource; `state_dict`, `load_state_dict`
    and `close` are used when the iterator has them."""

    def __init__(self, batches: Iterable[Batch]):
        self.batches = batches
        self.iterator: Iterator[Batch] = iter(batches)
        self.resumable = hasattr(batches, "load_state_dict") and hasattr(batches, "state_dict")

    def __next__(self) -> Batch:
        return next(self.iterator)

    def state_dict(self) -> dict[str, Any] | None:
        return self.batches.state_dict() if self.resumable else None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state)

    def close(self) -> None:
        close = getattr(self.batches, "close", None) or getattr(self.iterator, "close", None)
        if close is not None:
            close()


def as_data_source(batches: Iterable[Batch]) -> DataSource:
    return batches if isinstance(batches, DataSource) else IteratorSource(batches)
