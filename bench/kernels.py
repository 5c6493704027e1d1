"""Each native kernel (forward and backward) against its PyTorch equivalent, one process.

    python bench/kernels.py [--device cpu|cuda] [--repeats 5] [--compile]

Prints per kernel: median time of native and PyTorch, the ratio, the bytes each moves
divided by the native time (GB/s: the kernel's minimum traffic, inputs read once and outputs
written once), and the largest difference from PyTorch. Shapes: the issue's GPU model
(batch 16 x sequence 1024 rows, width 1536, MLP 4096, vocabulary 32,000) on CUDA; an eighth
of the rows on the CPU.

`--compile`: the PyTorch side is what inductor generates for it (torch.compile of the
TorchOps function, forward and backward), the question `model.compile` asks per op: the
native kernel or inductor's (core/model/ops.py NATIVE_UNDER_COMPILE holds the answer per device).
The output loss row is the whole projection + cross-entropy (native: ChunkedOutputLoss;
PyTorch: full logits and F.cross_entropy), at width 256 on the CPU.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from slimcore.model.gpt import rotary_tables
from slimcore.model.native_ops import NativeOps, cross_entropy_
from slimcore.model.ops import TorchOps


def clock(fn, device, repeats):
    fn()  # warm-up: builds, caches, allocator
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_backward(op, inputs, upstream, differentiate=(0,)):
    """op(*inputs) and the gradients of the inputs at `differentiate` for `upstream`."""
    def run():
        leaves = [t.detach().requires_grad_() if i in differentiate else t
                  for i, t in enumerate(inputs)]
        out = op(*leaves)
        grads = torch.autograd.grad(out, [leaves[i] for i in differentiate], upstream)
        return out.detach(), grads
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true",
                        help="PyTorch side under torch.compile (inductor)")
    args = parser.parse_args()
    reference = compiled_ops() if args.compile else TorchOps
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    rows = 16 * 1024 if gpu else 2 * 1024
    width, hidden, vocab, heads, head_dim = 1536, 4096, 32000, 12, 128
    name = torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu"
    print(f"device {name}, {dtype}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {rows} rows; PyTorch side {'inductor' if args.compile else 'eager'}")
    g = torch.Generator(device=device).manual_seed(0)
    size = torch.tensor([], dtype=dtype).element_size()

    # Cross-entropy forward + backward over given logits (the fused kernel's job).
    logits = torch.randn(rows, vocab, device=device, dtype=dtype, generator=g)
    targets = torch.randint(0, vocab, (rows,), device=device, generator=g)

    # The kernel works in place, as the model calls it: timed on a scratch copy made once
    # (the values it leaves behind cost the same to process); compared on a fresh one.
    scratch = logits.clone()

    def native_ce(work=None):
        work = scratch if work is None else work
        loss, correct = cross_entropy_(work, targets, -100, True)
        return loss.sum(), work

    def torch_ce():
        leaf = logits.detach().float().requires_grad_()
        loss = F.cross_entropy(leaf, targets, reduction="sum")
        (grad,) = torch.autograd.grad(loss, leaf)
        with torch.no_grad():
            (leaf.argmax(-1) == targets).sum()
        return loss, grad
    ce_bytes = rows * vocab * size * 2  # logits read, gradient written (in place)

    def ce_error(_, reference):
        loss, grad = native_ce(logits.clone())
        return max((loss - reference[0]).abs().item() / rows,
                   (grad.float() - reference[1]).abs().max().item())
    report("cross-entropy fwd+bwd", native_ce, torch_ce, ce_bytes, device, args.repeats,
           compare=ce_error)

    x = torch.randn(rows, width, device=device, dtype=torch.float32, generator=g)
    weight = torch.rand(width, device=device, generator=g) + 0.5
    upstream = torch.randn(rows, width, device=device, generator=g)
    report("rms_norm fwd+bwd",
           forward_backward(NativeOps.rms_norm, [x, weight, 1e-5], upstream, (0, 1)),
           forward_backward(reference.rms_norm, [x, weight, 1e-5], upstream, (0, 1)),
           rows * width * 4 * 5, device, args.repeats)

    batch = rows // 1024
    q = torch.randn(batch, heads, 1024, head_dim, device=device, dtype=dtype, generator=g)
    cos, sin = (t.to(device) for t in rotary_tables(1024, head_dim, 10000.0))
    up_q = torch.randn_like(q)
    report("rotary fwd+bwd", forward_backward(NativeOps.rotary, [q, cos, sin], up_q),
           forward_backward(reference.rotary, [q, cos, sin], up_q),
           q.numel() * size * 4, device, args.repeats)

    gate_up = torch.randn(rows, 2 * hidden, device=device, dtype=dtype, generator=g)
    up_s = torch.randn(rows, hidden, device=device, dtype=dtype, generator=g)
    report("swiglu fwd+bwd", forward_backward(NativeOps.swiglu, [gate_up], up_s),
           forward_backward(reference.swiglu, [gate_up], up_s),
           rows * hidden * size * 7, device, args.repeats)

    # The output projection and its loss together (what NativeOps.output_loss replaces).
    loss_width = width if gpu else 256
    hidden_states = torch.randn(rows, loss_width, device=device, dtype=dtype, generator=g)
    out_weight = torch.randn(vocab, loss_width, device=device, dtype=dtype, generator=g) * 0.02

    def loss_only(op):
        return lambda h, w: op(h, w, targets)[0]
    one = torch.tensor(1.0, device=device)
    report("output loss fwd+bwd",
           forward_backward(loss_only(NativeOps.output_loss), [hidden_states, out_weight], one,
                            (0, 1)),
           forward_backward(loss_only(reference.output_loss), [hidden_states, out_weight], one,
                            (0, 1)),
           (rows + vocab) * loss_width * size * 3, device, args.repeats,
           relative=True)


def compiled_ops():
    """TorchOps' functions as inductor compiles them."""
    class Compiled:
        pass
    for op in ("rms_norm", "rotary", "swiglu", "output_loss"):
        setattr(Compiled, op, staticmethod(torch.compile(getattr(TorchOps, op), dynamic=False)))
    return Compiled


def report(label, native_fn, torch_fn, bytes_moved, device, repeats, compare=None,
           relative=False):
    native_s, torch_s = clock(native_fn, device, repeats), clock(torch_fn, device, repeats)
    a, b = native_fn(), torch_fn()
    if compare is None:
        # relative: each tensor's largest difference over its largest magnitude
        error = max((x.float() - y.float()).abs().max().item()
                    / (y.float().abs().max().item() if relative else 1)
                    for x, y in zip([a[0], *a[1]], [b[0], *b[1]]))
    else:
        error = compare(a, b)
    print(f"{label:<24} native {native_s * 1e3:8.2f} ms  torch {torch_s * 1e3:8.2f} ms  "
          f"torch/native {torch_s / native_s:5.2f}x  {bytes_moved / native_s / 1e9:7.1f} GB/s  "
          f"max error {error:.2e}")


if __name__ == "__main__":
    main()
