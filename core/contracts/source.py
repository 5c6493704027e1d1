"""The data-source contract: a named stream of `Batch`es that a plugin registers, and what the
core does with it.

    class Lines(slimcore.DataSource):
        name = "lines"                      # data.source: lines
        def __init__(self, run): ...        # one instance per run: the training stream
        def __next__(self) -> Batch: ...

    @slimcore.hookimpl
    def register_data_sources():
        return [Lines]                      # the class: each run opens a stream of its own

The core draws `optimizer.grad_accum_steps` batches a step from the training thread, one step
at a time, and takes the source's position (`state_dict()`) after each step, so a position
always counts exactly the batches the core drew; batches a source made ahead on a thread of
its own are not in it. On `--resume` the core hands the saved position back
(`load_state_dict`, before the first batch); a source that cannot (`resumable` False), or a
position saved by another number of ranks, is replayed instead: `skip(n)` draws and drops the
n batches already trained on. The core keeps the object for the whole run and calls `close()`
at its end.

Two class methods serve the run before and beside the stream: `corpus_text` (text to train a
tokenizer on) and `validation_batches` (held-out batches for evaluation, also for `slimcore
eval`). Neither gets a `Run`: they are asked outside training too, and take what they use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterable

if TYPE_CHECKING:  # the dashboard's render process loads the registry without torch
    from ..config.schema import RunConfig
    from .batch import Batch
    from ..text.tokenizer import Tokenizer
    from .run import Run


class DataSource:
    """Subclass, set `name`, implement `__next__`; for resume set `resumable = True` and
    implement `state_dict` and `load_state_dict`. Register the class with
    `register_data_sources`."""

    name: ClassVar[str] = ""  # what `data.source` selects; unique among data sources
    resumable: ClassVar[bool] = False
    # The dotted config key that points `validation_batches` at other data, if there is one
    # (a key of the source's own section): `slimcore eval SOURCE --data PATH` sets it.
    eval_data_key: ClassVar[str | None] = None
    # What `--resume` does when one of your keys differs from the checkpoint's ({dotted key:
    # fate}): "refused" (your saved position depends on it: a corpus), "kept" (your position
    # restores it; config.yaml then records the checkpoint's value), "buffered" (applies to
    # what you read after the data your position holds); unlisted keys: "applies".
    resume_changes: ClassVar[dict[str, str]] = {}

    def __init__(self, run: Run):
        self.run = run

    def __iter__(self) -> DataSource:
        return self

    def __next__(self) -> Batch:
        raise NotImplementedError(f"{type(self).__name__} does not implement __next__")

    def state_dict(self) -> dict[str, Any] | None:
        """The position after the last batch drawn: JSON values (str, int, float, bool, None)
        and CPU tensors in nested dicts and lists; positions, not documents' text (it is saved
        by every rank at every checkpoint). None before the first batch, or when not
        resumable."""
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

    def data_shares(self) -> dict[str, float] | None:
        """For a source that mixes several components: each one's share of the tokens drawn
        so far ({name: share}, summing to 1), as of the last batch drawn. Asked after every
        step; the metrics' `data_shares`. None: no mixture."""
        return None

    @classmethod
    def corpus_text(cls, config: RunConfig, max_documents: int) -> Iterable[str] | None:
        """Up to `max_documents` texts of the corpus this source reads under `config`, to
        train the tokenizer on: finite, deterministic (the tokenizer cache is keyed by this
        text), the same on every rank. None: this source has no text to offer, and a run
        must name its tokenizer (`tokenizer.path`)."""
        return None

    @classmethod
    def validation_components(cls, config: RunConfig, tokenizer: Tokenizer,
                              count: int) -> dict[str, list[Batch]] | None:
        """For a source that mixes components: up to `count` held-out batches of each
        ({name: batches}, the same on every call and rank), for a held-out loss per
        component beside the whole's. None: no components (the default)."""
        return None

    @classmethod
    def validation_batches(cls, config: RunConfig, tokenizer: Tokenizer,
                           count: int) -> list[Batch] | None:
        """Up to `count` batches of held-out data, the same ones on every call and every
        rank. None: this source has no held-out data (a run with `eval.interval` then stops
        with one line). Raise `slimcore.UserError` when the data it names is missing."""
        return None
