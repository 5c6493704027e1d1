"""SentencePiece tokenizer: load a `.model` file, or train one on a sample of the corpus.

A trained model is cached as `<cache>/tokenizers/spm-<fingerprint>.model` (with its sha256
beside it, checked on every reuse), where the fingerprint hashes the training settings and
the exact training text, so the next run with the same corpus sample and settings reuses it
(and a changed corpus retrains). A file lock keeps concurrent ranks from training it twice.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Iterable

import sentencepiece as spm
import torch
from filelock import FileLock

from ..storage.cache import MOVE_HINT, cache_dir, read_checked, write_checked
from ..config.schema import TokenizerSection
from .clean import clean_text, clean_texts
from .word_cache import (SPACE_MARK, NativeWordCacheEncoder, WordCacheEncoder, int32_bytes,
                      int32_list, model_spec, word_cache_encoder)
from ..contracts.errors import UserError
from .json_tokenizer import JsonTokenizer, is_envelope

# Llama-style settings (those of Llama's own tokenizer). byte_fallback means no text is
# ever <unk>; identity normalization keeps the text as written. Digits split so numbers
# tokenize uniformly.
TRAINER_SETTINGS = dict(
    model_type="bpe",
    byte_fallback=True,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=True,
    character_coverage=0.99995,
    max_sentencepiece_length=16,
    unk_id=0,
    bos_id=1,
    eos_id=2,
    pad_id=-1,
    input_sentence_size=2_000_000,
    shuffle_input_sentence=True,
    # Small vocabularies (tests, the quickstart) may not reach the requested size on a
    # small corpus; the model takes the size the tokenizer really has.
    hard_vocab_limit=False,
)
# SentencePiece skips "sentences" longer than this many bytes, so documents are fed line by
# line and lines are cut to it.
MAX_SENTENCE_BYTES = 8192
# Texts longer than this are encoded in pieces of about this many characters, cut where a
# word starts: the ids are the same (the model never merges across a word), and the buffers
# of the encoder stay this size whatever a document's length.
PIECE_CHARS = 1 << 16


class Tokenizer:
    def __init__(self, model_proto: bytes, fingerprint: str, path: Path | None = None):
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.model_proto = model_proto  # the .model file's bytes: checkpoints carry them
        self.fingerprint = fingerprint
        self.path = path
        # The same ids as the processor, faster, where the model allows (word_cache.py).
        self.word_cache: WordCacheEncoder | NativeWordCacheEncoder | None = None
        try:
            spec = model_spec(model_proto)
        except (ValueError, IndexError):  # a proto this reader does not follow: SentencePiece
            spec = None
        if spec is not None and spec.splits_into_words:
            self.word_cache = word_cache_encoder(self.processor, spec.whitespace_only_pieces)

    @property
    def vocab_size(self) -> int:
        return self.processor.vocab_size()

    @property
    def bos_id(self) -> int:
        return self.processor.bos_id()

    @property
    def eos_id(self) -> int:
        return self.processor.eos_id()

    def encode(self, text: str) -> list[int]:
        text = clean_text(text)
        if self.word_cache is not None:
            return int32_list(self._encode_bytes([text])[0])
        return self.processor.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        texts = clean_texts(texts)
        if self.word_cache is not None:
            return list(map(int32_list, self._encode_bytes(texts)))
        return self.processor.encode(texts)

    def _encode_bytes(self, texts: list[str]) -> list[bytes]:
        """The word cache's int32 ids of each text, long texts in pieces (PIECE_CHARS)."""
        if all(len(text) <= PIECE_CHARS for text in texts):
            return self.word_cache.encode_bytes(texts)
        cut = [word_pieces(text) for text in texts]
        ids = iter(self.word_cache.encode_bytes([p for pieces in cut for p in pieces]))
        return [b"".join(itertools.islice(ids, len(pieces))) for pieces in cut]

    def encode_documents(self, texts: list[str]) -> torch.Tensor:
        """BOS + ids + EOS of each text, one after another, as one int64 tensor: the chunk
        source's input, made without a Python int per token where the word cache serves."""
        texts = clean_texts(texts)
        if self.word_cache is None:
            return torch.tensor([t for ids in self.processor.encode(texts)
                                 for t in (self.bos_id, *ids, self.eos_id)], dtype=torch.long)
        bos, eos = int32_bytes([self.bos_id]), int32_bytes([self.eos_id])
        joined = bytearray().join(part for ids in self._encode_bytes(texts)
                                  for part in (bos, ids, eos))
        return torch.frombuffer(joined, dtype=torch.int32).long() if joined else \
            torch.empty(0, dtype=torch.long)

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode(ids)

    def piece_bytes(self) -> tuple[list[int], list[bool]]:
        """The UTF-8 bytes each piece stands for (control pieces none, a byte piece one), and
        whether it starts with the space SentencePiece adds to a text's start (TokenBytes)."""
        processor = self.processor
        lengths, spaced = [], []
        for piece_id in range(processor.get_piece_size()):
            piece = processor.id_to_piece(piece_id)
            if processor.is_control(piece_id) or processor.is_unknown(piece_id):
                lengths.append(0)
            elif processor.is_byte(piece_id):
                lengths.append(1)  # <0xE2>: one byte of a character the pieces lack
            else:
                lengths.append(len(piece.replace(SPACE_MARK, " ").encode("utf-8")))
            spaced.append(piece.startswith(SPACE_MARK) and lengths[-1] > 0)
        return lengths, spaced


