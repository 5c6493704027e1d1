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
    # During a save: {"world_size": N, "ranks": [each rank's state]}.
    data_state: dict[str, Any] | None = None
    # The module forward and backward go through: `model` itself, or its DDP wrapper.
    wrapped: torch.nn.Module | None = None
    # Whole (unsharded) state dicts gathered from every rank for a save of a sharded model.
    gathered_model_state: dict[str, torch.Tensor] | None = None
    gathered_optimizer_state: dict[str, Any] | None = None

    def model_state(self) -> dict[str, torch.Tensor]:
        """The whole model's state dict: what a checkpointer saves."""
        if self.gathered_model_state is not None:
            return self.gathered_model_state
        return self.model.state_dict()

    def optimizer_state(self) -> dict[str, Any]:
        if self.gathered_optimizer_state is not None:
            return self.gathered_optimizer_state
        return self.optimizer.state_dict()
