"""The charts of the training dashboard, each its own plugin (entry point), so a run or a
user can turn any of them off by name: seven for every run, and one for a run with
downstream tasks.

    loss               loss per step, its moving average, evaluation points
    accuracy           next-token top-1 accuracy, same layout
    throughput         tokens/s and its moving average
    learning_rate      the schedule as applied
    loss_vs_accuracy   one point per step, coloured by step
    recent_performance the last `dashboard.recent_window` steps: loss and accuracy
    text_samples       a table of the latest generated samples
    tasks              downstream task scores (a run with `evals.tasks`)
"""

from __future__ import annotations

import textwrap

import numpy as np
from slimcore import Chart, ChartData, hookimpl


# Step axes tick at 1, 2 or 5 times a power of ten (0, 50, 100), not at 6s or 40s.
STEP_TICKS = [1, 2, 5, 10]


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to `window` finite values (NaN steps are skipped, so one bad
    step does not blank the curve for a whole window)."""
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0))
    counts = np.cumsum(finite)
    lagged_sums = np.concatenate([np.zeros(window), sums[:-window]])[: len(values)]
    lagged_counts = np.concatenate([np.zeros(window), counts[:-window]])[: len(values)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums - lagged_sums) / (counts - lagged_counts)


def full_windows(averaged: np.ndarray, window: int) -> np.ndarray:
    """A trailing average drawn only where its window is full: before, it is the mean of
    every step so far, far above the loss while the first steps' high losses are in it."""
    averaged = averaged.copy()
    averaged[:window - 1] = np.nan
    return averaged


def draw_curve(ax, data: ChartData, key: str, ylabel: str, scale: float = 1.0,
               eval_key: str | None = None, legend: str = "best") -> None:
    steps, values = data.series(key)
    values = values * scale
    ax.plot(steps, values, color="tab:blue", alpha=0.35, linewidth=1, label=key.replace("_", " "))
    window = data.moving_average
    if len(values) >= window:  # before its first full window, neither line nor legend entry
        ax.plot(steps, full_windows(moving_average(values, window), window), color="tab:blue",
                linewidth=2, label=f"{window}-step average")
    if eval_key:
        eval_steps, eval_values = data.series(eval_key)
        keep = np.isfinite(eval_values)
        if keep.any():
            ax.scatter(eval_steps[keep], eval_values[keep] * scale, color="tab:red", zorder=3,
                       s=18, label="evaluation")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(loc=legend, fontsize=8)


def draw_bits_per_byte(ax, data: ChartData) -> None:
    """The loss in bits per byte (comparable across tokenizers) on an axis of its own at the
    right: its moving average dashed, held-out values as open circles."""
    steps, values = data.series("bits_per_byte")
    eval_steps, eval_values = data.series("eval_bits_per_byte")
    if not (np.isfinite(values).any() or np.isfinite(eval_values).any()):
        return  # a history from before bits per byte
    right = ax.twinx()
    window = data.moving_average
    if len(values) >= window:
        right.plot(steps, full_windows(moving_average(values, window), window),
                   color="tab:green", linewidth=1.2, linestyle="--")
    keep = np.isfinite(eval_values)
    right.scatter(eval_steps[keep], eval_values[keep], facecolors="none",
                  edgecolors="tab:green", s=18, zorder=3)
    right.set_ylabel("bits per byte (dashed; circles held out)", color="tab:green")
    right.grid(False)


class LossChart(Chart):
    name, title = "loss", "Training loss"
    order = 10

    def draw(self, ax, data):
        draw_curve(ax, data, "loss", "cross-entropy (nats/token)", eval_key="eval_loss")
        draw_bits_per_byte(ax, data)


class AccuracyChart(Chart):
    name, title = "accuracy", "Next-token accuracy (top-1)"
    order = 20

    def draw(self, ax, data):
        draw_curve(ax, data, "accuracy", "accuracy (%)", scale=100.0, eval_key="eval_accuracy")


