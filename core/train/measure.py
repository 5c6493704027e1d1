"""The measurements behind TrainingMetrics' fields: step time, memory, model FLOPs."""

from __future__ import annotations

import os
import time

import torch

# Dense bf16 peak from the datasheets, FLOP/s (H100/H200 SXM: 989e12; A100: 312e12). MFU is
# reported only for devices listed here; elsewhere it is None rather than a guess.
PEAK_FLOPS_BF16 = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
}


def memory_in_use(device: torch.device) -> tuple[int, str]:
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device), "cuda_allocated"
    return resident_set_bytes(), "cpu_rss"


def resident_set_bytes() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def device_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in PEAK_FLOPS_BF16.items():
        if key in name:
            return flops
    return None


def flops_per_token(matmul_params: int, layers: int, width: int, seq_len: int) -> float:
    """PaLM / nanoGPT convention: 6 FLOPs per matrix parameter per token (forward and
    backward) plus the attention score and value products, 12 * L * width * T."""
    return 6 * matmul_params + 12 * layers * width * seq_len


class StepTimer:
    """Wall time of one step; on CUDA it waits for the queued kernels before reading."""

    def __init__(self, device: torch.device):
        self.device = device
        self.started = 0.0

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> float:
        if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
        return time.perf_counter() - self.started
