"""The token cache (`corpus.token_cache: true`): each shard's documents as token ids, written
the first time a pass reads the shard whole, read instead of its text from then on.

    <cache>/tokens/<tokenizer fingerprint>/<shard key>.bin        llm.c's .bin: a header of 256
                                                                 int32, then BOS + ids + EOS
                                                                 of every document (uint16
                                                                 ids when the vocabulary
                                                                 allows, else uint32)
                                          <shard key>.idx.npy    per document: record, part,
                                                                 parts, offset, length, chars
                                          <shard key>.json       what the files hold and their
                                                                 sha256; written last, so a
                                                                 shard without it is unfinished

The shard key hashes the shard (its path or URL, and a local file's size and modification
time) and what makes its documents (corpus.text_field, corpus.max_document_chars, the set
names kept): a changed shard or setting is another key, another tokenizer another folder, so
a cache is never read for text it was not made from. Files are checked against their sha256
when a stream first opens them (again only if their size or time changes: a later pass does
not read them twice); a damaged one is named, removed and made again from the text on that
pass.

A pass reads a shard's text in record order, but its documents reach the encoder later and
shuffled (the shuffle buffer): each arrives with a `keep` callback (CacheableText) that
appends its tokens to the shard's unfinished file, and the shard's index sorts them. The
shard is committed when every document the reader handed on was kept; a pass cut short (the
end of a run, a resume mid-shard, damaged records) leaves it unwritten, for a later pass.
The `tokens` source reads the .bin files as they are (`tokens.path: <that folder>`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import sys
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from slimcore import cache_dir

from .config import settings
from .plan import Position, Ref
from .tokens import HEADER_INTS, LLMC_MAGIC

INDEX_COLUMNS = ("record", "part", "parts", "offset", "length", "chars")
HOST = socket.gethostname()


def cache_for(run) -> "TokenCache | None":
    """The run's token cache: with corpus.token_cache and a tokenizer (none while the
    tokenizer itself is trained), in tokenizer.cache_dir."""
    tokenizer = getattr(run, "tokenizer", None)
    if not settings(run).token_cache or tokenizer is None:
        return None
    return TokenCache(cache_dir(run.config.tokenizer.cache_dir), tokenizer.fingerprint,
                      tokenizer.vocab_size)


def cached_items(shard: "CachedShard", worker: int, start: Position
                 ) -> Iterator[tuple[Position, str, Any]]:
    """A cached shard's documents from `start` on, as the text reader's items."""
    epoch, cursor = start.epoch, start.cursor
    for record, part, parts, document in shard.documents(start.record, start.part):
        after = Position(epoch, cursor, record, part + 1) if part + 1 < parts else \
            Position(epoch, cursor, record + 1)
        yield after, "text", (document, Ref(worker, epoch, cursor, record, part), parts)


def writing(cache: "TokenCache", writer: "ShardWriter", text: str, record: int, part: int,
            parts: int) -> "CacheableText":
    """`text`, to be kept in `writer`'s shard once encoded."""
    document = CacheableText(text)
    document.keep = functools.partial(cache.keep, writer, record, part, parts, len(text))
    return document


class CacheableText(str):
    """A document's text whose tokens the cache wants: `keep(tokens)` stores them."""

    keep: Callable[[torch.Tensor], None]


class TokenDocument:
    """A document read from the cache: BOS + ids + EOS. Its length is its text's characters,
    as a text's is, so everything that weighs documents weighs it the same."""

    __slots__ = ("ids", "chars")

    def __init__(self, ids: np.ndarray, chars: int):
        self.ids, self.chars = ids, chars

    def __len__(self) -> int:
        return self.chars

    def tokens(self) -> torch.Tensor:
        return torch.from_numpy(self.ids.astype(np.int64))


def shard_key(url: str, text_field: str, max_document_chars: int, set_names) -> str:
    stat = None
    if "://" not in url:
        info = os.stat(url)
        stat = [info.st_size, info.st_mtime_ns]
    made = [url, stat, text_field, max_document_chars, sorted(set_names)]
    return hashlib.sha256(json.dumps(made).encode()).hexdigest()[:32]