class ThroughputChart(Chart):
    name, title = "throughput", "Throughput"
    order = 30

    def draw(self, ax, data):
        # The legend low: from zero, the curve runs near the top and leaves the bottom free.
        draw_curve(ax, data, "tokens_per_second", "tokens/s", legend="lower right")
        ax.set_ylim(bottom=0)  # from zero: a 2% dip must not look like a collapse
        # 12,500, not 1.25 under a "1e4" at the axis's top (matplotlib's offset past 10^4)
        from matplotlib.ticker import StrMethodFormatter

        ax.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


class LearningRateChart(Chart):
    name, title = "learning_rate", "Learning rate"
    order = 40

    def draw(self, ax, data):
        steps, rates = data.series("learning_rate")
        ax.plot(steps, rates, color="tab:green", linewidth=2)
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))


class LossAccuracyScatter(Chart):
    name, title = "loss_vs_accuracy", "Loss against accuracy"
    order = 50

    def draw(self, ax, data):
        steps, losses = data.series("loss")
        _, accuracy = data.series("accuracy")
        points = ax.scatter(losses, accuracy * 100, c=steps, cmap="viridis", s=10)
        ax.figure.colorbar(points, ax=ax, label="step")
        ax.set_xlabel("cross-entropy (nats/token)")
        ax.set_ylabel("accuracy (%)")


class RecentPerformanceChart(Chart):
    name, title = "recent_performance", "Recent steps"
    order = 60

    def draw(self, ax, data):
        # Loss above, accuracy below, on one step axis: on twin scales of one panel their
        # lines crossed where the scales happened to put them, which meant nothing.
        window = min(10, data.moving_average)
        recent = slice(-data.recent_window, None)
        steps, losses = data.series("loss")
        _, accuracy = data.series("accuracy")
        ax.axis("off")
        top = ax.inset_axes((0, 0.54, 1, 0.46))
        bottom = ax.inset_axes((0, 0, 1, 0.46), sharex=top)
        for panel, values, color, label in ((top, losses, "tab:blue", "loss"),
                                            (bottom, accuracy * 100, "tab:orange",
                                             "accuracy (%)")):
            # averaged over the whole run, then cut: the window's first steps average full
            # windows too
            averaged = full_windows(moving_average(values, window), window)
            panel.plot(steps[recent], values[recent], color=color, alpha=0.3, linewidth=1)
            panel.plot(steps[recent], averaged[recent], color=color, linewidth=2)
            panel.set_ylabel(label, color=color)
        from matplotlib.ticker import MaxNLocator

        top.tick_params(labelbottom=False)
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True, steps=STEP_TICKS))
        bottom.set_xlabel(f"step (bold: {window}-step averages)" if len(steps) >= window
                          else "step")
        ax.set_title(f"{self.title} (last {len(steps[recent])})")


