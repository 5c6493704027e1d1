"""Reading safetensors files without copying them: each tensor a view of the file mapped into
memory, so a model is read one tensor at a time and the pages it touched can go again.

    with SafetensorsFile(path) as f:
        for name in f.names():
            tensor = f.tensor(name)   # valid while the file is open; copy what you keep

The format: 8 bytes (little-endian length N), N bytes of JSON ({name: {dtype, shape,
data_offsets}}, and __metadata__), then the data. A header that lies (offsets outside the
file, overlapping, a shape that does not fit its bytes) is one line naming the file.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from pathlib import Path

import torch

from ..contracts.errors import UserError

DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
          "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}
MAX_HEADER = 100 * 2**20  # a header of 100 MB would name millions of tensors: not a model


class SafetensorsFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.file = open(self.path, "rb")
        size = self.path.stat().st_size
        if size < 8:
            self._bad("shorter than a safetensors header")
        (length,) = struct.unpack("<Q", self.file.read(8))
        if length > min(MAX_HEADER, size - 8):
            self._bad(f"its header claims {length:,} bytes")
        try:
            self.header = json.loads(self.file.read(length))
        except (ValueError, RecursionError):
            self._bad("its header is not JSON")
        if not isinstance(self.header, dict):
            self._bad("its header is not a JSON object")
        self.header.pop("__metadata__", None)
        self.data_start, self.data_size = 8 + length, size - 8 - length
        self.map = mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ) if size else None

    def names(self) -> list[str]:
        return list(self.header)

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor `name`, a read-only view of the mapped file."""
        entry = self.header[name]
        try:
            dtype, shape = DTYPES[entry["dtype"]], [int(d) for d in entry["shape"]]
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            self._bad(f"its entry for {name!r} is not a dtype, shape and data_offsets")
        element = torch.empty((), dtype=dtype).element_size()
        if not (0 <= begin <= end <= self.data_size) or any(d < 0 for d in shape) \
                or math.prod(shape) * element != end - begin:
            self._bad(f"its entry for {name!r} does not fit the file")
        if begin == end:
            return torch.empty(shape, dtype=dtype)
        import warnings

        with warnings.catch_warnings():  # the map is read-only: torch warns it cannot write
            warnings.simplefilter("ignore", UserWarning)
            flat = torch.frombuffer(self.map, dtype=dtype, count=(end - begin) // element,
                                    offset=self.data_start + begin)
        return flat.view(shape)

    def release(self, name: str) -> None:
        """The pages of `name` handed back to the kernel (read again if used again): a
        mapped file's touched pages count as the process's memory until then."""
        if self.map is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        begin, end = (int(o) for o in self.header[name]["data_offsets"])
        page = mmap.PAGESIZE
        first = (self.data_start + begin) // page * page
        length = self.data_start + end - first
        if length > 0:
            self.map.madvise(mmap.MADV_DONTNEED, first, length)

    def _bad(self, why: str):
        self.close()
        raise UserError(f"{self.path}: not a safetensors file we can read ({why})")

    def close(self) -> None:
        if getattr(self, "map", None) is not None:
            try:
                self.map.close()
            except BufferError:  # a tensor still views it: the map goes with the last one
                pass
            self.map = None
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
