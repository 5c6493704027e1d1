"""A Hugging Face `tokenizer.json`, run by the `tokenizers` library: the tokenizer of a model
continued from a folder that has no SentencePiece `tokenizer.model` (SmolLM, Llama 3).

The run stores it, in checkpoints and as the run's tokenizer file, as one JSON envelope that
also names BOS and EOS (a tokenizer.json alone does not say which tokens they are):

    {"slimcore_tokenizer": "tokenizers", "bos_id": 1, "eos_id": 2, "tokenizer": {...}}

Ids are the library's own (`encode(text, add_special_tokens=False)`), BOS and EOS put around
documents by slimcore as for SentencePiece.
"""

from __future__ import annotations

import json

import torch

from ..contracts.errors import UserError
from .clean import clean_text, clean_texts

KIND = "tokenizers"
INSTALL_HINT = "pip install tokenizers"
SPACE = "\u2581"  # the space sign of SentencePiece-style (Metaspace) pipelines


def envelope(tokenizer_json: str, bos_id: int, eos_id: int) -> bytes:
    """The bytes a run stores for this tokenizer."""
    return json.dumps({"slimcore_tokenizer": KIND, "bos_id": bos_id, "eos_id": eos_id,
                       "tokenizer": json.loads(tokenizer_json)}).encode()


def is_envelope(data: bytes) -> bool:
    return data[:1] == b"{" and b'"slimcore_tokenizer"' in data[:200]


class JsonTokenizer:
    def __init__(self, data: bytes, fingerprint: str, path=None):
        try:
            from tokenizers import Tokenizer as Library
        except ImportError:
            raise UserError(f"tokenizer: a tokenizer.json needs the tokenizers library: "
                            f"{INSTALL_HINT}") from None
        try:
            stored = json.loads(data)
            self.library = Library.from_str(json.dumps(stored["tokenizer"]))
            self.bos_id, self.eos_id = int(stored["bos_id"]), int(stored["eos_id"])
        except Exception as e:  # the library raises its own kinds for a bad pipeline
            raise UserError(f"tokenizer: {path or 'the stored tokenizer'} is not a tokenizer "
                            f"the tokenizers library loads ({str(e)[:120]})") from None
        self.pipeline = stored["tokenizer"]
        self.model_proto = data  # what checkpoints carry (the name is the SentencePiece one)
        self.fingerprint = fingerprint
        self.path = path
        self.word_cache = None  # the library's batch encoder is its own fast path

    @property
    def vocab_size(self) -> int:
        return self.library.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self.library.encode(clean_text(text), add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.library.encode_batch(clean_texts(texts),
                                                         add_special_tokens=False)]

    def encode_documents(self, texts: list[str]) -> torch.Tensor:
        """BOS + ids + EOS of each text, one after another, as one int64 tensor."""
        ids = [t for encoded in self.encode_batch(texts)
               for t in (self.bos_id, *encoded, self.eos_id)]
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, ids: list[int]) -> str:
        return self.library.decode(list(ids), skip_special_tokens=True)

    def piece_bytes(self) -> tuple[list[int], list[bool]]:
        """The UTF-8 bytes each id stands for, and whether it starts with a space a text's
        start does not have (see TokenBytes): a byte-level pipeline's token is one byte a
        character; a Metaspace one's is SentencePiece's; special tokens stand for none."""
        special = {t.content for t in self.library.get_added_tokens_decoder().values()
                   if t.special}
        byte_level = "ByteLevel" in json.dumps(self.pipeline.get("pre_tokenizer")) or \
            "ByteLevel" in json.dumps(self.pipeline.get("decoder"))
        lengths, spaced = [], []
        for token_id in range(self.vocab_size):
            token = self.library.id_to_token(token_id)
            if token is None or token in special:
                lengths.append(0)
            elif byte_level:
                lengths.append(len(token))
            elif token.startswith("<0x") and token.endswith(">") and len(token) == 6:
                lengths.append(1)
            else:
                lengths.append(len(token.replace(SPACE, " ").encode("utf-8")))
            spaced.append(not byte_level and bool(token) and token.startswith(SPACE)
                          and lengths[-1] > 0)
        return lengths, spaced
