"""TrainingMetrics, one per optimizer step, and the measurements behind its fields."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: the dashboard's process has none
    import torch

# Dense bf16 peak from the datasheets, FLOP/s (H100/H200 SXM: 989e12; A100: 312e12). MFU is
# reported only for devices listed here; elsewhere it is None rather than a guess.
PEAK_FLOPS_BF16 = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
}


@dataclass
class TrainingMetrics:
    step: int
    loss: float
    accuracy: float  # next-token top-1 over the step's counted targets
    learning_rate: float
    tokens_per_second: float
    tokens_seen: int
    step_time_s: float
    grad_norm: float
    memory_bytes: int  # CUDA: bytes allocated by tensors; CPU: the process's resident set
    memory_kind: str  # "cuda_allocated" or "cpu_rss"
    mfu: float | None  # model FLOPs utilisation, when the device peak is known
    timestamp: float
    eval_loss: float | None = None
    eval_accuracy: float | None = None

    def to_dict(self) -> dict:
        """Plain values for strict JSON: NaN and Inf become None."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def metric_names() -> list[str]:
    """The fields of TrainingMetrics, in order: what a chart may ask ChartData for."""
    return [f.name for f in fields(TrainingMetrics)]


def memory_in_use(device: torch.device) -> tuple[int, str]:
    import torch

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
    import torch

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
            import torch

            torch.cuda.synchronize(self.device)
        return time.perf_counter() - self.started
