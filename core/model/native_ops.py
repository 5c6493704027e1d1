"""The native kernels as PyTorch operators (`torch.ops.slimcore.*`) and as the model's ops.

Each kernel pair is a `torch.library` custom op with a fake (meta) implementation and
autograd, so the ops compose with `torch.compile`, autocast and FSDP. Before every call the
tensors' device, dtype, contiguity and alignment are checked, the CUDA stream is the current
one, and every status code is checked (native.check).

The output projection and cross-entropy run chunk by chunk over rows (ChunkedOutputLoss,
core/chunked_loss.py) with the fused kernel turning each chunk's logits into their gradient
in place.
"""

from __future__ import annotations

import torch

from ..native import loader as native
from ..contracts.batch import IGNORE_INDEX
from .chunked_loss import chunked_output_loss

DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1}


def _kind(t: torch.Tensor) -> str:
    if t.device.type not in ("cpu", "cuda"):
        raise ValueError(f"slimcore native ops run on cpu or cuda tensors, not {t.device}")
    return t.device.type


def _checked(kernel: str, float_tensors, float32_tensors=(), int64_tensors=()):
    """(ffi, lib, kind, dtype code, stream) after checking every tensor of a call."""
    first = float_tensors[0]
    kind = _kind(first)
    if first.dtype not in DTYPE_CODES:
        raise TypeError(f"{kernel}: float32 or bfloat16 tensors, not {first.dtype}")
    groups = [(float_tensors, first.dtype), (float32_tensors, torch.float32),
              (int64_tensors, torch.int64)]
    for tensors, dtype in groups:
        for t in tensors:
            if t.device != first.device:
                raise ValueError(f"{kernel}: tensors on {first.device} and {t.device}")
            if t.dtype != dtype:
                raise TypeError(f"{kernel}: expected {dtype}, got {t.dtype}")
            if not t.is_contiguous():
                raise ValueError(f"{kernel}: tensors must be contiguous")
            if t.data_ptr() % t.element_size():
                raise ValueError(f"{kernel}: a tensor is not aligned to its element size")
    ffi, lib = native.library(kind)
    stream = ffi.NULL
    if kind == "cuda":
        stream = ffi.cast("void *", torch.cuda.current_stream(first.device).cuda_stream)
    return ffi, lib, kind, DTYPE_CODES[first.dtype], stream


def _ptr(ffi, t: torch.Tensor | None, ctype: str = "void *"):
    return ffi.NULL if t is None else ffi.cast(ctype, t.data_ptr())


