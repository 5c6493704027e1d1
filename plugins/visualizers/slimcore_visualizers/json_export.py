"""Plugin `json_export`: the run's metrics and text samples as strict JSON files.

    <output_dir>/training_viz/metrics_history.json   every step's TrainingMetrics
    <output_dir>/training_viz/text_samples.json      every generated sample (step, prompt, text)

Written atomically (a temporary file renamed into place) every viz interval and when the
run ends, so a reader never sees half a file. NaN and Inf are written as null.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from slimcore import hookimpl


class JsonExporter:
    def __init__(self):
        self.metrics: list[dict] = []
        self.samples: list[dict] = []

    @hookimpl
    def on_metrics(self, metrics, run):
        if not run.is_main_process:
            return
        self.metrics.append(metrics.to_dict())
        if metrics.step % run.config.intervals.viz == 0:
            self.flush(run)

    @hookimpl
    def on_text_samples(self, step, samples, run):
        if run.is_main_process:
            self.samples.extend(s.to_dict() for s in samples)

    @hookimpl
    def on_run_end(self, run, status, error):
        if run.is_main_process and (self.metrics or self.samples):
            self.flush(run)

    def flush(self, run) -> None:
        folder = Path(run.output_dir) / "training_viz"
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomically(folder / "metrics_history.json", self.metrics)
        write_json_atomically(folder / "text_samples.json", self.samples)


def write_json_atomically(path: Path, value) -> None:
    tmp = path.with_name(path.name + ".tmp")
    # allow_nan=False: a NaN that slipped past to_dict() fails here instead of writing
    # invalid JSON.
    tmp.write_text(json.dumps(value, indent=1, allow_nan=False))
    os.replace(tmp, path)

