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
# 2 splits the shards left over by record; 1 (a position without the key) read every shard
# whenever the shard count did not divide among the readers.
PLAN_VERSION = 2


class ShardPlan:
    """Which shards one of the job's `readers` reads (ranks x corpus.workers), in which
    order each epoch, and which records of each it keeps.

    The shards divide among the readers as far as they go, whole: reader g reads shards g,
    g + R, ... of the first R x (S // R). The S mod R left over are read by every reader,
    each keeping the records whose index is g modulo R: their lines are decompressed by all
    and parsed by one. So each reader parses about 1/R of the corpus whatever the shard
    count (8 shards for 16 readers: each parses 1/16, against all of it when every record
    was parsed). Whole shards come first in an epoch, then the shared ones, each group in a
    seeded order per epoch. `version` 1: the plan of positions saved before version 2."""

    def __init__(self, shards: list[int], reader: int, readers: int, seed: int,
                 shuffle: bool, version: int = PLAN_VERSION):
        whole = len(shards) // readers * readers if version >= 2 else \
            (len(shards) if len(shards) % readers == 0 else 0)
        self.whole, self.shared = shards[:whole][reader::readers], shards[whole:]
        self.by_shard = not self.shared  # every shard this reader reads is its own
        self.reader, self.readers = reader, readers
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
        return record_index % self.readers == self.reader
