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

import contextlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from ..contracts.paths import RunPaths
from ..storage.atomic import cannot_write, write_atomically


class RunHistory:
    def __init__(self, paths: RunPaths, prior_metrics: list[dict], prior_samples: list[dict]):
        self.paths = paths
        self.prior_metrics, self.prior_samples = prior_metrics, prior_samples
        # What a resume keeps is written again: steps after the checkpoint are trained again.
        self.metrics_file = AppendLog(paths.metrics_log, prior_metrics)
        self.samples_file = AppendLog(paths.samples_log, prior_samples)

    @classmethod
    def open(cls, paths: RunPaths, resumed_at: int) -> "RunHistory":
        """The log of a new run (`resumed_at` 0: nothing before), or of a run resumed at
        step `resumed_at` (what was logged up to that step)."""
        if not resumed_at:
            return cls(paths, [], [])
        return cls(paths, _read(paths.metrics_log, resumed_at),
                   _read(paths.samples_log, resumed_at))

    def metrics(self, record: dict[str, Any]) -> None:
        self.metrics_file.append([record])

    def samples(self, records: list[dict[str, Any]]) -> None:
        self.samples_file.append(records)

    def flush(self, durable: bool = False) -> None:
        """Every record is with the operating system once appended; with `durable`, to the
        disk (before a checkpoint)."""
        if durable:
            self.metrics_file.sync()
            self.samples_file.sync()

    def close(self) -> None:
        self.flush(durable=True)
        self.metrics_file.close()
        self.samples_file.close()


class AppendLog:
    """A JSON-lines file that holds whole lines only: records are appended with one write
    each (no buffer of ours to lose), and a write that fails part-way (a full disk) is cut
    off again, so the error (a UserError naming the file) leaves every earlier line as it was
    and no partial one."""

    def __init__(self, path: Path, records: list[dict]):
        """The log holding `records` (its folder made; a file in the way is one line)."""
        self.path = path
        write_atomically(path, "".join(_line(r) for r in records))
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as e:
            raise cannot_write(path, e) from None
        self.size = os.fstat(self.fd).st_size

    def append(self, records: list[dict]) -> None:
        data = "".join(_line(r) for r in records).encode()
        left = memoryview(data)
        try:
            while left:
                left = left[os.write(self.fd, left):]
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.size)
            raise cannot_write(self.path, e) from None
        self.size += len(data)

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise cannot_write(self.path, e) from None

    def close(self) -> None:
        os.close(self.fd)


def _line(record: dict[str, Any]) -> str:
    # NaN and Inf as null: the log is strict JSON, like every other output.
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in record.items()}
    return json.dumps(clean, allow_nan=False) + "\n"


def _read(path: Path, upto_step: int) -> list[dict]:
    """The records up to `upto_step` (none when there is no log). A line cut short by a
    kill is the log's last: it and anything after it are dropped."""
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
                step = record.get("step", 0)
                if not isinstance(step, int):
                    raise ValueError(step)
            except (ValueError, AttributeError, RecursionError):
                print(f"slimcore: warning: {path} holds a line cut short or damaged after "
                      f"record {len(records)}; the history goes on from there",
                      file=sys.stderr)
                break
            if step <= upto_step:
                records.append(record)
    return records
