"""The example chart draws from plain metrics, including a NaN step."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from slimcore import ChartData  # noqa: E402
from slimcore_viz_example import GradNormChart, GradNormPlugin  # noqa: E402


def test_registers_one_chart_named_grad_norm():
    assert [c.name for c in GradNormPlugin().register_charts()] == ["grad_norm"]


def test_draws_the_series_on_a_log_scale():
    data = ChartData(metrics=[{"step": s, "grad_norm": g}
                              for s, g in [(1, 4.0), (2, 2.0), (3, None), (4, 1.0)]])
    figure, ax = plt.subplots()
    GradNormChart().draw(ax, data)
    line = ax.get_lines()[0]
    assert list(line.get_xdata()) == [1, 2, 3, 4]
    assert math.isnan(line.get_ydata()[2])
    assert ax.get_yscale() == "log"
    plt.close(figure)
