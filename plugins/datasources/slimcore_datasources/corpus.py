"""Plugin `corpus`: the reader beneath both sources, and its settings (YAML section
`corpus`): the documents of `corpus.path`, streamed shard by shard, with a position to
resume from and damage counted and named, never hidden.

`corpus.path` may be:
    bundled                          the State of the Union corpus (offline; see bundled.py)
    a local file, folder or glob     .jsonl / .json / .jsonl.zst (SlimPajama records),
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

import glob
import itertools
import os
import random
import socket
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, NamedTuple
from urllib.parse import urlparse

from slimcore import NonEmpty, Range, Run, UserError, cache_dir, hookimpl

from .bundled import bundled_shards
from .records import KINDS, Damage, kind_of, shard_records
from .stream import resilient_records

NAME = "corpus"


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


@hookimpl
def declare_config():
    return {NAME: CorpusConfig}


def settings(run: Run) -> CorpusConfig:
    try:
        return run.config.section(NAME)
    except KeyError:
        raise UserError(f"data.source: '{run.config.data.source}' reads through plugin "
                        f"'{NAME}' (its settings), which is disabled; enable it") from None


OFFLINE_HINT = ("without network, run examples/quickstart.yaml (the bundled corpus) or set "
                "corpus.path to local .jsonl.zst, .jsonl, .txt or .parquet files")
WARNINGS_IN_FULL = 10  # bad records named one by one; after these, one line every 100
MISSING = object()


# -- which files make up the corpus -----------------------------------------------------------


def corpus_files(run: Run, path: str, data_files: str | None, key: str = "corpus.path") -> list[str]:
    """The shards of the corpus at `path`: local paths or URLs, in a fixed order."""
    if path == "bundled":
        return bundled_shards(cache_dir(run.config.tokenizer.cache_dir))
    if path.startswith(("http://", "https://")):
        return checked_kinds([u.strip() for u in path.split(",") if u.strip()], key)
    files = local_files(path)
    if files:
        return checked_kinds(files, key)
    if looks_like_hub_id(path):
        return hub_files(path, data_files, key)
    raise UserError(f"{key}: no file matches '{path}' and it is not a Hub dataset "
                    "id (owner/name); give bundled, a file, a folder or a glob")


def local_files(path: str) -> list[str]:
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        return sorted(str(p) for p in candidate.rglob("*") if p.is_file() and kind_of(p.name))
    if candidate.is_file():
        return [str(candidate)]
    return sorted(p for p in glob.glob(str(candidate), recursive=True) if os.path.isfile(p))


def checked_kinds(files: list[str], key: str) -> list[str]:
    unknown = [f for f in files if kind_of(f) is None]
    if unknown:
        raise UserError(f"{key}: {unknown[0]} is not a kind of file slimcore reads (its name "
                        f"must end in {', '.join(sorted(KINDS))}, .jsonl.zst included)")
    return files


def looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "/", "~"))


def hub_files(repo: str, data_files: str | None, key: str) -> list[str]:
    """The train files of a Hub dataset, as `datasets` resolves them (hf:// URLs)."""
    check_hub_reachable(repo, key)
    return resolved_files(repo, data_files, key)


def resolved_files(repo: str, data_files: str | None, key: str) -> list[str]:
    """The train split's files of a dataset repo (a Hub id, or a folder laid out like one),
    resolved by `datasets` exactly as its own streaming does."""
    import datasets

    matching = f" matching {data_files}" if data_files else ""
    try:
        builder = datasets.load_dataset_builder(
            repo, data_files={"train": data_files} if data_files else None)
        files = list((builder.config.data_files or {}).get("train") or [])
    except datasets.exceptions.DataFilesNotFoundError:
        raise UserError(f"{key}: '{repo}' has no data files{matching}; check "
                        f"corpus.{'eval_' if 'eval' in key else ''}data_files") from None
    except (ConnectionError, OSError, TimeoutError) as e:
        raise UserError(f"{key}: cannot list '{repo}' on the Hugging Face Hub "
                        f"({type(e).__name__}: {str(e)[:200]}); {OFFLINE_HINT}") from None
    except (ValueError, datasets.exceptions.DatasetNotFoundError) as e:
        raise UserError(f"{key}: '{repo}' has no train files to stream{matching} "
                        f"({type(e).__name__}: {str(e)[:200]})") from None
    if not files:
        raise UserError(f"{key}: '{repo}' has no train files{matching}")
    return checked_kinds([str(f) for f in files], key)


def check_hub_reachable(repo: str, key: str = "corpus.path", timeout_s: float = 5.0) -> None:
    """Fail in seconds, not after minutes of retries, on a machine without network."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise UserError(f"{key}: '{repo}' is on the Hugging Face Hub but HF_HUB_OFFLINE "
                        f"is set; {OFFLINE_HINT}")
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"{key}: cannot reach the Hugging Face Hub ({host}: {e}) to "
                        f"stream '{repo}'; {OFFLINE_HINT}") from None


# -- positions ----------------------------------------------------------------------------------


class Position(NamedTuple):
    """Where a reader reads next: document `part` of record `record` of the `cursor`-th
    shard in its order for `epoch` (part > 0 only inside a record cut into documents)."""

    epoch: int = 0
    cursor: int = 0
    record: int = 0
    part: int = 0

    def __str__(self) -> str:
        part = f", part {self.part}" if self.part else ""
        return f"epoch {self.epoch}, shard {self.cursor} of this reader, record {self.record}" \
               f"{part}"


class Ref(NamedTuple):
    """Where a document came from: reader, then its Position."""

    worker: int
    epoch: int
    cursor: int
    record: int
    part: int


class ShardPlan:
    """Which shards a rank reads, in which order each epoch.

    When the shard count divides evenly by the world size each rank reads whole shards of
    its own; otherwise every rank reads every shard and keeps one record in `world_size`
    (what `datasets.distributed.split_dataset_by_node` does), which costs each rank the
    reading of the whole corpus."""

    def __init__(self, shards: list[int], rank: int, world_size: int, seed: int,
                 shuffle: bool):
        self.by_shard = len(shards) % world_size == 0
        self.shards = shards[rank::world_size] if self.by_shard else shards
        self.stride, self.offset = (1, 0) if self.by_shard else (world_size, rank)
        self.seed, self.shuffle = seed, shuffle

    def order(self, epoch: int) -> list[int]:
        order = list(self.shards)
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def keeps(self, record_index: int) -> bool:
        return record_index % self.stride == self.offset


def cut_into_documents(text: str, max_chars: int) -> list[str]:
    """`text` as documents of at most `max_chars` characters, cut after a line break where
    there is one in the second half of the window, else after a space, else at the limit."""
    parts, start = [], 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cut = text.rfind("\n", start + max_chars // 2, end)
        if cut < 0:
            cut = text.rfind(" ", start + max_chars // 2, end)
        cut = end if cut < 0 else cut + 1
        parts.append(text[start:cut])
        start = cut
    parts.append(text[start:])
    return parts


# -- the stream ---------------------------------------------------------------------------------


class DocumentStream:
    """This rank's documents of one corpus, pass after pass (`epochs=None`: forever).

    role: "train" (the corpus without its held-out shard when `holdout`), "heldout" (that
    shard only) or "all". `workers` readers, each on its own thread with its own share of
    the rank's shards, are taken in turn, one record each, so decompression and parsing of
    several shards overlap and the order stays deterministic. With `shuffle_buffer` > 0,
    documents leave through a seeded buffer of that many, and shards are read in a new
    seeded order every epoch. `state_dict()` between two documents and `load_state_dict()`
    before iterating resume the stream exactly."""

    def __init__(self, run: Run, path: str, data_files: str | None = None, *,
                 key: str = "corpus.path", role: str = "all", split_ranks: bool = True,
                 shuffle_buffer: int = 0, epochs: int | None = None, announce: bool = False,
                 workers: int = 1):
        self.run, self.path, self.data_files, self.key, self.role = (run, path, data_files,
                                                                     key, role)
        self.split_ranks, self.buffer_size, self.epochs = split_ranks, shuffle_buffer, epochs
        self.announce = announce and run.is_main_process
        self.positions = [Position() for _ in range(workers)]
        self.turn = 0  # the reader whose record comes next
        self.buffer: list[tuple[Ref | None, str]] = []
        # Buffered documents named by a checkpoint, to be read again before the first one.
        self.refetch: list[Ref | str] = []
        self.rng = random.Random(run.config.run.seed)
        self.bad = 0  # bad records and damaged shards met so far in the run
        self.cut = 0  # records cut into documents by this process
        self.epoch_passed = False  # a reader began its second pass
        self.files: list[str] | None = None
        self.plans: list[ShardPlan] = []
        self.warned = False

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        if self.refetch:  # restored, not yet read again
            buffer = [list(e) if isinstance(e, Ref) else e for e in self.refetch]
        else:
            buffer = [list(ref) if ref is not None else text for ref, text in self.buffer]
        return {"positions": [list(p) for p in self.positions], "turn": self.turn,
                "buffer": buffer, "buffer_size": self.buffer_size,
                "rng": _jsonable(self.rng.getstate()), "bad": self.bad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["positions"]) != len(self.positions):
            raise UserError(f"--resume: the data position was saved with "
                            f"{len(state['positions'])} corpus.workers, this run has "
                            f"{len(self.positions)}; resume with the same corpus.workers")
        self.positions = [Position(*p) for p in state["positions"]]
        self.turn = state["turn"]
        # Positions of documents (or, in checkpoints of slimcore 0.1, their text).
        self.refetch = [entry if isinstance(entry, str) else Ref(*entry)
                        for entry in state["buffer"]]
        self.bad = state.get("bad", 0)
        self.buffer_size = state.get("buffer_size", self.buffer_size)
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))

    # -- reading ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        """List the corpus and plan each reader's shards (once, before the first read)."""
        if self.files is not None:
            return
        try:
            files = corpus_files(self.run, self.path, self.data_files, self.key)
        except OSError as e:
            raise UserError(f"{self.key}: cannot list '{self.path}' ({e})") from None
        shards = list(range(len(files)))
        if self.role != "all":
            if len(shards) < 2:
                raise UserError(f"corpus.eval_path: {self.path} has a single shard, so none can be "
                                "held out for evaluation; name a held-out corpus in corpus.eval_path")
            shards = shards[:-1] if self.role == "train" else shards[-1:]
        world, rank = (self.run.world_size, self.run.rank) if self.split_ranks else (1, 0)
        workers = len(self.positions)
        # Readers of all ranks split the shards as one world of world x workers.
        self.plans = [ShardPlan(shards, rank * workers + w, world * workers,
                                self.run.config.run.seed, self.buffer_size > 0)
                      for w in range(workers)]
        if not self.plans[0].by_shard and self.announce and not self.warned:
            self.warned = True
            readers = world * workers
            print(f"slimcore: warning: {self.key}: the shard count ({len(shards)}) does not "
                  f"divide evenly among {world} ranks x {workers} corpus.workers, so every "
                  f"reader reads every shard and keeps 1 record in {readers}; a shard count "
                  f"divisible by {readers} reads {readers}x less", file=sys.stderr, flush=True)
        self.shard_count, self.files = len(shards), files

    def _shard_items(self, worker: int, start: Position) -> Iterator[tuple[Position, str, Any]]:
        """The items of one shard from `start` on: (position after, kind, payload) with kind
        "text" (payload: text, ref, parts of its record), "skip" (a record corpus.set_names
        leaves out) or "damage" (payload: Damage, file). Runs on the reader's thread."""
        corpus = settings(self.run)
        wanted = set(corpus.set_names)
        plan = self.plans[worker]
        epoch, cursor = start.epoch, start.cursor
        url = self.files[plan.order(epoch)[cursor]]
        for item in shard_records(url, start.record):
            if isinstance(item, Damage):
                if plan.keeps(item.index) or item.fatal:
                    yield Position(epoch, cursor, item.index + 1), "damage", (item, url)
                if item.fatal:
                    return
                continue
            index, record = item
            if not plan.keeps(index):
                continue
            after = Position(epoch, cursor, index + 1)
            text = record.get(corpus.text_field, MISSING)
            if not isinstance(text, str) or not text:
                what = (f"no '{corpus.text_field}' field (fields: {', '.join(map(str, record))})"
                        if text is MISSING else f"'{corpus.text_field}' is "
                        + ("empty" if text == "" else f"{_kind(text)}, not a string"))
                yield after, "damage", (Damage(index, what), url)
                continue
            meta = record.get("meta")
            if wanted and (meta.get("redpajama_set_name") if isinstance(meta, dict)
                           else None) not in wanted:
                yield after, "skip", None
                continue
            parts = cut_into_documents(text, corpus.max_document_chars)
            del text, record  # the parts hold the text now
            first = start.part if index == start.record else 0
            for part in range(first, len(parts)):
                done = part + 1 == len(parts)
                position = after if done else Position(epoch, cursor, index, part + 1)
                yield position, "text", (parts[part], Ref(worker, epoch, cursor, index, part),
                                         len(parts))
                parts[part] = None  # handed on: not kept while the rest are read

    def _read_from(self, start: Position, worker: int) -> Iterator[tuple[Position, str, Any]]:
        """Every item of this reader's shards from `start` on, epoch after epoch."""
        plan = self.plans[worker]
        epoch, cursor = start.epoch, start.cursor
        while self.epochs is None or epoch < self.epochs:
            for cursor in range(cursor, len(plan.order(epoch))):
                begin = start if (epoch, cursor) == start[:2] else Position(epoch, cursor)
                yield from self._shard_items(worker, begin)
            cursor = 0
            epoch += 1

    def _reader(self, worker: int, start: Position, shard_only: bool = False):
        corpus = settings(self.run)
        read = self._shard_items if shard_only else self._read_from
        return resilient_records(lambda position: read(worker, position) if shard_only
                                 else read(position, worker), start, self.path,
                                 corpus.timeout_s, corpus.max_retries, corpus.retry_backoff_s,
                                 weigh=_text_chars)

    def _items(self) -> Iterator[tuple[int, Ref, str]]:
        """(worker, ref, text) of every document, readers taken in turn; damage counted."""
        readers = [self._reader(w, self.positions[w]) for w in range(len(self.positions))]
        started = time.perf_counter()
        epochs = [p.epoch for p in self.positions]
        produced = any(p != Position() for p in self.positions)
        live = [True] * len(readers)
        try:
            while any(live):
                worker = self.turn
                self.turn = (self.turn + 1) % len(readers)
                if not live[worker]:
                    continue
                item = next(readers[worker], None)
                if item is None:
                    live[worker] = False
                    continue
                position, kind, payload = item
                if position.epoch != epochs[worker]:
                    self._check_produced(produced)
                    epochs[worker] = position.epoch
                    self.epoch_passed = True
                self.positions[worker] = position
                if kind == "damage":
                    self._count_bad(*payload, produced)
                    continue
                if kind == "skip":
                    continue
                text, ref, parts = payload
                if parts > 1 and ref.part == 0:
                    self._say_cut(ref, parts)
                if self.announce:
                    print(f"data: {self.shard_count} shards of {self.path} ({self.role}); "
                          f"first document after {time.perf_counter() - started:.2f} s",
                          flush=True)
                    self.announce = False
                produced = True
                yield worker, ref, text
            self._check_produced(produced)
        finally:
            for reader in readers:
                reader.close()  # each stops and joins its thread
            if self.bad:
                print(f"slimcore: warning: {self.key}: {self.bad} bad records or damaged "
                      "shards skipped in this run (corpus.bad_records)", file=sys.stderr)

    def _count_bad(self, damage: Damage, url: str, produced: bool) -> None:
        corpus = settings(self.run)
        where = f"{url}, line {damage.index + 1}" if not url.endswith(".parquet") else \
            f"{url}, row {damage.index}"
        if not produced and self.bad == 0 and damage.reason.startswith(
                f"no '{corpus.text_field}' field"):
            # The first record of all lacks the field: the config names the wrong one.
            raise UserError(f"corpus.text_field: records of {self.path} have "
                            f"{damage.reason} ({where})")
        self.bad += 1
        if corpus.bad_records == "stop":
            raise UserError(f"{self.key}: {where}: {damage.reason}; corpus.bad_records is stop "
                            "(skip goes on past up to corpus.max_bad_records of these)")
        if self.bad > corpus.max_bad_records:
            raise UserError(f"{self.key}: more than corpus.max_bad_records "
                            f"({corpus.max_bad_records}) bad records in this run, the last: "
                            f"{where}: {damage.reason}; mend the corpus or raise the limit")
        if damage.fatal or self.bad <= WARNINGS_IN_FULL or self.bad % 100 == 0:
            rest = "; the rest of the shard is skipped" if damage.fatal else ", skipped"
            more = f" ({self.bad} so far)" if self.bad > WARNINGS_IN_FULL else ""
            print(f"slimcore: warning: {where}: {damage.reason}{rest}{more}", file=sys.stderr,
                  flush=True)

    def _say_cut(self, ref: Ref, parts: int) -> None:
        """Books are cut often: the first few are named, then one line in a hundred."""
        self.cut += 1
        if self.cut > WARNINGS_IN_FULL and self.cut % 100:
            return
        url = self.files[self.plans[ref.worker].order(ref.epoch)[ref.cursor]]
        more = f" ({self.cut} records cut so far)" if self.cut > WARNINGS_IN_FULL else ""
        print(f"slimcore: warning: {url}, line {ref.record + 1}: a record longer than "
              f"corpus.max_document_chars ({settings(self.run).max_document_chars:,}) is cut "
              f"into {parts} documents{more}", file=sys.stderr, flush=True)

    def _check_produced(self, produced: bool) -> None:
        if not produced:
            wanted = settings(self.run).set_names
            only = f" of corpus.set_names {sorted(wanted)}" if wanted else ""
            raise UserError(f"{self.key}: '{self.path}' holds no documents{only}")

    def _refetched(self) -> list[tuple[Ref | None, str]]:
        """The shuffle buffer a checkpoint named by position, read again from its shards."""
        wanted = [entry for entry in self.refetch if isinstance(entry, Ref)]
        texts: dict[Ref, str] = {}
        by_shard = defaultdict(list)
        for ref in wanted:
            by_shard[ref.worker, ref.epoch, ref.cursor].append(ref)
        for (worker, epoch, cursor), refs in sorted(by_shard.items()):
            needed = set(refs)
            first = min(refs, key=lambda r: (r.record, r.part))
            reader = self._reader(worker, Position(epoch, cursor, first.record, first.part),
                                  shard_only=True)
            try:
                for _, kind, payload in reader:
                    if kind == "text" and payload[1] in needed:
                        texts[payload[1]] = payload[0]
                        needed.discard(payload[1])
                        if not needed:
                            break
            finally:
                reader.close()
            if needed:
                gone = min(needed)
                url = self.files[self.plans[worker].order(epoch)[cursor]]
                raise UserError(f"--resume: {url} changed since the checkpoint: its line "
                                f"{gone.record + 1} is no longer the document the run had "
                                "read; resume with the corpus the checkpoint was saved with")
        return [(None, entry) if isinstance(entry, str) else (entry, texts[entry])
                for entry in self.refetch]

    def __iter__(self) -> Iterator[str]:
        self._prepare()
        if self.refetch:
            self.buffer, self.refetch = self._refetched(), []
        for worker, ref, text in self._items():
            if self.buffer_size <= 0:
                yield text
            elif len(self.buffer) < self.buffer_size:
                self.buffer.append((ref, text))
                if self.epoch_passed and len(self.buffer) < self.buffer_size:
                    # The buffer holds a whole pass and is not full: it never would be.
                    print(f"slimcore: warning: corpus.shuffle_buffer ({self.buffer_size}) is "
                          f"more documents than a pass over {self.path} gives this reader; "
                          f"shuffling over {len(self.buffer)}", file=sys.stderr)
                    self.buffer_size = len(self.buffer)
            else:
                slot = self.rng.randrange(self.buffer_size)
                (_, text), self.buffer[slot] = self.buffer[slot], (ref, text)
                yield text
        while self.buffer:  # a finite stream: what the buffer holds, in random order
            yield self.buffer.pop(self.rng.randrange(len(self.buffer)))[1]


def _text_chars(item: tuple[Position, str, Any]) -> int:
    """What an item read ahead weighs: a document its characters, anything else nothing."""
    _, kind, payload = item
    return len(payload[0]) if kind == "text" else 0


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def training_role(run: Run) -> str:
    """With evaluation on and no corpus.eval_path, the corpus's last shard is held out."""
    held_out = run.config.eval.interval > 0 and settings(run).eval_path is None
    return "train" if held_out else "all"


def training_documents(run: Run) -> DocumentStream:
    """The training stream of the run: this rank's share, shuffled, endless."""
    corpus = settings(run)
    return DocumentStream(run, corpus.path, corpus.data_files, role=training_role(run),
                          shuffle_buffer=corpus.shuffle_buffer, announce=True,
                          workers=corpus.workers)


def heldout_documents(run: Run) -> DocumentStream:
    """The evaluation stream: corpus.eval_path, or the corpus's held-out last shard; one
    pass, the same documents on every rank, in file order."""
    corpus = settings(run)
    if corpus.eval_path is None:
        return DocumentStream(run, corpus.path, corpus.data_files, role="heldout",
                              split_ranks=False, epochs=1)
    return DocumentStream(run, corpus.eval_path, corpus.eval_data_files,
                          key="corpus.eval_path", split_ranks=False, epochs=1)


def first_documents(run: Run, max_documents: int) -> list[str]:
    """The tokenizer's training sample: the corpus's first documents, one pass at most, the
    same on every rank (so every rank trains the same tokenizer); no more than
    `tokenizer.train_max_chars` of text, which is all the tokenizer takes."""
    corpus = settings(run)
    stream = DocumentStream(run, corpus.path, corpus.data_files, role=training_role(run),
                            split_ranks=False, epochs=1)
    texts, chars = [], 0
    for text in itertools.islice(stream, max_documents):
        texts.append(text)
        chars += len(text)
        if chars >= run.config.tokenizer.train_max_chars:
            break
    return texts


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value
