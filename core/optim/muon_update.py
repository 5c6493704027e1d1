"""The Muon optimizer: Muon for the hidden matrices, AdamW for the rest, in one optimizer, so
one schedule scales both and one state dict holds both (built by muon.py).

Muon (Keller Jordan, 2024; torch.optim.Muon) keeps a momentum of each matrix's gradient and
steps along its orthogonalisation: five Newton-Schulz iterations of a quintic in bfloat16
push every singular value toward 1, so no direction of the update dominates. The step is scaled by the matrix's shape (`muon.adjust_lr`): `original`, sqrt(max(1, rows/cols)) as its
authors do, or `match_rms_adamw`, 0.2 * sqrt(max(rows, cols)) (Moonshot's, "Muon is Scalable
for LLM Training"), under which muon.lr can be AdamW's. A fused matrix (q, k, v stacked) is
orthogonalised part by part, as the separate matrices it stands for (modded-nanogpt).

Under FSDP a matrix is sharded by rows: each rank gathers the momentum-corrected gradient
(`full_tensor()`), orthogonalises the whole matrix and keeps its own rows, so the update is
the unsharded one (every rank repeats the orthogonalisation; the momentum stays sharded).
"""

from __future__ import annotations

import math

import torch
from torch.optim.adamw import adamw

# The quintic's coefficients (Keller Jordan's, as torch.optim.Muon) and its guard against a
# zero gradient.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_EPS = 1e-7


class Muon(torch.optim.Optimizer):
    """Groups with `rule` "muon" (2-D, `parts` stacked matrices each) take Muon; the others
    AdamW: torch's own (`torch.optim.adamw.adamw`, foreach where torch.optim.AdamW would be),
    with its state (`step`, `exp_avg`, `exp_avg_sq`)."""

    def __init__(self, groups: list[dict], *, betas=(0.9, 0.95), eps=1e-8, momentum=0.95,
                 nesterov=True, ns_steps=5, adjust_lr="original"):
        super().__init__(groups, dict(lr=1e-3, weight_decay=0.0, rule="adamw", parts=1,
                                      betas=betas, eps=eps, momentum=momentum,
                                      nesterov=nesterov, ns_steps=ns_steps,
                                      adjust_lr=adjust_lr))
        for group in self.param_groups:
            if group["rule"] == "muon" and any(p.dim() != 2 for p in group["params"]):
                raise ValueError("Muon takes 2-D matrices only")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["rule"] == "muon":
                for p in params:
                    muon_step(p, self.state[p], group)
            elif params:
                adamw_step(params, [self.state[p] for p in params], group)
        return loss


def adamw_step(params: list[torch.Tensor], states: list[dict], group: dict) -> None:
    """One step of torch.optim.AdamW's arithmetic over a group, its state made as AdamW
    makes it."""
    for p, state in zip(params, states):
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    beta1, beta2 = group["betas"]
    adamw(params, [p.grad for p in params], [s["exp_avg"] for s in states],
          [s["exp_avg_sq"] for s in states], [], [s["step"] for s in states], amsgrad=False,
          beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
          eps=group["eps"], maximize=False)


def muon_step(p: torch.Tensor, state: dict, group: dict) -> None:
    grad, momentum = p.grad, group["momentum"]
    if "momentum_buffer" not in state:
        state["momentum_buffer"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
    buffer = state["momentum_buffer"]
    buffer.lerp_(grad, 1 - momentum)
    update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
    sharded = hasattr(update, "full_tensor")  # FSDP: a DTensor, this rank's rows
    whole = update.full_tensor() if sharded else update
    parts = whole.split(list(group["parts"])) if isinstance(group["parts"], (list, tuple)) \
        else whole.chunk(group["parts"])  # a count: equal parts (checkpoints before rows)
    scale = [shape_scale(part.shape, group["adjust_lr"]) for part in parts]
    # Each part its own direction and scale (k and v may be shorter than q).
    direction = torch.cat([orthogonalise(part, group["ns_steps"]) * (s / scale[0])
                           for part, s in zip(parts, scale)])
    if sharded:  # back to this rank's rows
        from torch.distributed.tensor import distribute_tensor
        direction = distribute_tensor(direction, update.device_mesh, update.placements,
                                      src_data_rank=None)
    p.mul_(1 - group["lr"] * group["weight_decay"])
    p.add_(direction, alpha=-group["lr"] * scale[0])


def orthogonalise(matrix: torch.Tensor, steps: int) -> torch.Tensor:
    """The Newton-Schulz quintic's approximation of U V^T for matrix = U S V^T (bfloat16)."""
    a, b, c = NS_COEFFICIENTS
    x = matrix.bfloat16()
    tall = x.size(0) > x.size(1)
    if tall:  # the Gram matrix of the short side is the smaller
        x = x.T
    x = x / x.norm().clamp(min=NS_EPS)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def shape_scale(shape: torch.Size, adjust_lr: str) -> float:
    rows, cols = shape
    if adjust_lr == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))
