"""What one long JSON record costs in memory while the `chunk` source reads it.

    python bench/record_memory.py --mb 50 200

For each size, a process writes a corpus of that one record and a short one; another (each
with a peak of its own) builds the source, draws four batches and reports its peak resident
memory over what it had before the source started; printed with its multiple of the size.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = "the people of the union state congress economy work and a to in".split()


def write_corpus(mb: int, corpus: Path) -> None:
    corpus.mkdir()
    with open(corpus / "a.jsonl", "w") as f:
        f.write(json.dumps({"text": "word and people " * (mb * (1 << 20) // 16)}) + "\n")
        f.write(json.dumps({"text": "the people"}) + "\n")


def tokenizer_in(folder: Path):
    """A small tokenizer, trained into `folder`/cache the first time (training has a peak of
    its own, which would hide the source's: the parent trains it, the child reuses it)."""
    from slimcore.config.schema import TokenizerSection
    from slimcore.text.tokenizer import train_or_reuse

    texts = [" ".join(random.Random(i).choice(WORDS) for _ in range(40)) for i in range(300)]
    return train_or_reuse(TokenizerSection(vocab_size=300, cache_dir=str(folder / "cache")),
                          texts, log=lambda _: None)


def measure(folder: Path) -> float:
    """In this process: the peak resident MB the source added reading `folder`/corpus."""
    from slimcore.testing import make_run
    from slimcore_datasources.chunk import ChunkSource

    tokenizer = tokenizer_in(folder)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    run = make_run({"model": {"width": 16, "heads": 2, "seq_len": 16},
                    "data": {"source": "chunk", "batch_size": 2},
                    "corpus": {"path": str(folder / "corpus"), "shuffle_buffer": 0},
                    "chunk": {"tokens_per_chunk": 64}}, tokenizer=tokenizer)
    source = ChunkSource(run)
    for _ in range(4):
        next(source)
    source.close()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--write", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child and args.write:
        write_corpus(args.write, Path(args.child) / "corpus")
        tokenizer_in(Path(args.child))
        return
    if args.child:
        print(measure(Path(args.child)))
        return
    print("record   peak over before   times the record")
    for mb in args.mb:
        with tempfile.TemporaryDirectory() as folder:
            # Each in a process of its own: a child inherits its parent's peak (ru_maxrss).
            subprocess.run([sys.executable, __file__, "--child", folder, "--write", str(mb)],
                           check=True)
            done = subprocess.run([sys.executable, __file__, "--child", folder],
                                  capture_output=True, text=True, check=True)
        added = float(done.stdout.strip().splitlines()[-1])
        print(f"{mb:4d} MB   {added:8.0f} MB          {added / mb:5.1f}")


if __name__ == "__main__":
    main()
