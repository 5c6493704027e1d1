"""From a resolved config to a finished run: the output folder, the tokenizer, the model,
the data source, the training loop (config.resolve_config makes the config; resume.py puts a
checkpoint back in place).

    execute_run(config, pm)              output folder, tokenizer, model, data, train loop
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from ..contracts.checkpoint import Checkpoint
from ..config.schema import ConfigError, RunConfig
from ..launch.distributed import Distributed
from ..contracts.errors import TrainingHalted
from ..launch.history import RunHistory
from ..model.gpt import GPT, parameter_count
from ..model.ops import select_ops
from ..host.manager import SlimcorePluginManager
from ..launch.resume import load_resume_checkpoint, position_source, restore, settle_resumed_run
from ..contracts.run import Run, resolve_device
from ..launch.folder import RunFolder, new_run_id
from ..launch.signals import GracefulStop
from ..contracts.source import as_data_source
from ..train.state import TrainingState
from ..text.tokenizer import Tokenizer, load_tokenizer, train_or_reuse
from ..train.loop import (build_optimizer, build_scheduler, checkpoint_writer, save_final_checkpoint,
                      train_loop)
from ..launch.watchdog import StallWatchdog

def output_dir_for(config: RunConfig) -> Path:
    return Path(config.output.dir) if config.output.dir else Path("runs") / config.run.name


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_tokenizer(run: Run, saved: Checkpoint | None = None) -> Tokenizer:
    """The run's tokenizer: tokenizer.path's; on resume, the one the checkpoint carries;
    else trained on the corpus (or reused from the cache)."""
    cfg = run.config
    if cfg.tokenizer.path:
        return load_tokenizer(cfg.tokenizer.path)
    if saved is not None and saved.tokenizer_model is not None:
        if run.is_main_process:
            print(f"tokenizer: the one {saved.path} carries")
        return Tokenizer(saved.tokenizer_model, saved.tokenizer_fingerprint)
    texts = run.plugins.hook.corpus_text(source=cfg.data.source, run=run,
                                         max_documents=cfg.tokenizer.train_documents)
    if texts is None:
        raise run.plugins.unknown_selection(cfg.data.source, "data source", "data.source")
    return train_or_reuse(cfg.tokenizer, texts,
                          log=print if run.is_main_process else lambda _: None)


def own_output_folder(run: Run, resume: str | None,
                      overwrite: bool) -> tuple[RunFolder | None, str]:
    """Lock the output folder (rank 0; None on the others) and settle which run it is for:
    a new run never goes into a folder holding another run's outputs, unless `overwrite`
    moves them aside. Sets `run.run_id` on every rank: a new run's id, or for a resume the
    folder's (None in a folder from before run ids). Returns the folder and the id a new run
    takes (the same on every rank)."""
    folder = None

    def claim():
        nonlocal folder
        folder = RunFolder.claim(run.output_dir)
        if resume is None and folder.holds_outputs():
            if not overwrite:
                folder.release()
                raise folder.refuse_to_mix("a new run into it")
            folder.move_aside()
        return (folder.run_id if resume else None), new_run_id()

    run.run_id, fresh_id = run.distributed.from_rank_zero(claim, "claiming the output folder")
    if resume is None:
        run.run_id = fresh_id
    return folder, fresh_id


# fp32 weights, their gradients and AdamW's two moments: the least a training step holds.
TRAINING_BYTES_PER_PARAMETER = 16


def check_model_fits(run: Run) -> None:
    """A model whose weights, gradients and optimizer state alone exceed the device's memory
    is refused before it is built (its allocation would fail with a traceback, or swap)."""
    cfg, device = run.config.model, run.device
    parameters = parameter_count(cfg, run.tokenizer.vocab_size)
    shards = run.world_size if run.config.distributed.strategy == "fsdp" else 1
    needed = parameters * TRAINING_BYTES_PER_PARAMETER / shards
    if device.type == "cuda":
        available = torch.cuda.get_device_properties(device).total_memory
    else:
        available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if needed > available:
        raise ConfigError("model", f"{parameters:,} parameters need {needed / 2**30:,.1f} GiB "
                          f"for weights, gradients and AdamW state, and the {device.type} has "
                          f"{available / 2**30:,.1f} GiB; shrink model.width, model.layers or "
                          "model.mlp_hidden", run.config.source)


def write_run_record(run: Run, folder: RunFolder) -> None:
    """What ran: the run's id, the resolved config and every plugin with its version and
    status."""
    folder.record(run.run_id, run.name)
    run.paths.plugins.write_text(json.dumps(run.plugins.report(), indent=2))
    run.paths.config.write_text(
        yaml.safe_dump(run.config.to_dict(), sort_keys=False))


def write_atomically(path: Path, data: bytes) -> None:
    """`path` holds `data` whole or is left as it was (written aside, then renamed)."""
    aside = path.with_name(path.name + ".tmp")
    aside.write_bytes(data)
    os.replace(aside, path)


def finish_save_in_flight(writer, error: BaseException | None,
                          timeout_s: float | None = None) -> None:
    """A run that ends by an error still lets the save in flight finish (it is a whole
    earlier step); its own failure, if any, is reported under the error that ended the run.
    Ctrl-C does not wait."""
    if not writer.in_flight or isinstance(error, KeyboardInterrupt):
        return
    try:
        writer.wait(timeout_s)
    except BaseException as e:  # noqa: BLE001 - the run's own error is the one raised
        if error is None:
            raise
        print(f"slimcore: warning: the checkpoint being saved when the run ended failed too: "
              f"{e}", file=sys.stderr)


def execute_run(config: RunConfig, pm: SlimcorePluginManager, resume: str | None = None,
                overwrite: bool = False) -> Run:
    """Train as configured; returns the finished Run (`run.status`). Raises UserError for
    bad input, TrainingHalted when a guard stopped training. Under torchrun, every rank
    runs this; rank 0 alone writes outputs and calls the observer hooks. `overwrite` moves
    an earlier run's outputs in the output folder aside instead of refusing to start."""
    device = resolve_device(config.run.device)
    pm.check_selectable(config.data.source, "data source", "data.source")
    if config.checkpoint.checkpointer:
        pm.check_selectable(config.checkpoint.checkpointer, "checkpointer",
                            "checkpoint.checkpointer")
    ranks = Distributed.start(config.distributed, device)
    finished = False
    try:
        run = _execute(config, pm, resume, overwrite, ranks, device)
        finished = True
        return run
    finally:
        ranks.stop(finished)


