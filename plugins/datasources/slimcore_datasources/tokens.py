"""Plugin `tokens`: pre-tokenized shards, read as they lie on disk (memory-mapped), with no
text and no tokenizer in the loop:

    data: {source: tokens}
    tokens: {path: "fineweb10B/fineweb_train_*.bin", eval_path: fineweb10B/fineweb_val_000000.bin}

A file is llm.c's `.bin` (a header of 256 int32: magic 20240520, version 1 for uint16 ids or
2 for uint32, the id count; then the ids), told by its magic, or else nanoGPT's `train.bin`
(nothing but ids, `tokens.dtype` wide). Rows are windows of `model.seq_len + 1` ids, one
after another through each file (none crosses files), the files in name order, then again
(epochs); rank r of N takes windows r, r + N, ... The position is the next window's: a
resume goes on exactly there. The ids must be those of the run's tokenizer (`tokenizer.path`
or `model.init_from`): the core checks every batch's ids against its vocabulary.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import numpy as np
import torch
from slimcore import Batch, ConfigError, DataSource, NonEmpty, Range, UserError, hookimpl

NAME = "tokens"
LLMC_MAGIC, HEADER_INTS = 20240520, 256
LLMC_DTYPES = {1: np.uint16, 2: np.uint32}


@dataclass
class TokensConfig:
    path: Annotated[str, NonEmpty()] | None = None  # a .bin file, a folder of them or a glob
    eval_path: Annotated[str, NonEmpty()] | None = None  # held-out shards (eval.interval)
    dtype: Literal["uint16", "uint32"] = "uint16"  # the ids of a file without a header
    # the id that begins each document in these files, for data.document_mask (llm.c's GPT-2
    # files put <|endoftext|>, 50256, before every document)
    document_start: Annotated[int, Range(min=0)] | None = None


@dataclass(frozen=True)
class Shard:
    path: Path
    ids: np.ndarray  # memory-mapped


def open_shards(pattern: str, dtype: str, key: str) -> list[Shard]:
    """The files `pattern` names, in name order, each mapped."""
    found = Path(pattern)
    names = sorted(found.glob("*.bin")) if found.is_dir() else \
        sorted(map(Path, glob.glob(pattern)))
    if not names:
        raise UserError(f"{key}: no token files at {pattern} (give a .bin file, a folder of "
                        "them or a glob)")
    return [open_shard(name, dtype, key) for name in names]


def open_shard(path: Path, dtype: str, key: str) -> Shard:
    size = path.stat().st_size
    header = np.fromfile(path, dtype=np.int32, count=3) if size >= 12 else np.zeros(3, np.int32)
    if header[0] == LLMC_MAGIC:
        width = LLMC_DTYPES.get(int(header[1]))
        count = int(header[2])
        if width is None or HEADER_INTS * 4 + count * np.dtype(width).itemsize > size \
                or count < 0:
            raise UserError(f"{key}: {path} has llm.c's header but version {header[1]} or "
                            f"count {header[2]:,} does not fit its {size:,} bytes")
        ids = np.memmap(path, dtype=width, mode="r", offset=HEADER_INTS * 4, shape=(count,))
    else:
        width = np.dtype(dtype)
        if size % width.itemsize:
            raise UserError(f"{key}: {path} holds {size:,} bytes, not a whole number of "
                            f"{dtype} ids (tokens.dtype)")
        ids = np.memmap(path, dtype=width, mode="r") if size else np.zeros(0, width)
    return Shard(path, ids)


class TokensSource(DataSource):
    name = NAME
    resumable = True
    eval_data_key = "tokens.eval_path"
    resume_changes: ClassVar[dict[str, str]] = {"tokens.path": "refused",
                                                "tokens.dtype": "refused"}

    def __init__(self, run):
        super().__init__(run)
        settings: TokensConfig = run.config.section(NAME)
        if settings.path is None:
            raise UserError("tokens.path: the tokens source needs its token files")
        self.shards = open_shards(settings.path, settings.dtype, "tokens.path")
        self.rows = Rows(self.shards, run.config.model.seq_len, run.rank, run.world_size,
                         document_start(run.config))
        self.batch_size = run.config.data.batch_size
        self.drawn = False

    def __next__(self) -> Batch:
        self.drawn = True
        return self.rows.batch(self.batch_size)

    def state_dict(self):
        return self.rows.position() if self.drawn else None

    def load_state_dict(self, state):
        self.rows.restore(state)

    def skip(self, batches: int) -> None:
        """Without reading: a job of another number of ranks (each rank takes every
        world-th window) goes on where the saved job's windows ended when its global batch
        is the same (the core skips the steps done, in batches of this rank's)."""
        self.rows.advance(batches * self.batch_size)
        self.drawn = True

    @classmethod
    def validation_batches(cls, config, tokenizer, count):
        settings: TokensConfig = config.section(NAME)
        if settings.eval_path is None:
            return None
        rows = Rows(open_shards(settings.eval_path, settings.dtype, "tokens.eval_path"),
                    config.model.seq_len, 0, 1, document_start(config))
        return [rows.batch(config.data.batch_size) for _ in range(count)]


def document_start(config) -> int | None:
    """The id that begins each document, under data.document_mask (which needs it)."""
    if not config.data.document_mask:
        return None
    start = config.section(NAME).document_start
    if start is None:
        raise ConfigError("tokens.document_start", "data.document_mask needs the id that "
                          "begins each document in the token files", config.source)
    return start


class Rows:
    """Windows of seq_len + 1 ids through the shards: this rank's every world-th."""

    def __init__(self, shards: list[Shard], seq_len: int, rank: int, world: int,
                 document_start: int | None = None):
        self.shards, self.span, self.rank, self.world = shards, seq_len + 1, rank, world
        self.document_start = document_start
        self.counts = [len(s.ids) // self.span for s in shards]
        if sum(self.counts) == 0:
            raise UserError(f"tokens.path: the token files hold no window of "
                            f"{self.span} ids (model.seq_len + 1)")
        self.epoch, self.shard, self.window = 0, 0, rank

    def next(self) -> torch.Tensor:
        while self.window >= self.counts[self.shard]:
            self.window -= self.counts[self.shard]  # rank r's stride goes on in the next file
            self.shard += 1
            if self.shard == len(self.shards):
                self.epoch, self.shard, self.window = self.epoch + 1, 0, self.rank
        start = self.window * self.span
        ids = self.shards[self.shard].ids[start:start + self.span]
        self.window += self.world
        return torch.from_numpy(ids.astype(np.int64))

    def advance(self, windows: int) -> None:
        """Past `windows` of this rank's windows, as that many next() calls would go,
        reading nothing: in each epoch this rank takes windows rank, rank + world, ... of all
        the shards' windows in a row."""
        total = sum(self.counts)
        per_epoch = max(0, total - self.rank + self.world - 1) // self.world
        if per_epoch == 0:
            return
        place = sum(self.counts[:self.shard]) + self.window
        if place >= total:  # the epoch's last window was drawn: the next begins again
            self.epoch, place = self.epoch + 1, self.rank
        epochs, taken = divmod((place - self.rank) // self.world + windows, per_epoch)
        self.epoch += epochs
        # counted from the first shard: next() carries the window into its shard
        self.shard, self.window = 0, self.rank + taken * self.world

    def batch(self, size: int) -> Batch:
        """The next `size` windows as a batch: inputs and targets one id apart."""
        windows = torch.stack([self.next() for _ in range(size)])
        return Batch.from_sequences(windows, self.document_start)

    def position(self) -> dict:
        return {"epoch": self.epoch, "shard": self.shards[self.shard].path.name,
                "shard_index": self.shard, "window": self.window}

    def restore(self, state: dict) -> None:
        index = int(state["shard_index"])
        if index >= len(self.shards) or self.shards[index].path.name != state["shard"]:
            raise UserError(f"--resume: the tokens source was at {state['shard']}, which "
                            "tokens.path no longer lists in that place")
        self.epoch, self.shard, self.window = int(state["epoch"]), index, int(state["window"])


@hookimpl
def declare_config():
    return {NAME: TokensConfig}


@hookimpl
def register_data_sources():
    return [TokensSource]
