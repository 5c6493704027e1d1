"""corpus.token_cache: the first whole pass over a shard keeps its documents' tokens; later
passes and runs read them instead of the text, with the same batches; another tokenizer's
cache is never read; a damaged cache shard is named and made again; the `tokens` source
reads the cache's files."""

import json
import os

import numpy as np
import pytest
import torch

from slimcore.config.schema import TokenizerSection
from slimcore.text.tokenizer import train_or_reuse
from slimcore_datasources.chunk import ChunkSource
from slimcore_datasources.sample import SampleSource
from slimcore_datasources.token_cache import TokenCache, file_sha256
from test_sources import DOCS, make_run, sharded_corpus, write_shard  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    return [train_or_reuse(TokenizerSection(vocab_size=size, cache_dir=str(folder)), DOCS,
                           log=lambda _: None) for size in (300, 320)]


@pytest.fixture
def corpus(sharded_corpus):
    """DOCS in 4 shards of 15 documents (test_sources' corpus)."""
    return sharded_corpus


def batches(tokenizer, corpus, cache_dir, cached=True, count=120, kind=ChunkSource):
    """`count` batches of a fresh source (a new run) over `corpus`."""
    run = make_run(tokenizer, corpus, seq_len=7, batch_size=2, shuffle_buffer=5,
                   chunk={"tokens_per_chunk": 40}, token_cache=cached)
    run.config.tokenizer.cache_dir = str(cache_dir)
    source = kind(run)
    try:
        return [next(source) for _ in range(count)]
    finally:
        source.close()


def same(a, b):
    return len(a) == len(b) and all(torch.equal(x.inputs, y.inputs) and
                                    torch.equal(x.targets, y.targets) for x, y in zip(a, b))


def committed(cache_dir):
    return sorted(cache_dir.glob("tokens/*/*.json"))


def test_the_cache_gives_the_batches_streaming_gives_and_is_read_instead_of_text(
        tokenizers, corpus, tmp_path, capsys):
    """120 batches are 5 passes over the 4 shards: the first pass writes each shard, the
    later ones read it. A second run reads only the cache: its shards' bytes are overwritten
    (same size and time, so the same key) with noise, and its batches do not change."""
    tokenizer = tokenizers[0]
    streamed = batches(tokenizer, corpus, tmp_path / "cache", cached=False)
    assert same(batches(tokenizer, corpus, tmp_path / "cache"), streamed)
    manifests = committed(tmp_path / "cache")
    assert len(manifests) == 4
    assert not list((tmp_path / "cache").glob("tokens/*/*.partial*"))
    manifest = json.loads(manifests[0].read_text())
    assert manifest["documents"] == 15 and manifest["dtype"] == "uint16"
    for shard in corpus.iterdir():
        stat = shard.stat()
        shard.write_bytes(np.random.default_rng(0).bytes(stat.st_size))
        os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    capsys.readouterr()
    assert same(batches(tokenizer, corpus, tmp_path / "cache"), streamed)
    assert "warning" not in capsys.readouterr().err  # the noise was never read


def test_the_sample_source_reads_what_the_chunk_source_cached(tokenizers, corpus, tmp_path):
    tokenizer = tokenizers[0]
    batches(tokenizer, corpus, tmp_path / "cache")
    assert len(committed(tmp_path / "cache")) == 4
    assert same(batches(tokenizer, corpus, tmp_path / "cache", kind=SampleSource, count=40),
                batches(tokenizer, corpus, tmp_path / "cache", cached=False,
                        kind=SampleSource, count=40))


def test_another_tokenizer_never_reads_the_cache(tokenizers, corpus, tmp_path):
    batches(tokenizers[0], corpus, tmp_path / "cache")
    other = batches(tokenizers[1], corpus, tmp_path / "cache")
    assert same(other, batches(tokenizers[1], corpus, tmp_path / "cache", cached=False))
    folders = sorted(p.name for p in (tmp_path / "cache" / "tokens").iterdir())
    assert folders == sorted(t.fingerprint[:20] for t in tokenizers)


def test_a_changed_shard_is_another_key(tokenizers, corpus, tmp_path):
    tokenizer = tokenizers[0]
    batches(tokenizer, corpus, tmp_path / "cache")
    write_shard(corpus / "example_train_0.jsonl.zst", DOCS[45:60])  # new text, new time
    assert same(batches(tokenizer, corpus, tmp_path / "cache"),
                batches(tokenizer, corpus, tmp_path / "cache", cached=False))
    assert len(committed(tmp_path / "cache")) == 5


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "drop the index",
                                    "a crafted index"])
