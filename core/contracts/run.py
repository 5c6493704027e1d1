"""The Run: everything a plugin may look at during one training run, and nothing else
(docs/plugins.md lists every field; `slimcore.testing.make_run` makes one for a config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .paths import RunPaths

if TYPE_CHECKING:
    from ..config.schema import RunConfig
    from ..text.tokenizer import Tokenizer
    from .charts import Chart


@dataclass
class Run:
    config: RunConfig
    output_dir: Path
    device: torch.device
    rank: int = 0
    world_size: int = 1
    tokenizer: Tokenizer | None = None
    model: torch.nn.Module | None = None
    # The run's id (run.json, every checkpoint): a resumed run keeps the id it started with.
    run_id: str | None = None
    start_step: int = 0  # steps already done when this process began (a resumed run: > 0)
    resumed_from: str | None = None  # the checkpoint this process resumed from
    status: str = "running"  # then completed, stopped or failed
    # A resumed run's earlier steps and text samples (TrainingMetrics.to_dict() and
    # TextSample.to_dict() records, up to `start_step`), from the core's own log, whatever
    # plugins were on then; empty for a new run, and on ranks other than 0.
    prior_metrics: list[dict] = field(default_factory=list)
    prior_samples: list[dict] = field(default_factory=list)
    # Every chart the loaded plugins register, in dashboard order (each knows its `plugin`).
    charts: list[Chart] = field(default_factory=list)
    # A torch.distributed process group of every rank for a `sharded` checkpointer's own
    # collectives, apart from training's so they may run on the checkpoint thread; None when
    # the run is one process or its checkpointer is not sharded.
    checkpoint_group: Any = None

    @property
    def is_main_process(self) -> bool:
        """Rank 0 writes charts, JSON and the progress bar."""
        return self.rank == 0

    @property
    def name(self) -> str:
        return self.config.run.name or "run"

    @property
    def paths(self) -> RunPaths:
        """Where the core's own files of this run are (contracts/paths.py)."""
        return RunPaths(self.output_dir)
