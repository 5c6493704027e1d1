"""The chart contract: what a plugin returns from `register_charts`.

The dashboard (plugins/visualizers) lays the enabled charts out in one figure and calls
`draw` for each from a snapshot of the run, off the training thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChartData:
    metrics: list[dict[str, Any]]  # TrainingMetrics.to_dict() of every step so far
    samples: list[dict[str, Any]] = field(default_factory=list)  # TextSample dicts
    moving_average: int = 50  # window for smoothed curves, in steps
    recent_window: int = 200  # steps shown by the recent-performance view

    def series(self, key: str):
        """(steps, values) of one metric as float arrays; missing values (a step without an
        evaluation, a NaN loss) are NaN. A name that is no metric is an error (KeyError),
        so a chart that asks for a renamed metric fails in its author's test, not blank."""
        import numpy as np

        from .metrics import metric_names

        known = set(metric_names()).union(*(m.keys() for m in self.metrics))
        if key not in known:
            raise KeyError(f"ChartData.series: no metric named {key!r} (metrics: "
                           f"{', '.join(metric_names())})")

        steps = np.array([m["step"] for m in self.metrics], dtype=float)
        values = np.array([np.nan if m.get(key) is None else m[key] for m in self.metrics],
                          dtype=float)
        return steps, values

    def task_series(self) -> dict[str, tuple]:
        """{"task/metric": (steps, values)} of every downstream task score so far (`evals`),
        only at the steps that scored it."""
        return self._keyed_series("task_scores")

    def share_series(self) -> dict[str, tuple]:
        """{component: (steps, shares)} of a data mixture's realised shares of the tokens
        (`data_shares`), at the steps that have them."""
        return self._keyed_series("data_shares")

    def _keyed_series(self, field: str) -> dict[str, tuple]:
        import numpy as np

        found: dict[str, list] = {}
        for m in self.metrics:
            for key, value in (m.get(field) or {}).items():
                found.setdefault(key, []).append((m["step"], np.nan if value is None else value))
        return {key: (np.array([s for s, _ in points], dtype=float),
                      np.array([v for _, v in points], dtype=float))
                for key, points in found.items()}


class Chart:
    """Subclass and set `name` (unique; how YAML enables it) and `title`; draw into `ax`.

    `draw` runs in the dashboard's render process from plain data, so it must not touch the
    model or the run. `wide` charts take a whole row of the dashboard. A chart that draws
    only text samples sets `uses_samples`: the dashboard leaves it out of a run that draws
    none (`samples.prompts` empty or `samples.max_new_tokens` 0) rather than show an empty
    panel; one that draws only downstream task scores sets `uses_tasks`, left out of a run
    without `evals.tasks`; one that draws only a data mixture's shares sets `uses_mixture`,
    left out until the metrics have them.
    """

    name: str = ""
    title: str = ""
    wide: bool = False
    uses_samples: bool = False
    uses_tasks: bool = False
    uses_mixture: bool = False
    order: int = 100  # place in the dashboard, lowest first; ties by name
    plugin: str = ""  # set by slimcore: the plugin that registered this chart

    def draw(self, ax: Any, data: ChartData) -> None:  # ax: a matplotlib Axes
        raise NotImplementedError
