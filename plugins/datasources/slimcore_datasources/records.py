"""The records of one shard file, streamed, with damage reported in its place, never hidden.

    shard_records(url, start) -> iterator of (index, record), Damage and Blank items

A shard's kind comes from its name:
    .jsonl, .json        JSON lines, one record per line (SlimPajama's {"text", "meta"})
    .jsonl.zst, .zst     the same, zstd-compressed (every frame of a multi-frame file)
    .jsonl.gz, .json.gz  the same, gzip-compressed (every member of a multi-member file)
    .txt                 one document: the whole file, as {"text": ...}
    .parquet             the rows of a parquet table
A record's index is its line number from 0 (blank lines are numbered and skipped), its row
for parquet; `start` is the first index wanted, so a resumed stream skips what it read.

Damage comes in two kinds: a bad record (a line that is not UTF-8 or not JSON, or not an
object; a record over MAX_RECORD_BYTES, skipped unread) and a shard that cannot be read on
(a zstd or gzip stream that ends early or does not decompress, a parquet file that does not
open).
Each is a `Damage` item in the stream, for the corpus reader's policy (`corpus.bad_records`)
to count and name. A failure to read bytes (the network, the disk) is raised as OSError,
for the stream's retries: it says nothing about the data.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

READ_BYTES = 1 << 20  # bytes read (or decompressed) at a time
# A record longer than this is skipped unread (counted as bad): no single record can take
# memory without bound. Longer than any document SlimPajama holds by far.
MAX_RECORD_BYTES = 1 << 28  # 256 MiB
PARQUET_ROWS = 256  # rows converted to records at a time
KINDS = {".jsonl": "jsonl", ".json": "jsonl", ".zst": "jsonl.zst", ".txt": "text",
         ".parquet": "parquet"}


class Damage(NamedTuple):
    """Something wrong with the data at record `index`; `fatal`: the shard ends here."""

    index: int
    reason: str
    fatal: bool = False


class Blank(NamedTuple):
    """Lines without a record up to line `index` (blank ones), said every BLANK_RUN of them:
    a shard of millions of blank lines still shows the reader is moving (it stalled)."""

    index: int


BLANK_RUN = 10_000


class _Broken(Exception):
    """The shard's bytes cannot be decoded past this point."""


GZIP_INNER = (".jsonl", ".json")  # what a .gz may hold: JSON lines only


def kind_of(name: str) -> str | None:
    path = Path(name)
    if path.suffix == ".gz":
        return "jsonl.gz" if path.with_suffix("").suffix in GZIP_INNER else None
    return KINDS.get(path.suffix)


def shard_records(url: str, start: int = 0, keep: Callable[[int], bool] | None = None
                  ) -> Iterator[tuple[int, dict] | Damage]:
    """The shard's records from index `start` on; with `keep`, only those whose index it
    keeps, and only their damage, but for damage that ends the shard (JSON lines that are
    not kept are not even decoded)."""
    kind = kind_of(url)
    with open_shard(url) as raw:
        if kind == "parquet":
            yield from _kept(_parquet_records(raw, start), keep)
        elif kind == "text":
            yield from _kept(_text_record(raw, start), keep)
        else:
            chunks = _chunks(raw)
            if kind == "jsonl.zst":
                chunks = _zstd_chunks(chunks)
            elif kind == "jsonl.gz":
                chunks = _gzip_chunks(chunks)
            yield from _json_records(chunks, start, keep)


def _kept(items, keep: Callable[[int], bool] | None):
    """Records and damage of the indices `keep` keeps (and fatal damage), blank runs."""
    for item in items:
        if keep is None or isinstance(item, Blank):
            yield item
        elif isinstance(item, Damage):
            if item.fatal or keep(item.index):
                yield item
        elif keep(item[0]):
            yield item


def open_shard(url: str):
    """The shard's raw bytes: a local file, or fsspec for URLs (http(s)://, hf://)."""
    if "://" not in url:
        return open(url, "rb")
    import fsspec

    try:
        return fsspec.open(url, "rb").open()
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - fsspec and aiohttp raise their own kinds
        raise OSError(f"cannot open {url}: {type(e).__name__}: {e}") from e


def _chunks(raw) -> Iterator[bytes]:
    while True:
        try:
            chunk = raw.read(READ_BYTES)
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - aiohttp's payload errors are not OSErrors
            raise OSError(f"{type(e).__name__}: {e}") from e
        if not chunk:
            return
        yield chunk


def _zstd_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    import zstandard

    maker = zstandard.ZstdDecompressor()
    frame, fed, frames = maker.decompressobj(), False, 0
    for data in chunks:
        while data:
            fed = True
            try:
                out = frame.decompress(data)
            except zstandard.ZstdError as e:
                raise _Broken(f"does not decompress as zstd ({e})") from None
            if out:
                yield out
            if not frame.eof:
                break
            data, frames = frame.unused_data, frames + 1
            frame, fed = maker.decompressobj(), False
    if fed:
        raise _Broken("ends early: its last zstd frame is cut off (a truncated copy?)")
    if frames == 0:
        raise _Broken("is empty: not a single zstd frame")


