"""Plugin `json_export`: the run's metrics and text samples as strict JSON files.

    <output_dir>/training_viz/metrics_history.json   every step's TrainingMetrics
    <output_dir>/training_viz/text_samples.json      every generated sample (step, prompt, text)

Written atomically (a temporary file renamed into place) every `json_export.every` steps and
when the
run ends, so a reader never sees half a file; before every checkpoint (`on_checkpoint`) the
files are written and fsynced, so a resume from any checkpoint finds every step up to it. NaN and Inf are written as null. The training
thread only appends to a list; a writer thread serializes each record once (earlier records
are kept as text) and writes the files, so the training side's cost per interval does not
grow with the run's length.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

from slimcore import Range, hookimpl, write_atomically

from .files import metrics_history, text_samples, viz_folder


@dataclass
class JsonExportConfig:
    every: Annotated[int, Range(min=1)] = 50  # steps between writes of the two files

    moved_keys: ClassVar[dict] = {"intervals.viz": "every"}  # the core's key until 0.2
    tiny: ClassVar[dict] = {"every": 3}


class JsonSeries:
    """A growing JSON array whose records are serialized once each."""

    def __init__(self, path: Path):
        self.path = path
        self.records: list[dict] = []
        self.serialized: list[str] = []

    def write(self, durable: bool = False) -> None:
        """Write the file; with `durable`, fsynced, rename included, before returning."""
        # allow_nan=False: a NaN that slipped past to_dict() fails loudly, never invalid JSON.
        count = len(self.records)  # records appended meanwhile wait for the next write
        self.serialized.extend(json.dumps(r, allow_nan=False)
                               for r in self.records[len(self.serialized):count])
        write_atomically(self.path, "[\n" + ",\n".join(self.serialized) + "\n]\n", durable)


class JsonExporter:
    def __init__(self):
        self.metrics: JsonSeries | None = None
        self.samples: JsonSeries | None = None
        self.wanted = threading.Event()
        self.writing = threading.Lock()  # the writer thread and on_checkpoint take turns
        self.stopping = False
        self.writer: threading.Thread | None = None

    @hookimpl
    def declare_config(self):
        return {"json_export": JsonExportConfig}

    @hookimpl
    def on_run_start(self, run):
        self.every = run.config.section("json_export").every
        self.metrics = JsonSeries(metrics_history(run.output_dir))
        self.samples = JsonSeries(text_samples(run.output_dir))
        # A resumed run continues its history (the core hands over the steps before it).
        self.metrics.records = list(run.prior_metrics)
        self.samples.records = list(run.prior_samples)
        self.writer = threading.Thread(target=self._write_when_asked, daemon=True,
                                       name="json_export")
        self.writer.start()

    @hookimpl
    def on_metrics(self, metrics, run):
        if self.metrics is None:
            return
        self.metrics.records.append(metrics.to_dict())
        if metrics.step % self.every == 0:
            self.wanted.set()

    @hookimpl
    def on_text_samples(self, step, samples, run):
        if self.samples is not None:
            self.samples.records.extend(s.to_dict() for s in samples)

    @hookimpl
    def on_checkpoint(self, step, run):
        if self.metrics is not None:
            self._write(durable=True)  # every record so far is up to `step`

    @hookimpl
    def on_run_end(self, run, status, error):
        if self.writer is None:
            return
        self.stopping = True
        self.wanted.set()
        self.writer.join()
        self._write()  # the final state, whatever the writer had done
        self.writer = None

    def _write_when_asked(self) -> None:
        while not self.stopping:
            self.wanted.wait()
            self.wanted.clear()
            if not self.stopping:
                self._write()

    def _write(self, durable: bool = False) -> None:
        with self.writing:
            self.metrics.write(durable)
            self.samples.write(durable)
