"""The memory-bound operations of the model, behind one small interface.

The model calls these and nothing else for normalization, rotary embedding, the gated MLP
activation and the output loss, so a faster implementation (the native kernels) swaps in by
`model.backend` without touching the model. `TorchOps` is the PyTorch reference: every
other backend is tested against it.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from ..contracts.batch import IGNORE_INDEX
from .chunked_loss import CHUNK_ELEMENTS, chunked_output_loss, torch_score

# The projection and loss in PyTorch operators, chunk by chunk (core/chunked_loss.py).
TorchChunkedOutputLoss = chunked_output_loss(torch_score)


class TorchOps:
    name = "torch"

    @staticmethod
    def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        # Statistics in float32: bf16's 8-bit mantissa loses the mean of squares. PyTorch's
        # own rms_norm (one fused kernel where it has one) instead of the formula in five
        # operators, each a pass over the activations and a tensor autograd keeps.
        return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).type_as(x)

    @staticmethod
    def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate (B, H, T, D) query or key pairs (i, i + D/2) by position; cos, sin: (T, D/2)."""
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)

    @staticmethod
    def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
        """silu(gate) * up, where gate_up (..., 2 * hidden) holds gate then up."""
        gate, up = gate_up.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    def output_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project (N, C) hidden states to the vocabulary and score them against (N,) targets.

        Returns the summed cross-entropy over counted targets (float32, differentiable), the
        count of targets that are the argmax of their logits, and the count of targets.
        Summing (not averaging) lets the trainer normalise over a whole accumulated batch.
        Accuracy comes from the same logits as the loss, at no extra pass.

        Logits of more than CHUNK_ELEMENTS are made and scored chunk by chunk, their
        gradient made at once (TorchChunkedOutputLoss): a (16k x 32,000) float32 copy of
        the logits, and what autograd keeps of it, never exist. Smaller ones take the plain
        formula below, the reference every other implementation is tested against.
        """
        if hidden.shape[0] * weight.shape[0] > CHUNK_ELEMENTS:
            return TorchChunkedOutputLoss.apply(hidden, weight, targets)
        return TorchOps.plain_output_loss(hidden, weight, targets)

    @staticmethod
    def plain_output_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = hidden @ weight.t()  # (N, V)
        loss_sum = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX,
                                   reduction="sum")
        counted = targets != IGNORE_INDEX
        with torch.no_grad():
            correct = ((logits.argmax(dim=-1) == targets) & counted).sum()
        return loss_sum, correct, counted.sum()


BACKENDS = ("torch", "native")
OPS = ("rms_norm", "rotary", "swiglu", "output_loss")

# Under `model.compile`, the ops that keep their native kernel; the others are left to
# inductor, which generates code for them and fuses it with its neighbours. Chosen per op
# and device from `bench/kernels.py --compile` and checked on whole steps with
# bench/throughput.py (docs/native.md has the figures). CUDA: every op native until that
# measurement is made on a GPU (the whole-step figure so far: 0.97x the compiled peer).
NATIVE_UNDER_COMPILE = {
    "cpu": frozenset({"rms_norm"}),
    "cuda": frozenset(OPS),
}


def select_ops(backend: str, device: torch.device, compiled: bool = False):
    """The ops for `model.backend`. `auto`: the native kernels on a GPU; PyTorch's on the
    CPU, where bench/throughput.py measured the C build at parity on whole training steps
    (matrix products dominate), not worth requiring a C compiler (docs/native.md).
    `compiled` (model.compile): the native backend keeps only the kernels of
    NATIVE_UNDER_COMPILE for the device and leaves the other ops to inductor."""
    if backend == "torch" or (backend == "auto" and device.type != "cuda"):
        return TorchOps
    from ..native import loader as native
    from ..contracts.errors import UserError
    from .native_ops import NativeOps

    try:
        native.library(device.type)  # build (or fail with one line) before the run starts
    except UserError as e:
        if backend == "native":
            raise
        print(f"slimcore: warning: {e}; model.backend auto falls back to torch",
              file=sys.stderr)
        return TorchOps
    return under_compile(NativeOps, device.type) if compiled else NativeOps


def under_compile(native_ops, device_type: str):
    """native_ops with the ops inductor does better on this device taken from TorchOps."""
    keep = NATIVE_UNDER_COMPILE.get(device_type, frozenset(OPS))
    if keep == frozenset(OPS):
        return native_ops
    inductor = {op: staticmethod(getattr(TorchOps, op)) for op in OPS if op not in keep}
    return type("CompiledNativeOps", (native_ops,),
                {"name": "native", **inductor,
                 "__doc__": f"native {', '.join(sorted(keep)) or 'nothing'}; inductor "
                            f"{', '.join(sorted(inductor))}"})
