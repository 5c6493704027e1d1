"""The unit a data source hands the trainer: input tokens and their next-token targets."""

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

    def __post_init__(self):
        if self.inputs.shape != self.targets.shape or self.inputs.dim() != 2:
            raise ValueError(f"Batch wants inputs and targets of one (B, T) shape, got "
                             f"{tuple(self.inputs.shape)} and {tuple(self.targets.shape)}")

    @classmethod
    def from_sequences(cls, sequences: torch.Tensor) -> "Batch":
        """Split packed (B, T + 1) token rows into inputs and next-token targets."""
        return cls(inputs=sequences[:, :-1].contiguous(), targets=sequences[:, 1:].contiguous())

    @property
    def target_count(self) -> int:
        """Positions that count toward loss and accuracy."""
        return int((self.targets != IGNORE_INDEX).sum())

    def to(self, device: torch.device) -> "Batch":
        non_blocking = device.type == "cuda"
        return Batch(self.inputs.to(device, non_blocking=non_blocking),
                     self.targets.to(device, non_blocking=non_blocking))
