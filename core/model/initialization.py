"""The model's starting weights, the same however the model is laid out: each parameter is
drawn whole, from a generator of its own (seeded by the run's seed and the parameter's
name), and a rank that holds a shard of it (FSDP) keeps its part. So a model built on the
meta device and sharded before it has any storage starts exactly where the same model built
whole in one process does, and no rank ever holds more of it than one parameter beyond its
shard.

    initialize(model)            every parameter (whole, or this rank's shard) its value
    initial_value(cfg, name, shape, seed)    one parameter's whole starting value

The values: N(0, model.init_std) for the embedding and every matrix, the residual
projections (attention's output, the MLP's down projection) scaled by 1/sqrt(2 x layers) so
the residual stream's variance does not grow with depth (GPT-2), the norms' weights 1.
"""

from __future__ import annotations

import math
import zlib

import torch

from ..config.schema import ModelSection

RESIDUAL_PROJECTIONS = ("attn.out.weight", "mlp.down.weight")


def initial_value(cfg: ModelSection, name: str, shape: torch.Size, seed: int) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return torch.ones(shape)
    std = cfg.init_std / math.sqrt(2 * cfg.layers) if name.endswith(RESIDUAL_PROJECTIONS) \
        else cfg.init_std
    generator = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode()))
                                              % (1 << 63))
    return torch.normal(0.0, std, tuple(shape), generator=generator)


@torch.no_grad()
def initialize(model: torch.nn.Module, seed: int | None = None) -> None:
    """Every parameter of `model` its starting value (a tied matrix once); `seed`: the
    default generator's (torch.manual_seed's, which a run sets from run.seed)."""
    seed = torch.initial_seed() if seed is None else seed
    for name, param in model.named_parameters():
        whole = initial_value(model.cfg, name, param.shape, seed)
        if hasattr(param, "device_mesh"):  # a DTensor: this rank's shard of it
            param.to_local().copy_(local_part(whole, param))
        else:
            param.copy_(whole)


def local_part(whole: torch.Tensor, param) -> torch.Tensor:
    """This rank's part of a DTensor parameter's `whole` value, cut locally (no collective:
    every rank drew the same whole)."""
    from torch.distributed.tensor import distribute_tensor

    try:
        return distribute_tensor(whole, param.device_mesh, param.placements,
                                 src_data_rank=None).to_local()
    except TypeError:  # torch before 2.7: FSDP2's one placement, Shard(0), cut as it cuts
        mesh = param.device_mesh
        return torch.chunk(whole, mesh.size(), dim=0)[mesh.get_local_rank()]
