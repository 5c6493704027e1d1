"""Where and in what precision the model runs: the device a config names, and autocast."""

from __future__ import annotations

import contextlib

import torch

from ..contracts.errors import ConfigError


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError("run.device", f"'{spec}' is not a device (auto, cpu, cuda, cuda:N)",
                          "--device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device", f"'{spec}' asked for, but this machine has no CUDA "
                          "GPU visible to PyTorch; use --device cpu")
    return device


def autocast_context(device: torch.device):
    # bf16 autocast on CUDA: matrix products in bf16 on tensor cores, reductions in fp32.
    # The CPU trains in fp32: CPU bf16 matmuls are slower than fp32 on most hosts.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
