"""Plugin `sample`: one document per training row.

Each row is BOS + the document's tokens + EOS, truncated to `model.seq_len + 1` tokens or
padded to it; padded positions are IGNORE_INDEX targets, so they count toward neither loss
nor accuracy. For debugging, small data and fine control over what a row holds.
"""

from __future__ import annotations

from typing import Iterator

import torch
from slimcore import IGNORE_INDEX, Batch, hookimpl

from .corpus import CorpusSource
from .documents import DocumentStream
from .mixture import MixedDocuments
from .token_cache import TokenDocument
from .positions import restoring

NAME = "sample"
PAD_ID = 0  # any valid id: padded inputs only feed positions whose targets are ignored
PREFIX_CHARS_PER_TOKEN = 8  # a first guess at the characters a row's tokens span
PREFIX_MARGIN = 64  # tokens encoded past what a row keeps (see leading_tokens)


class SampleSource(CorpusSource):
    """One document per row, padded; padding masked out of the loss."""

    name = NAME

    @staticmethod
    def batches(reading, documents, state=None, heldout=False):
        return sample_batches(reading, documents, state)


@hookimpl
def register_data_sources():
    return [SampleSource]


def sample_batches(run, documents: DocumentStream,
                   state: dict | None = None) -> Iterator[tuple[Batch, dict]]:
    """Batches of one document per row, each with the source state after it."""
    if state:
        with restoring(NAME):
            documents.load_state_dict(state["documents"])
    mixed = isinstance(documents, MixedDocuments)
    tokenizer = run.tokenizer
    row_len = run.config.model.seq_len + 1
    batch_size = run.config.data.batch_size
    document_start = tokenizer.bos_id if run.config.data.document_mask else None
    rows, lengths = [], []
    for text in documents:
        if isinstance(text, TokenDocument):  # from the token cache: BOS + ids + EOS
            ids = text.ids[:row_len].tolist()
        else:
            ids = ([tokenizer.bos_id] + leading_tokens(tokenizer, text, row_len)
                   + [tokenizer.eos_id])[:row_len]
        lengths.append(len(ids))
        rows.append(ids + [PAD_ID] * (row_len - len(ids)))
        if mixed:  # a row's tokens, of the document's characters
            documents.note(documents.last_component, len(text), len(ids))
        if len(rows) == batch_size:
            yield padded_batch(rows, lengths, document_start), \
                {"documents": documents.state_dict()}
            rows, lengths = [], []


def leading_tokens(tokenizer, text: str, count: int) -> list[int]:
    """The first `count` or more tokens of `text`, the same as encoding all of it, without
    encoding all of a long document. A prefix encodes like the whole except near its cut:
    SentencePiece splits at whitespace before merging, and a piece is at most 16
    characters, so PREFIX_MARGIN tokens short of the cut are far out of its reach."""
    prefix_chars = PREFIX_CHARS_PER_TOKEN * (count + PREFIX_MARGIN)
    if len(text) > prefix_chars:
        ids = tokenizer.encode(text[:prefix_chars])
        if len(ids) >= count + PREFIX_MARGIN:
            return ids[:count]
    return tokenizer.encode(text)


def padded_batch(rows: list[list[int]], lengths: list[int],
                 document_start: int | None = None) -> Batch:
    batch = Batch.from_sequences(torch.tensor(rows, dtype=torch.long), document_start)
    positions = torch.arange(batch.targets.shape[1])
    # Target t is token t + 1 of the row: real only while t + 1 < the row's length.
    padded = positions[None, :] + 1 >= torch.tensor(lengths)[:, None]
    batch.targets[padded] = IGNORE_INDEX
    return batch