def stored_tokenizer(data: bytes, fingerprint: str, path: Path | None = None):
    """The tokenizer whose bytes a checkpoint or a file holds: a SentencePiece model, or a
    tokenizer.json in slimcore's envelope (json_tokenizer.py)."""
    if is_envelope(data):
        return JsonTokenizer(data, fingerprint, path)
    return Tokenizer(data, fingerprint, path)


def word_pieces(text: str, size: int | None = None) -> list[str]:
    """`text` in pieces of at most about `size` characters whose encodings, joined, are the
    encoding of `text`: each cut lies before a space that starts a word (one after a
    character that is neither a space nor SentencePiece's space sign, with more than spaces
    after it), and every piece but the first is given without that space, which the
    encoder's dummy prefix puts back. A word longer than `size` stays whole."""
    size = size or PIECE_CHARS
    pieces, start = [], 0
    while len(text) - start > size:
        cut = text.rfind(" ", start + 1, start + size)
        while cut > start and (text[cut - 1] in (" ", SPACE_MARK)
                               or not text[cut:].strip(" ")):
            cut = text.rfind(" ", start + 1, cut)
        if cut <= start:  # no word starts in the window: take the long word whole
            cut = text.find(" ", start + size)
            while 0 < cut and (text[cut - 1] in (" ", SPACE_MARK) or not text[cut:].strip(" ")):
                cut = text.find(" ", cut + 1)
            if cut < 0:
                break
        pieces.append(text[start:cut] if not pieces else text[start + 1:cut])
        start = cut
    pieces.append(text[start:] if not pieces else text[start + 1:])
    return pieces


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer.path: file not found: {path} (give a SentencePiece "
                        ".model file, or set tokenizer.path: null to train one)")
    proto = path.read_bytes()
    try:
        return stored_tokenizer(proto, hashlib.sha256(proto).hexdigest(), path)
    except RuntimeError as e:
        raise UserError(f"tokenizer.path: {path} is not a SentencePiece model ({e})") from None


def train_or_reuse(section: TokenizerSection, texts: Iterable[str], log=print) -> Tokenizer:
    """Train on `texts` (capped by `section.train_max_chars`), or reuse the cached model. A
    cached model that fails its sha256 (or no longer loads) is trained again."""
    lines = list(_training_lines(texts, section.train_max_chars))
    if not lines:
        raise UserError("tokenizer: the data source gave no text to train on; check where "
                        "its settings say the data comes from")
    settings = {**TRAINER_SETTINGS, "vocab_size": section.vocab_size}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for line in lines:
        digest.update(line.encode())
        digest.update(b"\n")
    fingerprint = digest.hexdigest()
    folder = cache_dir(section.cache_dir) / "tokenizers"
    path = folder / f"spm-{fingerprint[:20]}.model"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            proto = read_checked(path)
            if proto is None and path.exists():
                print(f"slimcore: warning: tokenizer: the cached {path} fails its sha256 "
                      "check; training it again", file=sys.stderr)
            elif proto is not None and not _loads(proto):  # replaced with its digest too
                print(f"slimcore: warning: tokenizer: the cached {path} is not a model "
                      "SentencePiece loads; training it again", file=sys.stderr)
                proto = None
            if proto is None:
                log(f"tokenizer: training {section.vocab_size}-piece BPE on {len(lines)} "
                    f"lines -> {path}")
                proto = _train(lines, settings)
                write_checked(path, proto)
            else:
                log(f"tokenizer: reusing {path}")
    except OSError as e:
        raise UserError(f"tokenizer: cannot write the tokenizer into the cache {folder} "
                        f"({e.strerror or e}); make it writable, or {MOVE_HINT}") from None
    return Tokenizer(proto, fingerprint, path)


def _loads(proto: bytes) -> bool:
    try:
        spm.SentencePieceProcessor(model_proto=proto)
    except RuntimeError:
        return False
    return True


def _training_lines(texts: Iterable[str], max_chars: int) -> Iterable[str]:
    total = 0
    for text in texts:
        for line in clean_text(text).split("\n"):
            line = line.strip()
            if not line:
                continue
            line = line.encode()[:MAX_SENTENCE_BYTES].decode(errors="ignore")
            total += len(line)
            yield line
            if total >= max_chars:
                return


def _train(lines: list[str], settings: dict) -> bytes:
    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=writer,
            max_sentence_length=MAX_SENTENCE_BYTES, num_threads=os.cpu_count() or 1,
            minloglevel=2, **settings)
    except RuntimeError as e:
        raise UserError(f"tokenizer: SentencePiece could not train on this corpus: {e} "
                        "(try a smaller tokenizer.vocab_size or more tokenizer.train_documents)"
                        ) from None
    return writer.getvalue()
