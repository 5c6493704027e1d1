"""The `sample` and `chunk` sources over real files: bundled shards, local JSON lines and
text files; exact resume, shuffling, rank splits and held-out data."""

import json
import time
from pathlib import Path

import pytest
import torch
import zstandard

from slimcore import IGNORE_INDEX, UserError
from slimcore.config.schema import TokenizerSection
from slimcore.testing import make_run as run_for
from slimcore.text.tokenizer import train_or_reuse
from slimcore_datasources.bundled import SET_NAME, bundled_shards, speech_files
from slimcore_datasources.chunk import ChunkSource, chunk_batches
from slimcore_datasources.corpus import (CorpusConfig, DocumentStream, first_documents, heldout_documents,
                                         training_documents)
from slimcore_datasources.sample import SampleSource, sample_batches
from slimcore.contracts.checkpoint import join_tensors, split_tensors

DOCS = [f"Document number {i}. " + "word " * (i % 17 + 1) for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return train_or_reuse(TokenizerSection(vocab_size=300,
                                           cache_dir=str(tmp_path_factory.mktemp("tok"))),
                          DOCS, log=lambda _: None)


def make_run(tokenizer, path, seq_len=16, batch_size=3, chunk=None, text_field="text",
             shuffle_buffer=0, rank=0, world_size=1, eval_interval=0, workers=1,
             document_mask=False, **data):
    raw = {"model": {"width": 16, "heads": 2, "seq_len": seq_len},
           "data": {"batch_size": batch_size, "document_mask": document_mask},
           "corpus": {"path": str(path), "text_field": text_field,
                      "shuffle_buffer": shuffle_buffer, "workers": workers, **data},
           "eval": {"interval": eval_interval}, "chunk": chunk or {}}
    return run_for(raw, tokenizer=tokenizer, rank=rank, world_size=world_size)


def write_shard(path, docs):
    lines = "\n".join(json.dumps({"text": d, "meta": {"redpajama_set_name": "Test"}})
                      for d in docs)
    path.write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))


def encoded(tokenizer, docs):
    return [t for d in docs for t in [tokenizer.bos_id, *tokenizer.encode(d), tokenizer.eos_id]]


@pytest.fixture
def jsonl_corpus(tmp_path):
    path = tmp_path / "docs.jsonl.zst"
    write_shard(path, DOCS)
    return path


@pytest.fixture
def sharded_corpus(tmp_path):
    """DOCS in 4 shards of 15 documents: example_train_{0..3}.jsonl.zst."""
    folder = tmp_path / "shards"
    folder.mkdir()
    for i in range(4):
        write_shard(folder / f"example_train_{i}.jsonl.zst", DOCS[15 * i: 15 * (i + 1)])
    return folder


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
    stream = iter(training_documents(run))  # endless: a second pass follows the first
    assert [next(stream) for _ in range(len(DOCS) + 2)] == DOCS + DOCS[:2]


def test_text_files_are_one_document_each(tokenizer, tmp_path):
    for i in range(3):
        (tmp_path / f"doc{i}.txt").write_text(f"line one of {i}\nline two of {i}\n")
    run = make_run(tokenizer, tmp_path / "*.txt")
    assert first_documents(run, 10) == [f"line one of {i}\nline two of {i}\n" for i in range(3)]


def test_missing_field_and_missing_files_are_user_errors(tokenizer, jsonl_corpus, tmp_path):
    with pytest.raises(UserError, match="corpus.text_field: records of .* have no 'body'"):
        first_documents(make_run(tokenizer, jsonl_corpus, text_field="body"), 1)
    with pytest.raises(UserError, match="corpus.path: no file matches"):
        first_documents(make_run(tokenizer, tmp_path / "none*.jsonl"), 1)