def _execute(config: RunConfig, pm: SlimcorePluginManager, resume: str | None,
             overwrite: bool, ranks: Distributed, device: torch.device) -> Run:
    if ranks.active and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
    run = Run(config=config, output_dir=output_dir_for(config), device=device, plugins=pm,
              rank=ranks.rank, world_size=ranks.world_size, distributed=ranks)
    pm.observing = run.is_main_process
    folder, fresh_id = own_output_folder(run, resume, overwrite)
    try:
        return _train(run, folder, fresh_id, resume, overwrite)
    finally:
        if folder is not None:
            folder.release()


def _train(run: Run, folder: RunFolder | None, fresh_id: str, resume: str | None,
           overwrite: bool) -> Run:
    config, pm, ranks, device = run.config, run.plugins, run.distributed, run.device
    if run.is_main_process:
        print(pm.header())
    saved = load_resume_checkpoint(run, resume) if resume else None
    settle_resumed_run(run, folder, saved, fresh_id, overwrite)
    if run.is_main_process:
        write_run_record(run, folder)
    seed_everything(config.run.seed)

    with ranks.rank_zero_first("preparing the tokenizer"):  # rank 0 fills the cache
        run.tokenizer = prepare_tokenizer(run, saved)
    if run.is_main_process:
        write_atomically(run.paths.tokenizer, run.tokenizer.model_proto)
    check_model_fits(run)
    model = GPT(config.model, run.tokenizer.vocab_size, select_ops(config.model.backend, device,
                                                                  config.model.compile))
    run.model = model.to(device)
    wrapped = ranks.wrap(model, device)  # FSDP shards in place: before the optimizer
    if config.model.compile:
        wrapped = torch.compile(wrapped)
    optimizer = build_optimizer(model, config.optimizer, device)
    state = TrainingState(step=0, model=model, optimizer=optimizer,
                          scheduler=build_scheduler(optimizer, config.schedule, config.run.steps),
                          tokens_seen=0, wrapped=wrapped)
    if saved:
        restore(run, state, saved)
        del saved  # the weights are in the model now; the copies can go
    batches = pm.hook.iterate_batches(source=config.data.source, run=run)
    if batches is None:
        raise pm.unknown_selection(config.data.source, "data source", "data.source")
    source = as_data_source(batches)

    run.start_step = state.step
    if run.is_main_process:
        run.history = RunHistory.open(run.paths, resumed_at=run.start_step)
    status, error = "failed", None
    writer = checkpoint_writer(run)
    try:
        position_source(source, state, config)
        pm.notify("on_run_start", run=run)

        def stalled(message: str) -> None:  # the process exits (status 3) right after
            # A save in flight is let finish (for as long again as the stall took).
            halted = TrainingHalted(message)
            finish_save_in_flight(writer, halted, config.run.stall_timeout_s)
            pm.notify("on_run_end", run=run, status="failed", error=halted)

        with GracefulStop() as stop, StallWatchdog(config.run.stall_timeout_s, stalled) as dog:
            ended = train_loop(run, state, source, stop, dog, writer)
            if run.stop_signal is None:
                save_final_checkpoint(run, state, writer)  # inside: a signal may come meanwhile
        ranks.check_replicas_agree(model)
        status = run.status = ended  # only now: "completed" means the final save succeeded
        return run
    except KeyboardInterrupt as e:
        status, error = "stopped", e
        raise
    except BaseException as e:
        error = e
        raise
    finally:
        finish_save_in_flight(writer, error)
        source.close()
        pm.notify("on_run_end", run=run, status=status, error=error)
        if run.history is not None:
            run.history.close()
