"""What a checkpointer saves and what a resumed run needs back."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TrainingState:
    step: int  # optimizer steps completed
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    tokens_seen: int
    skipped_steps: int = 0  # updates dropped for a NaN or Inf loss
