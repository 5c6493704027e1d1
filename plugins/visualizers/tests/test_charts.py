"""Each of the seven charts draws from a real run's history and from edge cases."""

import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from conftest import run_in_process  # noqa: E402
from slimcore import ChartData, installed_charts  # noqa: E402
from slimcore_visualizers.charts import moving_average  # noqa: E402

SEVEN = ["loss", "accuracy", "throughput", "learning_rate", "loss_vs_accuracy",
         "recent_performance", "text_samples"]


def charts():
    return {c.name: c for c in installed_charts(set(SEVEN))}


def metric(step, loss=3.0, accuracy=0.2, **extra):
    return {"step": step, "loss": loss, "accuracy": accuracy, "learning_rate": 1e-3,
            "tokens_per_second": 1000.0 + step, "grad_norm": 1.0, "eval_loss": None,
            "eval_accuracy": None, **extra}


@pytest.fixture(scope="module")
def real_history(tmp_path_factory):
    from conftest import TINY
    import yaml

    folder = tmp_path_factory.mktemp("history")
    config = {**TINY, "run": {**TINY["run"], "steps": 8}, "output": {"dir": str(folder)},
              "dashboard": {"disable": SEVEN}}
    (folder / "c.yaml").write_text(yaml.safe_dump(config))
    run_in_process(folder / "c.yaml")
    viz = folder / "training_viz"
    return ChartData(metrics=json.loads((viz / "metrics_history.json").read_text()),
                     samples=json.loads((viz / "text_samples.json").read_text()))


EDGE_CASES = {
    "one step": ChartData(metrics=[metric(1)]),
    "nan loss": ChartData(metrics=[metric(1), metric(2, loss=None), metric(3, loss=2.5)]),
    "constant": ChartData(metrics=[metric(s, loss=2.0, accuracy=0.5) for s in range(1, 60)]),
    "no samples": ChartData(metrics=[metric(s) for s in range(1, 5)], samples=[]),
    "with eval": ChartData(metrics=[metric(s, eval_loss=2.9 if s % 2 else None,
                                           eval_accuracy=0.3 if s % 2 else None)
                                    for s in range(1, 6)]),
}


def test_the_seven_charts_are_installed_in_dashboard_order():
    assert list(charts()) == SEVEN


@pytest.mark.parametrize("name", SEVEN)
@pytest.mark.parametrize("case", ["real run", *EDGE_CASES])
def test_chart_draws(name, case, real_history):
    data = real_history if case == "real run" else EDGE_CASES[case]
    figure, ax = plt.subplots()
    charts()[name].draw(ax, data)
    figure.canvas.draw()  # the drawing itself, not just the setup, must not raise
    if name != "text_samples":
        panels = ax.child_axes or [ax]  # a chart of stacked insets on one step axis
        assert all(panel.get_ylabel() for panel in panels), "axes carry labels with units"
        assert any(panel.get_xlabel() for panel in panels), "axes carry labels with units"
        # Something finite is drawn: a line of NaN (a metric the chart misnamed) is blank.
        drawn = [np.asarray(line.get_ydata(), dtype=float) for panel in panels
                 for line in panel.get_lines()]
        drawn += [np.asarray(c.get_offsets(), dtype=float)[:, 1] for panel in panels
                  for c in panel.collections if len(c.get_offsets())]
        assert any(np.isfinite(values).any() for values in drawn)
    plt.close(figure)


def test_a_chart_that_asks_for_an_unknown_metric_fails_its_test():
    from slimcore import Chart

    class Misnamed(Chart):
        name, title = "misnamed", "Perplexity"

        def draw(self, ax, data):
            ax.plot(*data.series("perplexty"))

    figure, ax = plt.subplots()
    with pytest.raises(KeyError, match="no metric named 'perplexty'"):
        Misnamed().draw(ax, EDGE_CASES["one step"])
    plt.close(figure)
    # A metric a plugin added to the records (not a TrainingMetrics field) is fine.
    steps, values = ChartData(metrics=[metric(1, perplexity=20.0)]).series("perplexity")
    assert values.tolist() == [20.0]


def test_curves_show_raw_series_average_and_eval_points():
    figure, ax = plt.subplots()
    charts()["loss"].draw(ax, EDGE_CASES["with eval"])
    # 5 steps: no 50-step window is full yet, so neither the average nor its legend entry
    assert [line.get_label() for line in ax.get_lines()] == ["loss"]
    assert ax.collections[0].get_offsets().shape == (3, 2)  # eval points at steps 1, 3, 5
    plt.close(figure)
    figure, ax = plt.subplots()
    charts()["loss"].draw(ax, EDGE_CASES["constant"])  # 59 steps
    raw, average = ax.get_lines()
    assert average.get_label() == "50-step average"
    assert np.isfinite(average.get_ydata()).sum() == 10  # steps 50 to 59
    plt.close(figure)


