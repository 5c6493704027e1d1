"""Where a run's outputs go: the one place that names the files of an output folder.

    paths = RunPaths(output_dir)      (a Run has one: `run.paths`)
    paths.metrics_history             training_viz/metrics_history.json
    paths.dashboard(step)             training_viz/training_step_000050.png
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # -- the run's own record (the core) -------------------------------------------------------
    @property
    def lock(self) -> Path:
        return self.root / ".slimcore.lock"

    @property
    def record(self) -> Path:
        """The run's id and name."""
        return self.root / "run.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def tokenizer(self) -> Path:
        """The run's SentencePiece model (checkpoints carry it too)."""
        return self.root / "tokenizer.model"

    @property
    def plugins(self) -> Path:
        return self.root / "plugins.json"

    @property
    def history(self) -> Path:
        """The core's log of every step's metrics and every text sample, one JSON record a
        line; what observers are handed on resume."""
        return self.root / "history"

    @property
    def metrics_log(self) -> Path:
        return self.history / "metrics.jsonl"

    @property
    def samples_log(self) -> Path:
        return self.history / "text_samples.jsonl"

    # -- what the shipped plugins write ---------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def viz(self) -> Path:
        return self.root / "training_viz"

    @property
    def metrics_history(self) -> Path:
        return self.viz / "metrics_history.json"

    @property
    def text_samples(self) -> Path:
        return self.viz / "text_samples.json"

    @property
    def dashboard_latest(self) -> Path:
        return self.viz / "training_latest.png"

    def dashboard(self, step: int) -> Path:
        return self.viz / f"training_step_{step:06d}.png"
