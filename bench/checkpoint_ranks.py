"""Checkpoints of a model sharded over N ranks (FSDP, gloo, CPU): per rank, how long training
is blocked per save, how long the save takes in all, and how much memory the save adds at
its peak. Run by bench/checkpoint.py --ranks 2 4 (or alone, below); record the figures in
bench/RESULTS.md.

    BENCH_DIR=/work python bench/checkpoint_ranks.py --ranks 2 4 --models quickstart width768

Each rank process times, on the same model and optimizer state, one after the other:
- slimcore's `sharded` checkpointer behind the background writer (each rank copies its own
  share to host buffers, then writes it on the checkpoint thread);
- three_file as a sharded run used it before (the whole model and optimizer gathered to
  rank 0, which copies and writes them);
- torch.distributed.checkpoint's own `async_save` of the same shares (the peer).
Before each timed save the disk's writeback of the last one is let finish (`os.sync`, 3 s).
Each kind runs in a job of fresh processes of its own; its memory figure is the rank's peak
resident set over its saves less the resident set before the first: what checkpointing adds
to the rank (buffers included). glibc's mmap threshold is fixed (MALLOC_MMAP_THRESHOLD_), or
freed heap memory stays resident and the figure follows the allocator, not the live bytes.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))
from common import optimizer_and_scheduler  # noqa: E402
from slimcore import Checkpoint  # noqa: E402
from slimcore.config.schema import ModelSection  # noqa: E402
from slimcore.model.gpt import GPT  # noqa: E402
from slimcore.model.ops import TorchOps  # noqa: E402
from slimcore.testing import make_run  # noqa: E402
from slimcore.train.distributed import Distributed  # noqa: E402
from slimcore.train.rng import capture_rng  # noqa: E402
from slimcore.train.writer import CheckpointWriter  # noqa: E402
from slimcore_checkpointers.sharded import Sharded  # noqa: E402
from slimcore_checkpointers.three_file import write_checkpoint  # noqa: E402

MODELS = {
    "quickstart": (ModelSection(width=192, layers=4, heads=4, mlp_hidden=512, seq_len=128), 4096),
    "width768": (ModelSection(width=768, layers=12, heads=12, mlp_hidden=3072, seq_len=512),
                 32000),
}
PAGE = os.sysconf("SC_PAGE_SIZE")
SETTLE_S = 3.0


def resident() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def sharded_state(model_cfg: ModelSection, vocab: int, ranks: Distributed):
    """This rank's share of a model after one AdamW step (FSDP2, built on meta)."""
    with torch.device("meta"):
        model = GPT(model_cfg, vocab, TorchOps)
    ranks.wrap(model, torch.device("cpu"))
    model.materialize(torch.device("cpu"), weights=True)
    optimizer, scheduler = optimizer_and_scheduler(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer, scheduler


def record(step, model_state, optimizer_state, scheduler, config) -> Checkpoint:
    return Checkpoint(step=step, tokens_seen=0, skipped_steps=0, run_id="bench",
                      config=config, tokenizer_fingerprint="bench", model=model_state,
                      optimizer=optimizer_state, scheduler=scheduler.state_dict(),
                      rng=capture_rng(), data_state=None)


def rank_main(rank: int, world: int, store: str, folder: str, name: str, kind: str,
              rounds: int, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world)
    ranks = Distributed(rank, world, rank, "fsdp", 600.0)
    model, optimizer, scheduler = sharded_state(*MODELS[name], ranks)
    run = make_run({"checkpoint": {"checkpointer": "sharded"}}, output_dir=folder,
                   rank=rank, world_size=world)
    run.checkpoint_group = ranks.checkpoint_group()
    config = run.config.to_dict()
    if kind == "sharded":
        writer = CheckpointWriter(lambda c: Sharded().save(c, run), background=True)
        save = lambda step: writer.save(record(  # noqa: E731
            step, *ranks.shard_state(model, optimizer), scheduler, config))
    elif kind == "three_file":
        writer = CheckpointWriter(
            lambda c: write_checkpoint(Path(folder) / f"whole_{c.step}.bin", c), True)
        save = lambda step: gather_and_save(  # noqa: E731
            ranks, model, optimizer, scheduler, config, step, writer)
    else:
        writer = None
        save = lambda step: dcp_async(  # noqa: E731
            ranks, model, optimizer, Path(folder) / f"dcp_{step}", run)
    before = resident()
    figures = [timed_save(lambda: save(step), writer, ranks) for step in range(1, rounds + 1)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results[rank] = {"times": figures, "added": peak - before}
    dist.destroy_process_group()


def timed_save(start, writer, ranks: Distributed) -> tuple[float, float]:
    """(blocked s, total s) of one save, the ranks in step, after the last save's
    writeback has finished (as between two checkpoints of a run: a save timed while the
    kernel still flushes the one before measures the disk's backlog)."""
    os.sync()
    time.sleep(SETTLE_S)
    ranks.barrier("bench")
    started = time.perf_counter()
    pending = start()
    blocked = time.perf_counter() - started
    if writer is not None:
        writer.wait()
    else:
        pending.result()
    total = time.perf_counter() - started
    ranks.barrier("bench")
    return blocked, total


def gather_and_save(ranks, model, optimizer, scheduler, config, step, writer) -> None:
    """What a sharded run's save cost before: the whole state gathered on rank 0."""
    ranks.gather(None, "bench")  # as the core gathers the ranks' data positions
    model_state = ranks.full_model_state(model)
    optimizer_state = ranks.full_optimizer_state(model, optimizer)
    if ranks.rank == 0:
        writer.save(record(step, model_state, optimizer_state, scheduler, config))


def dcp_async(ranks, model, optimizer, folder: Path, run):
    import torch.distributed.checkpoint as dcp

    model_state, optimizer_state = ranks.shard_state(model, optimizer)
    return dcp.async_save({"model": model_state, "optimizer": optimizer_state},
                          checkpoint_id=str(folder), process_group=run.checkpoint_group)


KINDS = ("sharded", "three_file", "dcp")


def measure(name: str, world: int, rounds: int) -> None:
    """A job of `world` fresh rank processes per kind of save, so each kind's memory is its
    own."""
    results = {}
    for kind in KINDS:
        with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as folder:
            shared = mp.Manager().dict()
            mp.spawn(rank_main, nprocs=world, args=(
                world, str(Path(folder) / "store"), folder, name, kind, rounds, shared))
            results[kind] = dict(shared)
    report(name, world, results)


def report(name: str, world: int, results: dict) -> None:
    def later(values):
        return statistics.median(values[1:]) if len(values) > 1 else values[0]

    print(f"{name} on {world} ranks (round 1, then the median of the later rounds):")
    for kind in KINDS:
        for rank in range(world):
            blocked, total = zip(*results[kind][rank]["times"])
            print(f"  {kind:10} rank {rank}: blocked {blocked[0]:.3f} s, {later(blocked):.3f} s;"
                  f" total {total[0]:.3f} s, {later(total):.3f} s; peak memory added "
                  f"{results[kind][rank]['added'] / 2**20:,.0f} MiB")
    for rank in range(world):
        figure = {kind: results[kind][rank] for kind in KINDS}
        blocked = {k: later([t[0] for t in f["times"]]) for k, f in figure.items()}
        total = {k: later([t[1] for t in f["times"]]) for k, f in figure.items()}
        print(f"  rank {rank} ratios (later rounds): sharded/dcp blocked "
              f"{blocked['sharded'] / blocked['dcp']:.2f}x, total "
              f"{total['sharded'] / total['dcp']:.2f}x; sharded/three_file blocked "
              f"{blocked['sharded'] / blocked['three_file']:.2f}x, peak memory added "
              f"{figure['sharded']['added'] / max(figure['three_file']['added'], 1):.2f}x")


def main(argv=None) -> None:
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")  # read by the rank processes
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--models", nargs="+", default=["quickstart"], choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.models:
        for world in args.ranks:
            measure(name, world, args.rounds)


if __name__ == "__main__":
    main()