class CachedShard:
    """A committed, verified shard: its documents from a place on."""

    def __init__(self, ids: np.ndarray, index: np.ndarray):
        self.ids, self.index = ids, index

    def documents(self, record: int, part: int) -> Iterator[tuple[int, int, int, TokenDocument]]:
        """(record, part, parts, document) of each document at or after (record, part)."""
        first = np.searchsorted(self.index[:, 0] * (1 << 20) + self.index[:, 1],
                                record * (1 << 20) + part)
        for row in self.index[first:]:
            rec, prt, parts, offset, length, chars = (int(v) for v in row)
            yield rec, prt, parts, TokenDocument(self.ids[offset:offset + length], chars)


class ShardWriter:
    """A shard's documents as they arrive, into an unfinished file; committed whole."""

    def __init__(self, cache: "TokenCache", key: str, url: str):
        self.cache, self.key, self.url = cache, key, url
        self.partial = cache.folder / f"{key}.partial-{HOST}-{os.getpid()}-{id(self)}"
        self.file = open(self.partial, "wb")
        self.file.write(b"\0" * HEADER_INTS * 4)
        self.rows: list[tuple[int, ...]] = []
        self.count = 0  # ids written after the header
        self.expected: int | None = None
        # However the writer ends (discarded, dropped with its stream, the process
        # exiting), its unfinished file goes; after a commit there is none to remove.
        self.cleanup = weakref.finalize(self, _remove_partial, self.file, self.partial)

    def add(self, record: int, part: int, parts: int, chars: int, tokens: torch.Tensor):
        ids = tokens.numpy().astype(self.cache.dtype)
        self.file.write(ids.tobytes())
        self.rows.append((record, part, parts, self.count, len(ids), chars))
        self.count += len(ids)

    def commit(self) -> None:
        """Header, index and manifest written; the files renamed into place."""
        count = self.count
        header = np.zeros(HEADER_INTS, np.int32)
        header[:3] = (LLMC_MAGIC, 1 if self.cache.dtype == np.uint16 else 2, count)
        self.file.seek(0)
        self.file.write(header.tobytes())
        self.file.close()
        index = np.array(sorted(self.rows), dtype=np.int64).reshape(-1, len(INDEX_COLUMNS))
        paths = self.cache.paths(self.key)
        os.replace(self.partial, paths["bin"])
        with open(paths["idx"], "wb") as f:
            np.save(f, index)
        manifest = {"shard": self.url, "documents": len(index), "tokens": count,
                    "dtype": self.cache.dtype.name, "columns": INDEX_COLUMNS,
                    "sha256": {k: file_sha256(paths[k]) for k in ("bin", "idx")}}
        temporary = paths["json"].with_suffix(f".json.partial-{os.getpid()}")
        temporary.write_text(json.dumps(manifest))
        os.replace(temporary, paths["json"])

    def discard(self) -> None:
        self.cleanup()


def _remove_partial(file, partial: Path) -> None:
    file.close()
    partial.unlink(missing_ok=True)


