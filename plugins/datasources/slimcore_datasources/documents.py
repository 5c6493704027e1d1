"""A rank's documents of one corpus, pass after pass: each reader's shards in a seeded order
per epoch, readers taken in turn, records cut into documents at corpus.max_document_chars,
through a seeded shuffle buffer; damage counted and named. Its position (DocumentStream's
state) holds where each reader reads next and where each buffered document came from, never
text, so a checkpoint's size does not grow with the data's shape."""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from typing import Any, Iterator

from slimcore import UserError

from .config import MISSING, WARNINGS_IN_FULL, settings
from .cutting import document_bounds
from .files import corpus_files
from .plan import PLAN_VERSION, Position, Ref, ShardPlan
from .positions import counts
from .records import Blank, Damage, shard_records
from .stream import resilient_records
from .token_cache import cache_for, cached_items, writing


class DocumentStream:
    """This rank's documents of one corpus, pass after pass (`epochs=None`: forever).

    role: "train" (the corpus without its held-out shard when `holdout`), "heldout" (that
    shard only) or "all". `workers` readers, each on its own thread with its own share of
    the rank's shards, are taken in turn, one record each, so decompression and parsing of
    several shards overlap and the order stays deterministic. With `shuffle_buffer` > 0,
    documents leave through a seeded buffer of that many, and shards are read in a new
    seeded order every epoch. `state_dict()` between two documents and `load_state_dict()`
    before iterating resume the stream exactly."""

    def __init__(self, run, path: str, data_files: str | None = None, *,
                 key: str = "corpus.path", role: str = "all", split_ranks: bool = True,
                 shuffle_buffer: int = 0, epochs: int | None = None, announce: bool = False,
                 workers: int = 1, set_names: list[str] | None = None):
        self.run, self.path, self.data_files, self.key, self.role = (run, path, data_files,
                                                                     key, role)
        self.split_ranks, self.buffer_size, self.epochs = split_ranks, shuffle_buffer, epochs
        self.announce = announce and run.is_main_process
        self.positions = [Position() for _ in range(workers)]
        self.turn = 0  # the reader whose record comes next
        self.buffer: list[tuple[Ref, str]] = []
        # Buffered documents named by a checkpoint, to be read again before the first one.
        self.refetch: list[Ref] = []
        self.rng = random.Random(run.config.run.seed)
        self.bad = 0  # bad records and damaged shards met so far in the run
        self.cut = 0  # records cut into documents by this process
        self.epoch_passed = False  # a reader began its second pass
        self.files: list[str] | None = None
        self.plans: list[ShardPlan] = []
        self.warned = False
        # records kept by meta.redpajama_set_name (empty: all); a mixture's component has its own
        self.set_names = settings(run).set_names if set_names is None else set_names
        self.token_cache = cache_for(run)  # None unless corpus.token_cache and a tokenizer
        self.plan_version = PLAN_VERSION  # a restored position may be of an earlier plan

    # -- state -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        # Restored and not yet read again, or the buffer: positions, never text.
        buffer = [list(ref) for ref in self.refetch] if self.refetch else \
            [list(ref) for ref, _ in self.buffer]
        return {"positions": [list(p) for p in self.positions], "turn": self.turn,
                "buffer": buffer, "buffer_size": self.buffer_size,
                "rng": _jsonable_rng(self.rng.getstate()), "bad": self.bad,
                "plan": self.plan_version}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "components" in state:
            raise UserError("--resume: the checkpoint read a corpus.mixture and this run one "
                            "corpus; resume with the checkpoint's corpus.mixture")
        if len(state["positions"]) != len(self.positions):
            raise UserError(f"--resume: the data position was saved with "
                            f"{len(state['positions'])} corpus.workers, this run has "
                            f"{len(self.positions)}; resume with the same corpus.workers")
        self.positions = [Position(*counts(p, "a position")) for p in state["positions"]]
        self.turn = state["turn"] % len(self.positions)
        self.refetch = [Ref(*counts(entry, "the shuffle buffer")) for entry in state["buffer"]]
        self.bad, self.buffer_size = counts([state.get("bad", 0),
                                             state.get("buffer_size", self.buffer_size)],
                                            "the counters")
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))
        # positions saved under an earlier plan go on under it (no "plan": version 1)
        self.plan_version, = counts([state.get("plan", 1)], "the plan's version")
        self.files = None  # planned (again) under that version
        if self.announce:
            # Now, before the first step: the first document read may come much later (the
            # restored stream can go on from what it held), under the progress bar.
            self._prepare()
            print(f"data: {self.shard_count} shards of {self.path} ({self.role}); resuming in "
                  f"epoch {min(p.epoch for p in self.positions) + 1} where the checkpoint "
                  "left it", flush=True)
            self.announce = False

    # -- reading ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        """List the corpus and plan each reader's shards (once, before the first read)."""
        if self.files is not None:
            return
        try:
            files = corpus_files(self.path, self.data_files, self.key,
                                 self.run.config.tokenizer.cache_dir)
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
                                self.run.config.run.seed, self.buffer_size > 0,
                                self.plan_version) for w in range(workers)]
        plan = self.plans[0]
        if plan.shared and self.announce and not self.warned:
            self.warned = True
            shared = f"then 1 record in {plan.sharers} of one of the {plan.left_over} left " \
                f"over, which its {plan.sharers} readers each decompress" \
                if self.plan_version >= 3 else f"then 1 record in {plan.readers} of each of " \
                f"the {plan.left_over} left over, which every reader decompresses"
            print(f"slimcore: warning: {self.key}: {len(shards)} shards do not divide evenly "
                  f"among {world} ranks x {workers} corpus.workers: each reader reads "
                  f"{len(plan.whole)} whole, {shared}; a shard count divisible by "
                  f"{plan.readers} reads less", file=sys.stderr, flush=True)
        self.shard_count, self.files = len(shards), files

    def _shard_items(self, worker: int, start: Position, cacheable: bool = True
                     ) -> Iterator[tuple[Position, str, Any]]:
        """The items of one shard from `start` on: (position after, kind, payload) with kind
        "text" (payload: text, ref, parts of its record), "skip" (a record corpus.set_names
        leaves out, or a run of blank lines) or "damage" (payload: Damage, file). Runs on the
        reader's thread."""
        corpus = settings(self.run)
        wanted = set(self.set_names)
        plan = self.plans[worker]
        epoch, cursor = start.epoch, start.cursor
        shard = plan.order(epoch)[cursor]
        url = self.files[shard]
        # A shard read whole from the token cache, or its text (cached as it goes when the
        # read starts at the shard's beginning and is no refetch)
        cache = self.token_cache if plan.is_whole(shard) else None
        key, writer = None, None
        if cache is not None:
            key = cache.key(url, corpus, self.set_names)
            cached = cache.open(key)
            if cached is not None:
                yield from cached_items(cached, worker, start)
                return
            if start[2:] == (0, 0) and cacheable:
                writer = cache.begin(key, url)
            elif cacheable:  # a read restarted mid-shard: this pass does not cache it
                cache.abandon_unread(key)
        documents = 0  # handed on, for the writer
        for item in shard_records(url, start.record,
                                  keep=None if plan.is_whole(shard) else plan.keeps_record):
            if isinstance(item, Blank):  # progress through blank lines
                yield Position(epoch, cursor, item.index + 1), "skip", None
                continue
            if isinstance(item, Damage):
                if writer is not None:  # a damaged shard is not cached
                    cache.abandon(key)
                    writer = None
                yield Position(epoch, cursor, item.index + 1), "damage", (item, url)
                if item.fatal:
                    return
                continue
            index, record = item
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
            bounds = document_bounds(text, corpus.max_document_chars)
            del record  # the text alone is kept, until its last part is handed on
            first = start.part if index == start.record else 0
            for part in range(first, len(bounds)):
                done = part + 1 == len(bounds)
                position = after if done else Position(epoch, cursor, index, part + 1)
                begin, end = bounds[part]
                document = text if len(bounds) == 1 else text[begin:end]
                if done:
                    del text
                if writer is not None:
                    document = writing(cache, writer, document, index, part, len(bounds))
                    documents += 1
                yield position, "text", (document, Ref(worker, epoch, cursor, index, part),
                                         len(bounds))
                del document
        if writer is not None:
            cache.read_whole(writer, documents)

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
        return resilient_records(lambda position: read(worker, position, False) if shard_only
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
                    if position.epoch == 0:  # met again each pass: counted and said once
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
            wanted, key = self.set_names, self.key.rpartition(".")[0] + ".set_names"
            only = f" of {key} {sorted(wanted)}" if wanted else ""
            raise UserError(f"{self.key}: '{self.path}' holds no documents{only}")

    def _refetched(self) -> list[tuple[Ref, str]]:
        """The shuffle buffer a checkpoint named by position, read again from its shards."""
        texts: dict[Ref, str] = {}
        by_shard = defaultdict(list)
        for ref in self.refetch:
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
        return [(ref, texts[ref]) for ref in self.refetch]

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self._documents()
        except GeneratorExit:  # the consumer is done: no document it holds is encoded now
            if self.token_cache is not None:
                self.token_cache.close(encoding_ended=True)
            raise
        if self.token_cache is not None:
            self.token_cache.close()

    def _documents(self) -> Iterator[str]:
        self._prepare()
        if self.refetch:
            self.buffer, self.refetch = self._refetched(), []
        for worker, ref, text in self._items():
            if self.buffer_size <= 0:
                yield text
                continue
            if self.epoch_passed and len(self.buffer) < self.buffer_size:
                # `text` begins the next pass: the buffer holds the whole of one and is not
                # full, so it never would be.
                print(f"slimcore: warning: corpus.shuffle_buffer ({self.buffer_size}) is "
                      f"more documents than a pass over {self.path} gives this reader; "
                      f"shuffling over {len(self.buffer)}", file=sys.stderr)
                self.buffer_size = len(self.buffer)
            if len(self.buffer) < self.buffer_size:
                self.buffer.append((ref, text))
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


def _jsonable_rng(state: tuple) -> list:
    """random.Random's state (version, 625 ints, gauss) as JSON lists: taken after every
    batch, so the ints are copied at C speed, not one by one."""
    version, internal, gauss = state
    return [version, list(internal), gauss]
