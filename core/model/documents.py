"""Rows packed with several documents, kept apart (data.document_mask): each position's
rotary position counted from its document's start, and attention confined to its document.

    document_positions(documents) -> (B, T) positions restarting at each document
    document_attention_mask(documents) -> (B, 1, T, T) bool: causal and within the document

`documents` is a batch's (B, T) document numbers (Batch.documents): equal within a document,
different across a boundary.

The mask is dense: PyTorch's scaled_dot_product_attention takes it on every device, while
FlexAttention, which skips the masked blocks, has no backward pass on the CPU (torch 2.13).
At (B, T) = (16, 2048) it is 64 MiB of booleans a step, made once and shared by the layers.
"""

from __future__ import annotations

import torch


def document_starts(documents: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: True where a position begins a document (and at each row's start)."""
    starts = torch.ones_like(documents, dtype=torch.bool)
    starts[:, 1:] = documents[:, 1:] != documents[:, :-1]
    return starts


def document_positions(documents: torch.Tensor) -> torch.Tensor:
    """(B, T) int64: each position's distance from the start of its document."""
    index = torch.arange(documents.shape[1], device=documents.device).expand_as(documents)
    start = torch.where(document_starts(documents), index, 0).cummax(dim=1).values
    return index - start


def document_attention_mask(documents: torch.Tensor) -> torch.Tensor:
    """(B, 1, T, T) bool for scaled_dot_product_attention: query i sees key j when j <= i and
    both are in one document."""
    T = documents.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=documents.device).tril()
    same = documents[:, None, :, None] == documents[:, None, None, :]
    return same & causal
