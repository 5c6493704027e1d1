"""The corpus reader beneath both sources: documents from `data.path`, streamed with
Hugging Face `datasets` so that local shards and the Hub go through one code path.

`data.path` may be:
    bundled                          the State of the Union corpus (offline; see bundled.py)
    a local file, folder or glob     .jsonl / .json / .jsonl.zst (SlimPajama records),
                                     .txt (one document per file), .parquet
    a Hub dataset id (owner/name)    streamed; `data.data_files` picks shards by pattern
    http(s):// URLs                  of files of the kinds above (several: comma-separated)

A corpus is a list of shards (its files). Each rank reads its own shards in an order
shuffled per epoch (DocumentStream), through stream.resilient_records: on a background
thread, each record within `data.timeout_s`, restarted where it stopped after a stall or a
read error. The stream's position (epoch, shard, record) and its shuffle buffer are its
state: a resumed run reads on from there, re-reading at most part of one shard.
"""

from __future__ import annotations

import glob
import itertools
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterator, NamedTuple
from urllib.parse import urlparse

from slimcore import Run, UserError
from slimcore.tokenizer import default_cache_dir

from .bundled import bundled_shards
from .stream import resilient_records

BUILDERS = {".jsonl": "json", ".json": "json", ".zst": "json", ".txt": "text",
            ".parquet": "parquet"}
OFFLINE_HINT = ("without network, run examples/quickstart.yaml (the bundled corpus) or set "
                "data.path to local .jsonl.zst, .jsonl, .txt or .parquet files")


def local_files(path: str) -> list[str]:
    candidate = Path(path).expanduser()
    if candidate.is_dir():
        return sorted(str(p) for p in candidate.rglob("*")
                      if p.is_file() and _builder_for(p.name))
    if candidate.is_file():
        return [str(candidate)]
    return sorted(glob.glob(str(candidate), recursive=True))


def _builder_for(name: str) -> str | None:
    return BUILDERS.get(Path(name).suffix)


def looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "/", "~"))


def open_dataset(run: Run, path: str, data_files: str | None, key: str = "data.path"):
    """The streaming `datasets.IterableDataset` of the corpus at `path`; one shard per file."""
    cache = Path(run.config.tokenizer.cache_dir) if run.config.tokenizer.cache_dir \
        else default_cache_dir()
    if path == "bundled":
        return _stream_files(bundled_shards(cache), key)
    if path.startswith(("http://", "https://")):
        return _stream_files([u.strip() for u in path.split(",") if u.strip()], key)
    files = local_files(path)
    if files:
        return _stream_files(files, key)
    if looks_like_hub_id(path):
        return _stream_hub(path, data_files, key)
    raise UserError(f"{key}: no file matches '{path}' and it is not a Hub dataset "
                    "id (owner/name); give bundled, a file, a folder or a glob")


def _stream_files(files: list[str], key: str):
    import datasets

    # slimcore retries whole records (stream.py); datasets' own 20 x 5 s read retries would
    # hide a stall from data.timeout_s for minutes.
    datasets.config.STREAMING_READ_MAX_RETRIES = 1
    datasets.config.STREAMING_READ_RETRY_INTERVAL = 0

    builders = {_builder_for(f) for f in files}
    if None in builders or len(builders) != 1:
        kinds = ", ".join(sorted(BUILDERS))
        raise UserError(f"{key}: files must share one supported kind ({kinds}); got "
                        f"{', '.join(sorted({Path(f).name for f in files})[:3])}")
    builder = builders.pop()
    kwargs = {"sample_by": "document"} if builder == "text" else {}
    return datasets.load_dataset(builder, data_files=files, split="train", streaming=True,
                                 **kwargs)


def _stream_hub(repo: str, data_files: str | None, key: str):
    check_hub_reachable(repo, key)
    import datasets

    try:
        return datasets.load_dataset(repo, data_files={"train": data_files} if data_files
                                     else None, split="train", streaming=True)
    except (ConnectionError, OSError, TimeoutError) as e:
        raise UserError(f"{key}: cannot stream '{repo}' from the Hugging Face Hub "
                        f"({type(e).__name__}: {str(e)[:200]}); {OFFLINE_HINT}") from None


def check_hub_reachable(repo: str, key: str = "data.path", timeout_s: float = 5.0) -> None:
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


