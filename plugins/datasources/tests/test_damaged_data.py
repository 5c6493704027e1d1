"""Damaged data is never silent: shards that end early or do not decompress, lines that are
not JSON or not UTF-8, records without a text, each counted and named (file, line) under
corpus.bad_records; a damaged bundled shard in the cache is laid out again."""

import json
from pathlib import Path

import pytest
import torch
import zstandard

from slimcore import UserError
from slimcore.testing import make_run as run_for
from slimcore_datasources.bundled import bundled_shards
from slimcore_datasources.corpus import DocumentStream, first_documents

DOCS = [f"Document {i}: " + "lorem ipsum " * (i % 5 + 3) for i in range(300)]


def make_run(path, **data):
    raw = {"model": {"width": 16, "heads": 2, "seq_len": 16},
           "corpus": {"path": str(path), "shuffle_buffer": 0, **data}}
    return run_for(raw)


def jsonl(docs) -> bytes:
    return ("\n".join(json.dumps({"text": d}) for d in docs) + "\n").encode()


def documents(path, **data):
    return list(DocumentStream(make_run(path, **data), str(path), epochs=1))


def test_a_truncated_zst_shard_keeps_what_came_before_and_says_so(tmp_path, capsys):
    import hashlib

    # Incompressible documents, so the shard spans several zstd blocks (128 KiB each).
    books = [f"{i}: " + hashlib.sha512(str(i).encode()).hexdigest() * 8 for i in range(600)]
    whole = zstandard.ZstdCompressor().compress(jsonl(books))
    (tmp_path / "a.jsonl.zst").write_bytes(whole[: len(whole) * 4 // 5])
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(["last"])))
    docs = documents(tmp_path)
    err = capsys.readouterr().err
    assert f"{tmp_path / 'a.jsonl.zst'}, line {len(docs)}: ends early" in err
    assert "the rest of the shard is skipped" in err
    assert 100 < len(docs) - 1 < len(books) and docs[:-1] == books[:len(docs) - 1]
    assert docs[-1] == "last"  # the next shard is read as usual


