"""The word cache (core/text/word_cache.py) gives SentencePiece's ids exactly: on the bundled corpus,
on text built to catch the edges of the cutting rule, in both of SentencePiece's whitespace
modes, when the cache is full, from two threads; models it cannot serve are left to
SentencePiece."""

import threading

import pytest
import sentencepiece as spm
import torch

from slimcore.text import word_cache as encoder
from slimcore.text.word_cache import NativeWordCacheEncoder, WordCacheEncoder, model_spec
from slimcore.text.tokenizer import TRAINER_SETTINGS, Tokenizer

EDGES = ["", " ", "  ", "   ", "a", " a", "a ", "a  ", "  a  b   c ", "\n", " \n ", "\t x\t",
         "x\n\n  y", "数字 123456 ąę   ", "a" * 500 + " b", " " * 40 + "z", "\u2581x \u2581 y",
         "e\u0301 ́e", "😀 😀😀  ", "The  state of\tthe Union,  1790.", "ends with a space "]
ENCODERS = ["native", "python"]


def encoder_of(tokenizer: Tokenizer, kind: str):
    """The tokenizer with a fresh word cache of `kind`."""
    spec = model_spec(tokenizer.path.read_bytes())
    if kind == "python":
        tokenizer.word_cache = WordCacheEncoder(tokenizer.processor, spec.whitespace_only_pieces)
    else:
        tokenizer.word_cache = encoder.word_cache_encoder(tokenizer.processor,
                                                          spec.whitespace_only_pieces)
        assert isinstance(tokenizer.word_cache, NativeWordCacheEncoder)
    return tokenizer


@pytest.fixture(scope="module")
def corpus():
    from slimcore_datasources.bundled import bundled_shards
    from slimcore.storage.cache import default_cache_dir
    import json
    import zstandard

    texts = []
    for path in sorted(bundled_shards(default_cache_dir())):
        with open(path, "rb") as f:
            data = zstandard.ZstdDecompressor().stream_reader(f).read().decode()
        texts += [json.loads(line)["text"] for line in data.splitlines() if line.strip()]
    return texts


# Runs of spaces in training give the vocabulary pieces of several ▁: without them a run of
# spaces encodes the same whether cut into one word or several, and a wrong cut would pass.
INDENTED = [" " * (4 * (i % 4)) + f"value_{i} = compute(  {i},   {i + 1})  " for i in range(400)]


def trained(tmp_path, texts, **settings):
    """A SentencePiece model trained with the project's settings, changed by `settings`, on
    the lines of `texts` and INDENTED."""
    path = tmp_path / "model.model"
    lines = [line for t in texts for line in t.split("\n") if line][:3000] + INDENTED
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_prefix=str(path.with_suffix("")), minloglevel=2,
        **{**TRAINER_SETTINGS, "vocab_size": 500, **settings})
    return Tokenizer(path.read_bytes(), "test", path)


@pytest.mark.parametrize("kind", ENCODERS)
def test_the_bundled_corpus_encodes_exactly_as_sentencepiece(corpus, tmp_path, kind):
    tokenizer = encoder_of(trained(tmp_path, corpus[:40], vocab_size=1000), kind)
    texts = corpus[::4] + EDGES + INDENTED[:50]  # 63 addresses, 1790 to today, about 3 MB
    assert tokenizer.encode_batch(texts) == tokenizer.processor.encode(texts)
    assert all(tokenizer.encode(t) == tokenizer.processor.encode(t) for t in EDGES)
    cache = tokenizer.word_cache
    assert 0 < cache.misses < cache.lookups
    # Encoded a second time, every word comes from the cache.
    misses = cache.misses
    group = tokenizer.encode_documents(texts[:8])
    assert cache.misses == misses
    expected = [t for ids in tokenizer.processor.encode(texts[:8])
                for t in (tokenizer.bos_id, *ids, tokenizer.eos_id)]
    assert torch.equal(group, torch.tensor(expected))


@pytest.mark.parametrize("kind", ENCODERS)
@pytest.mark.parametrize("whitespace_only_pieces", [True, False])
def test_both_whitespace_modes(corpus, tmp_path, kind, whitespace_only_pieces):
    tokenizer = trained(tmp_path, corpus[:3],
                        allow_whitespace_only_pieces=whitespace_only_pieces)
    assert model_spec(tokenizer.path.read_bytes()).whitespace_only_pieces == \
        whitespace_only_pieces
    pieces = {tokenizer.processor.id_to_piece(i) for i in range(tokenizer.vocab_size)}
    assert "\u2581\u2581\u2581\u2581" in pieces or not whitespace_only_pieces
    tokenizer = encoder_of(tokenizer, kind)
    texts = EDGES + corpus[5:8] + INDENTED[:50]
    assert tokenizer.encode_batch(texts) == tokenizer.processor.encode(texts)


