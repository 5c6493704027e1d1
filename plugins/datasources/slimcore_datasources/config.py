"""The corpus reader's settings (YAML section `corpus`, declared by the plugin `corpus`) and
the constants its parts share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

from slimcore import NonEmpty, Range, UserError

NAME = "corpus"
EVAL_DATA_KEY = "corpus.eval_path"  # what `slimcore eval --data` sets for the bundled sources
OFFLINE_HINT = ("without network, run examples/quickstart.yaml (the bundled corpus) or set "
                "corpus.path to local .jsonl.zst, .jsonl, .jsonl.gz, .txt or .parquet files")
WARNINGS_IN_FULL = 10  # bad records named one by one; after these, one line every 100
MISSING = object()


@dataclass
class MixtureComponent:
    """One component of `corpus.mixture`: where its documents come from and its share."""

    # its share of the text drawn (weights are normalised; 0 leaves the component unread)
    weight: Annotated[float, Range(min=0, max=1e12)] = 1.0
    path: Annotated[str, NonEmpty()] | None = None  # null: corpus.path
    data_files: Annotated[str, NonEmpty()] | None = None  # null: corpus.data_files, with path
    set_names: list[Annotated[str, NonEmpty()]] = field(default_factory=list)  # as corpus's


@dataclass
class CorpusConfig:
    """Where the `sample` and `chunk` sources read from, and how (YAML section `corpus`)."""

    # bundled, a local file, folder or glob, http(s) URLs, or a Hub dataset id
    path: Annotated[str, NonEmpty()] = "bundled"
    # a pattern inside a Hub dataset, e.g. train/chunk1/*.jsonl.zst
    data_files: Annotated[str, NonEmpty()] | None = None
    text_field: Annotated[str, NonEmpty()] = "text"
    # Keep only records whose meta.redpajama_set_name is listed, e.g. [RedPajamaBook,
    # RedPajamaArXiv]; empty keeps everything.
    set_names: list[Annotated[str, NonEmpty()]] = field(default_factory=list)
    # every record must arrive within this, or the read is retried
    timeout_s: Annotated[float, Range(above=0, max=1e7)] = 60.0
    max_retries: Annotated[int, Range(min=0)] = 5  # restarts in a row without a record
    # the first wait before a retry; doubles each time
    retry_backoff_s: Annotated[float, Range(min=0, max=3600)] = 2.0
    # Documents leave through a seeded buffer of this many (0: file order); shards are read in
    # a new seeded order each epoch. Checkpoints store where the buffered documents are, not
    # their text.
    shuffle_buffer: Annotated[int, Range(min=0, max=10_000_000)] = 100
    # Reader threads per rank, each with its own share of the rank's shards, taken in turn:
    # decompression and parsing of several shards overlap. A resume needs the same number.
    workers: Annotated[int, Range(min=1, max=64)] = 1
    # A record longer than this is cut into documents of at most this many characters (at a
    # line break or a space where it can), with a warning: memory stays bounded whatever
    # the corpus holds (a SlimPajama book runs to a few million characters).
    max_document_chars: Annotated[int, Range(min=1000)] = 1_000_000
    # Damaged data: a shard that ends early or does not decompress, a line that is not JSON
    # or not UTF-8, a record without a text. skip: warn (naming file and record) and go on,
    # until more than max_bad_records in one run; stop: the first one stops the run.
    bad_records: Literal["skip", "stop"] = "skip"
    max_bad_records: Annotated[int, Range(min=0)] = 1000
    # Held-out data for eval.interval: null holds out the last shard of `path` (it is then
    # left out of training); or a corpus of its own, e.g. cerebras/SlimPajama-627B with
    # eval_data_files: validation/chunk1/*.jsonl.zst.
    eval_path: Annotated[str, NonEmpty()] | None = None
    eval_data_files: Annotated[str, NonEmpty()] | None = None
    # Several corpora (or SlimPajama sets of one) drawn by weight, {name: component}; empty:
    # the one corpus above. See mixture.py.
    mixture: dict[str, MixtureComponent] = field(default_factory=dict)
    # a component read to its end: `repeat` reads it again (its own epochs), `stop` ends the
    # run's data there
    mixture_exhausted: Literal["repeat", "stop"] = "repeat"
    # Each shard's documents kept as token ids (in tokenizer.cache_dir) the first time a pass
    # reads it whole; later passes and runs with the same tokenizer read them instead of the
    # text. See token_cache.py.
    token_cache: bool = False

    # The keys that were the core's `data` section before each plugin owned its own.
    moved_keys: ClassVar[dict] = {f"data.{key}": key for key in (
        "path", "data_files", "text_field", "set_names", "timeout_s", "max_retries",
        "retry_backoff_s", "shuffle_buffer", "workers")}
    tiny: ClassVar[dict] = {"shuffle_buffer": 8}  # a tiny run shuffles over a few documents


def settings(reading) -> CorpusConfig:
    """The corpus section of a Run's (or a Reading's) config."""
    try:
        return reading.config.section(NAME)
    except KeyError:
        raise UserError(f"data.source: '{reading.config.data.source}' reads through plugin "
                        f"'{NAME}' (its settings), which is disabled; enable it") from None