def test_gzip_shards_are_read_beside_plain_ones(tmp_path, capsys):
    """A folder of .jsonl and .jsonl.gz (two gzip members, as `cat a.gz b.gz` makes) reads
    them all; a .gz cut short keeps what came before and is named; a gzip bomb (64 MB from
    64 KB) is decompressed a megabyte at a time (the .gz files were left out silently)."""
    import gzip
    import tracemalloc

    (tmp_path / "a.jsonl").write_bytes(jsonl(DOCS[:100]))
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(jsonl(DOCS[100:150])) +
                                          gzip.compress(jsonl(DOCS[150:200])))
    cut = gzip.compress(jsonl(DOCS[200:]))
    (tmp_path / "c.json.gz").write_bytes(cut[: len(cut) // 2])
    padded = b'{"text": "bomb"' + b" " * (1 << 20) + b"}\n"  # 1 MB records from 1 KB
    (tmp_path / "d.jsonl.gz").write_bytes(gzip.compress(padded * 64))
    tracemalloc.start()
    docs = documents(tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert docs[-64:] == ["bomb"] * 64
    docs = docs[:-64]
    assert docs[:200] == DOCS[:200] and 200 < len(docs) < 300
    assert docs[200:] == DOCS[200:len(docs)]
    assert "c.json.gz, line" in capsys.readouterr().err
    assert peak < 32 << 20, f"{peak:,} bytes at the peak"


def test_a_small_text_shard_takes_little_memory(tmp_path):
    """A .txt shard is read a megabyte at a time: reading it whole with read(256 MiB)
    allocated the whole limit first, for a file of 200 bytes."""
    import tracemalloc

    (tmp_path / "speech.txt").write_text("the people " * 20)
    tracemalloc.start()
    docs = documents(tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert docs == ["the people " * 20] and peak < 16 << 20, f"{peak:,} bytes"


def test_a_long_record_is_held_at_most_about_twice(tmp_path):
    """A 20 MB record (its line spanning 20 reads) costs its text and its parsed value at
    most, about twice its size: the line's pieces, their join, the decoded text, the parsed
    value and the documents cut from it were alive together (4.4 times its size)."""
    import tracemalloc

    record = "word and people " * (20 << 16)  # 20 MiB
    (tmp_path / "long.jsonl").write_bytes(jsonl([record, "short"]))
    tracemalloc.start()
    docs = documents(tmp_path, max_document_chars=1_000_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "".join(docs[:-1]) == record and docs[-1] == "short"
    assert peak < 2.6 * len(record), f"{peak / len(record):.1f} times the record"


def test_millions_of_blank_lines_are_read_through_not_taken_for_a_stall(tmp_path):
    """Twelve million blank lines before a shard's records take the reader seconds: it says it
    is moving (every 10,000 lines), so corpus.timeout_s counts from the last of those (it
    stopped the run: "no record within 2 s")."""
    (tmp_path / "sparse.jsonl").write_bytes(b"\n" * 12_000_000 + jsonl(DOCS[:3]))
    assert documents(tmp_path, timeout_s=2, max_retries=0) == DOCS[:3]


def test_a_bad_record_is_counted_once_however_many_passes(tmp_path, capsys):
    """A small corpus with one bad line, read for many passes (a long run on little data):
    the line is counted and said once, so corpus.max_bad_records is not reached by the same
    line again and again (the run stopped after that many passes)."""
    (tmp_path / "small.jsonl").write_bytes(jsonl(DOCS[:3]) + b"not json\n")
    run = make_run(tmp_path, max_bad_records=2)
    docs = list(DocumentStream(run, str(tmp_path), epochs=6))
    assert docs == DOCS[:3] * 6
    assert capsys.readouterr().err.count("line 4: not a JSON line") == 1


def test_a_folder_of_files_none_of_which_is_read_says_so(tmp_path):
    import gzip

    (tmp_path / "notes.txt.gz").write_bytes(gzip.compress(b"hello"))
    with pytest.raises(UserError, match=r"corpus.path: .* holds 1 files and none of a kind "
                                        r"slimcore reads \(such as notes.txt.gz\); a name must "
                                        r"end in .jsonl, .json, .jsonl.zst"):
        documents(tmp_path)


@pytest.mark.parametrize("content, reason", [
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40, "does not decompress as zstd"),
    (b"", "is empty: not a single zstd frame"),
])
def test_a_shard_that_is_not_zstd_is_named(tmp_path, capsys, content, reason):
    (tmp_path / "bad.jsonl.zst").write_bytes(content)
    (tmp_path / "good.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(DOCS)))
    assert documents(tmp_path) == DOCS
    assert f"bad.jsonl.zst, line 1: {reason}" in capsys.readouterr().err


def test_multi_frame_zst_shards_read_whole(tmp_path):
    compressor = zstandard.ZstdCompressor()
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(compressor.compress(jsonl(DOCS[:100])) + compressor.compress(jsonl(DOCS[100:])))
    assert documents(path) == DOCS


def test_records_without_usable_text_and_bad_bytes_are_named_and_skipped(tmp_path, capsys):
    path = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"text": "first"}), json.dumps({"text": None}),
             json.dumps({"text": 42}), json.dumps({"body": "x"}), json.dumps({"text": ""}),
             '["a list"]', b'{"text": "caf\xe9"}'.decode("latin-1"), json.dumps({"text": "last"})]
    data = "\n".join(lines).encode("latin-1")
    path.write_bytes(data)
    assert documents(path) == ["first", "last"]
    err = capsys.readouterr().err
    for line, reason in [(2, "'text' is null, not a string"), (3, "'text' is int, not a string"),
                         (4, "no 'text' field (fields: body)"), (5, "'text' is empty"),
                         (6, "a JSON list, not an object"), (7, "not a JSON line")]:
        assert f"{path}, line {line}: {reason}" in err
    assert "6 bad records or damaged shards skipped in this run" in err


def test_an_empty_jsonl_reads_as_no_documents(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"")
    with pytest.raises(UserError, match="holds no documents"):
        documents(tmp_path / "empty.jsonl")
    (tmp_path / "full.jsonl").write_bytes(jsonl(DOCS[:3]))
    assert documents(tmp_path) == DOCS[:3]


def test_policy_stop_and_the_limit_of_skip(tmp_path):
    path = tmp_path / "noisy.jsonl"
    path.write_text("\n".join([json.dumps({"text": "good"})] + ["not json"] * 5
                              + [json.dumps({"text": "good again"})]))
    with pytest.raises(UserError, match=f"corpus.path: {path}, line 2: not a JSON line.*"
                                        "corpus.bad_records is stop"):
        documents(path, bad_records="stop")
    with pytest.raises(UserError, match=r"more than corpus.max_bad_records \(3\) bad records in "
                                        f"this run, the last: {path}, line 5"):
        documents(path, max_bad_records=3)
    assert documents(path, max_bad_records=5) == ["good", "good again"]


def test_a_wrong_text_field_is_a_config_error_at_once(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(jsonl(DOCS))
    with pytest.raises(UserError, match="corpus.text_field: records of .* have no 'body' field"):
        documents(path, text_field="body")


def test_a_damaged_bundled_shard_in_the_cache_is_laid_out_again(tmp_path, capsys):
    cache = tmp_path / "cache"
    shards = bundled_shards(cache)
    original = Path(shards[3]).read_bytes()
    Path(shards[3]).write_bytes(original[: len(original) // 2])  # a copy cut short
    assert bundled_shards(cache) == shards
    assert "has a damaged train/chunk1/example_train_3.jsonl.zst (sha256 differs); laying it " \
           "out again" in capsys.readouterr().err
    assert Path(shards[3]).read_bytes() == original


def test_an_unusable_cache_folder_is_one_line_naming_it(tmp_path):
    blocker = tmp_path / "cache-is-a-file"
    blocker.write_text("x")
    run = make_run("bundled", timeout_s=1, max_retries=0)
    run.config.tokenizer.cache_dir = str(blocker)
    with pytest.raises(UserError, match="cache: cannot write to .*cache-is-a-file .*"
                                        "SLIMCORE_CACHE_DIR"):
        first_documents(run, 5)


def test_long_records_are_cut_into_documents_and_resume_mid_record(tmp_path, capsys):
    book = "".join(f"Line {i} of a very long book.\n" for i in range(4000))  # ~120k chars
    path = tmp_path / "books.jsonl"
    path.write_bytes(jsonl(["a short one", book, "after the book"]))
    run = make_run(path, max_document_chars=10_000)
    docs = list(DocumentStream(run, str(path), epochs=1))
    assert docs[0] == "a short one" and docs[-1] == "after the book"
    parts = docs[1:-1]
    assert "".join(parts) == book and all(len(p) <= 10_000 for p in parts)
    assert all(p.endswith("\n") for p in parts)  # cut after a line break
    assert f"{path}, line 2: a record longer than corpus.max_document_chars (10,000) is cut " \
           f"into {len(parts)} documents" in capsys.readouterr().err
    # A position inside the book resumes inside it, and the state holds no text.
    stream = DocumentStream(run, str(path), epochs=1)
    it = iter(stream)
    taken = [next(it) for _ in range(5)]
    state = stream.state_dict()
    it.close()
    assert "Line" not in json.dumps(state) and len(json.dumps(state)) < 10_000
    again = DocumentStream(run, str(path), epochs=1)
    again.load_state_dict(json.loads(json.dumps(state)))
    assert taken + list(again) == docs


def test_a_buffered_document_is_stored_as_a_position_and_read_again(tmp_path):
    path = tmp_path / "docs.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(jsonl(DOCS)))
    run = make_run(path, shuffle_buffer=50)
    straight = list(DocumentStream(run, str(path), shuffle_buffer=50, epochs=1))
    stream = DocumentStream(run, str(path), shuffle_buffer=50, epochs=1)
    it = iter(stream)
    taken = [next(it) for _ in range(120)]
    state = json.loads(json.dumps(stream.state_dict()))
    it.close()
    assert len(state["buffer"]) == 50 and all(isinstance(e, list) for e in state["buffer"])
    again = DocumentStream(run, str(path), shuffle_buffer=50, epochs=1)
    again.load_state_dict(state)
    assert taken + list(again) == straight
    # A corpus changed under the checkpoint is said to be, not silently read wrong.
    path.write_bytes(zstandard.ZstdCompressor().compress(jsonl(DOCS[:60])))
    changed = DocumentStream(run, str(path), shuffle_buffer=50, epochs=1)
    changed.load_state_dict(state)
    with pytest.raises(UserError, match="changed since the checkpoint"):
        list(changed)


def test_a_shuffle_buffer_larger_than_the_corpus_shrinks_to_it(tmp_path, capsys):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(jsonl(DOCS[:30]))
    run = make_run(path, shuffle_buffer=10_000)
    stream = DocumentStream(run, str(path), shuffle_buffer=10_000)  # endless, as training
    it = iter(stream)
    first = [next(it) for _ in range(45)]  # would wait for 10,000 documents forever
    assert sorted(first[:30]) != first[:30] and set(first) <= set(DOCS[:30])
    warning = capsys.readouterr().err
    assert "corpus.shuffle_buffer (10000) is more documents than a pass" in warning
    assert "shuffling over 30\n" in warning  # the pass's 30 documents (it said 31)
    state = json.loads(json.dumps(stream.state_dict()))
    it.close()
    again = DocumentStream(run, str(path), shuffle_buffer=10_000)
    again.load_state_dict(state)
    straight = DocumentStream(run, str(path), shuffle_buffer=10_000)
    reference = iter(straight)
    expected = [next(reference) for _ in range(45 + 40)][45:]
    resumed = iter(again)
    assert [next(resumed) for _ in range(40)] == expected


def test_a_run_on_a_damaged_corpus_trains_and_names_the_damage(write_config, cli, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good = [f"Paragraph {i}: " + "the people of the union " * 20 for i in range(200)]
    (corpus / "a_good.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(good)))
    (corpus / "b_random.jsonl.zst").write_bytes(bytes(range(256)) * 64)
    (corpus / "c_empty.jsonl").write_bytes(b"")
    (corpus / "d_nulls.jsonl").write_text(json.dumps({"text": None}) + "\n"
                                          + json.dumps({"text": 7}) + "\n")
    config = write_config({"run": {"steps": 3}, "corpus": {"path": str(corpus)},
                           "tokenizer": {"vocab_size": 300}})
    result = cli("run", str(config))
    assert result.returncode == 0, result.stderr
    assert "b_random.jsonl.zst, line 1: does not decompress as zstd" in result.stderr
    assert "d_nulls.jsonl, line 1: 'text' is null, not a string" in result.stderr
    assert "Traceback" not in result.stderr
    # Nothing but damage: one line, exit 2, before any step.
    (corpus / "a_good.jsonl.zst").unlink()
    result = cli("run", str(config), "--output-dir", str(tmp_path / "other"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("slimcore: error: corpus.path: ")
    assert "holds no documents" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("source", ["chunk", "sample"])
def test_a_record_with_a_lone_surrogate_costs_a_character_not_the_run(write_config, cli,
                                                                      tmp_path, source):
    """`"\\ud800"` is valid JSON but no text: it trained the tokenizer, was tokenized, was
    scored by eval --data and was resumed through, each without a traceback (they crashed,
    and every resume crashed at the same record)."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [json.dumps({"text": f"Paragraph {i}: the people of the union " * 8})
             for i in range(120)]
    lines[3] = '{"text": "a lone \\ud800 surrogate and \\udfff another, then the union"}'
    (corpus / "a.jsonl").write_text("\n".join(lines) + "\n")
    config = write_config({"run": {"steps": 4}, "corpus": {"path": str(corpus)},
                           "data": {"source": source}, "tokenizer": {"vocab_size": 300},
                           "intervals": {"checkpoint": 2}})
    result = cli("run", str(config))
    assert result.returncode == 0, result.stderr
    resumed = cli("run", str(config), "--set", "run.steps=6", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    scored = cli("eval", str(tmp_path / "out"), "--data", str(corpus / "a.jsonl"),
                 "--batches", "2")
    assert scored.returncode == 0, scored.stderr
    assert "Traceback" not in result.stderr + resumed.stderr + scored.stderr
