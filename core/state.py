"""What a checkpointer saves and what a resumed run needs back."""

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
