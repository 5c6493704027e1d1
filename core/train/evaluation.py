"""Evaluation on held-out data: the same batches every `eval.interval` steps, so that the
numbers of one run compare across steps."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..contracts.batch import Batch
from ..model.device import autocast_context
from ..text.token_bytes import TokenBytes, bits_per_byte


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[Batch], device: torch.device, autocast,
             token_bytes: TokenBytes, on_batch: Callable[[], Any] | None = None,
             document_mask: bool = False) -> tuple[float, float, float | None]:
    """Loss (nats per target token), next-token accuracy and bits per byte over `batches`;
    `on_batch` is called after each (a progress bar). `document_mask`: the batches' documents
    kept apart, as in training under data.document_mask."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct, byte_count = (torch.zeros((), dtype=torch.long, device=device) for _ in range(2))
    count = 0
    for batch in batches:
        batch = batch.to(device)
        byte_count += token_bytes.count(batch)
        with autocast:
            documents = batch.documents if document_mask else None
            batch_loss, batch_correct, _ = model(batch.inputs, batch.targets, documents)
        loss_sum += batch_loss.float()
        correct += batch_correct
        count += batch.target_count
        if on_batch is not None:
            on_batch()
    model.train(was_training)
    return (loss_sum.item() / count, correct.item() / count,
            bits_per_byte(loss_sum.item(), byte_count.item()))


def component_losses(model: torch.nn.Module, components: dict[str, list[Batch]] | None,
                     device: torch.device, token_bytes: TokenBytes, document_mask: bool
                     ) -> dict[str, float] | None:
    """The held-out loss of each component of a mixing source ({name: batches} from its
    `validation_components`); None without components."""
    if not components:
        return None
    return {name: evaluate(model, batches, device, autocast_context(device), token_bytes,
                           document_mask=document_mask)[0]
            for name, batches in components.items()}
