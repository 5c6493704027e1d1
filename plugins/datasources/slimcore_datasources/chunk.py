"""Plugin `chunk`: documents joined into one token stream, cut into packed rows.

Documents are encoded (BOS + tokens + EOS) and appended to a buffer; every
`chunk.tokens_per_chunk` tokens form a chunk, which is cut into rows of `model.seq_len + 1`
tokens and then into batches. Tokens and rows left over from one chunk start the next, so no
token is dropped. `chunk.max_chunks` ends the run after that many chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from slimcore import Batch, ConfigError, Run, hookimpl

from .corpus import first_documents, iter_documents

NAME = "chunk"
ENCODE_GROUP = 64  # documents encoded per call: SentencePiece batches them in C++


@dataclass
class ChunkConfig:
    tokens_per_chunk: int = 1_048_576
    max_chunks: int | None = None  # null: stream until run.steps

    def __post_init__(self):
        if self.tokens_per_chunk < 1:
            raise ConfigError("tokens_per_chunk", "must be at least 1")
        if self.max_chunks is not None and self.max_chunks < 1:
            raise ConfigError("max_chunks", "must be at least 1, or null for no limit")


@hookimpl
def declare_config():
    return {NAME: ChunkConfig}


@hookimpl
def corpus_text(source: str, run: Run, max_documents: int):
    if source == NAME:
        return first_documents(run, max_documents)


@hookimpl
def iterate_batches(source: str, run: Run):
    if source == NAME:
        return chunk_batches(run)


def token_stream(run: Run) -> Iterator[list[int]]:
    """Encoded documents, BOS + tokens + EOS each, encoded in groups."""
    tokenizer = run.tokenizer
    group: list[str] = []
    for text in iter_documents(run):
        group.append(text)
        if len(group) == ENCODE_GROUP:
            for ids in tokenizer.encode_batch(group):
                yield [tokenizer.bos_id, *ids, tokenizer.eos_id]
            group = []
    for ids in tokenizer.encode_batch(group) if group else []:
        yield [tokenizer.bos_id, *ids, tokenizer.eos_id]


def chunk_batches(run: Run) -> Iterator[Batch]:
    settings: ChunkConfig = run.config.section(NAME)
    row_len = run.config.model.seq_len + 1
    batch_size = run.config.data.batch_size
    if settings.tokens_per_chunk < row_len:
        raise ConfigError(f"{NAME}.tokens_per_chunk",
                          f"{settings.tokens_per_chunk} is shorter than one row "
                          f"(model.seq_len + 1 = {row_len})", run.config.source)
    buffer: list[int] = []
    rows = torch.empty(0, row_len, dtype=torch.long)
    chunks = 0
    for ids in token_stream(run):
        buffer.extend(ids)
        if len(buffer) < settings.tokens_per_chunk:
            continue
        chunk, buffer = buffer[:settings.tokens_per_chunk], buffer[settings.tokens_per_chunk:]
        usable = len(chunk) // row_len * row_len
        buffer = chunk[usable:] + buffer
        rows = torch.cat([rows, torch.tensor(chunk[:usable], dtype=torch.long).view(-1, row_len)])
        while rows.shape[0] >= batch_size:
            yield Batch.from_sequences(rows[:batch_size])
            rows = rows[batch_size:]
        chunks += 1
        if settings.max_chunks is not None and chunks >= settings.max_chunks:
            return