def _device_guard(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else torch.device("cpu")


# -- cross-entropy ------------------------------------------------------------------------------


@torch.library.custom_op("slimcore::cross_entropy_", mutates_args=("logits",))
def cross_entropy_(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int,
                   write_grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss (float32) and the count of correct argmax rows (int64) of (N, V) logits;
    with `write_grad` the logits are replaced by softmax - onehot (their gradient)."""
    ffi, lib, kind, dtype, stream = _checked("cross_entropy", [logits], (), [targets])
    rows, vocab = logits.shape
    loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    correct = torch.zeros((), dtype=torch.int64, device=logits.device)
    with _device_guard(logits):
        native.check(lib.slimcore_cross_entropy(
            _ptr(ffi, logits), _ptr(ffi, logits) if write_grad else ffi.NULL, dtype,
            _ptr(ffi, targets, "int64_t *"), rows, vocab, ignore_index,
            _ptr(ffi, loss, "float *"), _ptr(ffi, correct, "int64_t *"), stream),
            "cross_entropy", kind)
    return loss, correct


@cross_entropy_.register_fake
def _(logits, targets, ignore_index, write_grad):
    return (logits.new_empty(logits.shape[0], dtype=torch.float32),
            logits.new_empty((), dtype=torch.int64))


def _native_score(logits, targets, write_grad):
    return cross_entropy_(logits, targets, IGNORE_INDEX, write_grad)


# The projection and the fused kernel chunk by chunk (core/chunked_loss.py).
ChunkedOutputLoss = chunked_output_loss(_native_score)


# -- RMSNorm ------------------------------------------------------------------------------------


@torch.library.custom_op("slimcore::rms_norm", mutates_args=())
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor,
                                                                         torch.Tensor]:
    """(y, rstd) of x (..., width): y = x * rstd * weight, rstd per row in float32."""
    ffi, lib, kind, dtype, stream = _checked("rms_norm_forward", [x], [weight])
    width = x.shape[-1]
    rows = x.numel() // width
    y = torch.empty_like(x)
    rstd = torch.empty(x.shape[:-1], dtype=torch.float32, device=x.device)
    with _device_guard(x):
        native.check(lib.slimcore_rms_norm_forward(
            _ptr(ffi, x), _ptr(ffi, weight, "float *"), _ptr(ffi, y), _ptr(ffi, rstd, "float *"),
            dtype, rows, width, eps, stream), "rms_norm_forward", kind)
    return y, rstd


@rms_norm.register_fake
def _(x, weight, eps):
    return torch.empty_like(x), x.new_empty(x.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("slimcore::rms_norm_backward", mutates_args=())
def rms_norm_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                      rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ffi, lib, kind, dtype, stream = _checked("rms_norm_backward", [dy, x], [weight, rstd])
    width = x.shape[-1]
    dx = torch.empty_like(x)
    dweight = torch.zeros_like(weight)
    with _device_guard(x):
        native.check(lib.slimcore_rms_norm_backward(
            _ptr(ffi, dy), _ptr(ffi, x), _ptr(ffi, weight, "float *"), _ptr(ffi, rstd, "float *"),
            _ptr(ffi, dx), _ptr(ffi, dweight, "float *"), dtype, x.numel() // width, width,
            stream), "rms_norm_backward", kind)
    return dx, dweight


@rms_norm_backward.register_fake
def _(dy, x, weight, rstd):
    return torch.empty_like(x), torch.empty_like(weight)


def _rms_norm_setup(ctx, inputs, output):
    x, weight, _ = inputs
    ctx.save_for_backward(x, weight, output[1])


def _rms_norm_grad(ctx, dy, _drstd):
    x, weight, rstd = ctx.saved_tensors
    dx, dweight = rms_norm_backward(dy.contiguous(), x, weight, rstd)
    return dx, dweight, None


rms_norm.register_autograd(_rms_norm_grad, setup_context=_rms_norm_setup)


# -- rotary -------------------------------------------------------------------------------------


@torch.library.custom_op("slimcore::rotary", mutates_args=())
def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool,
           token_major: bool) -> torch.Tensor:
    """x (..., T, D) rotated pairwise (i, i + D/2) by position; cos, sin (T, D/2) float32.
    `token_major`: x is (N, H, D), N tokens of H heads each with its own angle (cos, sin
    (N, D/2)): rows packed with documents, whose positions restart per document."""
    ffi, lib, kind, dtype, stream = _checked("rotary", [x], [cos, sin])
    positions, head_dim = cos.shape[0], x.shape[-1]
    inner = x.shape[-2] if token_major else 1
    y = torch.empty_like(x)
    with _device_guard(x):
        native.check(lib.slimcore_rotary(
            _ptr(ffi, x), _ptr(ffi, y), _ptr(ffi, cos, "float *"), _ptr(ffi, sin, "float *"),
            dtype, x.numel() // (positions * inner * head_dim), positions, inner, head_dim,
            int(inverse), stream), "rotary", kind)
    return y


@rotary.register_fake
def _(x, cos, sin, inverse, token_major):
    return torch.empty_like(x)


def _rotary_setup(ctx, inputs, output):
    _, cos, sin, inverse, token_major = inputs
    ctx.save_for_backward(cos, sin)
    ctx.inverse, ctx.token_major = inverse, token_major


def _rotary_grad(ctx, dy):
    cos, sin = ctx.saved_tensors
    # A rotation's transpose is the rotation by the opposite angle.
    return (rotary(dy.contiguous(), cos, sin, not ctx.inverse, ctx.token_major),
            None, None, None, None)


rotary.register_autograd(_rotary_grad, setup_context=_rotary_setup)


# -- SwiGLU -------------------------------------------------------------------------------------


@torch.library.custom_op("slimcore::swiglu", mutates_args=())
def swiglu(gate_up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of gate_up (..., 2 * hidden), gate first."""
    ffi, lib, kind, dtype, stream = _checked("swiglu_forward", [gate_up])
    hidden = gate_up.shape[-1] // 2
    y = gate_up.new_empty(*gate_up.shape[:-1], hidden)
    with _device_guard(gate_up):
        native.check(lib.slimcore_swiglu_forward(
            _ptr(ffi, gate_up), _ptr(ffi, y), dtype, gate_up.numel() // (2 * hidden), hidden,
            stream), "swiglu_forward", kind)
    return y


@swiglu.register_fake
def _(gate_up):
    return gate_up.new_empty(*gate_up.shape[:-1], gate_up.shape[-1] // 2)


@torch.library.custom_op("slimcore::swiglu_backward", mutates_args=())
def swiglu_backward(dy: torch.Tensor, gate_up: torch.Tensor) -> torch.Tensor:
    ffi, lib, kind, dtype, stream = _checked("swiglu_backward", [dy, gate_up])
    hidden = gate_up.shape[-1] // 2
    dgate_up = torch.empty_like(gate_up)
    with _device_guard(gate_up):
        native.check(lib.slimcore_swiglu_backward(
            _ptr(ffi, dy), _ptr(ffi, gate_up), _ptr(ffi, dgate_up), dtype,
            gate_up.numel() // (2 * hidden), hidden, stream), "swiglu_backward", kind)
    return dgate_up


@swiglu_backward.register_fake
def _(dy, gate_up):
    return torch.empty_like(gate_up)


def _swiglu_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _swiglu_grad(ctx, dy):
    (gate_up,) = ctx.saved_tensors
    return swiglu_backward(dy.contiguous(), gate_up)


swiglu.register_autograd(_swiglu_grad, setup_context=_swiglu_setup)


# -- the model's ops ------------------------------------------------------------------------------


class NativeOps:
    """The `ops` interface of core/model/ops.py on the native kernels."""

    name = "native"

    @staticmethod
    def rms_norm(x, weight, eps):
        return rms_norm(x.contiguous(), weight.float().contiguous(), eps)[0]

    @staticmethod
    def rotary(x, cos, sin):
        if cos.dim() == 2:  # one table for every row
            return torch.ops.slimcore.rotary(x.contiguous(), cos.float().contiguous(),
                                             sin.float().contiguous(), False, False)
        # Per-row tables (B, 1, T, D/2) (data.document_mask): the kernel's token-major form,
        # each of the B * T tokens rotated by its own angle across its H heads.
        B, H, T, D = x.shape
        tokens = x.transpose(1, 2).reshape(B * T, H, D).contiguous()
        cos, sin = (t.float().reshape(B * T, D // 2).contiguous() for t in (cos, sin))
        y = torch.ops.slimcore.rotary(tokens, cos, sin, False, True)
        return y.view(B, T, H, D).transpose(1, 2)

    @staticmethod
    def swiglu(gate_up):
        return swiglu(gate_up.contiguous())

    @staticmethod
    def output_loss(hidden, weight, targets):
        return ChunkedOutputLoss.apply(hidden.contiguous(), weight, targets.contiguous())
