"""`optimizer.name: muon`: Muon for the hidden matrices (settings in the `muon` section),
AdamW for the embeddings, the output layer and the gains (the optimizer section's lr, betas,
eps, weight decay; gains never decayed), in one optimizer (muon_update.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from ..config.values import COUNT, POSITIVE, Range
from ..contracts.optimizer import EMBEDDING, GAIN, MATRIX, OptimizerBuilder, ParameterGroups

if TYPE_CHECKING:
    import torch

    from ..contracts.run import Run


@dataclass
class MuonSection:
    """optimizer.name: muon. The hidden matrices' rule; the embeddings, the output layer and
    the gains take AdamW with the optimizer section's lr, betas, eps and weight decay."""

    lr: Annotated[float, POSITIVE] = 0.02  # the matrices' peak rate (the schedule scales it)
    momentum: Annotated[float, Range(min=0, below=1)] = 0.95
    nesterov: bool = True
    ns_steps: Annotated[int, Range(min=1, max=99)] = 5  # Newton-Schulz iterations
    adjust_lr: Literal["original", "match_rms_adamw"] = "original"
    weight_decay: Annotated[float, COUNT] = 0.0  # decoupled: each step scales by 1 - lr * wd


class MuonBuilder(OptimizerBuilder):
    name = "muon"

    def build(self, groups: ParameterGroups, run: Run) -> torch.optim.Optimizer:
        adamw, muon = run.config.optimizer, run.config.section("muon")
        param_groups = [
            {"params": groups.of(EMBEDDING), "rule": "adamw", "lr": adamw.lr,
             "weight_decay": adamw.weight_decay},
            {"params": groups.of(GAIN), "rule": "adamw", "lr": adamw.lr, "weight_decay": 0.0}]
        matrices = groups.described(MATRIX)  # a group per way of stacking parts
        for parts in sorted({part_rows(m) for m in matrices}):
            param_groups.append({"params": [m.tensor for m in matrices if part_rows(m) == parts],
                                 "rule": "muon", "parts": list(parts), "lr": muon.lr,
                                 "weight_decay": muon.weight_decay})
        from .muon_update import Muon

        return Muon([g for g in param_groups if g["params"]], betas=(adamw.beta1, adamw.beta2),
                    eps=adamw.eps, momentum=muon.momentum, nesterov=muon.nesterov,
                    ns_steps=muon.ns_steps, adjust_lr=muon.adjust_lr)


def part_rows(matrix) -> tuple[int, ...]:
    """The rows of each part a (fused) matrix stacks: Muon orthogonalises each alone."""
    if matrix.rows:
        return tuple(matrix.rows)
    rows = matrix.tensor.shape[0]  # the whole matrix's, also under FSDP (a DTensor's shape)
    return (rows // matrix.parts,) * matrix.parts
