"""From a resolved config to a finished run, in stages named for what they do:

    run_training(config, plugins)     check the selections, join the job's ranks (torchrun)
      train_in_folder                 own the output folder for the run (rank 0 locks it)
        prepare                       the checkpoint to resume, the run's record, tokenizer,
                                      model and optimizer (restored), the data source
        train_to_the_end              on_run_start, the loop under the signal handler and the
                                      stall watchdog, the final save; on_run_end always

Under torchrun every rank runs the same stages; rank 0 alone writes outputs and calls the
observer hooks, and what it decides (the run id, a refusal) reaches every rank.
"""

from __future__ import annotations

import contextlib
import socket

import torch

from ..config.schema import RunConfig
from ..contracts.errors import TrainingHalted, UserError
from ..contracts.run import Run
from ..host.roles import checkpointer as selected_checkpointer
from ..host.in_run import run_header, switch_off_idle
from ..evals.suite import TaskSuite
from ..host.registry import CHECKPOINTER, DATA_SOURCE
from ..host.roles import (build_optimizer, build_scheduler, open_source, validation_batches,
                          validation_components)
from ..model.device import resolve_device
from ..model.gpt import GPT, model_vocab
from ..model.hf_folder import HFFolder
from ..model.hf_weights import load_llama_weights
from ..model.ops import select_ops
from ..storage.atomic import write_atomically
from ..storage.cache import use as use_cache_dir
from ..text.token_bytes import TokenBytes
from ..train.checkpoints import checkpoint_writer, finish_save_in_flight, save_final_checkpoint
from ..train.distributed import Distributed
from ..train.history import RunHistory
from ..train.loop import train_loop
from ..train.state import Training, TrainingState
from .folder import RunFolder, new_run_id
from .preparation import (check_model_fits, output_dir_for, prepare_tokenizer, seed_everything,
                          write_run_record)
from .resume import load_resume_checkpoint, position_source, restore, settle_resumed_run
from .signals import GracefulStop
from .watchdog import StallWatchdog


def run_training(config: RunConfig, plugins, resume: str | None = None,
                 overwrite: bool = False) -> Training:
    """Train as configured; returns the finished Training (`t.run.status`, `t.stop_signal`).
    Raises UserError for bad input, TrainingHalted when a guard stopped training. `overwrite`
    moves an earlier run's outputs in the output folder aside instead of refusing to start."""
    device = resolve_device(config.run.device)
    for role, name in (("data source", config.data.source), ("optimizer", config.optimizer.name),
                       ("schedule", config.schedule.kind)):
        plugins.lookup(role, name)  # a bad choice costs seconds, not a run
    if config.model.init_from:  # the folder's shape, checked before any work
        HFFolder.open(config.model.init_from).apply_shape(config)
    checkpointer = selected_checkpointer(plugins, config)
    switch_off_idle(plugins, config.plugin_sections)  # `enabled: false`: no hooks called
    use_cache_dir(config.tokenizer.cache_dir)  # every cache of this process: native builds too
    ranks = Distributed.start(config.distributed, device)
    finished = False
    try:
        t = train_in_folder(config, plugins, checkpointer, ranks, device, resume, overwrite)
        finished = True
        return t
    finally:
        ranks.stop(finished)
        use_cache_dir(None)


def train_in_folder(config: RunConfig, plugins, checkpointer, ranks: Distributed,
                    device: torch.device, resume: str | None, overwrite: bool) -> Training:
    if ranks.active and device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
    run = Run(config=config, output_dir=output_dir_for(config), device=device,
              rank=ranks.rank, world_size=ranks.world_size)
    plugins.observing = run.is_main_process
    if checkpointer is not None and checkpointer.sharded:
        run.checkpoint_group = ranks.checkpoint_group()
    folder, fresh_id, holder = claim_output_folder(run, ranks, resume, overwrite)
    try:
        check_the_folder_is_shared(run, ranks, holder)
        t = prepare(run, plugins, checkpointer, ranks, folder, (fresh_id, resume, overwrite))
        train_to_the_end(t)
        return t
    finally:
        if folder is not None:
            folder.release()


