"""Where the core's own files of a run go: the one place that names them.

    paths = RunPaths(output_dir)      (a Run has one: `run.paths`)
    paths.metrics_log                 history/metrics.jsonl, every step's metrics
    paths.record                      run.json, the run's id

A plugin names its own files, inside `run.output_dir`; the core never does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


# The core's own files of a run, each under the run's folder.
LAYOUT = {
    "lock": ".slimcore.lock",          # held while a run uses the folder; names the holder
    "record": "run.json",              # the run's id and name
    "config": "config.yaml",           # the resolved config, as in force
    "tokenizer": "tokenizer.model",    # the run's SentencePiece model (checkpoints carry it)
    "plugins": "plugins.json",         # every plugin with its version and status
    "history": "history",              # the core's log: one JSON record a line, what
    "metrics_log": "history/metrics.jsonl",       # observers are handed on resume: every
    "samples_log": "history/text_samples.jsonl",  # step's metrics, every text sample
}


@dataclass(frozen=True)
class RunPaths:
    root: Path
    lock: Path = field(init=False)
    record: Path = field(init=False)
    config: Path = field(init=False)
    tokenizer: Path = field(init=False)
    plugins: Path = field(init=False)
    history: Path = field(init=False)
    metrics_log: Path = field(init=False)
    samples_log: Path = field(init=False)

    def __post_init__(self):
        root = Path(self.root)
        object.__setattr__(self, "root", root)
        for name, relative in LAYOUT.items():
            object.__setattr__(self, name, root / relative)

    def __getattr__(self, name: str):
        if name.startswith("_") or "root" not in vars(self):  # copying, pickling
            raise AttributeError(name)
        from ..deprecated import old_run_path

        return old_run_path(self.root, name)