def test_a_damaged_cache_shard_is_named_and_made_again(tokenizers, corpus, tmp_path, capsys,
                                                       damage):
    tokenizer = tokenizers[0]
    streamed = batches(tokenizer, corpus, tmp_path / "cache", cached=False)
    batches(tokenizer, corpus, tmp_path / "cache")
    victim = committed(tmp_path / "cache")[1].with_suffix(".bin")
    data = bytearray(victim.read_bytes())
    if damage == "flip a byte":
        data[-3] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[:len(data) // 2]))
    elif damage == "drop the index":
        victim.with_suffix(".idx.npy").unlink()
    else:  # pointing past the tokens, its sha256 recomputed to match
        index_path = victim.with_suffix(".idx.npy")
        index = np.load(index_path)
        index[0, 3] = 10**12
        np.save(index_path, index)
        manifest_path = victim.with_suffix(".json")
        manifest = json.loads(manifest_path.read_text())
        manifest["sha256"]["idx"] = file_sha256(index_path)
        manifest_path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert same(batches(tokenizer, corpus, tmp_path / "cache"), streamed)
    err = capsys.readouterr().err
    assert f"corpus.token_cache: {victim} is damaged" in err
    assert err.count("is damaged") == 1
    # made again on that pass, whole and valid
    cache = TokenCache(tmp_path / "cache", tokenizer.fingerprint, tokenizer.vocab_size)
    assert cache.open(victim.stem) is not None


def test_the_tokens_source_reads_the_cache_files(tokenizers, corpus, tmp_path):
    from slimcore.testing import make_run as run_for
    from slimcore_datasources.tokens import TokensSource, open_shards

    tokenizer = tokenizers[0]
    batches(tokenizer, corpus, tmp_path / "cache")
    folder = committed(tmp_path / "cache")[0].parent
    documents = [[tokenizer.bos_id, *tokenizer.encode(d), tokenizer.eos_id] for d in DOCS]
    shards = open_shards(str(folder), "uint16", "tokens.path")
    for shard in shards:  # a shard's 15 documents, each whole, BOS to EOS
        ids = shard.ids.tolist()
        starts = [i for i, t in enumerate(ids) if t == tokenizer.bos_id] + [len(ids)]
        pieces = [ids[a:b] for a, b in zip(starts, starts[1:])]
        assert len(pieces) == 15 and all(piece in documents for piece in pieces)
    run = run_for({"data": {"source": "tokens", "batch_size": 1},
                   "tokens": {"path": str(folder)}, "model": {"seq_len": 15}})
    assert next(TokensSource(run)).inputs[0].tolist() == shards[0].ids[:15].tolist()


def test_ids_past_uint16_are_kept_as_uint32(tmp_path):
    cache = TokenCache(tmp_path, "f" * 64, vocab_size=100_000)
    writer = cache.begin("k", "shard")
    cache.keep(writer, 0, 0, 1, 10, torch.tensor([1, 99_999, 2]))
    cache.read_whole(writer, 1)
    shard = cache.open("k")
    assert shard.ids.dtype == np.uint32
    (_, _, _, document), = shard.documents(0, 0)
    assert document.tokens().tolist() == [1, 99_999, 2] and len(document) == 10


@pytest.mark.parametrize("count", [3, 10, 25])
def test_a_pass_cut_short_leaves_no_file(tokenizers, corpus, tmp_path, count):
    """A run that stops mid-pass (its reader mid-shard, or past a shard whose last documents
    were not yet encoded) commits the shards whose documents were all encoded and leaves no
    unfinished file once its stream is gone."""
    import gc

    large = tmp_path / "large"  # shards of 40 documents: a pass is more than one encoding
    large.mkdir()
    for i in range(4):
        write_shard(large / f"example_train_{i}.jsonl.zst", (DOCS * 3)[40 * i: 40 * (i + 1)])
    batches(tokenizers[0], large, tmp_path / "cache", count=count)
    gc.collect()
    assert not list((tmp_path / "cache").glob("tokens/*/*.partial*"))


def test_a_position_saved_reading_text_resumes_exactly_reading_the_cache(tokenizers, corpus,
                                                                           tmp_path):
    """A position saved in the first pass (text, shards not yet cached) and restored once
    the cache holds every shard: the shuffle buffer's documents and the rest come from the
    cache, and the batches are those of an uninterrupted read."""
    from test_sources import through_checkpoint_format

    tokenizer = tokenizers[0]
    streamed = batches(tokenizer, corpus, tmp_path / "none", cached=False)
    run = make_run(tokenizer, corpus, seq_len=7, batch_size=2, shuffle_buffer=5,
                   chunk={"tokens_per_chunk": 40}, token_cache=True)
    run.config.tokenizer.cache_dir = str(tmp_path / "cache")
    first = ChunkSource(run)
    for _ in range(9):  # within the first pass
        next(first)
    state = through_checkpoint_format(first.state_dict())
    first.close()
    batches(tokenizer, corpus, tmp_path / "cache")  # another run caches every shard
    assert len(committed(tmp_path / "cache")) == 4
    resumed = ChunkSource(run)
    resumed.load_state_dict(state)
    assert same([next(resumed) for _ in range(60)], streamed[9:69])
    resumed.close()
