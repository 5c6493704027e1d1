"""The optimizer and the learning-rate schedule of a run: which parameters get which rule
(stated here, once) and the curve the rate follows.

    optimizer = build_optimizer(model, config.optimizer, device)
    scheduler = build_scheduler(optimizer, config.schedule, config.run.steps)
"""

from __future__ import annotations

import math

import torch

from ..config.schema import OptimizerSection, ScheduleSection


DECAY_GROUP = 0  # the param group with weight decay (the other has none)


def build_optimizer(model: torch.nn.Module, cfg: OptimizerSection, device: torch.device):
    # Weight decay on matrices only: decaying norm gains pulls them toward zero for nothing.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             fused=device.type == "cuda")


def build_scheduler(optimizer, cfg: ScheduleSection, run_steps: int):
    """Linear warmup over `warmup_steps`, then `cfg.kind` up to `cfg.total_steps` (default
    `run_steps`); the rate then stays at the floor. The curve depends on the config only, so
    a resumed run follows it from where it stopped."""
    factor = lr_factor(cfg, run_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lr_factor(cfg: ScheduleSection, run_steps: int):
    """step (0-based, the scheduler's count) -> the learning rate's share of `lr`."""
    total = cfg.total_steps or run_steps
    warmup = max(0, min(cfg.warmup_steps, total - 1))
    decay_steps = max(1, total - warmup)
    floor = cfg.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / decay_steps)
        if cfg.kind == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.kind == "linear":
            return 1 - (1 - floor) * progress
        if cfg.kind == "wsd":
            stable = 1 - cfg.wsd_decay_fraction  # share of the steps at the full rate
            if progress < stable or cfg.wsd_decay_fraction == 0:
                return 1.0 if progress < 1 else floor
            return 1 - (1 - floor) * (progress - stable) / cfg.wsd_decay_fraction
        return 1.0  # constant

    return factor
