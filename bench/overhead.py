"""The cost of slimcore's loop: the full `slimcore run` machinery (plugin manager, metrics,
progress, JSON exporter) against a bare PyTorch loop of the same model on the same batches,
side by side in one process. Target: slimcore within 3% of the bare loop.

    python bench/overhead.py                 # quickstart-sized model on the CPU
    python bench/overhead.py --steps 60 --repeats 3 --device cuda

Prints steps/s of each and their ratio; record the figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import build_config, fixed_batches, optimizer_and_scheduler, time_run
from slimcore.launch.training import seed_everything
from slimcore.model.gpt import GPT
from slimcore.model.ops import TorchOps
from slimcore.model.device import autocast_context


def time_slimcore(args, batches, tokenizer) -> float:
    with tempfile.TemporaryDirectory() as out:
        return time_run(args, batches, tokenizer, Path(out))


def time_bare(args, batches, vocab_size) -> float:
    """What a user would write by hand: the same model, optimizer and schedule."""
    config, _ = build_config(args, Path(tempfile.gettempdir()))
    device = torch.device(args.device)
    seed_everything(config.run.seed)
    model = GPT(config.model, vocab_size, TorchOps).to(device)
    optimizer, scheduler = optimizer_and_scheduler(
        model, {"optimizer": config.to_dict()["optimizer"],
                "schedule": config.to_dict()["schedule"]}, args.steps)
    start = None
    for step, batch in enumerate(batches[: args.steps], start=1):
        batch = batch.to(device)
        with autocast_context(device):
            loss_sum, correct, count = model(batch.inputs, batch.targets)
        (loss_sum / count).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.optimizer.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        loss_sum.item()  # a bare loop still looks at its loss
        if step == args.warmup:
            start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (args.steps - args.warmup) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    config, pm = build_config(args, Path(tempfile.gettempdir()))
    tokenizer, batches = fixed_batches(config, pm, args.steps)
    print(f"model: width {config.model.width}, {config.model.layers} layers, seq "
          f"{config.model.seq_len}, batch {config.data.batch_size}, vocab {tokenizer.vocab_size};"
          f" {args.steps} steps, first {args.warmup} excluded; device {args.device}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    ratios = []
    for repeat in range(args.repeats):
        # Alternate the order so drift (thermal, other load) hits both sides alike.
        order = ("slimcore", "bare") if repeat % 2 == 0 else ("bare", "slimcore")
        rates = {}
        for which in order:
            rates[which] = (time_slimcore(args, batches, tokenizer) if which == "slimcore"
                            else time_bare(args, batches, tokenizer.vocab_size))
        ratios.append(rates["slimcore"] / rates["bare"])
        print(f"repeat {repeat + 1}: slimcore {rates['slimcore']:.3f} steps/s, bare "
              f"{rates['bare']:.3f} steps/s, ratio {ratios[-1]:.3f}", file=sys.stderr)
    print(f"slimcore / bare steps/s: median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f}) over {args.repeats} repeats")


if __name__ == "__main__":
    main()
