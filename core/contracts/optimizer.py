"""The optimizer and schedule contracts: named objects a plugin registers
(`register_optimizers`, `register_schedules`), selected by `optimizer.name` and
`schedule.kind`, and the parameter groups every optimizer is handed.

    class Lion(slimcore.OptimizerBuilder):
        name = "lion"                                   # optimizer.name: lion
        def build(self, groups, run):
            return MyLion([{"params": groups.of(MATRIX, EMBEDDING), "weight_decay": 0.1},
                           {"params": groups.of(GAIN), "weight_decay": 0.0}],
                          lr=run.config.optimizer.lr)

The core owns what every optimizer shares: the schedule (a `LambdaLR` over the optimizer's
groups, each group's `lr` its peak), gradient clipping and accumulation, the checkpoint
(`state_dict()` / `load_state_dict()`, gathered under FSDP by
`torch.distributed.checkpoint.state_dict`) and, on resume, the settings in force: the
restored groups take every setting of a freshly built optimizer but the rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch

    from ..config.schema import RunConfig
    from .run import Run

# The kinds of parameter, by the rule they take; docs/optimizers.md lists the model's.
MATRIX = "matrix"  # a 2-D weight inside a block (attention and MLP projections)
EMBEDDING = "embedding"  # the token embedding and the output layer: 2-D, but not hidden
GAIN = "gain"  # a 1-D parameter (norm gains): never decayed


@dataclass(frozen=True)
class Parameter:
    name: str  # as in model.named_parameters()
    tensor: torch.nn.Parameter
    kind: str  # MATRIX, EMBEDDING or GAIN
    parts: int = 1  # a fused matrix (q, k and v in one) holds this many, stacked by rows
    # the rows of each part, top to bottom (k and v have fewer than q under grouped-query
    # attention); empty: `parts` equal shares
    rows: tuple[int, ...] = ()


@dataclass(frozen=True)
class ParameterGroups:
    """The model's trainable parameters, each with its kind, in the model's order."""

    parameters: tuple[Parameter, ...]

    def of(self, *kinds: str) -> list[torch.nn.Parameter]:
        """The tensors of these kinds, in the model's order."""
        return [p.tensor for p in self.parameters if p.kind in kinds]

    def described(self, *kinds: str) -> list[Parameter]:
        return [p for p in self.parameters if p.kind in kinds]


class OptimizerBuilder:
    """Subclass, set `name`, implement `build`; register an instance."""

    name: ClassVar[str] = ""  # what `optimizer.name` selects

    def build(self, groups: ParameterGroups, run: Run) -> torch.optim.Optimizer:
        """A `torch.optim.Optimizer` over `groups` (every parameter exactly once) with the
        settings of `run.config` (`optimizer.lr`, `optimizer.weight_decay`, your own
        section). Each param group's `lr` is its peak rate: the schedule scales it. Built
        after the model is on `run.device` (and sharded under FSDP: parameters may be
        DTensors). Keep all state in `self.state` so that checkpoints hold it."""
        raise NotImplementedError


class Schedule:
    """Subclass, set `name`, implement `factor`; register an instance."""

    name: ClassVar[str] = ""  # what `schedule.kind` selects

    def factor(self, progress: float, config: RunConfig) -> float:
        """The rate's share of its peak at `progress` through the decay: 0.0 right after the
        warmup, 1.0 at `schedule.total_steps` (and after it: the rate then stays there). A
        decay should end at `config.schedule.min_lr_ratio`. The warmup is the core's."""
        raise NotImplementedError
