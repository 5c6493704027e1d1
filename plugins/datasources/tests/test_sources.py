"""The `sample` and `chunk` sources over real files: bundled shards, local JSON lines and
text files."""

import json
import time
from pathlib import Path

import pytest
import torch
import zstandard

from slimcore import IGNORE_INDEX, UserError
from slimcore.config import TokenizerSection, parse_config
from slimcore.plugins import SlimcorePluginManager
from slimcore.run import Run
from slimcore.tokenizer import train_or_reuse
from slimcore_datasources.bundled import SET_NAME, bundled_shards, speech_files
from slimcore_datasources.chunk import ChunkConfig, chunk_batches, token_stream
from slimcore_datasources.corpus import first_documents, iter_documents
from slimcore_datasources.sample import sample_batches

DOCS = [f"Document number {i}. " + "word " * (i % 17 + 1) for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_or_reuse(TokenizerSection(vocab_size=300,
                                           cache_dir=str(tmp_path_factory.mktemp("tok"))),
                          DOCS, log=lambda _: None)


def make_run(tokenizer, path, seq_len=16, batch_size=3, chunk=None, text_field="text"):
    raw = {"model": {"width": 16, "heads": 2, "seq_len": seq_len},
           "data": {"path": str(path), "batch_size": batch_size, "text_field": text_field},
           "chunk": chunk or {}}
    config = parse_config(raw, {"chunk": ChunkConfig}, "test.yaml")
    run = Run(config=config, output_dir=Path("."), device=torch.device("cpu"),
              plugins=SlimcorePluginManager())
    run.tokenizer = tokenizer
    return run


@pytest.fixture
def jsonl_corpus(tmp_path):
    path = tmp_path / "docs.jsonl.zst"
    lines = "\n".join(json.dumps({"text": d, "meta": {"redpajama_set_name": "Test"}})
                      for d in DOCS)
    path.write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    return path


def test_bundled_corpus_is_laid_out_as_slimpajama_shards(cache_dir):
    shards = bundled_shards(cache_dir)
    assert [Path(s).name for s in shards] == [f"example_train_{i}.jsonl.zst" for i in range(8)]
    assert all("/train/chunk1/" in s for s in shards)
    with open(shards[0], "rb") as f:
        first = zstandard.ZstdDecompressor().stream_reader(f).read().decode().splitlines()[0]
    record = json.loads(first)
    assert record["meta"] == {"redpajama_set_name": SET_NAME}
    assert record["text"] == speech_files()[0].read_text(encoding="utf-8")
    assert bundled_shards(cache_dir) == shards  # laid out once, reused


def test_local_jsonl_zst_documents_in_order(tokenizer, jsonl_corpus):
    run = make_run(tokenizer, jsonl_corpus)
    assert first_documents(run, 1000) == DOCS
    stream = iter_documents(run)  # endless: a second pass follows the first
    assert [next(stream) for _ in range(len(DOCS) + 2)] == DOCS + DOCS[:2]


def test_text_files_are_one_document_each(tokenizer, tmp_path):
    for i in range(3):
        (tmp_path / f"doc{i}.txt").write_text(f"line one of {i}\nline two of {i}\n")
    run = make_run(tokenizer, tmp_path / "*.txt")
    assert first_documents(run, 10) == [f"line one of {i}\nline two of {i}\n" for i in range(3)]


def test_missing_field_and_missing_files_are_user_errors(tokenizer, jsonl_corpus, tmp_path):
    with pytest.raises(UserError, match="data.text_field: records of .* have no 'body'"):
        first_documents(make_run(tokenizer, jsonl_corpus, text_field="body"), 1)
    with pytest.raises(UserError, match="data.path: no file matches"):
        first_documents(make_run(tokenizer, tmp_path / "none*.jsonl"), 1)


def test_malformed_records_are_one_clear_error(tokenizer, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\n{"text": unterminated\n')
    with pytest.raises(UserError, match="data.path: cannot parse the records of"):
        first_documents(make_run(tokenizer, path), 10)


def test_hub_id_offline_fails_fast_with_a_hint(tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set; without network, run "
                                        "examples/quickstart.yaml"):
        first_documents(make_run(tokenizer, "cerebras/SlimPajama-627B"), 1)
    assert time.perf_counter() - started < 5


def test_sample_source_pads_and_masks(tokenizer, jsonl_corpus):
    run = make_run(tokenizer, jsonl_corpus, seq_len=16, batch_size=3)
    batch = next(sample_batches(run))
    assert batch.inputs.shape == batch.targets.shape == (3, 16)
    for row, doc in enumerate(DOCS[:3]):
        ids = ([tokenizer.bos_id] + tokenizer.encode(doc) + [tokenizer.eos_id])[:17]
        n = len(ids)
        assert batch.inputs[row, : n - 1].tolist() == ids[:-1]
        assert batch.targets[row, : n - 1].tolist() == ids[1:]
        assert (batch.targets[row, n - 1:] == IGNORE_INDEX).all()


def test_chunk_source_packs_every_token_in_order(tokenizer, jsonl_corpus):
    run = make_run(tokenizer, jsonl_corpus, seq_len=7, batch_size=2,
                   chunk={"tokens_per_chunk": 50})
    expected = [t for ids, _ in zip(token_stream(run), range(3 * len(DOCS))) for t in ids]
    rows = []
    for batch, _ in zip(chunk_batches(run), range(40)):
        assert batch.inputs.shape == (2, 7)
        assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
        rows.extend(torch.cat([batch.inputs, batch.targets[:, -1:]], dim=1).tolist())
    # Rows of 8 tokens, back to back, are the token stream itself: nothing dropped or
    # repeated at chunk boundaries (50 is not a multiple of 8).
    flat = [t for row in rows for t in row]
    assert flat == expected[: len(flat)]
    assert len(flat) == 40 * 2 * 8


def test_chunk_source_stops_after_max_chunks(tokenizer, jsonl_corpus):
    run = make_run(tokenizer, jsonl_corpus, seq_len=7, batch_size=2,
                   chunk={"tokens_per_chunk": 64, "max_chunks": 3})
    batches = list(chunk_batches(run))
    assert len(batches) == 3 * 64 // 8 // 2  # 8 rows per chunk, 2 per batch
    with pytest.raises(UserError, match="chunk.tokens_per_chunk: 4 is shorter than one row"):
        next(chunk_batches(make_run(tokenizer, jsonl_corpus, seq_len=7,
                                    chunk={"tokens_per_chunk": 4})))
