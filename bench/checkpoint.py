"""Save and load time and bytes of the three-file checkpointer, for the quickstart model and
a width-1,536 model (16 layers, vocabulary 32,000, AdamW state included), on the CPU.

    python bench/checkpoint.py                   # both models
    python bench/checkpoint.py --models quickstart

Beside each figure: a plain `torch.save` / `torch.load(weights_only=True)` of the same
state, the PyTorch peer. Record the figures in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from slimcore import Checkpoint  # noqa: E402
from slimcore.checkpoint import capture_rng  # noqa: E402
from slimcore.config import ModelSection, OptimizerSection, ScheduleSection, parse_config  # noqa: E402
from slimcore.model import GPT  # noqa: E402
from slimcore.ops import TorchOps  # noqa: E402
from slimcore.trainer import build_optimizer, build_scheduler  # noqa: E402
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
    optimizer = build_optimizer(model, OptimizerSection(), torch.device("cpu"))
    for p in model.parameters():  # one step so AdamW holds its moment estimates
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler = build_scheduler(optimizer, ScheduleSection(), 1000)
    config = parse_config({}, {"three_file": ThreeFileConfig}, "bench")
    return model, Checkpoint(
        step=1, tokens_seen=0, skipped_steps=0, run_id="bench", config=config.to_dict(),
        tokenizer_fingerprint="bench", model=model.state_dict(),
        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), rng=capture_rng(),
        data_state=None)


def measure(name: str) -> None:
    model_cfg, vocab = MODELS[name]
    model, checkpoint = training_state(model_cfg, vocab)
    parameters = sum(p.numel() for p in model.parameters())
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as folder:
        base = Path(folder) / "checkpoint_step_1.bin"
        started = time.perf_counter()
        write_checkpoint(base, checkpoint)
        save_s = time.perf_counter() - started
        size = sum(base.with_name(base.name + s).stat().st_size for s in ("", ".embeddings",
                                                                            ".decoder"))
        started = time.perf_counter()
        read_checkpoint(base)
        load_s = time.perf_counter() - started
        for p in Path(folder).iterdir():
            p.unlink()
        peer = Path(folder) / "peer.pt"
        started = time.perf_counter()
        torch.save({"model": checkpoint.model, "optimizer": checkpoint.optimizer}, peer)
        os.sync()  # the three-file save fsyncs; give the peer the same durability
        peer_save_s = time.perf_counter() - started
        peer_size = peer.stat().st_size
        started = time.perf_counter()
        torch.load(peer, weights_only=True)
        peer_load_s = time.perf_counter() - started
    gb = 1e9
    print(f"{name}: {parameters / 1e6:.1f}M parameters | three_file: save {save_s:.2f} s, "
          f"load+verify {load_s:.2f} s, {size / gb:.3f} GB ({size / gb / save_s:.2f} GB/s save) "
          f"| torch.save {peer_save_s:.2f} s, torch.load {peer_load_s:.2f} s, "
          f"{peer_size / gb:.3f} GB | ratio save {save_s / peer_save_s:.2f}x, "
          f"load {load_s / peer_load_s:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models:
        measure(name)


if __name__ == "__main__":
    main()
