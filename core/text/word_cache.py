"""Encoding with a SentencePiece BPE model through a cache of words: the same ids as
SentencePiece, at 6x its rate on the bundled corpus read once from an empty cache, and more
once the words repeat (bench/RESULTS.md).

Why this is exact. With the settings slimcore trains with (and Llama's; the conditions are
ModelSpec.splits_into_words), SentencePiece's BPE encoder never merges across
a word: it replaces each space by U+2581 (▁), puts one ▁ in front of the text, cuts the
result into words that each begin at a ▁ (SplitIntoWords in its model_interface.cc: with
`allow_whitespace_only_pieces` a run of spaces starts one word together with what follows
it; without, every space starts a word), and encodes each word on its own. So the ids of a
text are the ids of its words, one after another, and the ids of a word can be kept.

A word here is the original text's form of it: " " + text cut before each space that starts
a word, so each word begins with one space (the ▁ SentencePiece adds or the one it
replaces). SentencePiece itself encodes a word the first time it is seen, given the word
less that space (its dummy prefix stands for it). A text that holds ▁ itself (SentencePiece
cuts there too) is encoded by SentencePiece whole, and so is every text of a model with
other normalization, user-defined symbols (matched across spaces) or another model type.

The cache holds at most MAX_WORDS words: once full it takes no more, so memory stays bounded
on an endless corpus; words seen first are the frequent ones. The table and the loop over a
text's words run in C (native/slimcore_words.c) where that small library builds, else
in Python (WordCacheEncoder).
"""

from __future__ import annotations

import array
import itertools
import re
import threading
from dataclasses import dataclass

from ..native import loader as native
from ..contracts.errors import UserError

MAX_WORDS = 200_000
# SentencePiece's own sign for a space: in a text it also cuts words, so a text holding one
# is encoded by SentencePiece whole.
SPACE_MARK = "\u2581"
MAX_KEY_LENGTH = 64  # longer words (URLs, base64, digit runs) are encoded each time, not kept

# sentencepiece_model.proto field numbers (ModelProto, TrainerSpec, NormalizerSpec).
MODEL_PIECES, MODEL_TRAINER_SPEC, MODEL_NORMALIZER_SPEC = 1, 2, 3
PIECE_TYPE, USER_DEFINED = 3, 4
USER_DEFINED_TAIL = bytes([PIECE_TYPE << 3, USER_DEFINED])  # the type field, varint USER_DEFINED
TRAINER_MODEL_TYPE, BPE = 3, 2
TRAINER_SPLIT_BY_WHITESPACE, TRAINER_WHITESPACE_AS_SUFFIX = 22, 24
TRAINER_WHITESPACE_ONLY_PIECES = 26
NORMALIZER_CHARSMAP, NORMALIZER_DUMMY_PREFIX = 2, 3
NORMALIZER_REMOVE_EXTRA_WHITESPACES, NORMALIZER_ESCAPE_WHITESPACES = 4, 5


@dataclass(frozen=True)
class ModelSpec:
    """What of a SentencePiece model decides whether its encoding splits into words."""

    bpe: bool
    split_by_whitespace: bool
    whitespace_as_suffix: bool
    whitespace_only_pieces: bool
    maps_characters: bool
    dummy_prefix: bool
    removes_extra_whitespaces: bool
    escapes_whitespaces: bool
    user_defined_pieces: int

    @property
    def splits_into_words(self) -> bool:
        return (self.bpe and self.split_by_whitespace and not self.whitespace_as_suffix
                and not self.maps_characters and self.dummy_prefix
                and not self.removes_extra_whitespaces and self.escapes_whitespaces
                and self.user_defined_pieces == 0)


