"""Which rank died or hung, named: every rank beats in torchrun's store, with the collective
it last entered, so a rank that gives up waiting can say who it was waiting for.

    heartbeat = Heartbeat(store, rank, world_size)   a thread beats every BEAT_S seconds
    heartbeat.at("step 3: forward")                   each collective, as it is entered
    heartbeat.suspects()                              "rank 1 stopped beating (...)" or ""

A beat is a counter, not a time (the nodes' clocks need not agree): a rank whose counter does
not move over a few beats is dead, killed or stopped (SIGSTOP); one that beats but entered
another collective than this rank is hung elsewhere, or behind. The store is torchrun's
agent's, so it outlives the ranks; when it does not answer, nothing is named.
"""

from __future__ import annotations

import threading
import time

BEAT_S = 0.5
WATCH_BEATS = 4  # a live rank beats this many times while its peers are watched


class Heartbeat:
    def __init__(self, store, rank: int, world_size: int):
        self.store, self.rank, self.world_size = store, rank, world_size
        self.beats, self.where = 0, "the start"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="slimcore-heartbeat",
                                       daemon=True)
        self.thread.start()

    def at(self, what: str) -> None:
        self.where = what

    def _beat(self) -> None:
        while not self.stopped.wait(BEAT_S):
            self.beats += 1
            try:
                self.store.set(f"heartbeat/{self.rank}", f"{self.beats}|{self.where}")
            except Exception:  # noqa: BLE001 - the store gone: the job is ending anyway
                return

    def stop(self) -> None:
        self.stopped.set()

    def _read(self) -> dict[int, tuple[int, str]]:
        beats = {}
        for rank in range(self.world_size):
            key = f"heartbeat/{rank}"
            if rank != self.rank and self.store.check([key]):
                count, _, where = self.store.get(key).decode().partition("|")
                beats[rank] = (int(count), where)
        return beats

    def suspects(self) -> str:
        """The ranks to blame, as words: those whose beat stopped, else those that entered
        another collective; "" when all look well or the store does not answer."""
        try:
            before = self._read()
            time.sleep(BEAT_S * WATCH_BEATS)
            after = self._read()
        except Exception:  # noqa: BLE001 - the agent's store gone too: nothing to tell
            return ""
        silent = [rank for rank in range(self.world_size) if rank != self.rank
                  and after.get(rank, (0, ""))[0] == before.get(rank, (0, ""))[0]]
        if silent:  # a beat tells where its rank was at most BEAT_S before
            return "; " + "; ".join(
                f"rank {rank} stopped beating (dead, killed or stopped), last seen in "
                f"{after[rank][1]}" if rank in after else
                f"rank {rank} never beat (dead, killed or stopped)" for rank in silent)
        return "".join(f"; rank {rank} is alive but elsewhere (hung, or behind), in {where}"
                       for rank, (_, where) in after.items() if where != self.where)
