"""The run's own log of what it measured: every step's metrics and every text sample, one JSON
record a line (history/metrics.jsonl, history/text_samples.jsonl in the output folder).

The core keeps it, whatever plugins are on, so that a resumed run can hand its observers the
steps and samples of the processes before it (`run.prior_metrics`, `run.prior_samples`): a
dashboard or an exporter continues the run's history without reading another plugin's files.
It is flushed before every checkpoint, so the history up to a checkpoint is on disk when the
checkpoint is.

    history = RunHistory.open(run.paths, resumed_at=run.start_step)
    history.prior_metrics, history.prior_samples      what came before, up to that step
    history.metrics(m); history.samples([...])        appended as they come
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from ..contracts.paths import RunPaths
from ..storage.atomic import write_atomically


class RunHistory:
    def __init__(self, paths: RunPaths, prior_metrics: list[dict], prior_samples: list[dict]):
        self.paths = paths
        self.prior_metrics, self.prior_samples = prior_metrics, prior_samples
        paths.history.mkdir(parents=True, exist_ok=True)
        # What a resume keeps is written again: steps after the checkpoint are trained again.
        self.metrics_file = _rewrite(paths.metrics_log, prior_metrics)
        self.samples_file = _rewrite(paths.samples_log, prior_samples)

    @classmethod
    def open(cls, paths: RunPaths, resumed_at: int) -> "RunHistory":
        """The log of a new run (`resumed_at` 0: nothing before), or of a run resumed at
        step `resumed_at` (what was logged up to that step)."""
        if not resumed_at:
            return cls(paths, [], [])
        return cls(paths, _read(paths.metrics_log, resumed_at),
                   _read(paths.samples_log, resumed_at))

    def metrics(self, record: dict[str, Any]) -> None:
        self.metrics_file.write(_line(record))

    def samples(self, records: list[dict[str, Any]]) -> None:
        self.samples_file.writelines(_line(r) for r in records)

    def flush(self, durable: bool = False) -> None:
        """To the operating system; with `durable`, to the disk (before a checkpoint)."""
        for file in (self.metrics_file, self.samples_file):
            file.flush()
            if durable:
                os.fsync(file.fileno())

    def close(self) -> None:
        self.flush(durable=True)
        self.metrics_file.close()
        self.samples_file.close()


def _line(record: dict[str, Any]) -> str:
    # NaN and Inf as null: the log is strict JSON, like every other output.
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in record.items()}
    return json.dumps(clean, allow_nan=False) + "\n"


def _rewrite(path: Path, records: list[dict]):
    write_atomically(path, "".join(_line(r) for r in records))
    return open(path, "a")


def _read(path: Path, upto_step: int) -> list[dict]:
    """The records up to `upto_step` (none when there is no log). A line cut short by a
    kill is the log's last: it and anything after it are dropped."""
    if not path.is_file():
        return []
    records = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                print(f"slimcore: warning: {path} ends in a line cut short; the history goes "
                      f"on from record {len(records)}", file=sys.stderr)
                break
            if record.get("step", 0) <= upto_step:
                records.append(record)
    return records
