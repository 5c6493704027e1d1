"""Evaluation on held-out data: the same batches every `eval.interval` steps, so that the
numbers of one run compare across steps."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..contracts.batch import Batch


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[Batch], device: torch.device,
             autocast, on_batch: Callable[[], Any] | None = None) -> tuple[float, float]:
    """Loss (nats per target token) and next-token accuracy over `batches`; `on_batch` is
    called after each (a progress bar)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = 0
    for batch in batches:
        batch = batch.to(device)
        with autocast:
            batch_loss, batch_correct, _ = model(batch.inputs, batch.targets)
        loss_sum += batch_loss.float()
        correct += batch_correct
        count += batch.target_count
        if on_batch is not None:
            on_batch()
    model.train(was_training)
    return loss_sum.item() / count, correct.item() / count
