"""Plugin `dashboard`: the enabled charts in one PNG every viz interval.

    <output_dir>/training_viz/training_step_NNNNNN.png   every dashboard.every steps
    <output_dir>/training_viz/training_latest.png        (files.py names them)

Rendering never runs on the training thread: a render process (render_worker.py, at the
lowest CPU priority) keeps its own copy of the history, fed once per viz interval with the
steps since the last one, so the training side's cost per interval is a few small writes to
a pipe, whatever the run's length. Requests that arrive while a render is running are
coalesced into one render of the newest step. The final render completes before the run
ends.
"""

from __future__ import annotations

import difflib
import json
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

from slimcore import Range, hookimpl


FINAL_RENDER_TIMEOUT_S = 300


@dataclass
class DashboardConfig:
    every: Annotated[int, Range(min=1)] = 50  # steps between dashboards (--viz-interval)
    disable: list[str] = field(default_factory=list)  # chart names to leave out of this run
    moving_average: Annotated[int, Range(min=1)] = 50  # steps in the smoothed curves
    recent_window: Annotated[int, Range(min=1)] = 200  # steps in the recent-performance view
    columns: Annotated[int, Range(min=1, max=12)] = 3
    dpi: Annotated[int, Range(min=10, max=600)] = 100
    # Where training keeps every core busy, renders (about 1 CPU-second each) are spaced so
    # the dashboard uses at most this share of one core, requests in between coalesced into
    # the next one; where a core is free, every interval is drawn.
    max_cpu_share: Annotated[float, Range(above=0, max=1)] = 0.05

    moved_keys: ClassVar[dict] = {"intervals.viz": "every"}  # the core's key until 0.2
    tiny: ClassVar[dict] = {"every": 3}


class Dashboard:
    def __init__(self):
        self.worker: subprocess.Popen | None = None
        self.pending: list[dict] = []  # metrics since the last send
        # Messages go to the pipe from a thread of their own: a pipe holds 64 KiB, and a
        # worker busy starting up or rendering would otherwise block the training thread.
        self.outbox: queue.Queue = queue.Queue()
        self.sender: threading.Thread | None = None

    @hookimpl
    def declare_config(self):
        return {"dashboard": DashboardConfig}

    @hookimpl
    def on_run_start(self, run):
        settings: DashboardConfig = run.config.section("dashboard")
        charts = [c.name for c in run.charts]
        # A name no loaded plugin registers may be a chart of a plugin turned off or not
        # installed here (as a blocked plugin's own section is tolerated): said, not fatal.
        for name in sorted(set(settings.disable) - set(charts)):
            close = difflib.get_close_matches(name, charts, n=1)
            print(f"slimcore: warning: dashboard.disable: no loaded plugin registers a chart "
                  f"named '{name}'" + (f" (did you mean '{close[0]}'?)" if close else "")
                  + f"; ignored (charts: {', '.join(charts)})", file=sys.stderr)
        samples = run.config.samples
        no_samples = not samples.prompts or samples.max_new_tokens == 0
        enabled = [c for c in run.charts if c.name not in settings.disable
                   and not (c.uses_samples and no_samples)  # no empty panel
                   and not (c.uses_tasks and not run.config.evals.tasks)]
        if not enabled:
            return
        # The render process loads only the plugins that own the enabled charts.
        chart_plugins = sorted({chart.plugin for chart in enabled})
        self.every = settings.every
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "slimcore_visualizers.render_worker"],
            stdin=subprocess.PIPE, text=True)
        self.sender = threading.Thread(target=self._send_from_outbox, args=(self.worker,),
                                       daemon=True, name="dashboard_sender")
        self.sender.start()
        self.send({"output_dir": str(run.output_dir), "charts": [c.name for c in enabled],
                   "plugins": chart_plugins,
                   "moving_average": settings.moving_average,
                   "recent_window": settings.recent_window, "columns": settings.columns,
                   "dpi": settings.dpi, "run_name": run.name,
                   "max_cpu_share": settings.max_cpu_share})
        if run.prior_metrics:  # a resumed run's charts show its whole history
            self.send({"metrics": run.prior_metrics, "samples": run.prior_samples})

    @hookimpl
    def on_metrics(self, metrics, run):
        if self.worker is None:
            return
        self.pending.append(metrics.to_dict())
        if metrics.step % self.every == 0:
            self.send({"metrics": self.pending, "render": metrics.step})
            self.pending = []

    @hookimpl
    def on_text_samples(self, step, samples, run):
        if self.worker is not None:
            self.send({"samples": [s.to_dict() for s in samples]})

    @hookimpl
    def on_run_end(self, run, status, error):
        if self.worker is None:
            return
        if self.pending:
            self.send({"metrics": self.pending, "render": self.pending[-1]["step"]})
        self.outbox.put(None)  # the sender writes what is queued, then closes the pipe
        self.sender.join()
        try:
            self.worker.wait(timeout=FINAL_RENDER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.worker.kill()
            print("slimcore: warning: the dashboard's final render timed out", file=sys.stderr)
        self.worker = None

    def send(self, message: dict) -> None:
        self.outbox.put(json.dumps(message) + "\n")

    def _send_from_outbox(self, worker: subprocess.Popen) -> None:
        broken = False
        while (line := self.outbox.get()) is not None:
            if broken:
                continue
            try:
                worker.stdin.write(line)
                worker.stdin.flush()
            except OSError:
                broken = True
                print("slimcore: warning: the dashboard render process died; no more charts "
                      "this run", file=sys.stderr)
        try:
            worker.stdin.close()
        except OSError:
            pass
