"""Plugin `corpus`: the reader beneath both sources, and its settings (YAML section
`corpus`): the documents of `corpus.path`, streamed shard by shard, with a position to
resume from and damage counted and named, never hidden.

`corpus.path` may be:
    bundled                          the State of the Union corpus (offline; see bundled.py)
    a local file, folder or glob     .jsonl / .json / .jsonl.zst / .jsonl.gz (SlimPajama records),
                                     .txt (one document per file), .parquet
    a Hub dataset id (owner/name)    `corpus.data_files` picks shards by pattern; the files are
                                     listed by Hugging Face `datasets` and streamed over hf://
    http(s):// URLs                  of files of the kinds above (several: comma-separated)

A corpus is a list of shards (its files), read by records.py. Each rank reads its own shards
in an order shuffled per epoch (DocumentStream), through stream.resilient_records: on a
background thread, each record within `corpus.timeout_s`, restarted where it stopped after a
stall or a read error.

Memory does not grow with a document's size: a record longer than `corpus.max_document_chars`
is cut into documents of at most that many characters, and what a checkpoint stores of the
stream is positions: where each reader reads next, and where each document waiting in the
shuffle buffer came from (a resumed run reads those again), never their text.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from slimcore import hookimpl

from .background import BackgroundSource
from .config import EVAL_DATA_KEY, NAME, CorpusConfig, settings  # noqa: F401 - the plugin's names
from .documents import DocumentStream
from .mixture import MixedDocuments, component_source, mixture_of, token_shares


@hookimpl
def declare_config():
    return {NAME: CorpusConfig}


@dataclass(frozen=True)
class Reading:
    """What the reader takes of a run (a Run has all of it): the config, the tokenizer, and
    this process's place. The sources' class methods, which get no Run, make one of their
    config: one process of one, which announces nothing."""

    config: Any
    tokenizer: Any = None
    rank: int = 0
    world_size: int = 1
    is_main_process: bool = False


def training_role(run) -> str:
    """With evaluation on and no corpus.eval_path, the corpus's last shard is held out."""
    held_out = run.config.eval.interval > 0 and settings(run).eval_path is None
    return "train" if held_out else "all"


def corpus_documents(run, **options) -> DocumentStream | MixedDocuments:
    """The corpus's documents, or its mixture's (corpus.mixture), read with `options` (the
    keywords of DocumentStream) by each component."""
    corpus = settings(run)
    mixture = mixture_of(run, lambda name, component: DocumentStream(
        run, *component_source(corpus, component)[:2], key=f"corpus.mixture.{name}.path",
        set_names=component.set_names, **options))
    return mixture or DocumentStream(run, corpus.path, corpus.data_files, **options)


def training_documents(run) -> DocumentStream | MixedDocuments:
    """The training stream of the run: this rank's share, shuffled, endless (a mixture's
    components each endless, or one pass with corpus.mixture_exhausted: stop)."""
    corpus = settings(run)
    one_pass = bool(corpus.mixture) and corpus.mixture_exhausted == "stop"
    return corpus_documents(run, role=training_role(run), shuffle_buffer=corpus.shuffle_buffer,
                            announce=True, workers=corpus.workers,
                            epochs=1 if one_pass else None)


def heldout_documents(run) -> DocumentStream | MixedDocuments:
    """The evaluation stream: corpus.eval_path, or the corpus's held-out last shard (a
    mixture's: each component's, mixed by weight until one ends); one pass, the same
    documents on every rank, in file order."""
    corpus = settings(run)
    if corpus.eval_path is not None:
        return DocumentStream(run, corpus.eval_path, corpus.eval_data_files,
                              key="corpus.eval_path", split_ranks=False, epochs=1)
    return corpus_documents(run, role="heldout", split_ranks=False, epochs=1)


def first_documents(run, max_documents: int) -> list[str]:
    """The tokenizer's training sample: the corpus's first documents (a mixture's, mixed by
    weight), one pass at most, the same on every rank (so every rank trains the same
    tokenizer); no more than `tokenizer.train_max_chars` of text, which is all the
    tokenizer takes."""
    stream = corpus_documents(run, role=training_role(run), split_ranks=False, epochs=1)
    texts, chars = [], 0
    for text in itertools.islice(stream, max_documents):
        texts.append(text)
        chars += len(text)
        if chars >= run.config.tokenizer.train_max_chars:
            break
    return texts


class CorpusSource(BackgroundSource):
    """A shipped source over the corpus: its stream, tokenizer text and held-out batches.
    A subclass says how documents become batches (`batches`)."""

    eval_data_key = EVAL_DATA_KEY
    # A saved position indexes the corpus's shards, records and the documents cut from them,
    # read by so many workers; it restores its shuffle buffer's size.
    resume_changes = {**{f"corpus.{key}": "refused" for key in (
        "path", "data_files", "set_names", "workers", "max_document_chars")},
        "corpus.shuffle_buffer": "kept", "corpus.text_field": "buffered"}

    @staticmethod
    def batches(reading, documents: DocumentStream, state: dict | None = None,
                heldout: bool = False):
        """(batch, the position after it) from `documents`; `heldout`: for evaluation."""
        raise NotImplementedError

    def produce(self, state):
        return self.batches(self.run, training_documents(self.run), state)

    def data_shares(self):
        """A mixture's components' shares of the tokens handed on so far (the batches
        trained on and those packed, waiting, a chunk at most)."""
        return token_shares((self.state or {}).get("documents"))

    @classmethod
    def corpus_text(cls, config, max_documents):
        return first_documents(Reading(config), max_documents)

    @classmethod
    def validation_components(cls, config, tokenizer, count):
        """A mixture's components' held-out batches (each its last shard), unless
        corpus.eval_path names one held-out corpus for all."""
        reading = Reading(config, tokenizer)
        held_out = heldout_documents(reading)
        if not isinstance(held_out, MixedDocuments):
            return None
        return {name: [batch for batch, _ in itertools.islice(
                    cls.batches(reading, stream, heldout=True), count)]
                for name, stream in held_out.streams.items()}

    @classmethod
    def validation_batches(cls, config, tokenizer, count):
        reading = Reading(config, tokenizer)
        held_out = cls.batches(reading, heldout_documents(reading), heldout=True)
        return [batch for batch, _ in itertools.islice(held_out, count)]
