"""Bits per byte: a loss that compares across tokenizers. Each target token stands for some
UTF-8 bytes of the text (BOS, EOS and other control pieces for none); the bits per byte of a
batch are its summed loss in nats over ln 2 times the bytes its counted targets stand for.
The boundaries' predictions (EOS) are charged to the text's bytes, as the Pile's and
GPT-NeoX's bits per byte are.

    counter = TokenBytes(tokenizer, device)
    nats / (math.log(2) * counter.count(batch))       a batch's bits per byte

A piece that begins a word holds its space (`▁the` is " the", 4 bytes), except right after
BOS, where the space is the one SentencePiece adds to a text's start (its dummy prefix):
the counts of a document's targets add up to its UTF-8 bytes exactly.
"""

from __future__ import annotations

import math

import torch

from ..contracts.batch import IGNORE_INDEX, Batch

class TokenBytes:
    def __init__(self, tokenizer, device: torch.device):
        lengths, spaced = tokenizer.piece_bytes()
        self.lengths = torch.tensor(lengths, dtype=torch.long, device=device)
        self.spaced = torch.tensor(spaced, dtype=torch.long, device=device)
        self.bos_id = tokenizer.bos_id

    def count(self, batch: Batch) -> torch.Tensor:
        """The UTF-8 bytes the batch's counted targets stand for (a 0-d tensor)."""
        targets = batch.targets.clamp(min=0)
        per_target = self.lengths[targets] - self.spaced[targets] * (batch.inputs == self.bos_id)
        return (per_target * (batch.targets != IGNORE_INDEX)).sum()


def bits_per_byte(nats: float, byte_count: float) -> float | None:
    """None for targets that stand for no text (only boundaries)."""
    return nats / (math.log(2) * byte_count) if byte_count > 0 else None
