"""The learning-rate schedule of a run: a linear warmup (the core's), then the curve of the
`Schedule` that `schedule.kind` names, up to `schedule.total_steps` (default `run.steps`);
the rate then stays where the curve ended. The shipped curves are registered by the
built-in plugin `optimizers`.

    scheduler = build_scheduler(optimizer, schedule, config)
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..contracts.optimizer import Schedule

if TYPE_CHECKING:
    import torch

    from ..config.schema import RunConfig


class Cosine(Schedule):
    name = "cosine"

    def factor(self, progress: float, config: RunConfig) -> float:
        floor = config.schedule.min_lr_ratio
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class Linear(Schedule):
    name = "linear"

    def factor(self, progress: float, config: RunConfig) -> float:
        return 1 - (1 - config.schedule.min_lr_ratio) * progress


class Constant(Schedule):
    name = "constant"

    def factor(self, progress: float, config: RunConfig) -> float:
        return 1.0


class WarmupStableDecay(Schedule):
    """The full rate, then a linear decay over the last `wsd_decay_fraction` of the steps."""

    name = "wsd"

    def factor(self, progress: float, config: RunConfig) -> float:
        floor, fraction = config.schedule.min_lr_ratio, config.schedule.wsd_decay_fraction
        stable = 1 - fraction  # share of the steps at the full rate
        if progress < stable or fraction == 0:
            return 1.0 if progress < 1 else floor
        return 1 - (1 - floor) * (progress - stable) / fraction


SCHEDULES = (Cosine(), Linear(), Constant(), WarmupStableDecay())


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule, config: RunConfig):
    """A LambdaLR scaling each group's peak rate. The curve depends on the config only, so a
    resumed run follows it from where it stopped."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(schedule, config))


def lr_factor(schedule: Schedule, config: RunConfig):
    """step (0-based, the scheduler's count) -> the learning rate's share of its peak."""
    total = config.schedule.total_steps or config.run.steps
    warmup = max(0, min(config.schedule.warmup_steps, total - 1))
    decay_steps = max(1, total - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return schedule.factor(min(1.0, (step - warmup) / decay_steps), config)

    return factor
