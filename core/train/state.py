"""The training loop's state: what a step changes and a checkpoint records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class TrainingState:
    step: int  # optimizer steps completed
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    tokens_seen: int
    skipped_steps: int = 0  # updates dropped for a NaN or Inf loss
    # The data source's state_dict() after the batches of `step` (None: not resumable).
    data_state: dict[str, Any] | None = None
    # The module forward and backward go through: `model` itself, or its DDP wrapper.
    wrapped: torch.nn.Module | None = None