def model_spec(proto: bytes) -> ModelSpec:
    """Read the few settings above from a serialized ModelProto (protobuf wire format, read
    here so that slimcore needs no protobuf package). Absent fields take the proto's
    defaults."""
    top = _fields(proto)
    trainer = _fields(_last(top, MODEL_TRAINER_SPEC, b""))
    normalizer = _fields(_last(top, MODEL_NORMALIZER_SPEC, b""))
    # A piece's type is its last field (fields are written in number order): only a piece
    # ending as a USER_DEFINED type does is parsed, not all 32,000 (which took 70 ms of the
    # 77 a tokenizer took to load; now about 45 of 50).
    user_defined = sum(1 for piece in top.get(MODEL_PIECES, [])
                       if piece.endswith(USER_DEFINED_TAIL)
                       and _last(_fields(piece), PIECE_TYPE, 1) == USER_DEFINED)
    return ModelSpec(
        bpe=_last(trainer, TRAINER_MODEL_TYPE, 1) == BPE,
        split_by_whitespace=bool(_last(trainer, TRAINER_SPLIT_BY_WHITESPACE, 1)),
        whitespace_as_suffix=bool(_last(trainer, TRAINER_WHITESPACE_AS_SUFFIX, 0)),
        whitespace_only_pieces=bool(_last(trainer, TRAINER_WHITESPACE_ONLY_PIECES, 0)),
        maps_characters=len(_last(normalizer, NORMALIZER_CHARSMAP, b"")) > 0,
        dummy_prefix=bool(_last(normalizer, NORMALIZER_DUMMY_PREFIX, 1)),
        removes_extra_whitespaces=bool(_last(normalizer, NORMALIZER_REMOVE_EXTRA_WHITESPACES, 1)),
        escapes_whitespaces=bool(_last(normalizer, NORMALIZER_ESCAPE_WHITESPACES, 1)),
        user_defined_pieces=user_defined,
    )


def _last(fields: dict, number: int, default):
    values = fields.get(number)
    return values[-1] if values else default


