"""Plugin `chunk`: documents joined into one token stream, cut into packed rows.

Documents are encoded (BOS + tokens + EOS) and appended to a buffer; every
`chunk.tokens_per_chunk` tokens form a chunk, which is cut into rows of `model.seq_len + 1`
tokens and then into batches. Tokens and rows left over from one chunk start the next, so no
token is dropped. `chunk.max_chunks` ends the run after that many chunks. The state after a
batch: the document stream's, the tokens not yet in a chunk and the rows not yet batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Iterator

import torch
from slimcore import Batch, ConfigError, Range, hookimpl

from .corpus import CorpusSource
from .documents import DocumentStream
from .mixture import MixedDocuments
from .token_cache import CacheableText, TokenDocument
from .positions import counts, restoring

NAME = "chunk"
# Documents encoded per call (SentencePiece batches them in C++), up to this many characters
# in all: the tokens carried to the next chunk stay bounded however long the documents.
ENCODE_GROUP = 64
ENCODE_CHARS = 1 << 20


@dataclass
class ChunkConfig:
    # Tokens gathered before they are cut into rows; a chunk is held in memory (8 bytes a
    # token), hence the cap.
    tokens_per_chunk: Annotated[int, Range(min=1, max=1 << 26)] = 1_048_576
    max_chunks: Annotated[int, Range(min=1)] | None = None  # null: stream until run.steps

    tiny: ClassVar[dict] = {"tokens_per_chunk": 4096}  # a tiny run needs a few thousand


class ChunkSource(CorpusSource):
    """Documents joined by EOS into chunks of chunk.tokens_per_chunk, cut into rows."""

    name = NAME
    # The rows packed before the checkpoint are trained on first.
    resume_changes = {**CorpusSource.resume_changes, "chunk.tokens_per_chunk": "buffered"}

    def __init__(self, run):
        check_chunk_size(run)
        super().__init__(run)

    @staticmethod
    def batches(reading, documents, state=None, heldout=False):
        # held-out data: every chunk the evaluation asks for, whatever chunk.max_chunks says
        return chunk_batches(reading, documents, state, None if heldout else "config")


@hookimpl
def declare_config():
    return {NAME: ChunkConfig}


@hookimpl
def register_data_sources():
    return [ChunkSource]


@hookimpl
def declare_flags():
    return {"--max-chunks": (f"{NAME}.max_chunks", "chunk source: stop after N chunks"),
            "--tokens-per-chunk": (f"{NAME}.tokens_per_chunk", "chunk source: chunk size")}


def check_chunk_size(run) -> None:
    tokens_per_chunk = run.config.section(NAME).tokens_per_chunk
    if tokens_per_chunk < run.config.model.seq_len + 1:
        raise ConfigError(f"{NAME}.tokens_per_chunk",
                          f"{tokens_per_chunk} is shorter than one row "
                          f"(model.seq_len + 1 = {run.config.model.seq_len + 1})",
                          run.config.source)


def encoded_groups(run, documents) -> Iterator[torch.Tensor]:
    """The tokens of up to ENCODE_GROUP documents (and ENCODE_CHARS characters) at a time,
    BOS + tokens + EOS each, so that the document stream's position always matches the
    tokens handed on (a mixture's position counts each component's tokens too)."""
    mixed = isinstance(documents, MixedDocuments)
    # A mixture learns each component's tokens per character from what is encoded: its
    # first groups are small (1, 2, 4, ... documents), so it learns them early.
    size = 1 if mixed else ENCODE_GROUP
    group, names, chars = [], [], 0
    for text in documents:
        group.append(text)
        if mixed:
            names.append(documents.last_component)
        chars += len(text)
        if len(group) == size or chars >= ENCODE_CHARS:
            yield encoded(run.tokenizer, group, names, documents)
            group, names, chars = [], [], 0
            size = min(2 * size, ENCODE_GROUP)
    if group:
        yield encoded(run.tokenizer, group, names, documents)


def encoded(tokenizer, documents: list, names: list[str], mixture=None) -> torch.Tensor:
    """The documents' tokens, each document's noted to the `mixture` under its component's
    name where `names` are given. Texts are encoded in one call; documents from the token
    cache are their ids; a text the cache wants is handed its tokens."""
    if not names and all(type(d) is str for d in documents):  # the common case, one call
        return tokenizer.encode_documents(documents)
    pieces = document_tokens(tokenizer, documents)
    for document, piece in zip(documents, pieces):
        if isinstance(document, CacheableText):
            document.keep(piece)
    for name, document, piece in zip(names, documents, pieces):
        mixture.note(name, len(document), len(piece))
    return torch.cat(pieces)


def document_tokens(tokenizer, documents: list) -> list[torch.Tensor]:
    """BOS + ids + EOS of each document, one tensor each."""
    texts = [d for d in documents if not isinstance(d, TokenDocument)]
    tokens = tokenizer.encode_documents(texts) if texts else torch.empty(0, dtype=torch.long)
    starts = (tokens == tokenizer.bos_id).nonzero().flatten()
    if len(starts) == len(texts):
        split = iter(torch.tensor_split(tokens, starts[1:].tolist()))
    else:  # a BOS within a text (a tokenizer that keeps "<s>"): one call each
        split = iter([tokenizer.encode_documents([text]) for text in texts])
    return [d.tokens() if isinstance(d, TokenDocument) else next(split) for d in documents]


def chunk_batches(run, documents: DocumentStream, state: dict | None = None,
                  max_chunks: int | None | str = "config") -> Iterator[tuple[Batch, dict]]:
    """Packed batches, each with the source state after it. A finite document stream ends
    with a last, shorter chunk."""
    settings: ChunkConfig = run.config.section(NAME)
    max_chunks = settings.max_chunks if max_chunks == "config" else max_chunks
    row_len = run.config.model.seq_len + 1
    batch_size = run.config.data.batch_size
    # each document is BOS + tokens + EOS: a BOS begins one (data.document_mask)
    document_start = run.tokenizer.bos_id if run.config.data.document_mask else None
    carry = torch.empty(0, dtype=torch.long)  # tokens not yet in a chunk
    rows = torch.empty(0, row_len, dtype=torch.long)  # rows not yet in a batch
    chunks = 0
    if state:
        with restoring(NAME):
            documents.load_state_dict(state["documents"])
            carry, rows, chunks = state["buffer"].long(), state["rows"].long(), state["chunks"]
            counts([chunks], "chunks")
            if carry.dim() != 1 or rows.dim() != 2 or rows.shape[1] != row_len:
                raise ValueError(f"rows of {list(rows.shape)} and carried tokens of "
                                 f"{list(carry.shape)} for rows of {row_len}")

    groups = encoded_groups(run, documents)
    while True:
        while rows.shape[0] >= batch_size:
            batch = Batch.from_sequences(rows[:batch_size], document_start)
            rows = rows[batch_size:]
            # Tensors are never changed in place, so the snapshot can share them.
            yield batch, {"documents": documents.state_dict(), "chunks": chunks,
                          "buffer": carry, "rows": rows}
        if max_chunks is not None and chunks >= max_chunks:
            return
        pieces, have, ended = [carry], len(carry), False
        while have < settings.tokens_per_chunk and not ended:
            tokens = next(groups, None)
            ended = tokens is None
            if not ended:
                pieces.append(tokens)
                have += len(tokens)
        # A long document leaves many chunks' worth of tokens in `carry`: those chunks are
        # views into it, not copies of what remains.
        tokens = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        chunk = tokens[:settings.tokens_per_chunk]
        usable = len(chunk) // row_len * row_len
        if ended and usable == 0:
            return
        rows = torch.cat([rows, chunk[:usable].view(-1, row_len)])
        carry = tokens[usable:]  # the chunk's leftover and what came after it, one view
        chunks += 1
