"""From a YAML file to a finished run: resolve the config, prepare the run, train.

    resolve_config(path, overrides, pm)  YAML + --test + flags + --set -> RunConfig
    execute_run(config, pm)              output folder, tokenizer, model, data, train loop
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from .config import ConfigError, RunConfig, apply_override, load_yaml, parse_config
from .distributed import Distributed
from .errors import TrainingHalted, UserError
from .model import GPT, parameter_count
from .ops import select_ops
from .plugins import SlimcorePluginManager
from .run import Run, resolve_device
from .run_folder import RunFolder, new_run_id
from .signals import GracefulStop
from .state import TrainingState
from .tokenizer import Tokenizer, load_tokenizer, train_or_reuse
from .trainer import build_optimizer, build_scheduler, save_final_checkpoint, train_loop
from .watchdog import StallWatchdog

# `--test`: a smoke run that exercises every part in seconds.
SMOKE_OVERRIDES = [
    "run.steps=10", "model.width=64", "model.layers=2", "model.heads=4",
    "model.mlp_hidden=128", "model.seq_len=64", "data.batch_size=4",
    "tokenizer.vocab_size=1000", "tokenizer.train_documents=50", "intervals.viz=5",
    "intervals.log=1", "samples.max_new_tokens=8",
]


# Model settings that change how the model is computed, not what it is: free to differ on resume.
HOW_NOT_WHAT = {"model.backend", "model.activation_checkpointing", "model.compile"}


def declared_sections(pm: SlimcorePluginManager) -> dict[str, type]:
    from .config import CORE_SECTIONS

    sections: dict[str, type] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.declare_config.get_hookimpls():
        for name, cls in (impl.function() or {}).items():
            if name in CORE_SECTIONS or name in sections:
                other = owners.get(name, "slimcore")
                raise UserError(f"plugin '{impl.plugin_name}' declares config section '{name}', "
                                f"which '{other}' already owns; disable one of them")
            sections[name], owners[name] = cls, impl.plugin_name
    return sections


def resolve_config(path: str | Path, overrides: list[str], pm: SlimcorePluginManager,
                   raw: dict | None = None, origins: dict[str, str] | None = None) -> RunConfig:
    """`overrides` are `dotted.key=value` strings applied in order after the YAML.
    `origins` names where an override's key came from (`--steps`, `--test`); the rest are
    `--set`. A bad value is blamed on its origin; a check across keys that an override took
    part in, on the file and the override both."""
    raw = load_yaml(path) if raw is None else raw
    for assignment in overrides:
        apply_override(raw, assignment)
    raw.setdefault("run", {})
    if isinstance(raw["run"], dict) and not raw["run"].get("name"):
        raw["run"]["name"] = Path(path).stem
    origins = dict(origins or {})
    for assignment in overrides:
        origins.setdefault(assignment.partition("=")[0].strip(), "--set")
    ignorable = {i.name for i in pm.infos.values() if i.status != "loaded"}
    try:
        return parse_config(raw, declared_sections(pm), str(path), ignorable)
    except ConfigError as e:
        exact = [o for k, o in origins.items() if e.key == k or e.key.startswith(k + ".")
                 or k.startswith(e.key + ".")]
        section = [o for k, o in origins.items() if k.split(".")[0] == e.key.split(".")[0]]
        if exact:
            raise ConfigError(e.key, e.detail, exact[-1]) from None
        if section:
            raise ConfigError(e.key, e.detail, f"{path} with {section[-1]}") from None
        raise


def output_dir_for(config: RunConfig) -> Path:
    return Path(config.output.dir) if config.output.dir else Path("runs") / config.run.name


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_tokenizer(run: Run) -> Tokenizer:
    cfg = run.config
    if cfg.tokenizer.path:
        return load_tokenizer(cfg.tokenizer.path)
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


def load_resume_checkpoint(run: Run, where: str) -> dict:
    """The checkpoint `--resume` names (`where`: a path or `auto`), read and verified by the
    checkpointer; {} when `auto` finds none of this run."""
    name = run.config.checkpoint.checkpointer
    if not name:
        raise UserError("--resume: checkpoint.checkpointer is null, so there is nothing to "
                        "resume from")
    saved = run.plugins.hook.load_checkpoint(checkpointer=name, run=run, path=where)
    if saved is None:
        raise run.plugins.unknown_selection(name, "checkpointer", "checkpoint.checkpointer")
    if not saved:
        print(f"resume: no checkpoint of this run in {run.output_dir}; starting from step 0")
        return {}
    if saved["step"] >= run.config.run.steps:
        raise UserError(f"--resume: {saved['path']} is at step {saved['step']} and run.steps "
                        f"is {run.config.run.steps}: nothing left to train; raise --steps to "
                        "train on")
    check_config_matches(saved["config"], run.config.to_dict(), saved["path"],
                         warn=run.is_main_process)
    return saved


def settle_resumed_run(run: Run, folder: RunFolder | None, saved: dict, fresh_id: str,
                       overwrite: bool) -> None:
    """The resumed run is the checkpoint's: it keeps its id. Resuming a checkpoint of one
    run into a folder holding another's outputs would mix them (unless `overwrite`)."""
    checkpoint_run = saved.get("run_id") or run.run_id or fresh_id

    def check():
        if folder.holds_outputs() and folder.run_id not in (None, checkpoint_run):
            if not overwrite:
                raise folder.refuse_to_mix(f"resuming {saved['path']} into it")
            folder.move_aside()

    if saved:
        run.distributed.from_rank_zero(check, "checking the output folder")
    run.run_id = checkpoint_run


