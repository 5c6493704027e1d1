"""What the training loop changes and shares: the state a checkpoint records
(TrainingState), and the core's side of one run that the loop and its helpers are handed
(Training; plugins see only its `run`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ..contracts.checkpointer import Checkpointer
    from ..contracts.run import Run
    from ..contracts.source import DataSource
    from ..evals.suite import TaskSuite
    from ..host.manager import SlimcorePluginManager
    from ..text.token_bytes import TokenBytes
    from .distributed import Distributed
    from .history import RunHistory
    from .writer import CheckpointWriter


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

    @property
    def module(self) -> torch.nn.Module:
        """What forward and backward go through."""
        return self.model if self.wrapped is None else self.wrapped


@dataclass
class Training:
    run: Run  # what plugins see
    state: TrainingState
    plugins: SlimcorePluginManager
    ranks: Distributed  # the job's processes (one when alone)
    writer: CheckpointWriter  # saves through `checkpointer` (None: checkpoints off)
    checkpointer: Checkpointer | None
    source: DataSource | None = None  # the data source's stream, once opened
    source_name: str = ""
    history: RunHistory | None = None  # the core's log (rank 0)
    token_bytes: TokenBytes | None = None  # what each target stands for, for bits per byte
    tasks: TaskSuite | None = None  # the downstream tasks of `evals` (None: none)
    # held-out batches of each component of a mixing source (None: none, or no evaluation)
    heldout_components: dict[str, list] | None = None
    stop_signal: int | None = None  # the signal that stopped the run, if one did

    def notify(self, hook: str, **kwargs) -> None:
        """An observer hook, on rank 0, with the run."""
        self.plugins.notify(hook, run=self.run, **kwargs)
