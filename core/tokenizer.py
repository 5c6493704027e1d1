"""SentencePiece tokenizer: load a `.model` file, or train one on a sample of the corpus.

A trained model is cached as `<cache>/tokenizers/spm-<fingerprint>.model`, where the
fingerprint hashes the training settings and the exact training text, so the next run with
the same corpus sample and settings reuses it (and a changed corpus retrains). A file lock
keeps concurrent ranks from training it twice.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Iterable

import sentencepiece as spm
from filelock import FileLock

from .config import TokenizerSection
from .errors import UserError

# Llama-style settings (see shared/NOTES.md). byte_fallback means no text is ever <unk>;
# identity normalization keeps the text as written. Digits split so numbers tokenize
# uniformly.
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


class Tokenizer:
    def __init__(self, model_proto: bytes, fingerprint: str, path: Path | None = None):
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.fingerprint = fingerprint
        self.path = path

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
        return self.processor.encode(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.processor.encode(texts)

    def decode(self, ids: list[int]) -> str:
        return self.processor.decode(ids)


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer.path: file not found: {path} (give a SentencePiece "
                        ".model file, or set tokenizer.path: null to train one)")
    proto = path.read_bytes()
    try:
        return Tokenizer(proto, hashlib.sha256(proto).hexdigest(), path)
    except RuntimeError as e:
        raise UserError(f"tokenizer.path: {path} is not a SentencePiece model ({e})") from None


def default_cache_dir() -> Path:
    return Path(os.environ.get("SLIMCORE_CACHE_DIR") or Path.home() / ".cache" / "slimcore")


def train_or_reuse(section: TokenizerSection, texts: Iterable[str],
                   log=print) -> Tokenizer:
    """Train on `texts` (capped by `section.train_max_chars`), or reuse the cached model."""
    lines = list(_training_lines(texts, section.train_max_chars))
    if not lines:
        raise UserError("tokenizer: the corpus gave no text to train on; check data.path "
                        "and data.text_field")
    settings = {**TRAINER_SETTINGS, "vocab_size": section.vocab_size}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for line in lines:
        digest.update(line.encode())
        digest.update(b"\n")
    fingerprint = digest.hexdigest()
    cache = Path(section.cache_dir) if section.cache_dir else default_cache_dir()
    path = cache / "tokenizers" / f"spm-{fingerprint[:20]}.model"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            log(f"tokenizer: training {section.vocab_size}-piece BPE on {len(lines)} lines "
                f"-> {path}")
            proto = _train(lines, settings)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(proto)
            os.replace(tmp, path)
        else:
            log(f"tokenizer: reusing {path}")
    return Tokenizer(path.read_bytes(), fingerprint, path)


def _training_lines(texts: Iterable[str], max_chars: int) -> Iterable[str]:
    total = 0
    for text in texts:
        for line in text.split("\n"):
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
