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