def test_malformed_records_are_named_and_skipped_or_stop(tokenizer, tmp_path, capsys):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "fine"}\n{"text": unterminated\n{"text": "also fine"}\n')
    assert first_documents(make_run(tokenizer, path), 10) == ["fine", "also fine"]
    assert f"{path}, line 2: not a JSON line" in capsys.readouterr().err
    with pytest.raises(UserError, match=f"corpus.path: {path}, line 2: not a JSON line .*"
                                        "corpus.bad_records is stop"):
        first_documents(make_run(tokenizer, path, bad_records="stop"), 10)


def test_hub_id_offline_fails_fast_with_a_hint(tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set; without network, run "
                                        "examples/quickstart.yaml"):
        first_documents(make_run(tokenizer, "cerebras/SlimPajama-627B"), 1)
    assert time.perf_counter() - started < 5


def test_sample_source_pads_and_masks(tokenizer, jsonl_corpus):
    run = make_run(tokenizer, jsonl_corpus, seq_len=16, batch_size=3)
    batch, _ = next(sample_batches(run, training_documents(run)))
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
    expected = encoded(tokenizer, DOCS * 3)
    rows = []
    for (batch, _), _ in zip(chunk_batches(run, training_documents(run)), range(40)):
        assert batch.inputs.shape == (2, 7)
        assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
        rows.extend(torch.cat([batch.inputs, batch.targets[:, -1:]], dim=1).tolist())
    # Rows of 8 tokens, back to back, are the token stream itself: nothing dropped or
    # repeated at chunk boundaries (50 is not a multiple of 8).
    flat = [t for row in rows for t in row]
    assert flat == expected[: len(flat)]
    assert len(flat) == 40 * 2 * 8


def test_chunk_and_sample_sources_mark_documents_under_document_mask(tokenizer, jsonl_corpus):
    """data.document_mask: a new document number at every BOS of a row's inputs; without
    it, no documents (the rows are one sequence)."""
    for masked in (False, True):
        run = make_run(tokenizer, jsonl_corpus, seq_len=31, batch_size=4,
                       chunk={"tokens_per_chunk": 256}, document_mask=masked)
        for batches in (chunk_batches, sample_batches):
            batch, _ = next(batches(run, training_documents(run)))
            if not masked:
                assert batch.documents is None
                continue
            starts = (batch.inputs == tokenizer.bos_id).long()
            assert torch.equal(batch.documents.long(), starts.cumsum(dim=1))
            # chunk rows hold several documents each; sample rows one
            assert starts.sum() > 8 if batches is chunk_batches else starts.sum() == 4


def test_chunk_source_stops_after_max_chunks(tokenizer, jsonl_corpus):
    run = make_run(tokenizer, jsonl_corpus, seq_len=7, batch_size=2,
                   chunk={"tokens_per_chunk": 64, "max_chunks": 3})
    batches = list(chunk_batches(run, training_documents(run)))
    assert len(batches) == 3 * 64 // 8 // 2  # 8 rows per chunk, 2 per batch
    with pytest.raises(UserError, match="chunk.tokens_per_chunk: 4 is shorter than one row"):
        ChunkSource(make_run(tokenizer, jsonl_corpus, seq_len=7, chunk={"tokens_per_chunk": 4}))


def source_for(kind, run):
    return {"chunk": ChunkSource, "sample": SampleSource}[kind](run)


def through_checkpoint_format(state):
    """The state as the three_file checkpointer stores and reads it: JSON plus tensors."""
    tensors = {}
    meta = json.loads(json.dumps(split_tensors(state, "data", tensors)))
    return join_tensors(meta, {k: v.clone() for k, v in tensors.items()})


@pytest.mark.parametrize("kind,workers", [("chunk", 1), ("sample", 1), ("chunk", 2)])
def test_restored_source_continues_exactly(tokenizer, sharded_corpus, kind, workers):
    """Read N batches, save the state, rebuild the source from it: the next M batches are
    those of an uninterrupted read, for N that end inside a shard, across shard boundaries
    and across the end of an epoch (60 documents, ~16 tokens each)."""
    run = make_run(tokenizer, sharded_corpus, seq_len=7, batch_size=2, shuffle_buffer=5,
                   chunk={"tokens_per_chunk": 40}, workers=workers)
    straight = source_for(kind, run)
    reference = [next(straight) for _ in range(110)]
    for n in (1, 7, 23, 61):
        first = source_for(kind, run)
        for _ in range(n):
            next(first)
        state = through_checkpoint_format(first.state_dict())
        first.close()
        resumed = source_for(kind, run)
        resumed.load_state_dict(state)
        for expected in reference[n: n + 40]:
            batch = next(resumed)
            assert torch.equal(batch.inputs, expected.inputs)
            assert torch.equal(batch.targets, expected.targets)
        resumed.close()
    straight.close()


def test_a_resumed_stream_says_what_it_reads_before_the_first_step(tokenizer, sharded_corpus,
                                                                    capsys):
    """The `data:` line comes when the stream is restored, with the first batch (before the
    progress bar starts), not with the first document it reads later, which could be many
    steps on (the restored stream goes on from what it held), under the bar."""
    run = make_run(tokenizer, sharded_corpus, seq_len=7, batch_size=2, eval_interval=10,
                   chunk={"tokens_per_chunk": 400})
    first = source_for("chunk", run)
    for _ in range(3):
        next(first)
    state = through_checkpoint_format(first.state_dict())
    first.close()
    capsys.readouterr()
    resumed = source_for("chunk", run)
    resumed.load_state_dict(state)
    next(resumed)  # the first step's batch: the stream restored, the line printed before it
    epoch = min(position[0] for position in state["documents"]["positions"]) + 1
    assert capsys.readouterr().out == (f"data: 3 shards of {sharded_corpus} (train); resuming "
                                       f"in epoch {epoch} where the checkpoint left it\n")
    for _ in range(60):  # on into new documents and a second epoch
        next(resumed)
    resumed.close()
    assert "data:" not in capsys.readouterr().out


def test_shuffling_is_seeded_and_new_every_epoch(tokenizer, sharded_corpus):
    run = make_run(tokenizer, sharded_corpus, shuffle_buffer=8)
    first, second = (list(DocumentStream(run, str(sharded_corpus), shuffle_buffer=8, epochs=2))
                     for _ in range(2))
    assert first == second  # the same seed, the same order
    assert sorted(first) == sorted(DOCS * 2)  # every document once per epoch
    epoch_one, epoch_two = first[:60], first[60:]
    assert epoch_one != DOCS[:60] and epoch_one != epoch_two


def test_two_ranks_read_disjoint_shares_whose_union_is_the_corpus(tokenizer, sharded_corpus,
                                                                  capsys):
    shares = [list(DocumentStream(make_run(tokenizer, sharded_corpus, rank=r, world_size=2),
                                  str(sharded_corpus), epochs=1)) for r in range(2)]
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(DOCS)
    assert shares[0] == DOCS[:15] + DOCS[30:45]  # whole shards 0 and 2
    # 4 shards for 3 ranks: shards 0, 1, 2 whole, one each; then one record in 3 of shard 3
    # each (its lines decompressed by the 3, parsed by one), with a warning that says so.
    shares = [list(DocumentStream(make_run(tokenizer, sharded_corpus, rank=r, world_size=3),
                                  str(sharded_corpus), epochs=1, announce=True))
              for r in range(3)]
    for rank, share in enumerate(shares):
        assert share == DOCS[15 * rank:15 * rank + 15] + DOCS[45 + rank:60:3]
    assert sorted(shares[0] + shares[1] + shares[2]) == sorted(DOCS)
    assert ("4 shards do not divide evenly among 3 ranks x 1 corpus.workers: each reader "
            "reads 1 whole, then 1 record in 3 of one of the 1 left over, which its 3 readers "
            "each decompress") in capsys.readouterr().err
    # 4 shards for 8 readers (4 ranks x 2 workers): reader g reads shard g mod 4 alone with
    # reader g + 4 or g - 4, the two keeping alternate records; each decompresses 1 shard.
    shares = [list(DocumentStream(make_run(tokenizer, sharded_corpus, rank=r, world_size=4,
                                           workers=2), str(sharded_corpus), epochs=1,
                                  workers=2)) for r in range(4)]
    assert sorted(sum(shares, [])) == sorted(DOCS)
    # of 15 records a shard, readers 0 to 3 keep 8 (the even ones), readers 4 to 7 keep 7
    assert [len(share) for share in shares] == [16, 16, 14, 14]
    assert sorted(shares[2]) == sorted(DOCS[1:15:2] + DOCS[16:30:2])  # readers 4, 5


def test_a_shared_shards_lines_are_parsed_by_the_reader_that_keeps_them(tokenizer, tmp_path,
                                                                        capsys):
    """One shard for 3 ranks: a line that is not JSON (line 5, record 4) is named by rank 1,
    which keeps records 1, 4, 7, ..., and never parsed by the others."""
    path = tmp_path / "one.jsonl"
    lines = [json.dumps({"text": d}) for d in DOCS[:12]]
    lines[4] = "{not json"
    path.write_text("\n".join(lines))
    for rank in range(3):
        list(DocumentStream(make_run(tokenizer, path, rank=rank, world_size=3), str(path),
                            epochs=1))
        named = f"{path}, line 5: not a JSON line" in capsys.readouterr().err
        assert named == (rank == 1), rank
    # the reader itself skips the others' lines undecoded: no item, not even their damage
    from slimcore_datasources.records import shard_records

    items = list(shard_records(str(path), keep=lambda index: index % 3 == 0))
    assert [item[0] for item in items] == [0, 3, 6, 9]


def test_a_position_saved_under_the_first_plan_goes_on_under_it(tokenizer, sharded_corpus):
    """A checkpoint of a run on 4 shards and 3 ranks saved before the shards left over were
    split (every rank read every shard, 1 record in 3; its position has no "plan"): resumed,
    it reads on as it did, not as the new plan would."""
    def stream(state=None):
        documents = DocumentStream(make_run(tokenizer, sharded_corpus, rank=1, world_size=3),
                                   str(sharded_corpus), epochs=1)
        if state is not None:
            documents.load_state_dict(state)
        return iter(documents)

    old_share = DOCS[1::3]  # record i of the stream: 1 in 3 of every shard, in order
    documents = DocumentStream(make_run(tokenizer, sharded_corpus, rank=1, world_size=3),
                               str(sharded_corpus), epochs=1)
    documents.plan_version = 1
    reading = iter(documents)
    assert [next(reading) for _ in range(7)] == old_share[:7]
    saved = documents.state_dict()
    del saved["plan"]  # as the first plan saved it
    assert list(stream(saved)) == old_share[7:]
    saved["plan"] = 2  # the same place under the new plan is another document
    assert list(stream(saved)) != old_share[7:]


def test_a_position_saved_under_the_second_plan_goes_on_under_it(tokenizer, sharded_corpus):
    """Plan 2 split every shard left over among all readers (4 shards for 8 ranks: rank 1
    kept records 1 and 9 of each); a position it saved reads on as it did. Under plan 3
    rank 1 reads shard 1 alone with rank 5, keeping its even records."""
    def stream(version, state=None):
        documents = DocumentStream(make_run(tokenizer, sharded_corpus, rank=1, world_size=8),
                                   str(sharded_corpus), epochs=1)
        documents.plan_version = version
        if state is not None:
            documents.load_state_dict(state)
        return documents

    assert list(stream(3)) == DOCS[15:30:2]
    old_share = [d for shard in range(4) for d in DOCS[15 * shard + 1:15 * shard + 15:8]]
    documents = stream(2)
    reading = iter(documents)
    assert [next(reading) for _ in range(3)] == old_share[:3]
    saved = documents.state_dict()
    assert saved["plan"] == 2
    assert list(stream(3, saved)) == old_share[3:]  # the saved plan, not the stream's


def test_heldout_shard_is_left_out_of_training(tokenizer, sharded_corpus, capsys):
    run = make_run(tokenizer, sharded_corpus, eval_interval=10)
    assert list(heldout_documents(run)) == DOCS[45:]
    training = iter(training_documents(run))
    assert [next(training) for _ in range(90)] == (DOCS[:45] * 2)
    assert f"data: 3 shards of {sharded_corpus} (train); first document after" in \
        capsys.readouterr().out


def test_sample_rows_of_long_documents_match_encoding_them_whole(tokenizer):
    from slimcore_datasources.sample import leading_tokens

    words = [w for d in DOCS for w in d.split()]
    long_text = " ".join(words * 40)  # ~100,000 characters
    whole = tokenizer.encode(long_text)
    for count in (1, 17, 200, 2000):
        assert leading_tokens(tokenizer, long_text, count)[:count] == whole[:count]
    assert leading_tokens(tokenizer, "short text", 100) == tokenizer.encode("short text")


def test_loader_workers_split_a_ranks_shards_and_take_turns(tokenizer, sharded_corpus):
    def read(rank, world_size, workers):
        run = make_run(tokenizer, sharded_corpus, rank=rank, world_size=world_size,
                       workers=workers)
        return list(DocumentStream(run, str(sharded_corpus), epochs=1, workers=workers))

    # One rank, two readers: shards 0 and 2 for reader 0, 1 and 3 for reader 1, in turns.
    alone = read(0, 1, 2)
    assert alone[:4] == [DOCS[0], DOCS[15], DOCS[1], DOCS[16]]
    assert sorted(alone) == sorted(DOCS)
    # Two ranks of two readers each: four readers, one shard each, disjoint, the corpus.
    shares = [read(r, 2, 2) for r in range(2)]
    assert not set(shares[0]) & set(shares[1])
    assert sorted(shares[0] + shares[1]) == sorted(DOCS)
    assert set(shares[0]) == set(DOCS[:15] + DOCS[15:30])  # readers 0 and 1: shards 0, 1


def test_dataset_repo_files_are_resolved_as_datasets_streams_them(tmp_path):
    """The Hub's listing goes through `datasets`; a folder laid out like SlimPajama's repo
    takes the same path offline: patterns, the default train split, and no match."""
    from slimcore_datasources.files import resolved_files

    for split, stem in (("train", "example_train"), ("validation", "example_holdout")):
        (tmp_path / split / "chunk1").mkdir(parents=True)
        for i in range(2):
            write_shard(tmp_path / split / "chunk1" / f"{stem}_{i}.jsonl.zst", [f"{split} {i}"])
    repo = str(tmp_path)
    train = [str(tmp_path / "train" / "chunk1" / f"example_train_{i}.jsonl.zst") for i in (0, 1)]
    assert resolved_files(repo, "train/chunk1/*.jsonl.zst", "corpus.path") == train
    assert resolved_files(repo, None, "corpus.path") == train
    assert [Path(f).name for f in resolved_files(repo, "validation/*/*.zst", "corpus.eval_path")] == [
        "example_holdout_0.jsonl.zst", "example_holdout_1.jsonl.zst"]
    with pytest.raises(UserError, match="has no data files matching test/.*; check "
                                        "corpus.eval_data_files"):
        resolved_files(repo, "test/*.zst", "corpus.eval_path")


def test_a_shared_parquet_shard_is_split_by_record_too(tokenizer, tmp_path):
    """A parquet shard shared by 2 ranks: rank r keeps rows r, r + 2, ... (the reader's
    filter applies to every kind of shard, not only JSON lines)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "one.parquet"
    pq.write_table(pa.table({"text": DOCS[:11]}), path)
    shares = [list(DocumentStream(make_run(tokenizer, path, rank=r, world_size=2), str(path),
                                  epochs=1)) for r in range(2)]
    assert shares == [DOCS[0:11:2], DOCS[1:11:2]]
