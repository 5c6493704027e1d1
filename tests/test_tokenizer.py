"""SentencePiece: train on the corpus sample, cache by fingerprint, load a .model file."""

import pytest

from slimcore.config.schema import TokenizerSection
from slimcore.contracts.errors import UserError
from slimcore.text.tokenizer import load_tokenizer, train_or_reuse

TEXTS = [f"Document {i}: the quick brown fox jumps over {i * 7} lazy dogs.\nAnd again."
         for i in range(200)]


def test_train_then_reuse_by_fingerprint(tmp_path):
    section = TokenizerSection(vocab_size=400, cache_dir=str(tmp_path))
    logs = []
    first = train_or_reuse(section, TEXTS, log=logs.append)
    second = train_or_reuse(section, TEXTS, log=logs.append)
    assert logs[0].startswith("tokenizer: training") and logs[1].startswith("tokenizer: reusing")
    assert first.fingerprint == second.fingerprint
    assert first.path == second.path and first.path.exists()
    # A different corpus sample is a different tokenizer.
    third = train_or_reuse(section, TEXTS[:100], log=logs.append)
    assert third.fingerprint != first.fingerprint and logs[2].startswith("tokenizer: training")


def test_llama_style_settings(tmp_path):
    tok = train_or_reuse(TokenizerSection(vocab_size=400, cache_dir=str(tmp_path)), TEXTS,
                         log=lambda _: None)
    assert (tok.processor.unk_id(), tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert tok.vocab_size <= 400
    # Byte fallback: text never seen in training still round-trips, never becomes <unk>.
    text = "Ünïcödé ✓ 12345"
    assert tok.decode(tok.encode(text)) == text
    assert 0 not in tok.encode(text)
    # Digits split one by one.
    pieces = tok.processor.encode("12345", out_type=str)
    assert [p for p in pieces if p != "▁"] == ["1", "2", "3", "4", "5"]


def test_load_a_model_file(tmp_path):
    trained = train_or_reuse(TokenizerSection(vocab_size=400, cache_dir=str(tmp_path)), TEXTS,
                             log=lambda _: None)
    loaded = load_tokenizer(trained.path)
    assert loaded.encode("the quick fox") == trained.encode("the quick fox")


def test_bad_model_files(tmp_path):
    with pytest.raises(UserError, match="tokenizer.path: file not found"):
        load_tokenizer(tmp_path / "missing.model")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a model")
    with pytest.raises(UserError, match="is not a SentencePiece model"):
        load_tokenizer(junk)


def test_empty_corpus_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="gave no text"):
        train_or_reuse(TokenizerSection(cache_dir=str(tmp_path)), ["", "\n\n"])