def claim_output_folder(run: Run, ranks: Distributed, resume: str | None,
                        overwrite: bool) -> tuple[RunFolder | None, str, str]:
    """Lock the output folder (rank 0; None on the others) and settle which run it is for:
    a new run never goes into a folder holding another run's outputs, unless `overwrite`
    moves them aside. Sets `run.run_id` on every rank: a new run's id, or for a resume the
    folder's. Returns the folder, the id a new run takes and what the lock file says (the
    same on every rank)."""
    folder = None

    def claim():
        nonlocal folder
        folder = RunFolder.claim(run.output_dir)
        if resume is None and folder.holds_outputs():
            if not overwrite:
                folder.release()
                raise folder.refuse_to_mix("a new run into it")
            folder.move_aside()
        return (folder.run_id if resume else None), new_run_id(), folder.holder

    run.run_id, fresh_id, holder = ranks.from_rank_zero(claim, "claiming the output folder")
    if resume is None:
        run.run_id = fresh_id
    return folder, fresh_id, holder


def check_the_folder_is_shared(run: Run, ranks: Distributed, holder: str) -> None:
    """Every rank sees the folder rank 0 locked, or every rank stops with one line: ranks on
    nodes that do not share it would each resume from a folder of their own."""
    if not ranks.active:
        return
    views = ranks.gather((RunFolder.locked_by(run.output_dir, holder), socket.gethostname(),
                          str(run.output_dir)), "checking that the output folder is shared")

    def check():
        blind = [f"rank {rank} on {host} ({path})"
                 for rank, (sees, host, path) in enumerate(views) if not sees]
        if blind:
            raise UserError(f"output.dir: {', '.join(blind[:4])} cannot see the output "
                            f"folder rank 0 locked ({run.output_dir} on "
                            f"{socket.gethostname()}); every node must reach the same folder "
                            "(a shared filesystem), or each would save and resume its own")

    ranks.from_rank_zero(check, "checking that the output folder is shared")


def prepare(run: Run, plugins, checkpointer, ranks: Distributed, folder: RunFolder | None,
            start: tuple[str, str | None, bool]) -> Training:
    """Everything up to the first step; `start` is (a new run's id, --resume, --overwrite)."""
    fresh_id, resume, overwrite = start
    tasks = TaskSuite.of(run.config.evals)  # task files read and checked before any work
    if run.is_main_process:
        print(run_header(plugins, {DATA_SOURCE: run.config.data.source,
                                   CHECKPOINTER: run.config.checkpoint.checkpointer}))
    saved = reader = None
    if resume:
        saved, reader = load_resume_checkpoint(
            run, checkpointer, resume, plugins,
            plugins.lookup("data source", run.config.data.source))
        settle_resumed_run(run, ranks, folder, saved, fresh_id, overwrite)
    if run.is_main_process:
        write_run_record(run, plugins, folder)
    seed_everything(run.config.run.seed)
    with ranks.rank_zero_first("preparing the tokenizer"):  # rank 0 fills the cache
        run.tokenizer = prepare_tokenizer(run, plugins, saved)
    if run.is_main_process:
        write_atomically(run.paths.tokenizer, run.tokenizer.model_proto)
    check_model_fits(run)
    on_saved = folder.note_saved if folder is not None else None  # run.json says the step
    import_from = run.config.model.init_from if not saved else None
    t = Training(run=run, state=build_state(run, plugins, ranks, import_from), plugins=plugins,
                 ranks=ranks,
                 writer=checkpoint_writer(run, checkpointer, on_saved), checkpointer=checkpointer,
                 source_name=run.config.data.source,
                 token_bytes=TokenBytes(run.tokenizer, run.device), tasks=tasks)
    if saved:
        restore(run, ranks, t.state, saved, reader)
        del saved  # the weights are in the model now; the copies can go
    elif import_from and run.is_main_process:
        print(f"model: the weights of {import_from}")
    run.charts = plugins.charts()
    t.source = open_source(plugins, run)
    run.start_step = t.state.step
    if run.is_main_process:
        t.history = RunHistory.open(run.paths, resumed_at=run.start_step)
        run.prior_metrics, run.prior_samples = t.history.prior_metrics, t.history.prior_samples
    return t


