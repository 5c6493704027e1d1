"""The dashboard's render process: `python -m slimcore_visualizers.render_worker`.

Reads JSON lines on stdin: first the settings, then messages with new `metrics`, new
`samples`, and `render` requests. Before each render it takes everything waiting in the
pipe, so requests that piled up during a slow render become one render of the newest step.
Where a core is free (a render gets one to itself) every request is drawn; where training
keeps every core busy, renders are spaced so that they take at most
`dashboard.max_cpu_share` of one core. The last request is always rendered before the
process exits. Runs at the lowest CPU priority so that it takes only what training leaves,
and ignores the terminal's Ctrl-C (the run asks for its last render). The figure is laid out
once and redrawn. A chart that raises is reported once and left out of later renders.
"""

from __future__ import annotations

import os
import signal

# Ctrl-C in a terminal reaches every process of the foreground group, this one too: the run
# itself stops gracefully and asks for the last render, which must still happen.
signal.signal(signal.SIGINT, signal.SIG_IGN)

# The lowest CPU priority, set before the heavy imports (matplotlib), so the start-up's
# CPU comes out of what training leaves. Measured (bench/RESULTS.md): at nice 10 a CPU run
# that keeps every core busy lost ~9% of its steps/s to the renderer; at nice 19 nothing
# measurable, at the price that on such a machine renders wait for idle CPU and intermediate
# dashboards are sparse. The final render always completes before the run exits.
os.nice(19)

import io  # noqa: E402
import json  # noqa: E402
import select  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from slimcore import (ChartData, UserError, describe_error, installed_charts,  # noqa: E402
                      write_atomically)

from slimcore_visualizers.charts import STEP_TICKS  # noqa: E402
from slimcore_visualizers.files import dashboard_latest, dashboard_png, viz_folder  # noqa: E402

CELL_WIDTH_IN, CELL_HEIGHT_IN, WIDE_HEIGHT_IN = 6.0, 4.0, 3.2
# A render whose CPU time is at least this share of its wall time had a core to itself.
FREE_CORE = 0.8


def load_charts(names: list[str], plugins: list[str]):
    """The named charts, from only the plugins that own them (no torch, no data sources)."""
    by_name = {chart.name: chart for chart in installed_charts(set(plugins))}
    return [by_name[name] for name in names if name in by_name]


