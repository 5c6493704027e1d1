"""Where a rank's readers read: the shards each reads in which order every epoch
(ShardPlan), the place a reader reads next (Position), and where a document came from
(Ref), which is what a checkpoint stores of the shuffle buffer."""

from __future__ import annotations

import random
from typing import NamedTuple


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


# The version of ShardPlan a saved position was read under (DocumentStream's state "plan"):
# 3 gives each shard left over to its own group of readers, split by record; 2 split every
# shard left over by record among all readers (each decompressed all of them); 1 (a
# position without the key) read every shard whenever the count did not divide.
PLAN_VERSION = 3


class ShardPlan:
    """Which shards one of the job's `readers` reads (ranks x corpus.workers), in which
    order each epoch, and which records of each it keeps.

    The shards divide among the readers as far as they go, whole: reader g reads shards g,
    g + R, ... of the first R x (S // R). Of the L = S mod R left over, reader g reads shard
    g mod L, with the other readers of the same remainder, each keeping the records whose
    index is its place among them modulo their number: a shard left over is decompressed
    by its readers only (about R / L of them) and each line parsed by one. So each reader
    parses about 1/R of the corpus and decompresses at most one shard more than its whole
    ones, whatever the shard count (8 shards for 16 readers: each decompresses 1 and parses
    half of it). Whole shards come first in an epoch, then the shared one, each group in a
    seeded order per epoch. `version` 2 split every shard left over among all readers (each
    decompressed all of them), 1 read every shard when the count did not divide: the plans
    of positions saved under them."""

    def __init__(self, shards: list[int], reader: int, readers: int, seed: int,
                 shuffle: bool, version: int = PLAN_VERSION):
        whole = len(shards) // readers * readers if version >= 2 else \
            (len(shards) if len(shards) % readers == 0 else 0)
        self.whole, left = shards[:whole][reader::readers], shards[whole:]
        if version >= 3 and left:
            self.shared = [left[reader % len(left)]]
            self.sharers = len(range(reader % len(left), readers, len(left)))
            self.place = reader // len(left)
        else:
            self.shared, self.sharers, self.place = left, readers, reader
        self.reader, self.readers, self.left_over = reader, readers, len(left)
        self.seed, self.shuffle = seed, shuffle

    def order(self, epoch: int) -> list[int]:
        whole, shared = list(self.whole), list(self.shared)
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(whole)
            random.Random(f"{self.seed}:{epoch}").shuffle(shared)
        return whole + shared

    def is_whole(self, shard: int) -> bool:
        return shard not in self.shared

    def keeps_record(self, record_index: int) -> bool:
        """Of a shared shard: this reader's records."""
        return record_index % self.sharers == self.place
