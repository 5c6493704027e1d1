"""A third-party chart: the gradient norm per step (before clipping), log scale.

The whole contract: a `slimcore.Chart` subclass with a unique `name`, a `title` and
`draw(ax, data)`, returned from the `register_charts` hook. `draw` gets a matplotlib Axes
and a `slimcore.ChartData` (every step's metrics as dicts, the text samples, the moving
average window) and runs in the dashboard's render process, never on the training thread.
"""

import numpy as np
from slimcore import Chart, hookimpl


class GradNormChart(Chart):
    name = "grad_norm"
    title = "Gradient norm (before clipping)"

    def draw(self, ax, data):
        steps, norms = data.series("grad_norm")
        ax.plot(steps, norms, color="tab:purple", linewidth=1)
        if np.isfinite(norms).any() and np.nanmin(norms) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("L2 norm of all gradients")


class GradNormPlugin:
    @hookimpl
    def register_charts(self):
        return [GradNormChart()]