class TokenCache:
    """One folder of cached shards, for one tokenizer."""

    def __init__(self, root: Path, fingerprint: str, vocab_size: int):
        self.folder = root / "tokens" / fingerprint[:20]
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)
        self.lock = threading.Lock()
        self.writers: dict[str, ShardWriter] = {}
        self.said: set[str] = set()
        # files whose sha256 this process checked, by key: their (size, mtime) then; a later
        # pass reads them without hashing them again, unless they changed
        self.verified: dict[str, tuple] = {}

    def key(self, url: str, corpus, set_names) -> str:
        return shard_key(url, corpus.text_field, corpus.max_document_chars, set_names)

    def paths(self, key: str) -> dict[str, Path]:
        return {"bin": self.folder / f"{key}.bin", "idx": self.folder / f"{key}.idx.npy",
                "json": self.folder / f"{key}.json"}

    def open(self, key: str) -> CachedShard | None:
        """The committed shard of `key`, verified; None when there is none, or it was
        damaged (then named once and removed, to be made again)."""
        paths = self.paths(key)
        if not paths["json"].exists():
            return None
        try:
            manifest = json.loads(paths["json"].read_text())
            stamp = tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in paths.values())
            if self.verified.get(key) != stamp:
                for kind in ("bin", "idx"):
                    if file_sha256(paths[kind]) != manifest["sha256"][kind]:
                        raise ValueError(f"its {paths[kind].name} fails its sha256")
                self.verified[key] = stamp
            index = np.load(paths["idx"])
            ids = np.memmap(paths["bin"], dtype=np.dtype(manifest["dtype"]), mode="r",
                            offset=HEADER_INTS * 4, shape=(int(manifest["tokens"]),))
            check_index(index, len(ids))
        except (OSError, ValueError, KeyError, TypeError) as e:
            self.remove(key, f"{paths['bin']} is damaged ({e})")
            return None
        return CachedShard(ids, index)

    def remove(self, key: str, why: str) -> None:
        if key not in self.said:
            self.said.add(key)
            print(f"slimcore: warning: corpus.token_cache: {why}; reading the shard's text "
                  "and caching it again", file=sys.stderr, flush=True)
        for path in self.paths(key).values():
            path.unlink(missing_ok=True)

    def begin(self, key: str, url: str) -> ShardWriter | None:
        """A writer for `key`, replacing one left unfinished by an earlier read of it; None
        while an earlier pass's writer, read whole, waits for its documents' tokens (the
        reader runs ahead of the encoder)."""
        with self.lock:
            waiting = self.writers.get(key)
            if waiting is not None and waiting.expected is not None:
                return None
            self.abandon_locked(key)
            self.writers[key] = writer = ShardWriter(self, key, url)
            return writer

    def keep(self, writer: ShardWriter, record: int, part: int, parts: int, chars: int,
             tokens: torch.Tensor) -> None:
        """A document's tokens (from the encoding thread)."""
        with self.lock:
            if self.writers.get(writer.key) is not writer:
                return  # abandoned: the read was restarted or cut short
            writer.add(record, part, parts, chars, tokens)
            self.commit_if_whole(writer)

    def read_whole(self, writer: ShardWriter, documents: int) -> None:
        """The reader handed on all `documents` of the shard (from the reading thread)."""
        with self.lock:
            if self.writers.get(writer.key) is writer:
                writer.expected = documents
                self.commit_if_whole(writer)

    def commit_if_whole(self, writer: ShardWriter) -> None:
        if writer.expected is not None and len(writer.rows) == writer.expected:
            del self.writers[writer.key]
            try:
                writer.commit()
            except OSError as e:
                writer.discard()
                print(f"slimcore: warning: corpus.token_cache: cannot write {writer.partial} "
                      f"({e}); the shard stays uncached", file=sys.stderr, flush=True)

    def abandon(self, key: str) -> None:
        with self.lock:
            self.abandon_locked(key)

    def abandon_unread(self, key: str) -> None:
        """A writer of `key` whose reading did not end (a read restarted mid-shard)."""
        with self.lock:
            writer = self.writers.get(key)
            if writer is not None and writer.expected is None:
                self.abandon_locked(key)

    def abandon_locked(self, key: str) -> None:
        writer = self.writers.pop(key, None)
        if writer is not None:
            writer.discard()

    def close(self, encoding_ended: bool = False) -> None:
        """Shards whose reading did not end discarded; at a stream's natural end, those read
        whole wait for their last documents' tokens (the encoder has them); when the stream's
        consumer closed it (`encoding_ended`), every unfinished shard is discarded: a process
        may leave without its interpreter's teardown (torchrun's ranks do)."""
        with self.lock:
            for key, writer in list(self.writers.items()):
                if writer.expected is None or encoding_ended:
                    self.abandon_locked(key)


def check_index(index: np.ndarray, tokens: int) -> None:
    """An index that fits its file (a crafted one can match its own sha256)."""
    if index.ndim != 2 or index.shape[1] != len(INDEX_COLUMNS) or index.dtype != np.int64:
        raise ValueError(f"its index is {index.dtype} {index.shape}, not (documents, "
                         f"{len(INDEX_COLUMNS)}) int64")
    if len(index) and (index.min() < 0 or (index[:, 3] + index[:, 4]).max() > tokens):
        raise ValueError("its index points outside its tokens")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
