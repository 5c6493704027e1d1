"""Where the core's own files of a run go: the one place that names them.

    paths = RunPaths(output_dir)      (a Run has one: `run.paths`)
    paths.metrics_log                 history/metrics.jsonl, every step's metrics
    paths.record                      run.json, the run's id

A plugin names its own files, inside `run.output_dir`; the core never does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunPaths:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def lock(self) -> Path:
        """Held while a run uses the folder; names the holder."""
        return self.root / ".slimcore.lock"

    @property
    def record(self) -> Path:
        """The run's id and name."""
        return self.root / "run.json"

    @property
    def config(self) -> Path:
        """The resolved config, as in force."""
        return self.root / "config.yaml"

    @property
    def tokenizer(self) -> Path:
        """The run's SentencePiece model (checkpoints carry it too)."""
        return self.root / "tokenizer.model"

    @property
    def plugins(self) -> Path:
        """Every plugin with its version and status, as the run saw them."""
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

    def __getattr__(self, name: str):
        from ..deprecated import old_run_path

        return old_run_path(self.root, name)
