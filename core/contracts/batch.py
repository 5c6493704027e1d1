"""The unit a data source hands the trainer: input tokens, their next-token targets and, for
`data.document_mask`, which document of the row each position belongs to."""

from __future__ import annotations

from dataclasses import dataclass

import torch

# Targets with this value are left out of loss and accuracy (padding, masked positions).
# -100 is PyTorch's cross_entropy default, so the reference ops need no translation.
IGNORE_INDEX = -100


@dataclass
class Batch:
    inputs: torch.Tensor  # (B, T) int64 token ids
    targets: torch.Tensor  # (B, T) int64: inputs shifted by one, IGNORE_INDEX where masked
    # (B, T) integers, equal within one document of a row and rising at each new one: under
    # data.document_mask a position attends only within its document and its rotary
    # position counts from the document's start. None: the row is one sequence.
    documents: torch.Tensor | None = None

    def __post_init__(self):
        if self.inputs.shape != self.targets.shape or self.inputs.dim() != 2:
            raise ValueError(f"Batch wants inputs and targets of one (B, T) shape, got "
                             f"{tuple(self.inputs.shape)} and {tuple(self.targets.shape)}")

    @classmethod
    def from_sequences(cls, sequences: torch.Tensor, document_start: int | None = None
                       ) -> "Batch":
        """Split packed (B, T + 1) token rows into inputs and next-token targets. With
        `document_start` (a token id that begins every document, such as BOS), `documents`
        numbers the documents of each row: a new one at every such input token."""
        # Copies, not views: .contiguous() of a single row's slice is the slice itself, and
        # inputs and targets sharing storage would change together (a source that masks
        # targets in place would rewrite inputs).
        inputs, targets = (part.clone(memory_format=torch.contiguous_format)
                           for part in (sequences[:, :-1], sequences[:, 1:]))
        documents = None
        if document_start is not None:
            documents = (inputs == document_start).cumsum(dim=1, dtype=torch.int32)
        return cls(inputs=inputs, targets=targets, documents=documents)

    @property
    def target_count(self) -> int:
        """Positions that count toward loss and accuracy."""
        return int((self.targets != IGNORE_INDEX).sum())

    def to(self, device: torch.device) -> "Batch":
        non_blocking = device.type == "cuda"
        documents = self.documents
        if documents is not None:
            documents = documents.to(device, non_blocking=non_blocking)
        return Batch(self.inputs.to(device, non_blocking=non_blocking),
                     self.targets.to(device, non_blocking=non_blocking), documents)
