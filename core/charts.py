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


class Chart:
    """Subclass and set `name` (unique; how YAML enables it) and `title`; draw into `ax`."""

    name: str = ""
    title: str = ""

    def draw(self, ax: Any, data: ChartData) -> None:  # ax: a matplotlib Axes
        raise NotImplementedError