def test_recent_steps_average_full_windows_of_the_whole_run():
    """The recent view's first steps average the 10 steps before them (the whole run's
    windows), not whatever part of a window falls inside the view."""
    data = ChartData(metrics=[metric(s, loss=float(s)) for s in range(1, 31)], recent_window=5)
    figure, ax = plt.subplots()
    charts()["recent_performance"].draw(ax, data)
    top = ax.child_axes[0]
    raw, average = top.get_lines()
    assert list(raw.get_xdata()) == [26, 27, 28, 29, 30]
    assert list(average.get_ydata()) == [21.5, 22.5, 23.5, 24.5, 25.5]  # mean of s-9..s
    plt.close(figure)


def test_text_table_shows_latest_samples_or_says_none_yet(real_history):
    figure, ax = plt.subplots()
    charts()["text_samples"].draw(ax, EDGE_CASES["no samples"])
    assert [t.get_text() for t in ax.texts] == ["no samples yet"]
    plt.close(figure)
    figure, ax = plt.subplots()
    charts()["text_samples"].draw(ax, real_history)
    cells = ax.tables[0].get_celld()
    assert cells[(0, 2)].get_text().get_text() == "generated"
    assert cells[(1, 0)].get_text().get_text() == str(real_history.samples[-1]["step"])
    plt.close(figure)


def test_moving_average_is_trailing_and_skips_nan():
    values = np.array([1.0, 2.0, np.nan, 4.0, 5.0])
    np.testing.assert_allclose(moving_average(values, 2), [1.0, 1.5, 2.0, 4.0, 4.5])
    assert math.isnan(moving_average(np.array([np.nan, np.nan]), 3)[1])


def test_the_throughput_axis_starts_at_zero():
    """Throughput near 1,000 tokens/s with a small dip: the axis still shows zero, so the
    dip looks as small as it is."""
    data = ChartData(metrics=[metric(s, tokens_per_second=1000.0 - (s == 5) * 20)
                              for s in range(1, 10)])
    figure, ax = plt.subplots()
    try:
        charts()["throughput"].draw(ax, data)
        low, high = ax.get_ylim()
        assert low == 0 and high >= 1000
    finally:
        plt.close(figure)


def test_throughput_past_ten_thousand_reads_as_whole_numbers():
    """12,500 tokens/s is labelled 12,500, not 1.25 under a `1e4` at the axis's top."""
    data = ChartData(metrics=[metric(s, tokens_per_second=12500.0 + 300 * (s % 3))
                              for s in range(1, 10)])
    figure, ax = plt.subplots()
    try:
        charts()["throughput"].draw(ax, data)
        figure.canvas.draw()
        labels = [t.get_text() for t in ax.get_yticklabels()]
        assert ax.yaxis.get_offset_text().get_text() == ""
        assert "10,000" in labels, labels
    finally:
        plt.close(figure)


def test_the_samples_table_wraps_at_its_columns_width():
    """In a dashboard-wide row (18 in) the generated text runs across the column: more
    characters a line than a narrow figure's, none past the column."""
    text = "the people of the United States have been blessed with a government " * 4
    data = ChartData(metrics=[metric(1)], samples=[{"step": 1, "prompt": "We", "text": text}])
    widths = {}
    for inches in (18, 9):
        figure = plt.figure(figsize=(inches, 3), dpi=100)
        ax = figure.add_subplot(figure.add_gridspec(1, 3)[0, :])
        try:
            charts()["text_samples"].draw(ax, data)
            cell = ax.tables[0][1, 2].get_text()
            widths[inches] = max(len(line) for line in cell.get_text().splitlines())
            figure.canvas.draw()  # the constrained layout is off: a plain figure
        finally:
            plt.close(figure)
    assert widths[18] > 1.8 * widths[9] and widths[18] >= 150


def test_the_mixture_chart_draws_each_components_share_and_waits_for_them():
    """The `mixture` chart: one line per component, its latest share in the legend; the
    dashboard leaves it out until a step has `data_shares`."""
    from slimcore_visualizers.render_worker import Renderer

    chart = installed_charts({"mixture"})[0]
    mixed = ChartData(metrics=[metric(s, data_shares={"web": 0.6 + s / 100, "code": 0.4 - s / 100})
                               for s in range(1, 6)])
    figure, ax = plt.subplots()
    chart.draw(ax, mixed)
    labels = sorted(text.get_text() for text in ax.get_legend().get_texts())
    assert labels == ["code 35.0%", "web 65.0%"]
    assert [list(line.get_ydata()) for line in ax.get_lines()][0] == \
        pytest.approx([0.39, 0.38, 0.37, 0.36, 0.35])
    plt.close(figure)
    renderer = Renderer([chart, charts()["loss"]], {})
    shown = [c.name for c in renderer.visible(ChartData(metrics=[metric(1)]))]
    assert shown == ["loss"]
    assert [c.name for c in renderer.visible(mixed)] == ["mixture", "loss"]