class Page:
    """The figure of one set of charts, laid out once and drawn again at every render (each
    chart's panel cleared, what a chart added to the figure, a colorbar, removed): a render
    costs the charts' drawing and the PNG, not a new figure."""

    def __init__(self, charts: list, settings: dict):
        self.charts, self.settings = charts, settings
        columns = settings["columns"]
        narrow = [c for c in charts if not c.wide]
        wide = [c for c in charts if c.wide]
        narrow_rows = -(-len(narrow) // columns)
        heights = [CELL_HEIGHT_IN] * narrow_rows + [WIDE_HEIGHT_IN] * len(wide)
        width = CELL_WIDTH_IN * (min(columns, len(narrow)) if narrow else columns)
        self.figure = plt.figure(figsize=(width, sum(heights)), layout="constrained")
        # room between rows, so a row's title clears the axis label of the row above
        self.figure.get_layout_engine().set(h_pad=0.15)
        grid = self.figure.add_gridspec(len(heights),
                                        max(1, min(columns, len(narrow)) or columns),
                                        height_ratios=heights)
        places = [grid[i // columns, i % columns] for i in range(len(narrow))]
        places += [grid[narrow_rows + i, :] for i in range(len(wide))]
        self.panels = [(chart, self.figure.add_subplot(place))
                       for chart, place in zip(narrow + wide, places)]

    def draw(self, data: ChartData, step: int, failed: set) -> bytes:
        """The PNG of every chart on `data`; a chart that raises is added to `failed`."""
        for extra in set(self.figure.axes) - {ax for _, ax in self.panels}:
            extra.remove()  # what the last render's charts added (colorbars, twins)
        latest = data.metrics[-1] if data.metrics else {}
        loss = latest.get("loss")
        self.figure.suptitle(f"{self.settings['run_name']} - step {step}"
                             + (f" - loss {loss:.4f}" if loss is not None else ""),
                             fontsize=14)
        for chart, ax in self.panels:
            draw_panel(chart, ax, data, failed)
        drawn = [chart.name for chart, _ in self.panels if chart.name not in failed]
        png = io.BytesIO()
        # The chart list rides in the PNG's text metadata, so tools (and tests) can tell
        # what a dashboard shows without reading pixels.
        self.figure.savefig(png, dpi=self.settings["dpi"], format="png", metadata={
            "Description": "slimcore charts: " + ", ".join(drawn),
            # the steps of history drawn, e.g. "1-300"
            "Steps": f"{data.metrics[0]['step']}-{data.metrics[-1]['step']}"
            if data.metrics else "none"})
        return png.getvalue()


def draw_panel(chart, ax, data: ChartData, failed: set) -> None:
    for child in list(ax.child_axes):
        child.remove()
    ax.clear()
    ax.set_axis_on()
    if chart.name in failed:
        ax.set_axis_off()
        return
    try:
        chart.draw(ax, data)
        if ax.get_xlabel() == "step":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=STEP_TICKS))
        if not ax.get_title():
            ax.set_title(chart.title)
    except Exception as e:  # noqa: BLE001 - one bad chart must not end the dashboard
        failed.add(chart.name)
        ax.clear()
        ax.set_axis_off()
        print(f"slimcore: warning: chart '{chart.name}' failed and is switched off: "
              f"{describe_error(e)}", file=sys.stderr)


class Renderer:
    """The dashboards of a run: a Page for the charts there is something to draw for
    (a chart of samples waits for the first one, a chart of task scores for the first
    scores: no blank panel before them), made again only when that set changes (a chart
    failed, the first sample came)."""

    def __init__(self, charts: list, settings: dict):
        self.charts, self.settings = charts, settings
        self.failed: set[str] = set()
        self.page: Page | None = None
        self.write_failed = False

    def visible(self, data: ChartData) -> list:
        """The charts with something to draw: not failed, and their data there."""
        scored = any(m.get("task_scores") for m in data.metrics)
        mixed = any(m.get("data_shares") for m in data.metrics)
        return [c for c in self.charts if c.name not in self.failed
                and (data.samples or not c.uses_samples) and (scored or not c.uses_tasks)
                and (mixed or not c.uses_mixture)]

    def render(self, data: ChartData, step: int) -> list[str]:
        """Write the dashboard of `step` and the latest one; returns the charts drawn."""
        charts = self.visible(data)
        if not charts:
            return []
        if self.page is None or self.page.charts != charts:
            if self.page is not None:
                plt.close(self.page.figure)
            self.page = Page(charts, self.settings)
        png = self.page.draw(data, step, self.failed)
        self.write(step, png)
        return [c.name for c in charts if c.name not in self.failed]

    def write(self, step: int, png: bytes) -> None:
        """A dashboard that cannot be written (a full disk, a file in the way) is said once;
        the next ones are tried as they come, so the dashboard goes on once there is room."""
        output_dir = self.settings["output_dir"]
        try:
            try:
                viz_folder(output_dir).mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise UserError(f"cannot write {viz_folder(output_dir)} ({e.strerror or e})")
            write_atomically(dashboard_png(output_dir, step), png)
            write_atomically(dashboard_latest(output_dir), png)
        except UserError as e:
            if not self.write_failed:
                print(f"slimcore: warning: dashboard: {e}; tried again at each dashboard",
                      file=sys.stderr)
            self.write_failed = True


class Inbox:
    """JSON lines from stdin. `take()` blocks until something arrives, then returns every
    complete message available at that moment: what piled up during a render comes back
    as one batch, which is what coalesces render requests."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buffer = b""
        self.ended = False

    def take(self, wait_s: float | None = None) -> list[dict]:
        """With `wait_s`, return early (maybe empty) if nothing arrives in that time."""
        if wait_s is not None and not select.select([self.fd], [], [], max(0.0, wait_s))[0]:
            return []
        ready = True
        while ready and not self.ended:
            chunk = os.read(self.fd, 1 << 20)
            self.ended = not chunk
            self.buffer += chunk
            ready = bool(select.select([self.fd], [], [], 0)[0])
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]


def main() -> None:
    inbox = Inbox(sys.stdin.fileno())
    messages = inbox.take()
    if not messages:
        return
    settings, messages = messages[0], messages[1:]
    sns.set_theme(style="whitegrid", context="notebook")
    renderer = Renderer(load_charts(settings["charts"], settings["plugins"]), settings)
    data = ChartData(metrics=[], samples=[], moving_average=settings["moving_average"],
                     recent_window=settings["recent_window"])
    render_step, next_render_at = None, 0.0
    while True:
        for message in messages:
            data.metrics.extend(message.get("metrics", []))
            data.samples.extend(message.get("samples", []))
            render_step = message.get("render", render_step)
        if render_step is not None and (time.monotonic() >= next_render_at or inbox.ended):
            next_render_at = paced(lambda: renderer.render(data, render_step),
                                   settings["max_cpu_share"])
            render_step = None
        if inbox.ended:
            return
        messages = inbox.take(None if render_step is None else next_render_at - time.monotonic())


def paced(render, max_cpu_share: float) -> float:
    """Render, and say when (time.monotonic()) the next render may start."""
    cpu, wall = time.process_time(), time.monotonic()
    render()
    cpu, now = time.process_time() - cpu, time.monotonic()
    return now + quiet_after(cpu, now - wall, max_cpu_share)


def quiet_after(cpu_s: float, wall_s: float, max_cpu_share: float) -> float:
    """Seconds of only collecting data after a render that took `cpu_s` of CPU in `wall_s`.
    A render that got a core to itself (at the lowest priority it gets one only where
    training leaves one free) may be followed at once, so every interval gets its PNG; one
    that waited for the CPU is followed by (1 / share - 1) times its CPU time, so the
    dashboard takes at most max_cpu_share of a core where training uses them all."""
    if cpu_s >= FREE_CORE * wall_s:
        return 0.0
    return cpu_s * (1 / max_cpu_share - 1)


if __name__ == "__main__":
    main()
