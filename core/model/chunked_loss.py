"""The output projection and its cross-entropy, chunk by chunk over rows.

Each chunk's logits are made by one matrix product, turned into their own gradient in place
(softmax - onehot) by a scorer, and consumed into the gradients of the hidden states and of
the output weight at once, so the full (rows x vocabulary) logits never exist together and
nothing of them is kept for the backward pass. Both backends use it: the native one with
the fused cross-entropy kernel as the scorer, the torch one with PyTorch operators.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..contracts.batch import IGNORE_INDEX

# Logit elements per chunk: 2**27 is 256 MiB of bf16 (4,194 rows of a 32,000 vocabulary).
CHUNK_ELEMENTS = 2**27

# scorer(logits (n, V), targets (n,), write_grad) -> (per-row loss float32 (n,), correct
# count int64 ()); with write_grad the logits are replaced by d(sum of losses)/d(logits).
Scorer = Callable[[torch.Tensor, torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor]]


def chunked_output_loss(score: Scorer, chunk_elements: int = CHUNK_ELEMENTS):
    """An autograd Function: apply(hidden (N, C), weight (V, C), targets (N,)) -> (loss
    summed over counted targets, correct count, counted targets). The gradients are made in
    the forward pass (the loss is a sum, so backward only scales them)."""

    class ChunkedOutputLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets):
            rows, vocab = hidden.shape[0], weight.shape[0]
            step = max(1, chunk_elements // vocab)
            wants_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
            loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
            correct = torch.zeros((), dtype=torch.int64, device=hidden.device)
            grad_hidden = torch.empty_like(hidden) if wants_grad else None
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if wants_grad else None
            for start in range(0, rows, step):
                chunk = hidden[start:start + step]
                logits = (chunk @ weight.t()).contiguous()  # autocast: bf16 on the GPU
                loss, hits = score(logits, targets[start:start + step].contiguous(), wants_grad)
                loss_sum += loss.sum()
                correct += hits
                if wants_grad:  # `logits` now holds d(loss)/d(logits)
                    grad_hidden[start:start + step] = logits @ weight.to(logits.dtype)
                    grad_weight += (logits.t() @ chunk.to(logits.dtype)).float()
            ctx.save_for_backward(grad_hidden, grad_weight)
            ctx.weight_dtype = weight.dtype
            count = (targets != IGNORE_INDEX).sum()
            ctx.mark_non_differentiable(correct, count)
            return loss_sum, correct, count

        @staticmethod
        def backward(ctx, grad_loss, _correct, _count):
            grad_hidden, grad_weight = ctx.saved_tensors
            return (grad_hidden * grad_loss.to(grad_hidden.dtype),
                    (grad_weight * grad_loss).to(ctx.weight_dtype), None)

    return ChunkedOutputLoss


def torch_score(logits: torch.Tensor, targets: torch.Tensor, write_grad: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The scorer in PyTorch operators: float32 log-sum-exp, the first maximum counts as the
    prediction (as torch.argmax and the native kernel do); ignored rows score 0 and get a
    zero gradient."""
    counted = targets != IGNORE_INDEX
    safe = torch.where(counted, targets, 0)[:, None]
    scores = logits.float()
    log_total = torch.logsumexp(scores, dim=-1)
    loss = (log_total - scores.gather(1, safe).squeeze(1)) * counted
    correct = ((scores.argmax(dim=-1) == targets) & counted).sum()
    if write_grad:
        # softmax - onehot, in place in the float32 scores (the logits themselves when they
        # are float32; a float32 copy of bf16 logits otherwise), zero for ignored rows
        grad = scores.sub_(log_total[:, None]).exp_()
        grad.scatter_add_(1, safe, torch.full(safe.shape, -1.0, device=grad.device))
        grad.mul_(counted[:, None])
        if grad.data_ptr() != logits.data_ptr():
            logits.copy_(grad)
    return loss, correct