class TextSamplesTable(Chart):
    name, title, wide = "text_samples", "Text samples", True
    uses_samples = True
    order = 90
    rows = 4
    font_size = 10
    column_widths = (0.06, 0.2, 0.74)  # step, prompt, generated: shares of the row

    def draw(self, ax, data):
        ax.axis("off")
        latest = data.samples[-self.rows:][::-1]  # newest first
        if not latest:
            ax.text(0.5, 0.5, "no samples yet", ha="center", va="center", color="gray",
                    fontsize=self.font_size)
            return
        wrap = self.characters_across(ax, self.column_widths[2])
        cells = [[str(s["step"]), textwrap.shorten(printable(s["prompt"]), 40),
                  textwrap.fill(textwrap.shorten(printable(s["text"]), 2 * wrap), wrap)]
                 for s in latest]
        table = ax.table(cellText=cells, colLabels=["step", "prompt", "generated"],
                         colWidths=list(self.column_widths), loc="upper center",
                         cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(self.font_size)
        for (row, _), cell in table.get_celld().items():
            cell.set_height(0.12 if row == 0 else 0.2)
            cell.PAD = 0.02  # matplotlib pads 10% of the width: too much for a wide column

    def characters_across(self, ax, share: float) -> int:
        """How many characters of the table's font fit across `share` of the axes: the
        text wraps at the column's width, not at a fixed count."""
        figure = ax.figure
        # The axes' share of the figure's columns (its position is not final before the
        # constrained layout runs at save time, which leaves the margins about 4%).
        spec = ax.get_subplotspec()
        columns = spec.colspan if spec is not None else range(1)
        of = spec.get_gridspec().ncols if spec is not None else 1
        width_px = len(columns) / of * 0.96 * figure.get_figwidth() * figure.dpi * share
        sample = "the people of the United States have been blessed with a government "
        probe = ax.text(0, 0, sample, fontsize=self.font_size)  # measured, then removed
        char_px = probe.get_window_extent(figure.canvas.get_renderer()).width / len(sample)
        probe.remove()
        return max(20, int(width_px * 0.96 / char_px))  # 4%: the cell's padding


class DownstreamTasksChart(Chart):
    """Each downstream task's score (acc_norm where the task has it, else acc, else its
    first metric) at the steps that scored it."""

    name, title = "tasks", "Downstream tasks"
    uses_tasks = True
    order = 80
    preferred = ("acc_norm", "acc")

    def draw(self, ax, data):
        shown = self.shown(data.task_series())
        if not shown:
            ax.text(0.5, 0.5, "no task scores yet", ha="center", va="center", color="gray")
        for label, (steps, values) in shown.items():
            ax.plot(steps, values, marker="o", markersize=3, linewidth=1.5, label=label)
        ax.set_xlabel("step")
        ax.set_ylabel("score")
        if shown:
            ax.legend(loc="best", fontsize=8)
        ax.set_title(self.title)

    def shown(self, series: dict[str, tuple]) -> dict[str, tuple]:
        """One "task/metric" series per task."""
        by_task: dict[str, list[str]] = {}
        for key in series:
            task, _, metric = key.rpartition("/")
            by_task.setdefault(task, []).append(metric)
        chosen = {}
        for task, metrics in by_task.items():
            metric = next((m for m in self.preferred if m in metrics), metrics[0])
            chosen[f"{task}/{metric}"] = series[f"{task}/{metric}"]
        return chosen


class DataMixtureChart(Chart):
    """A data mixture's realised mix: each component's share of the tokens drawn so far
    (corpus.mixture), with its latest value in the legend."""

    name, title = "mixture", "Data mixture"
    uses_mixture = True
    order = 85

    def draw(self, ax, data):
        for component, (steps, shares) in sorted(data.share_series().items()):
            ax.plot(steps, shares, linewidth=1.5, label=f"{component} {shares[-1]:.1%}")
        ax.set_xlabel("step")
        ax.set_ylabel("share of tokens so far")
        ax.set_ylim(0, 1)
        ax.legend(loc="best", fontsize=8)
        ax.set_title(self.title)


def printable(text: str) -> str:
    """Newlines as ⏎ and control bytes (an early model emits them) as ·, so the table stays
    one line per sample and the font has every glyph."""
    text = text.replace("\n", " ⏎ ")
    return "".join(c if c.isprintable() else "·" for c in text)


def _plugin(chart_class):
    class ChartPlugin:
        @hookimpl
        def register_charts(self):
            return [chart_class()]

    ChartPlugin.__name__ = f"{chart_class.__name__}Plugin"
    return ChartPlugin


# One plugin per chart: the entry points name these classes.
loss = _plugin(LossChart)
accuracy = _plugin(AccuracyChart)
throughput = _plugin(ThroughputChart)
learning_rate = _plugin(LearningRateChart)
loss_vs_accuracy = _plugin(LossAccuracyScatter)
recent_performance = _plugin(RecentPerformanceChart)
text_samples = _plugin(TextSamplesTable)
tasks = _plugin(DownstreamTasksChart)
mixture = _plugin(DataMixtureChart)