def build_state(run: Run, plugins, ranks: Distributed, import_from: str | None = None
                ) -> TrainingState:
    """The model on its device (sharded under FSDP before the optimizer sees it), compiled if
    asked, with its optimizer and schedule. Under FSDP, and with `import_from` (a Hugging
    Face folder), the model is made on the meta device, sharded, then given storage and its
    weights (initialization.py, or the folder's): each rank holds only its shard, never the
    whole model."""
    config = run.config
    sharded = ranks.active and ranks.strategy == "fsdp"
    with torch.device("meta") if import_from or sharded else contextlib.nullcontext():
        model = GPT(config.model, model_vocab(config.model, run.tokenizer),
                    select_ops(config.model.backend, run.device, config.model.compile))
    if sharded:
        wrapped = ranks.wrap(model, run.device)  # FSDP shards the meta parameters in place
        materialize_from(model, run.device, import_from)
    elif import_from:
        materialize_from(model, run.device, import_from)
        wrapped = ranks.wrap(model, run.device)  # DDP starts from rank 0's (equal) weights
    else:
        model.to(run.device)
        wrapped = ranks.wrap(model, run.device)
    run.model = model
    if config.model.compile:
        wrapped = torch.compile(wrapped)
    optimizer = build_optimizer(plugins, run, model)
    return TrainingState(step=0, model=model, optimizer=optimizer, tokens_seen=0,
                         scheduler=build_scheduler(plugins, run, optimizer), wrapped=wrapped)


def materialize_from(model: GPT, device: torch.device, folder: str | None) -> None:
    """A model made on the meta device given storage on `device` and its starting weights:
    the Hugging Face `folder`'s, or its own (None)."""
    model.materialize(device, weights=folder is None)
    if folder is not None:
        load_llama_weights(model, folder)


def train_to_the_end(t: Training) -> None:
    """Train from where the state stands to run.steps (or a stop), and save the end; the
    observers hear of the start and, whatever happens, of the end."""
    config, status, error = t.run.config, "failed", None
    try:
        position_source(t.source, t.state, config)
        heldout = validation_batches(t.plugins, config, t.run.tokenizer, config.eval.batches,
                                     "eval.interval", t.run) if config.eval.interval else None
        if heldout:
            t.heldout_components = validation_components(t.plugins, config, t.run.tokenizer,
                                                         config.eval.batches)
        t.notify("on_run_start")
        with GracefulStop() as stop, StallWatchdog(config.run.stall_timeout_s,
                                                   stalled_run(t)) as dog:
            ended = train_loop(t, stop, dog, heldout)
            if t.stop_signal is None:
                save_final_checkpoint(t)  # inside: a signal may come meanwhile
        t.ranks.check_replicas_agree(t.state.model)
        status = t.run.status = ended  # only now: "completed" means the final save succeeded
    except KeyboardInterrupt as e:
        status, error = "stopped", e
        raise
    except BaseException as e:
        error = e
        raise
    finally:
        finish_save_in_flight(t.writer, error)
        t.source.close()
        t.notify("on_run_end", status=status, error=error)
        if t.history is not None:
            t.history.close()


def stalled_run(t: Training):
    """What the watchdog does before the process exits (status 3): let a save in flight
    finish (for as long again as the stall took), then tell the observers."""
    def stalled(message: str) -> None:
        halted = TrainingHalted(message)
        finish_save_in_flight(t.writer, halted, t.run.config.run.stall_timeout_s)
        t.notify("on_run_end", status="failed", error=halted)

    return stalled
