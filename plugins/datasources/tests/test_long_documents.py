"""Corpora shaped like the real job's worst: 120 books of 1.2 MB, one record of 50 MB with
spaces and one without. Each trains, checkpoints and resumes bit for bit in real
subprocesses, with a checkpoint that holds positions, not text, and a resident memory that
stays under 2 GB (measured by the kernel: the child's peak RSS)."""

import json
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import zstandard

from conftest import REPO

PEAK_RSS_LIMIT = 2 << 30
TIMEOUT_S = 240


def words(seed: int, count: int) -> str:
    rng = random.Random(seed)
    vocabulary = [f"w{rng.randrange(5000)}" for _ in range(3000)] + ["\n"] * 60 + ["the"] * 200
    return " ".join(rng.choices(vocabulary, k=count))


def write_shard(path: Path, texts: list[str]) -> None:
    lines = "\n".join(json.dumps({"text": t, "meta": {"redpajama_set_name": "RedPajamaBook"}})
                      for t in texts)
    path.write_bytes(zstandard.ZstdCompressor(level=1).compress(lines.encode()))


@pytest.fixture(scope="module")
def books(tmp_path_factory):
    folder = tmp_path_factory.mktemp("books")
    for shard in range(4):  # 120 books of about 1.2 MB, 30 a shard
        write_shard(folder / f"example_train_{shard}.jsonl.zst",
                    [words(shard * 100 + i, 200_000) for i in range(30)])
    return folder


@pytest.fixture(scope="module")
def huge_records(tmp_path_factory):
    folder = tmp_path_factory.mktemp("huge")
    small = [words(i, 300) for i in range(40)]
    with_spaces = words(7, 9_000_000)  # about 50 MB
    assert len(with_spaces) > 50_000_000
    write_shard(folder / "spaces.jsonl.zst", small[:20] + [with_spaces] + small[20:])
    without = "".join(random.Random(3).choices("abcdefghij", k=50_000_000))
    write_shard(folder / "nospaces.jsonl.zst", small[:20] + [without] + small[20:])
    return folder


def run_measured(config: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
    """`slimcore run CONFIG ARGS` in a subprocess; its result and peak resident bytes."""
    out, err = config.with_suffix(".out"), config.with_suffix(".err")
    with open(out, "w") as stdout, open(err, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "slimcore", "run", str(config), *args],
                                   stdout=stdout, stderr=stderr, cwd=REPO, env=os.environ.copy())
        killer = threading.Timer(TIMEOUT_S, process.kill)  # a run that hangs fails the test
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            killer.cancel()
    result = subprocess.CompletedProcess(process.args, os.waitstatus_to_exitcode(status),
                                         out.read_text(), err.read_text())
    return result, usage.ru_maxrss * 1024


def losses(folder: Path) -> dict[int, float]:
    records = json.loads((folder / "training_viz" / "metrics_history.json").read_text())
    return {r["step"]: r["loss"] for r in records}


def straight_then_resumed(write_config, tmp_path, data: dict, source: str = "chunk"):
    settings = {"run": {"steps": 8}, "intervals": {"checkpoint": 4},
                "data": {"source": source}, "corpus": {"shuffle_buffer": 20, **data},
                "tokenizer": {"vocab_size": 400, "train_documents": 20,
                              "train_max_chars": 2_000_000}}
    straight = write_config({**settings, "output": {"dir": str(tmp_path / "straight")}},
                            name="straight")
    first, straight_rss = run_measured(straight)
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = tmp_path / "straight" / "checkpoints" / "checkpoint_step_4.bin"
    # The header holds positions, not documents' text; the tokens carried to the next chunk
    # (tensors) are at most one encoding group's, whatever a record's length.
    with open(checkpoint, "rb") as f:
        assert int.from_bytes(f.read(8), "little") < 64 << 10
    assert checkpoint.stat().st_size < 24 << 20
    resumed = write_config({**settings, "output": {"dir": str(tmp_path / "resumed")}},
                           name="resumed")
    result, resumed_rss = run_measured(resumed, "--resume", str(checkpoint))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replaying" not in result.stderr
    expected = losses(tmp_path / "straight")
    assert losses(tmp_path / "resumed") == {s: expected[s] for s in range(5, 9)}
    for rss in (straight_rss, resumed_rss):
        assert rss < PEAK_RSS_LIMIT, f"peak resident memory {rss / 2**30:.2f} GiB"
    print(f"peak resident memory: {straight_rss / 2**30:.2f} GiB straight, "
          f"{resumed_rss / 2**30:.2f} GiB resumed")
    return first


def test_a_corpus_of_books_trains_and_resumes_exactly(write_config, tmp_path, books):
    result = straight_then_resumed(write_config, tmp_path, {"path": str(books)})
    assert "is cut into 2 documents" in result.stderr  # 1.2 MB books, 1M-character documents


@pytest.mark.parametrize("shard, source", [("spaces", "chunk"), ("spaces", "sample"),
                                           ("nospaces", "chunk")])
def test_a_50_mb_record_trains_and_resumes_exactly(write_config, tmp_path, huge_records, shard,
                                                   source):
    path = huge_records / f"{shard}.jsonl.zst"
    result = straight_then_resumed(write_config, tmp_path, {"path": str(path)}, source)
    assert "is cut into" in result.stderr
