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
        """(steps, values) of one metric as float arrays; missing values are NaN."""
        import numpy as np

        steps = np.array([m["step"] for m in self.metrics], dtype=float)
        values = np.array([np.nan if m.get(key) is None else m[key] for m in self.metrics],
                          dtype=float)
        return steps, values


class Chart:
    """Subclass and set `name` (unique; how YAML enables it) and `title`; draw into `ax`.

    `draw` runs in the dashboard's render process from plain data, so it must not touch the
    model or the run. `wide` charts take a whole row of the dashboard.
    """

    name: str = ""
    title: str = ""
    wide: bool = False
    order: int = 100  # place in the dashboard, lowest first; ties by name

    def draw(self, ax: Any, data: ChartData) -> None:  # ax: a matplotlib Axes
        raise NotImplementedError