def restore(run: Run, state: TrainingState, saved: dict) -> None:
    """Put the checkpoint's model, optimizer, schedule, data position and RNG in place."""
    if saved["tokenizer_fingerprint"] != run.tokenizer.fingerprint:
        raise UserError(f"--resume: {saved['path']} was trained with another tokenizer "
                        "(fingerprints differ); resume with the same tokenizer settings")
    try:
        run.distributed.load_full_state(state.model, state.optimizer, saved["model"],
                                        saved["optimizer"])
    except RuntimeError as e:
        raise UserError(f"--resume: {saved['path']} holds a model of another shape "
                        f"({(str(e).splitlines()[1:] or [str(e)])[0].strip()[:300]})") from None
    state.scheduler.load_state_dict(saved["scheduler"])
    state.step, state.tokens_seen = saved["step"], saved["tokens_seen"]
    state.data_state = this_ranks_data_state(run, saved.get("data_state"), saved["path"])
    torch.set_rng_state(saved["rng"]["torch"])
    run.resumed_from = saved["path"]
    print(f"resume: continuing from step {state.step} ({saved['path']})")


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


def this_ranks_data_state(run: Run, saved: dict | None, path: str) -> dict | None:
    """This rank's data position from a checkpoint's {"world_size", "ranks"}; None when the
    world size changed (each rank then skips, in its new share, the batches of the steps
    done: no exact continuation exists for a different split)."""
    if not saved:
        return None
    if saved["world_size"] != run.world_size:
        if run.is_main_process:
            print(f"slimcore: warning: {path} was saved by {saved['world_size']} ranks and "
                  f"this job has {run.world_size}: the data position cannot carry over; each "
                  "rank skips as many batches of its new share as were trained on",
                  file=sys.stderr)
        return None
    return saved["ranks"][run.rank]


def continue_stream(batches, state: TrainingState, config: RunConfig):
    """The data source positioned after the batches `state` has trained on: restored from
    its saved state when it has one, else replayed from the start (sources are
    deterministic, so skipping the batches already trained on continues the stream
    exactly, at the cost of re-reading them)."""
    if not state.step:
        return iter(batches)
    if state.data_state is not None and hasattr(batches, "load_state_dict"):
        batches.load_state_dict(state.data_state)
        return batches
    print(f"resume: the data source has no saved position; replaying {state.step} steps of "
          "data to find it", file=sys.stderr)
    consumed = state.step * config.optimizer.grad_accum_steps
    return itertools.islice(iter(batches), consumed, None)


def check_config_matches(saved: dict, current: dict, path: str, warn: bool = True) -> None:
    """A different model shape cannot resume; any other difference is worth a warning."""
    differences = sorted(
        f"{section}.{key}" for section in set(saved) | set(current)
        for key in set(saved.get(section) or {}) | set(current.get(section) or {})
        if (saved.get(section) or {}).get(key) != (current.get(section) or {}).get(key))
    shape = [d for d in differences if d.startswith("model.") and d not in HOW_NOT_WHAT]
    if shape:
        raise UserError(f"--resume: {path} holds another model shape ({', '.join(shape)} "
                        "differ); resume with the model section it was saved with")
    if differences and warn:
        print(f"slimcore: warning: resuming with config differences from {path}: "
              f"{', '.join(differences)}", file=sys.stderr)


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
    saved = load_resume_checkpoint(run, resume) if resume else {}
    settle_resumed_run(run, folder, saved, fresh_id, overwrite)
    if run.is_main_process:
        write_run_record(run, folder)
    seed_everything(config.run.seed)

    with ranks.rank_zero_first("preparing the tokenizer"):  # rank 0 fills the cache
        run.tokenizer = prepare_tokenizer(run)
    check_model_fits(run)
    model = GPT(config.model, run.tokenizer.vocab_size, select_ops(config.model.backend, device))
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
    source = pm.hook.iterate_batches(source=config.data.source, run=run)
    if source is None:
        raise pm.unknown_selection(config.data.source, "data source", "data.source")
    batches = continue_stream(source, state, config)

    run.start_step = state.step
    status, error = "failed", None
    try:
        pm.notify("on_run_start", run=run)
        def stalled(message: str) -> None:  # the process exits (status 3) right after
            pm.notify("on_run_end", run=run, status="failed", error=TrainingHalted(message))

        with GracefulStop() as stop, StallWatchdog(config.run.stall_timeout_s, stalled) as dog:
            ended = train_loop(run, state, batches, stop, dog)
        if run.stop_signal is None:
            save_final_checkpoint(run, state)
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
        getattr(source, "close", lambda: None)()
        pm.notify("on_run_end", run=run, status=status, error=error)
