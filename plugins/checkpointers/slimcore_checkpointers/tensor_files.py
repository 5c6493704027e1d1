"""safetensors files written and read in one pass each, hashed on the way.

    digest = write(path, tensors, metadata, digest_key)   the sha256 of the file's bytes
    tensors, metadata = read(path, expected_sha256)       UserError-free: raises Damaged

The files are standard safetensors (an 8-byte header length, a JSON header, the raw bytes),
so any safetensors reader opens them. Writing streams each tensor's bytes from its memory to
the file and into the hash at once: no serialized copy of the whole file in memory, no
second pass. Reading reads each byte once, straight into the memory of the tensor that holds
it (no tensor is a view of a buffer holding the others: a restored step counter or data
position kept for the rest of a run keeps only its own bytes alive), and hashes as it reads.
Hashing runs on a second thread, one chunk behind the file's reads and writes (both let go
of the GIL), so a save or load costs about the slower of the disk and sha256, not their
sum.

A file may carry its own digest: with `digest_key`, `metadata[digest_key]` is the sha256 of
the whole file with that value's 64 hex digits written as zeros. The header is written with
zeros first, the bytes follow, and the header is written again with the digest.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
          torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
          torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
BY_CODE = {code: dtype for dtype, code in DTYPES.items()}
ZEROS = "0" * 64
CHUNK = 64 << 20  # bytes hashed while the next chunk is read or written
MAX_HEADER = 100 << 20  # safetensors' own cap


class Damaged(Exception):
    """The file is not what was written (truncated, edited, not safetensors)."""


class DigestMismatch(Damaged):
    """The file parses, but its bytes are not the ones the digest was taken of."""


def write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
          digest_key: str | None = None, durable: bool = True) -> str:
    """Write `tensors` (contiguous CPU tensors) to `path`, fsynced unless not `durable` (a
    caller writing several files fsyncs them together at the end, so that the disk flushes
    one while the next is written); returns the sha256 of the file (with the self digest
    zeroed, when there is one)."""
    # Widest elements first: every tensor then starts aligned to its element size.
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header, offset = {}, 0
    for name in order:
        tensor = tensors[name]
        size = tensor.numel() * tensor.element_size()
        header[name] = {"dtype": DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    meta = dict(metadata or {})
    if digest_key is not None:
        meta[digest_key] = ZEROS
    if meta:
        header["__metadata__"] = meta
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the data to 8 bytes
    prefix = struct.pack("<Q", len(encoded)) + encoded
    digest = hashlib.sha256(prefix)
    with open(path, "wb") as f, _Hasher(digest, offset) as hasher:
        f.write(prefix)
        for name in order:
            data = _bytes(tensors[name])
            for begin in range(0, len(data), CHUNK):
                chunk = data[begin:begin + CHUNK]
                hasher.update(chunk)  # hashed while the chunk is written
                f.write(chunk)
        hasher.wait()
        if digest_key is not None:
            meta[digest_key] = digest.hexdigest()
            header["__metadata__"] = meta
            final = json.dumps(header, separators=(",", ":")).encode()
            final += b" " * (len(encoded) - len(final))
            assert len(final) == len(encoded)  # the digest took the zeros' place
            f.seek(8)
            f.write(final)
        f.flush()
        if durable:
            os.fsync(f.fileno())
    return digest.hexdigest()


def read(path: Path, expected_sha256: str | None = None, digest_key: str | None = None
         ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of `path`, after checking its sha256: against
    `expected_sha256`, or against its own digest under `digest_key`."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise Damaged("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER, size - 8):
            raise Damaged(f"a header of {length:,} bytes in a file of {size:,}")
        encoded = f.read(length)
        try:
            header = json.loads(encoded)
        except (ValueError, RecursionError) as e:  # RecursionError: nested past Python's depth
            raise Damaged(f"a header that is not JSON ({str(e)[:200]})") from None
        if not isinstance(header, dict):
            raise Damaged("a header that is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not (isinstance(metadata, dict) and
                all(isinstance(v, str) for v in metadata.values())):
            raise Damaged("a __metadata__ that is not a mapping of strings")
        hashed = encoded
        if digest_key is not None:
            expected_sha256 = metadata.get(digest_key)
            if not isinstance(expected_sha256, str) or len(expected_sha256) != 64:
                raise Damaged(f"no {digest_key} digest in its header")
            hashed = encoded.replace(expected_sha256.encode(), ZEROS.encode(), 1)
        digest = hashlib.sha256(head + hashed)
        tensors = _tensors(header, size - 8 - length)
        _read_into(f, size - 8 - length, tensors, digest)
        if f.read(1):
            raise Damaged("longer than written")
    if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
        raise DigestMismatch("fails its sha256 check")
    return {name: tensor for name, (tensor, _) in tensors.items()}, metadata


def _read_into(f, size: int, tensors: dict[str, tuple[torch.Tensor, int]], digest) -> None:
    """`size` bytes of `f`, each read once straight into the tensor that holds it ({name:
    (tensor, its first byte's offset)}, disjoint) and hashed from there, one chunk behind;
    bytes no tensor holds go through two alternating scratch chunks."""
    ranges = sorted(((begin, t) for t, begin in tensors.values() if t.numel()),
                    key=lambda r: r[0])
    scratch = _Scratch(min(CHUNK, size))
    done = 0
    with _Hasher(digest, size) as hasher:
        for begin, tensor in ranges:
            if begin > done:
                scratch.skip(f, hasher, begin - done)
            view = _bytes(tensor)
            for start in range(0, len(view), CHUNK):
                _fill(f, view[start:start + CHUNK])
                hasher.update(view[start:start + CHUNK])
            done = begin + len(view)
        scratch.skip(f, hasher, size - done)
        hasher.wait()


class _Scratch:
    """Two chunks for bytes no tensor holds: one is read while the other is hashed."""

    def __init__(self, size: int):
        self.size, self.chunks, self.turn = size, None, 0

    def skip(self, f, hasher, count: int) -> None:
        while count > 0:
            if self.chunks is None:
                self.chunks = [bytearray(self.size), bytearray(self.size)]
            view = memoryview(self.chunks[self.turn])[:min(count, self.size)]
            _fill(f, view)
            hasher.update(view)  # waits for the other chunk's hashing first
            count, self.turn = count - len(view), 1 - self.turn


def _fill(f, view: memoryview) -> None:
    done = 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            raise Damaged("cut short")
        done += got


class _Hasher:
    """sha256 on a thread of its own, one chunk at a time, in order; in the caller's thread
    for `size` bytes that fit one chunk (a thread would cost more than it saves)."""

    def __init__(self, digest, size: int):
        self.digest = digest
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="slimcore-sha256") \
            if size > CHUNK else None
        self.pending = None

    def update(self, chunk: memoryview) -> None:
        if self.pool is None:
            self.digest.update(chunk)
            return
        self.wait()  # the previous chunk first: order matters, and one chunk in flight
        self.pending = self.pool.submit(self.digest.update, chunk)

    def wait(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(wait=True)


def _tensors(header: dict, size: int) -> dict[str, tuple[torch.Tensor, int]]:
    """{name: (an empty tensor of its own, the offset of its first byte)} for the header's
    entries, each checked to fit the `size` bytes of the data."""
    tensors = {}
    for name, entry in header.items():
        try:
            dtype = BY_CODE[entry["dtype"]]
            begin, end = entry["data_offsets"]
            shape = entry["shape"]
            if not all(type(n) is int and n >= 0 for n in [begin, end, *shape]):
                raise ValueError("offsets and sizes are counts")
        except (KeyError, TypeError, ValueError):
            raise Damaged(f"a header entry for {name[:200]!r} that is not a tensor's") from None
        itemsize = torch.empty(0, dtype=dtype).element_size()
        numel = 1
        for n in shape:
            numel *= n
        if not 0 <= begin <= end <= size or end - begin != numel * itemsize:
            raise Damaged(f"{name[:200]!r} does not fit its bytes")
        tensors[name] = (begin, end, dtype, shape)
    # Overlapping entries (no writer makes them) would each cost their own memory: a file
    # of a few megabytes could ask for gigabytes.
    ranges = sorted(tensors.values(), key=lambda entry: entry[:2])
    for (_, end, *_), (begin, *_) in zip(ranges, ranges[1:]):
        if begin < end:
            raise Damaged("tensors that overlap in its bytes")
    return {name: (torch.empty(shape, dtype=dtype), begin)
            for name, (begin, _, dtype, shape) in tensors.items()}


def _bytes(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes, without a copy (it is contiguous and on the CPU)."""
    flat = tensor.reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return memoryview(flat.view(torch.uint8).numpy())