@pytest.mark.parametrize("kind", ENCODERS)
def test_a_full_cache_keeps_no_more_and_stays_exact(corpus, tmp_path, monkeypatch, kind):
    monkeypatch.setattr(encoder, "MAX_WORDS", 50)
    tokenizer = encoder_of(trained(tmp_path, corpus[:3]), kind)
    texts = corpus[10:12] + EDGES + INDENTED[:50]
    for _ in range(2):
        assert tokenizer.encode_batch(texts) == tokenizer.processor.encode(texts)
    cache = tokenizer.word_cache
    kept = len(cache.cache) if kind == "python" else cache.lib.slimcore_words_count(cache.table)
    assert kept == 50


def test_two_threads_share_one_native_cache(corpus, tmp_path):
    tokenizer = encoder_of(trained(tmp_path, corpus[:3]), "native")
    expected = tokenizer.processor.encode(corpus[20:40])
    results = {}

    def encode(name, texts):
        results[name] = [tokenizer.encode(t) for t in texts]

    threads = [threading.Thread(target=encode, args=(n, corpus[20:40])) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results[0] == expected and results[1] == expected


def test_buffers_grow_when_a_text_is_longer_than_they_are(corpus, tmp_path):
    tokenizer = encoder_of(trained(tmp_path, corpus[:3]), "native")
    cache = tokenizer.word_cache
    cache.ids, cache.missing = cache.ffi.new("int32_t[]", 4), cache.ffi.new("int64_t[]", 3)
    text = corpus[30]
    assert tokenizer.encode(text) == tokenizer.processor.encode(text)
    assert len(cache.ids) > len(text) and len(cache.missing) > 3


@pytest.mark.parametrize("settings,field,value", [
    (dict(normalization_rule_name="nmt_nfkc"), "maps_characters", True),
    (dict(remove_extra_whitespaces=True), "removes_extra_whitespaces", True),
    (dict(treat_whitespace_as_suffix=True), "whitespace_as_suffix", True),
    (dict(user_defined_symbols=["<sep>"]), "user_defined_pieces", 1),
    (dict(model_type="unigram"), "bpe", False),
])
def test_models_the_cache_cannot_serve_are_left_to_sentencepiece(corpus, tmp_path, settings,
                                                                  field, value):
    tokenizer = trained(tmp_path, corpus[:3], **settings)
    spec = model_spec(tokenizer.path.read_bytes())
    assert getattr(spec, field) == value and not spec.splits_into_words
    assert tokenizer.word_cache is None
    assert tokenizer.encode_batch(EDGES) == tokenizer.processor.encode(EDGES)
    assert torch.equal(tokenizer.encode_documents(EDGES[:3]), torch.tensor(
        [t for ids in tokenizer.processor.encode(EDGES[:3])
         for t in (tokenizer.bos_id, *ids, tokenizer.eos_id)]))


@pytest.mark.parametrize("whitespace_only_pieces", [True, False])
@pytest.mark.parametrize("kind", ENCODERS)
def test_long_texts_encoded_in_pieces_equal_the_unbroken_encoding(corpus, tmp_path, kind,
                                                                  whitespace_only_pieces,
                                                                  monkeypatch):
    """With pieces of a few dozen characters every kind of cut is met many times: runs of
    spaces, ▁ in the text, newlines, tabs, words longer than a piece, trailing spaces."""
    from slimcore.text import tokenizer as tokenizer_module

    tokenizer = encoder_of(trained(tmp_path, corpus[:40], vocab_size=1000,
                                   allow_whitespace_only_pieces=whitespace_only_pieces), kind)
    long_texts = ["".join(EDGES) * 30, " ".join(INDENTED), corpus[7][:20000] + "   ",
                  "x" * 300 + " " + "y" * 300, "   " + "word " * 2000 + "  "]
    expected = tokenizer.processor.encode(long_texts)
    monkeypatch.setattr(tokenizer_module, "PIECE_CHARS", 37)
    assert all(len(tokenizer_module.word_pieces(t)) > 1 for t in long_texts[:2])
    assert tokenizer.encode_batch(long_texts) == expected
    assert [tokenizer.encode(t) for t in long_texts] == expected
    joined = tokenizer.encode_documents(long_texts)
    assert joined.tolist() == [t for ids in expected
                               for t in (tokenizer.bos_id, *ids, tokenizer.eos_id)]
