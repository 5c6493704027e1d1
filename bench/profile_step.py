"""Where a training step's time goes: one step under torch.profiler, by category and by kernel.
(Not named profile.py: that is the standard library's `profile`, which torch.compile imports
through cProfile, and every script of this folder would import this file in its place.)

    python bench/profile_step.py [--device cuda|cpu] [--variants peer-compile,native-eager,...]
                            [--steps 2] [--top 12]

Variants (bench/throughput.py's models, same weights and batches): `peer-eager`,
`peer-compile` (plain PyTorch), `torch-eager` (slimcore, `model.backend: torch`),
`native-eager`, `native-compile` (slimcore, `model.backend: native`, `model.compile`),
`liger-compile` (where liger_kernel imports). Default: peer-compile, native-eager,
native-compile. Each variant trains 3 warm-up steps (compilation, autotuning, allocator),
then `--steps` profiled steps; figures are per step.

On CUDA every GPU kernel is put in one category by its name (matrix products, attention,
norms, element-wise, cross-entropy, optimizer, copies) and `GPU idle` is the step's wall time
that no kernel covers (launch gaps, host syncs, Python). On the CPU (a dry run of the
script) the categories are the operators' own (self) CPU time and `not in an operator` is
the rest of the wall time. Printed as Markdown tables, ready for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import defaultdict

import torch
from throughput import (build, issue_shape, liger_available, peer_loss, slimcore_loss,
                        training_step)
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from slimcore.model.gpt import GPT
from slimcore.model.ops import TorchOps

# First match wins: fused kernels carry several names (inductor's
# `triton_red_fused_add_mean_mul_pow_rsqrt` is a norm; a fused CE kernel contains `log`).
CATEGORIES = [
    # (CPU only) the autograd engine's, the optimizer's and compiled regions' own bookkeeping
    ("framework", r"^(autograd::|Optimizer\.|torch::autograd|CompiledFunction|Torch-Compiled|"
                  r"TorchDynamo|## |Lazy compilation)"),
    ("cross-entropy", r"cross_entropy|crossentropy|nll_loss|log_softmax|slimcore_ce|liger_cross|"
                      r"fused_linear_cross"),
    ("attention", r"flash|fmha|attention|sdpa|_efficient_attention|cudnn.*(mha|attn)"),
    ("matrix products", r"gemm|gmma|cutlass|xmma|nvjet|cublas|aten::(mm|bmm|addmm|matmul|linear)"
                        r"$|^void (sm90|sm80)_|splitk"),
    ("optimizer", r"adam|multi_tensor|foreach|_fused_adam"),
    ("norms", r"rms|norm|rsqrt"),
    ("copies", r"memcpy|memset|copy_|_to_copy|catarray|cat_|clone|contiguous|transpose|"
               r"aten::(cat|copy_|clone|t|view|reshape|permute|expand)$"),
    ("element-wise", r".*"),
]
COMPILED = [(name, re.compile(pattern, re.I)) for name, pattern in CATEGORIES]


def category(kernel: str) -> str:
    return next(name for name, pattern in COMPILED if pattern.search(kernel))


def one_variant(name: str, cfg, vocab, state, batches, device, steps: int):
    kind, mode = name.split("-")
    model = build(kind, mode == "compile", cfg, vocab, state, device)
    runner = torch.compile(model) if mode == "compile" else model
    loss_of = peer_loss if kind in ("peer", "liger") else slimcore_loss
    step_once = training_step(runner, loss_of, device)

    def step(index):
        step_once(*batches[index % len(batches)])

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for index in range(3):
        step(index)
    synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        for index in range(steps):
            step(index)
        synchronize()
        wall_ms = (time.perf_counter() - started) * 1000 / steps
    return summarize(prof, wall_ms, steps, device)


def summarize(prof, wall_ms: float, steps: int, device):
    """({category: ms per step}, [(kernel, calls, ms per step)], wall ms)."""
    events = prof.events()
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type == DeviceType.CUDA]
        intervals = sorted((e.time_range.start, e.time_range.end) for e in kernels)
        covered, end = 0.0, float("-inf")
        for start, stop in intervals:  # the union of kernel intervals, in microseconds
            if stop > end:
                covered += stop - max(start, end)
                end = stop
        idle_label, idle_ms = "GPU idle", max(0.0, wall_ms - covered / 1000 / steps)
        times = [(e.name, e.time_range.elapsed_us()) for e in kernels]
    else:
        times = [(e.name, e.self_cpu_time_total) for e in events
                 if e.device_type == DeviceType.CPU]
        idle_label = "not in an operator"
        idle_ms = max(0.0, wall_ms - sum(t for _, t in times) / 1000 / steps)
    by_category = defaultdict(float)
    by_kernel = defaultdict(lambda: [0, 0.0])
    for name, micros in times:
        by_category[category(name)] += micros / 1000 / steps
        by_kernel[name][0] += 1
        by_kernel[name][1] += micros / 1000 / steps
    by_category[idle_label] = idle_ms
    top = sorted(((name, calls // steps, ms) for name, (calls, ms) in by_kernel.items()),
                 key=lambda row: -row[2])
    return dict(by_category), top, wall_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", default="peer-compile,native-eager,native-compile")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--small", action="store_true",
                        help="the CPU model on any device (a quick dry run)")
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg, vocab, batch = issue_shape(device, args.small)
    torch.manual_seed(0)
    state = GPT(cfg, vocab, TorchOps).state_dict()
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, vocab, (batch, cfg.seq_len), generator=g).to(device),
                torch.randint(0, vocab, (batch, cfg.seq_len), generator=g).to(device))
               for _ in range(2)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}; width {cfg.width}, {cfg.layers} layers, "
          f"sequence {cfg.seq_len}, batch {batch}, vocabulary {vocab}; {args.steps} profiled "
          f"steps after 3 warm-up steps\n")
    variants = [v for v in args.variants.split(",") if v]
    if any(v.startswith("liger") for v in variants) and not liger_available(device):
        variants = [v for v in variants if not v.startswith("liger")]
    results = {}
    for variant in variants:
        results[variant] = one_variant(variant, cfg, vocab, state, batches, device, args.steps)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        torch._dynamo.reset()

    labels = [label for label, _ in CATEGORIES] + sorted(
        {k for r in results.values() for k in r[0]} - {label for label, _ in CATEGORIES})
    print("| category | " + " | ".join(f"{v} ms" for v in results) + " |")
    print("| --- |" + " --- |" * len(results))
    for label in labels:
        cells = []
        for by_category, _, wall in results.values():
            ms = by_category.get(label, 0.0)
            cells.append(f"{ms:.2f} ({ms / wall:.0%})")
        print(f"| {label} | " + " | ".join(cells) + " |")
    print("| step (wall) | " + " | ".join(f"{wall:.2f}" for _, _, wall in results.values())
          + " |\n")
    for variant, (_, top, wall) in results.items():
        print(f"top kernels, {variant} (ms per step, of {wall:.2f}):\n")
        print("| kernel | category | calls | ms |\n| --- | --- | --- | --- |")
        for kernel, calls, ms in top[:args.top]:
            short = (kernel if len(kernel) <= 90 else kernel[:87] + "...").replace("|", "\\|")
            print(f"| `{short}` | {category(kernel)} | {calls} | {ms:.2f} |")
        print()


if __name__ == "__main__":
    main()
