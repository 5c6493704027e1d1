"""What the core asks of the plugins' named objects, in one place: the data source's stream,
its tokenizer text and held-out batches, and the checkpointer.

    source = open_source(plugins, run)                    the selected DataSource, opened
    texts = corpus_text(plugins, config, run)             to train the tokenizer on
    batches = validation_batches(plugins, config, tokenizer, count, key)

The old selection hooks (host/legacy.py) are asked first, as before: every plugin of the old
form could answer for any source's name.
"""

from __future__ import annotations

from typing import Iterable

from ..contracts.batch import Batch
from ..contracts.checkpointer import Checkpointer
from ..contracts.errors import UserError
from ..contracts.run import Run
from ..contracts.source import DataSource
from . import legacy


def open_source(plugins, run: Run) -> DataSource:
    """The stream of the data source `data.source` names, for this run."""
    source_class = plugins.lookup("data source", run.config.data.source)
    return source_class(run)


def corpus_text(plugins, config, run: Run | None = None) -> Iterable[str]:
    name, documents = config.data.source, config.tokenizer.train_documents
    texts = legacy.ask(plugins, "corpus_text", source=name, run=run, config=config,
                       max_documents=documents)
    if texts is None:
        texts = plugins.lookup("data source", name).corpus_text(config, documents)
    if texts is None:
        raise UserError(f"tokenizer: data source '{name}' offers no text to train a tokenizer "
                        "on; give one with tokenizer.path")
    return texts


def validation_batches(plugins, config, tokenizer, count: int, key: str,
                       run: Run | None = None) -> list[Batch]:
    """`count` held-out batches of the selected source; UserError naming `key` (the setting
    that asked for them) when it has none, or too little for one batch."""
    name = config.data.source
    batches = legacy.ask(plugins, "validation_batches", source=name, run=run, config=config,
                         tokenizer=tokenizer, count=count)
    if batches is None:
        batches = plugins.lookup("data source", name).validation_batches(config, tokenizer,
                                                                         count)
    if batches is None:
        raise UserError(f"{key}: data source '{name}' offers no held-out data; "
                        + ("set eval.interval to 0 or pick a source that does"
                           if key == "eval.interval" else
                           "give --set data.source=NAME of one that does"))
    if not batches:
        raise UserError(f"eval: data source '{name}' has too little held-out data for one "
                        "batch; give it more (its settings say where it comes from)")
    return batches


def checkpointer(plugins, config) -> Checkpointer | None:
    """The checkpointer `checkpoint.checkpointer` names (None: checkpoints off)."""
    name = config.checkpoint.checkpointer
    return plugins.lookup("checkpointer", name) if name else None