def _fields(data: bytes) -> dict[int, list]:
    """field number -> values (ints for varints, bytes for length-delimited fields)."""
    fields: dict[int, list] = {}
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            length, i = _varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        else:
            raise ValueError(f"not a SentencePiece model: protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def word_cache_encoder(processor, whitespace_only_pieces: bool):
    """The C word cache where its small native library builds (a C compiler is there), else
    the same in Python: about two thirds of the C rate while words are new, a quarter once
    they repeat (bench/RESULTS.md)."""
    try:
        library = native.library("words")
    except (UserError, OSError):
        return WordCacheEncoder(processor, whitespace_only_pieces)
    return NativeWordCacheEncoder(processor, whitespace_only_pieces, library)


def int32_bytes(ids: list[int]) -> bytes:
    return array.array("i", ids).tobytes()


def int32_list(data: bytes) -> list[int]:
    return array.array("i", data).tolist()


def lone_space_ids(processor) -> bytes:
    """The ids of the word ▁ alone (key ""), the one word SentencePiece cannot be given
    alone: those that " " adds after a word."""
    after = processor.encode("a ")
    return int32_bytes(after[len(processor.encode("a")):])


class WordCacheEncoder:
    """encode_bytes(texts): the ids of each text, those of processor.encode, as int32 bytes
    (which join without a Python object per token: see Tokenizer.encode_documents).

    Words are kept under their key, the word less its first space (what SentencePiece is
    given to encode it). For most text the keys are text.split(" "): so they are whenever
    every space starts a word, and with whitespace-only pieces whenever the text has no run
    of spaces and none at either end; other text is cut by a regular expression."""

    def __init__(self, processor, whitespace_only_pieces: bool):
        self.processor = processor
        self.split_always = not whitespace_only_pieces
        # After a space: more spaces and what follows them, or the spaces that end the text.
        self.words_after_spaces = re.compile(r" ( *[^ ]+| *\Z)")
        self.cache: dict[str, bytes] = {"": lone_space_ids(processor)}
        self.lookups = self.misses = 0

    def keys(self, text: str) -> list[str]:
        if self.split_always or ("  " not in text and text[0] != " " and text[-1] != " "):
            return text.split(" ")
        return self.words_after_spaces.findall(" " + text)

    def encode_bytes(self, texts: list[str]) -> list[bytes]:
        """Words not yet kept are encoded by one SentencePiece call for all the texts: its
        cost per call is far above a word's."""
        cache = self.cache
        encoded: list[bytes | None] = []
        missing: list[tuple[int, list[str]]] = []
        for text in texts:
            if SPACE_MARK in text:
                encoded.append(int32_bytes(self.processor.encode(text)))
                continue
            keys = self.keys(text) if text else []
            self.lookups += len(keys)
            try:
                encoded.append(b"".join(map(cache.__getitem__, keys)))
            except KeyError:
                missing.append((len(encoded), keys))
                encoded.append(None)
        if missing:
            unseen = list(set().union(*(keys for _, keys in missing)).difference(cache))
            self.misses += len(unseen)
            fresh = dict(zip(unseen, map(int32_bytes, self.processor.encode(unseen))))
            room = MAX_WORDS - len(cache)
            if room > 0:
                cache.update(itertools.islice(
                    ((k, ids) for k, ids in fresh.items() if len(k) <= MAX_KEY_LENGTH), room))
            for index, keys in missing:
                try:
                    encoded[index] = b"".join(map(cache.__getitem__, keys))
                except KeyError:  # a long word, or the cache is full
                    encoded[index] = b"".join(cache[k] if k in cache else fresh[k]
                                              for k in keys)
        return encoded


class NativeWordCacheEncoder:
    """WordCacheEncoder with the table and the loop over a text's keys in C
    (native/slimcore_words.c): Python handles only the words not yet kept."""

    def __init__(self, processor, whitespace_only_pieces: bool, library):
        self.processor = processor
        self.ffi, self.lib = library
        table = self.lib.slimcore_words_new(MAX_WORDS, MAX_KEY_LENGTH, whitespace_only_pieces)
        if table == self.ffi.NULL:
            raise MemoryError("slimcore_words_new")
        self.table = self.ffi.gc(table, self.lib.slimcore_words_free)
        self.lock = threading.Lock()  # the C table is not thread-safe; cffi drops the GIL
        self.ids = self.ffi.new("int32_t[]", 1 << 16)
        self.missing = self.ffi.new("int64_t[]", 3 * 4096)
        self.counts = self.ffi.new("int64_t[2]")
        self.lookups = self.misses = 0
        self._keep([b""], [array.array("i", lone_space_ids(processor))])

    def encode_bytes(self, texts: list[str]) -> list[bytes]:
        with self.lock:
            return [self._encode(text.encode()) if text and SPACE_MARK not in text else
                    int32_bytes(self.processor.encode(text)) for text in texts]

    def _encode(self, raw: bytes) -> bytes:
        """Text by text: the words a text meets first are kept before the next text is cut,
        so a word new to a group of texts is encoded once, not looked up in vain in each.
        A text's missing words are spliced in (fewer than its words, mostly far fewer)."""
        found, missing = self._lookup(raw)
        if not missing:
            return found
        unseen = list({raw[start:start + length] for start, length, _ in missing})
        self.misses += len(unseen)
        ids = self.processor.encode([key.decode() for key in unseen])
        self._keep(unseen, ids)  # the table refuses long keys, and any when full
        fresh = dict(zip(unseen, map(int32_bytes, ids)))
        parts, done = [], 0
        for start, length, at in missing:
            parts += (found[4 * done:4 * at], fresh[raw[start:start + length]])
            done = at
        parts.append(found[4 * done:])
        return b"".join(parts)

    def _keep(self, keys: list[bytes], ids: list) -> None:
        ffi = self.ffi
        flat = array.array("i", itertools.chain.from_iterable(ids))
        self.lib.slimcore_words_put(
            self.table, len(keys), b"".join(keys), ffi.new("int64_t[]", list(map(len, keys))),
            ffi.from_buffer("int32_t[]", flat), ffi.new("int64_t[]", list(map(len, ids))))

    def _lookup(self, raw: bytes) -> tuple[bytes, list[tuple[int, int, int]]]:
        ffi, lib = self.ffi, self.lib
        if len(self.ids) < len(raw) + 1:
            self.ids = ffi.new("int32_t[]", 2 * (len(raw) + 1))
        while True:
            n = lib.slimcore_words_encode(self.table, raw, len(raw), self.ids, len(self.ids),
                                          self.missing, len(self.missing) // 3,
                                          self.counts, self.counts + 1)
            if n == -1:
                self.ids = ffi.new("int32_t[]", 2 * len(self.ids))
            elif n == -2:
                self.missing = ffi.new("int64_t[]", 2 * len(self.missing))
            else:
                break
        self.lookups += self.counts[1]
        flat = ffi.unpack(self.missing, 3 * self.counts[0]) if self.counts[0] else []
        return ffi.buffer(self.ids, 4 * n)[:], list(zip(flat[0::3], flat[1::3], flat[2::3]))
