"""A seeded corpus fuzz through both shipped sources: shards of every kind slimcore reads,
damaged at random (random bytes, truncations, other encodings, lone surrogates, NUL, huge
lines, compressed streams cut short). Every case gives batches (bad records counted and
named) or stops with one UserError line; never another exception, and memory stays bounded.
The suite runs a few dozen cases; the slow tier (`make test-slow`) ten times as many."""

import gzip
import json
import random
import tracemalloc

import pytest
import zstandard

from slimcore import UserError
from slimcore.config.schema import TokenizerSection
from slimcore.testing import make_run
from slimcore.text.tokenizer import train_or_reuse
from slimcore_datasources.chunk import ChunkSource
from slimcore_datasources.sample import SampleSource

SEED = 20261205
WORDS = "the people of the union state congress economy work and a to in".split()


def document(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 60)))


def damaged(data: bytes, rng: random.Random) -> bytes:
    """`data` with one kind of damage (or none)."""
    kind = rng.randrange(9)
    at = rng.randrange(len(data) + 1)
    if kind == 0:
        return data[:at]  # cut short
    if kind == 1:
        return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if kind == 2:
        return data[:at] + b"\x00" * rng.randrange(1, 50) + data[at:]
    if kind == 3:  # another encoding (of the compressed bytes too: garbage then)
        return data.decode("utf-8", "surrogateescape").encode(
            rng.choice(["utf-16", "latin-1", "utf-32"]), "replace")
    if kind == 4:
        return data[:at] + rng.choice([b"\xff\xfe", b"\xed\xa0\x80", b"\xc3", b"\r\r\n"]) + \
            data[at:]
    if kind == 5:  # a huge line: a record of megabytes, or none at all
        return data + rng.choice([json.dumps({"text": "word " * 400_000}).encode() + b"\n",
                                  b"x" * 3_000_000 + b"\n", b"\n" * 10_000])
    return data


def records(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randrange(0, 30)):
        kind = rng.randrange(10)
        if kind == 0:
            lines.append(json.dumps({"text": "\ud800" + document(rng)}))
        elif kind == 1:
            lines.append(rng.choice(['{"text": 7}', '{"meta": {}}', "[1, 2]", '"text"',
                                     '{"text": null}', "{" * 300, '{"text": "a\\u0000b"}']))
        else:
            lines.append(json.dumps({"text": document(rng), "meta": {"n": rng.random()}}))
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


def write_shard(folder, index: int, rng: random.Random) -> None:
    kind = rng.choice([".jsonl", ".jsonl.zst", ".jsonl.gz", ".txt"])
    plain = records(rng) if kind != ".txt" else document(rng).encode()
    if kind == ".jsonl.zst":
        data = zstandard.ZstdCompressor().compress(plain)
    elif kind == ".jsonl.gz":
        data = gzip.compress(plain)
    else:
        data = plain
    (folder / f"shard_{index}{kind}").write_bytes(damaged(data, rng))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    texts = [document(random.Random(i)) for i in range(300)]
    section = TokenizerSection(vocab_size=300, cache_dir=str(tmp_path_factory.mktemp("tok")))
    return train_or_reuse(section, texts, log=lambda _: None)


@pytest.mark.parametrize("cases", [40, pytest.param(400, marks=pytest.mark.slow)])
def test_damaged_corpora_give_batches_or_one_line_through_both_sources(tmp_path, tokenizer,
                                                                       cases):
    rng = random.Random(SEED)
    outcomes = {"batches": 0, "refused": 0}
    tracemalloc.start()
    for case in range(cases):
        folder = tmp_path / f"corpus{case}"
        folder.mkdir()
        for index in range(rng.randrange(1, 4)):
            write_shard(folder, index, rng)
        source_class = rng.choice([ChunkSource, SampleSource])
        run = make_run({"model": {"width": 16, "heads": 2, "seq_len": 16},
                        "data": {"source": source_class.name, "batch_size": 2},
                        "corpus": {"path": str(folder), "shuffle_buffer": rng.choice([0, 4]),
                                   "timeout_s": 5, "max_retries": 0},
                        "chunk": {"tokens_per_chunk": 64}}, tokenizer=tokenizer)
        source = source_class(run)
        try:
            for _ in range(4):
                batch = next(source)
                assert batch.inputs.shape[0] == 2 and batch.inputs.max() < tokenizer.vocab_size
            outcomes["batches"] += 1
        except UserError as e:
            assert "\n" not in str(e) and len(str(e)) < 1000, (case, str(e)[:2000])
            outcomes["refused"] += 1
        except StopIteration:
            outcomes["batches"] += 1
        finally:
            source.close()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"corpus fuzz: {cases} corpora, {outcomes}, peak {peak / 2**20:.0f} MB")
    assert outcomes["batches"] > 0 and outcomes["refused"] > 0
    assert peak < 100 << 20  # a 2 MB record at most: 42 MB (a .txt shard took 256 MB)