def _gzip_chunks(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Every member of a gzip file, decompressed at most READ_BYTES at a time (a small file
    of zeros decompresses to gigabytes: never all at once)."""
    member, fed, members = zlib.decompressobj(16 + zlib.MAX_WBITS), False, 0
    for data in chunks:
        while True:
            fed = fed or bool(data)
            try:
                out = member.decompress(data, READ_BYTES)
            except zlib.error as e:
                raise _Broken(f"does not decompress as gzip ({e})") from None
            if out:
                yield out
            if member.eof:
                data, members = member.unused_data, members + 1
                member, fed = zlib.decompressobj(16 + zlib.MAX_WBITS), False
                if not data:
                    break
                continue
            data = member.unconsumed_tail
            if not data and not out:
                break  # the member wants more of the file
    if fed:
        raise _Broken("ends early: its last gzip member is cut off (a truncated copy?)")
    if members == 0:
        raise _Broken("is empty: not a single gzip member")


def _json_records(chunks: Iterable[bytes], start: int,
                  keep: Callable[[int], bool] | None = None
                  ) -> Iterator[tuple[int, dict] | Damage | Blank]:
    index, blank = -1, 0
    try:
        for index, line in _lines(chunks, start):
            if blank >= BLANK_RUN:
                yield Blank(index - 1)
                blank = 0
            if keep is not None and not keep(index):
                continue
            if isinstance(line, int):
                yield Damage(index, f"a record of more than {line:,} bytes, skipped unread")
                continue
            if index < start:
                continue
            try:
                # The bytes go as they are decoded, so a long record is in memory at most
                # twice (its text, then its parsed value), not four times.
                text = line.pop().decode("utf-8")
                if not text or text.isspace():
                    blank += 1
                    continue
                blank = 0
                record = json.loads(text)
            except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
                yield Damage(index, f"not a JSON line ({type(e).__name__}: {str(e)[:120]})")
                continue
            finally:
                text = None
            if not isinstance(record, dict):
                yield Damage(index, f"a JSON {type(record).__name__}, not an object")
                continue
            yield index, record
    except _Broken as e:
        # The line the damage cut into is not a record; nothing after it can be read. (A
        # stream resumed past it only ends here: its damage was counted when first met.)
        if index + 1 >= start:
            yield Damage(index + 1, str(e), fatal=True)


def _lines(chunks: Iterable[bytes], start: int) -> Iterator[tuple[int, list | int]]:
    """(index, [line]) for every line, the line in a list the reader empties (so that this
    generator holds no reference to it); for a line over MAX_RECORD_BYTES, (index, that
    limit) instead, its bytes dropped as they come. Lines before `start` come empty (their
    bytes are never joined). A line that spans chunks grows in one bytearray (joining a
    list of its pieces held it twice)."""
    index, pending, size = 0, bytearray(), 0
    for chunk in chunks:
        pieces = chunk.split(b"\n")
        for piece in pieces[:-1]:
            size += len(piece)
            if size > MAX_RECORD_BYTES:
                yield index, MAX_RECORD_BYTES
            elif index < start:
                yield index, [b""]
            else:
                if pending:
                    pending += piece
                box, pending = [pending if pending else piece], bytearray()
                yield index, box  # the box holds the line's only reference
            index, pending, size = index + 1, bytearray(), 0
        tail = pieces[-1]
        size += len(tail)
        if size > MAX_RECORD_BYTES:
            pending = bytearray()
        elif tail and index >= start:
            pending += tail
    if size > MAX_RECORD_BYTES:
        yield index, MAX_RECORD_BYTES
    elif size:
        box, pending = [pending if index >= start else b""], None
        yield index, box


def _text_record(raw, start: int) -> Iterator[tuple[int, dict] | Damage]:
    if start > 0:
        return
    pieces, size = [], 0
    for chunk in _chunks(raw):  # a megabyte at a time: read(limit) allocates all of it first
        size += len(chunk)
        if size > MAX_RECORD_BYTES:
            yield Damage(0, f"a text file of more than {MAX_RECORD_BYTES:,} bytes, skipped")
            return
        pieces.append(chunk)
    data = b"".join(pieces)
    try:
        yield 0, {"text": data.decode("utf-8")}
    except UnicodeDecodeError as e:
        yield Damage(0, f"not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})")


def _parquet_records(raw, start: int) -> Iterator[tuple[int, dict] | Damage]:
    import pyarrow
    import pyarrow.parquet as pq

    index = 0
    try:
        table = pq.ParquetFile(raw)
        for batch in table.iter_batches(batch_size=PARQUET_ROWS):
            if index + batch.num_rows <= start:
                index += batch.num_rows
                continue
            for record in batch.to_pylist():
                if index >= start:
                    yield index, record
                index += 1
    except pyarrow.ArrowException as e:
        yield Damage(index, f"a parquet file that does not read ({type(e).__name__}: "
                            f"{str(e)[:160]})", fatal=True)