class Position(NamedTuple):
    """Where a reader reads next: `record` of the `cursor`-th shard in its order for
    `epoch`."""

    epoch: int = 0
    cursor: int = 0
    record: int = 0

    def __str__(self) -> str:
        return f"epoch {self.epoch}, shard {self.cursor} of this reader, record {self.record}"


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
                 key: str = "data.path", role: str = "all", split_ranks: bool = True,
                 shuffle_buffer: int = 0, epochs: int | None = None, announce: bool = False,
                 workers: int = 1):
        self.run, self.path, self.data_files, self.key, self.role = (run, path, data_files,
                                                                     key, role)
        self.split_ranks, self.buffer_size, self.epochs = split_ranks, shuffle_buffer, epochs
        self.announce = announce and run.is_main_process
        self.positions = [Position() for _ in range(workers)]
        self.turn = 0  # the reader whose record comes next
        self.buffer: list[str] = []
        self.rng = random.Random(run.config.run.seed)
        self.shards_found: int | None = None
        self.warned = False

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"positions": [list(p) for p in self.positions], "turn": self.turn,
                "buffer": list(self.buffer), "rng": _jsonable(self.rng.getstate())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["positions"]) != len(self.positions):
            raise UserError(f"--resume: the data position was saved with "
                            f"{len(state['positions'])} data.workers, this run has "
                            f"{len(self.positions)}; resume with the same data.workers")
        self.positions = [Position(*p) for p in state["positions"]]
        self.turn = state["turn"]
        self.buffer = list(state["buffer"])
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))

    # -- reading ---------------------------------------------------------------------------

    def _plan(self, n_shards: int, worker: int) -> ShardPlan:
        shards = list(range(n_shards))
        if self.role != "all":
            if n_shards < 2:
                raise UserError(f"eval.path: {self.path} has a single shard, so none can be "
                                "held out for evaluation; name a held-out corpus in eval.path")
            shards = shards[:-1] if self.role == "train" else shards[-1:]
        world, rank = (self.run.world_size, self.run.rank) if self.split_ranks else (1, 0)
        workers = len(self.positions)
        # Readers of all ranks split the shards as one world of world x workers.
        plan = ShardPlan(shards, rank * workers + worker, world * workers,
                         self.run.config.run.seed, self.buffer_size > 0)
        if not plan.by_shard and self.announce and not self.warned:
            self.warned = True
            readers = world * workers
            print(f"slimcore: warning: {self.key}: the shard count ({len(shards)}) does not "
                  f"divide evenly among {world} ranks x {workers} data.workers, so every "
                  f"reader reads every shard and keeps 1 record in {readers}; a shard count "
                  f"divisible by {readers} reads {readers}x less", file=sys.stderr, flush=True)
        self.shards_found = len(shards)
        return plan

    def _read_from(self, start: Position, worker: int) -> Iterator[tuple[Position, dict]]:
        dataset = open_dataset(self.run, self.path, self.data_files, self.key)
        plan = self._plan(dataset.n_shards, worker)
        epoch, cursor, skip = start
        while self.epochs is None or epoch < self.epochs:
            order = plan.order(epoch)
            for cursor in range(cursor, len(order)):
                shard = dataset.shard(num_shards=dataset.n_shards, index=order[cursor])
                for index, record in enumerate(itertools.islice(shard, skip, None), skip):
                    if plan.keeps(index):
                        yield Position(epoch, cursor, index + 1), record
                skip = 0
            cursor = 0
            epoch += 1

    def _texts(self) -> Iterator[tuple[int, Position, str]]:
        data = self.run.config.data
        wanted = set(data.set_names)
        started = time.perf_counter()
        readers = [resilient_records(lambda start, w=w: self._read_from(start, w),
                                     self.positions[w], self.path, data.timeout_s,
                                     data.max_retries, data.retry_backoff_s)
                   for w in range(len(self.positions))]
        epochs = [p.epoch for p in self.positions]
        produced = any(p.record > 0 or p.cursor > 0 for p in self.positions)
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
                position, record = item
                if position.epoch != epochs[worker]:
                    self._check_produced(produced, wanted)
                    epochs[worker] = position.epoch
                if data.text_field not in record:
                    raise UserError(f"data.text_field: records of {self.path} have no "
                                    f"'{data.text_field}' (fields: {', '.join(record)})")
                if wanted and (record.get("meta") or {}).get("redpajama_set_name") \
                        not in wanted:
                    self.positions[worker] = position
                    continue
                if self.announce:
                    print(f"data: {self.shards_found} shards of {self.path} ({self.role}); "
                          f"first document after {time.perf_counter() - started:.2f} s",
                          flush=True)
                    self.announce = False
                produced = True
                yield worker, position, record[data.text_field]
            self._check_produced(produced, wanted)
        finally:
            for reader in readers:
                reader.close()  # each stops and joins its thread

    def _check_produced(self, produced: bool, wanted: set[str]) -> None:
        if not produced:
            only = f" of data.set_names {sorted(wanted)}" if wanted else ""
            raise UserError(f"{self.key}: '{self.path}' holds no documents{only}")

    def __iter__(self) -> Iterator[str]:
        for worker, position, text in self._texts():
            self.positions[worker] = position
            if self.buffer_size <= 0:
                yield text
            elif len(self.buffer) < self.buffer_size:
                self.buffer.append(text)
            else:
                slot = self.rng.randrange(self.buffer_size)
                text, self.buffer[slot] = self.buffer[slot], text
                yield text
        while self.buffer:  # a finite stream: what the buffer holds, in random order
            yield self.buffer.pop(self.rng.randrange(len(self.buffer)))


def training_role(run: Run) -> str:
    """With evaluation on and no eval.path, the corpus's last shard is held out."""
    return "train" if run.config.eval.interval > 0 and run.config.eval.path is None else "all"


def training_documents(run: Run) -> DocumentStream:
    """The training stream of the run: this rank's share, shuffled, endless."""
    data = run.config.data
    return DocumentStream(run, data.path, data.data_files, role=training_role(run),
                          shuffle_buffer=data.shuffle_buffer, announce=True,
                          workers=data.workers)


def heldout_documents(run: Run) -> DocumentStream:
    """The evaluation stream: eval.path, or the corpus's held-out last shard; one pass, the
    same documents on every rank, in file order."""
    cfg = run.config
    if cfg.eval.path is None:
        return DocumentStream(run, cfg.data.path, cfg.data.data_files, role="heldout",
                              split_ranks=False, epochs=1)
    return DocumentStream(run, cfg.eval.path, cfg.eval.data_files, key="eval.path",
                          split_ranks=False, epochs=1)


def first_documents(run: Run, max_documents: int) -> list[str]:
    """The tokenizer's training sample: the corpus's first documents, one pass at most, the
    same on every rank (so every rank trains the same tokenizer)."""
    texts = []
    stream = DocumentStream(run, run.config.data.path, run.config.data.data_files,
                            role=training_role(run), split_ranks=False, epochs=1)
    for text in stream:
        texts.append(text)
        if len(texts) >= max_documents:
            break
    return texts


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value
