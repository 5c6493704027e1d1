"""The pieces a run is made of before its first step: its folder's name, its seeds, its
record, its tokenizer, and a model that fits.

    output_dir_for(config)                    runs/<name>, or output.dir
    prepare_tokenizer(run, plugins, saved)    tokenizer.path's, the checkpoint's, or trained
    check_model_fits(run)                     refused before it is built
    write_run_record(run, plugins, folder)    run.json, plugins.json, config.yaml
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
import yaml

from ..config.schema import RunConfig
from ..contracts.checkpoint import Checkpoint
from ..contracts.errors import ConfigError
from ..contracts.run import Run
from ..host.roles import corpus_text
from ..model.gpt import model_vocab, parameter_count
from ..model.hf_folder import HFFolder
from ..storage.atomic import write_atomically
from ..text.tokenizer import Tokenizer, load_tokenizer, stored_tokenizer, train_or_reuse
from .folder import RunFolder

# fp32 weights, their gradients and AdamW's two moments (Muon keeps one for the matrices,
# 12 bytes: its runs are held to AdamW's bound, a third more than their matrices need).
TRAINING_BYTES_PER_PARAMETER = 16


def output_dir_for(config: RunConfig) -> Path:
    return Path(config.output.dir) if config.output.dir else Path("runs") / config.run.name


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_tokenizer(run: Run, plugins, saved: Checkpoint | None = None) -> Tokenizer:
    """The run's tokenizer: tokenizer.path's; on resume, the one the checkpoint carries; the
    model.init_from folder's; else trained on the data source's text (or reused from the
    cache)."""
    cfg = run.config
    if cfg.tokenizer.path:
        return load_tokenizer(cfg.tokenizer.path)
    if cfg.model.init_from and saved is None:
        return HFFolder.open(cfg.model.init_from).tokenizer(log=print if run.is_main_process
                                                            else lambda _: None)
    if saved is not None and saved.tokenizer_model is not None:
        if run.is_main_process:
            print(f"tokenizer: the one {saved.path} carries")
        return stored_tokenizer(saved.tokenizer_model, saved.tokenizer_fingerprint)
    return train_or_reuse(cfg.tokenizer, corpus_text(plugins, cfg, run),
                          log=print if run.is_main_process else lambda _: None)


def check_model_fits(run: Run) -> None:
    """A model whose weights, gradients and optimizer state alone exceed a rank's memory is
    refused before it is built (its allocation would fail with a traceback, or swap). Under
    FSDP a rank holds 1/N of them (the model is built on the meta device and sharded before
    it has storage); on the CPU the ranks of one machine share its memory."""
    cfg, device = run.config.model, run.device
    parameters = parameter_count(cfg, model_vocab(cfg, run.tokenizer))
    shards = run.world_size if run.config.distributed.strategy == "fsdp" else 1
    needed = parameters * TRAINING_BYTES_PER_PARAMETER / shards
    available = rank_memory(device)
    if needed > available:
        share = f" ({shards} ranks' share each)" if shards > 1 else ""
        raise ConfigError("model", f"{parameters:,} parameters need {needed / 2**30:,.2f} GiB "
                          f"for weights, gradients and AdamW state{share}, and a rank has "
                          f"{available / 2**30:,.2f} GiB of {device.type} memory; shrink "
                          "model.width, model.layers or model.mlp_hidden, or shard it over "
                          "more ranks (distributed.strategy: fsdp)", run.config.source)


def rank_memory(device: torch.device) -> float:
    """The memory one rank may use: its GPU's, or its share of the machine's on the CPU.
    SLIMCORE_TEST_MEMORY_BYTES stands in for it in tests (a budget a test can exceed)."""
    if os.environ.get("SLIMCORE_TEST_MEMORY_BYTES"):
        return float(os.environ["SLIMCORE_TEST_MEMORY_BYTES"])
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / local_ranks


def write_run_record(run: Run, plugins, folder: RunFolder) -> None:
    """What ran: the run's id, every plugin with its version and status, and the resolved
    config as it is in force."""
    folder.record(run.run_id, run.name)
    write_atomically(run.paths.plugins, json.dumps(plugins.report(), indent=2))
    write_atomically(run.paths.config, yaml.safe_dump(run.config.to_dict(), sort_keys=False))
