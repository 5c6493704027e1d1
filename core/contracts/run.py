"""The Run: everything a plugin may look at during one training run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..launch.distributed import Distributed
from ..contracts.paths import RunPaths

if TYPE_CHECKING:
    from ..config.schema import RunConfig
    from ..launch.history import RunHistory
    from ..host.manager import SlimcorePluginManager
    from ..text.tokenizer import Tokenizer


@dataclass
class Run:
    config: RunConfig
    output_dir: Path
    device: torch.device
    plugins: SlimcorePluginManager
    rank: int = 0
    world_size: int = 1
    tokenizer: Tokenizer | None = None
    model: torch.nn.Module | None = None
    start_step: int = 0  # steps already done when this process began (a resumed run: > 0)
    resumed_from: str | None = None  # the checkpoint this process resumed from
    # The run's id (run.json, every checkpoint): a resumed run keeps the id it started with.
    run_id: str | None = None
    # The core's log of every step and sample (rank 0; None on the others): see history.py.
    history: RunHistory | None = None
    stop_signal: int | None = None  # the signal that stopped the run, if one did
    status: str = "running"  # then completed, stopped or failed
    distributed: Distributed = field(default_factory=Distributed)  # the job's ranks (torchrun)

    @property
    def is_main_process(self) -> bool:
        """Rank 0 writes charts, JSON and the progress bar."""
        return self.rank == 0

    @property
    def name(self) -> str:
        return self.config.run.name or "run"

    @property
    def prior_metrics(self) -> list[dict]:
        """A resumed run's earlier steps, up to `start_step` (TrainingMetrics.to_dict()
        records), whatever plugins were on; empty for a new run, and on ranks other than 0."""
        return self.history.prior_metrics if self.history else []

    @property
    def prior_samples(self) -> list[dict]:
        """A resumed run's earlier text samples (TextSample.to_dict() records)."""
        return self.history.prior_samples if self.history else []

    @property
    def paths(self) -> RunPaths:
        """Where this run's outputs go (core/outputs.py names every file)."""
        return RunPaths(self.output_dir)


def resolve_device(spec: str) -> torch.device:
    from ..contracts.errors import ConfigError

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError("run.device", f"'{spec}' is not a device (auto, cpu, cuda, cuda:N)",
                          "--device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device", f"'{spec}' asked for, but this machine has no CUDA "
                          "GPU visible to PyTorch; use --device cpu")
    return device
