"""AdamW (`optimizer.name: adamw`, the default): torch.optim.AdamW over two groups, the
matrices and embeddings decayed, the gains not (decaying a norm's gain pulls it toward zero
for nothing). Settings: the optimizer section's lr, weight_decay, beta1, beta2, eps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..contracts.optimizer import EMBEDDING, GAIN, MATRIX, OptimizerBuilder, ParameterGroups

if TYPE_CHECKING:
    import torch

    from ..contracts.run import Run


class AdamWBuilder(OptimizerBuilder):
    name = "adamw"

    def build(self, groups: ParameterGroups, run: Run) -> torch.optim.Optimizer:
        import torch

        cfg = run.config.optimizer
        return torch.optim.AdamW(
            [{"params": groups.of(MATRIX, EMBEDDING), "weight_decay": cfg.weight_decay},
             {"params": groups.of(GAIN), "weight_decay": 0.0}],
            lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
            fused=run.device.type == "cuda")
