"""Checkpoint cost for the quickstart model and a width-1,536 model (16 layers, vocabulary
32,000, AdamW state included), on the CPU: how long training is blocked per save, how long a
save takes in all, its bytes, and load with full verification.

    BENCH_DIR=/work python bench/checkpoint.py               # both models
    python bench/checkpoint.py --models quickstart
    python bench/checkpoint.py --ranks 2 4                    # sharded, bench/checkpoint_ranks.py

In the same process, beside slimcore's background save (core/train/writer.py handing a
snapshot to three_file): a plain copy of the same state into host memory (the least any
background save must block for), `torch.save` + `os.sync` and `torch.load(weights_only=True)`
(the PyTorch peer), and torch.distributed.checkpoint's `async_save` (blocked until its
staging copy is taken; total until its future is done). Each save is timed twice: the
first saves into fresh memory (slimcore's buffers are made beforehand on a thread, as the
training loop has them made after its first step), the later ones reuse it. Record the
figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from slimcore import Checkpoint  # noqa: E402
from slimcore.train.rng import capture_rng  # noqa: E402
from slimcore.train.writer import CheckpointWriter  # noqa: E402
from slimcore.config.schema import ModelSection  # noqa: E402
from slimcore.config.parse import parse_config  # noqa: E402
from slimcore.model.gpt import GPT  # noqa: E402
from slimcore.model.ops import TorchOps  # noqa: E402
from common import optimizer_and_scheduler  # noqa: E402
from slimcore_checkpointers.three_file import ThreeFileConfig, read_checkpoint, write_checkpoint  # noqa: E402

MODELS = {
    "quickstart": (ModelSection(width=192, layers=4, heads=4, mlp_hidden=512, seq_len=128), 4096),
    "width1536": (ModelSection(width=1536, layers=16, heads=12, mlp_hidden=4096, seq_len=1024),
                  32000),
}


def training_state(model_cfg: ModelSection, vocab: int) -> tuple[torch.nn.Module, Checkpoint]:
    """A model after one AdamW step, and the record the core would build for it."""
    torch.manual_seed(0)
    model = GPT(model_cfg, vocab, TorchOps)
    optimizer, scheduler = optimizer_and_scheduler(model)
    for p in model.parameters():  # one step so AdamW holds its moment estimates
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    config = parse_config({}, {"three_file": ThreeFileConfig}, "bench")
    return model, Checkpoint(
        step=1, tokens_seen=0, skipped_steps=0, run_id="bench", config=config.to_dict(),
        tokenizer_fingerprint="bench", model=model.state_dict(),
        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=capture_rng(),
        data_state=None)


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


SETTLE_S = 5.0


def settle() -> None:
    """Let the kernel finish the last save's writeback, as it has between two checkpoints
    of a run (thousands of steps apart): a copy timed while it still runs measures the
    kernel, not the copy."""
    os.sync()
    time.sleep(SETTLE_S)


def drop_page_cache() -> bool:
    """Cold reads for the load figures (a resume after a restart reads from the disk);
    needs root. False where it cannot be done: the reads are then warm, alike for both."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def measure(name: str, rounds: int) -> None:
    model_cfg, vocab = MODELS[name]
    model, checkpoint = training_state(model_cfg, vocab)
    parameters = sum(p.numel() for p in model.parameters())
    tensors, _ = checkpoint.split()  # the live state's tensors, no copies
    state_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
    gb = 1e9

    # The floor: a copy of the same tensors into host memory (fresh, then reused buffers).
    copies = {k: torch.empty_like(v) for k, v in tensors.items()}

    def copy_all():
        for k, v in tensors.items():
            copies[k].copy_(v)

    plain = []
    for _ in range(rounds):
        settle()
        plain.append(timed(copy_all))
    copies.clear()

    # Each figure is taken `rounds` times: round 1 is a first save (for the plain copy
    # and DCP, into fresh memory); the median of the later rounds is what later saves cost.
    # slimcore and torch.save take turns, so that the disk's moods fall on both alike; at
    # most two copies of the state are in memory at any time (24 GB machines).
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as folder:
        folder = Path(folder)

        def save(record):
            return write_checkpoint(folder / f"checkpoint_step_{record.step}.bin", record)

        writer = CheckpointWriter(save, background=True)
        # As the training loop does after its first step: the host buffers made and paged
        # in on a thread, off the training thread, long before the first save.
        started = time.perf_counter()
        writer.prepare(checkpoint)
        writer.preparing.join()
        prepare_s = time.perf_counter() - started
        blocked, total, peer_save = [], [], []
        peer = folder / "peer.pt"
        base = folder / "checkpoint_step_1.bin"
        for round_ in range(rounds):
            for p in folder.iterdir():
                p.unlink()
            checkpoint.step = 1
            settle()
            started = time.perf_counter()
            writer.save(checkpoint)
            blocked.append(time.perf_counter() - started)
            writer.wait()
            total.append(time.perf_counter() - started)
            # the three-file save fsyncs; give the peer the same durability
            peer_save.append(timed(lambda: (torch.save(tensors, peer), os.sync())))
        del writer  # its host buffers
        size = sum(base.with_name(base.name + s).stat().st_size
                   for s in ("", ".embeddings", ".decoder"))
        peer_size = peer.stat().st_size

        load, peer_load, cold = [], [], True
        for round_ in range(rounds):  # in turns, each first every other round
            first, second = (load, peer_load) if round_ % 2 == 0 else (peer_load, load)
            for times in (first, second):
                cold = drop_page_cache() and cold
                times.append(timed(lambda: read_checkpoint(base)) if times is load else
                             timed(lambda: torch.load(peer, weights_only=True)))
        for p in folder.iterdir():
            p.unlink()
        sync_s = timed(lambda: write_checkpoint(base, checkpoint))
        for p in folder.iterdir():
            p.unlink()

        dcp_blocked, dcp_total = [], []
        for round_ in range(rounds):
            dcp_times = dcp_async_save(tensors, folder / f"dcp-{round_}")
            dcp_blocked.append(dcp_times[0])
            dcp_total.append(dcp_times[1])
            shutil.rmtree(folder / f"dcp-{round_}")

    def later(values):
        return statistics.median(values[1:]) if len(values) > 1 else values[0]

    print(f"{name}: {parameters / 1e6:.1f}M parameters, state {state_bytes / gb:.3f} GB, "
          f"set {size / gb:.3f} GB, torch.save {peer_size / gb:.3f} GB; round 1, then the "
          f"median of rounds 2-{rounds}")
    print(f"  plain copy to host memory: {plain[0]:.2f} s, {later(plain):.2f} s")
    print(f"  slimcore host buffers made on a thread after step 1: {prepare_s:.2f} s")
    print(f"  slimcore background save: blocked {blocked[0]:.2f} s, {later(blocked):.2f} s; "
          f"total {total[0]:.2f} s, {later(total):.2f} s")
    print(f"  torch.save+sync: {peer_save[0]:.2f} s, {later(peer_save):.2f} s")
    print(f"  dcp.async_save: blocked {dcp_blocked[0]:.2f} s, {later(dcp_blocked):.2f} s; "
          f"total {dcp_total[0]:.2f} s, {later(dcp_total):.2f} s")
    print(f"  load+verify ({'cold' if cold else 'warm'} page cache): {load[0]:.2f} s, {later(load):.2f} s; torch.load: {peer_load[0]:.2f} "
          f"s, {later(peer_load):.2f} s; slimcore synchronous save {sync_s:.2f} s")
    print(f"  ratios (later rounds): blocked / plain copy {later(blocked) / later(plain):.2f}x, "
          f"blocked / dcp blocked {later(blocked) / later(dcp_blocked):.2f}x, total / "
          f"torch.save {later(total) / later(peer_save):.2f}x, total / dcp total "
          f"{later(total) / later(dcp_total):.2f}x; load / torch.load "
          f"{later(load) / later(peer_load):.2f}x")


def dcp_async_save(tensors: dict, folder: Path) -> tuple[float, float]:
    """torch.distributed.checkpoint.async_save of the same tensors into `folder` (in a
    one-process gloo group, as a one-GPU torchtitan run has): (blocked, total) seconds."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    if not dist.is_initialized():
        store = tempfile.mktemp(prefix="slimcore-bench-store-")
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    started = time.perf_counter()
    future = dcp.async_save(tensors, checkpoint_id=str(folder))
    blocked = time.perf_counter() - started
    future.result()
    os.sync()  # DCP fsyncs its files itself; this puts it on the footing of torch.save
    return blocked, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ranks", nargs="+", type=int,
                        help="instead: the sharded checkpointer on a model sharded over each "
                             "of these numbers of ranks (bench/checkpoint_ranks.py)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.ranks:
        import checkpoint_ranks

        checkpoint_ranks.main(["--ranks", *map(str, args.ranks), "--rounds", str(args.rounds)])
        return
    for name in args.models:
        measure(name, args.rounds)


if __name__ == "__main__":
    main()
