"""Resuming a run: the checkpoint `--resume` names, the output folder it goes into, and the
record put back in place (model, optimizer, schedule, counters, data position, RNG).

    saved, reader = load_resume_checkpoint(run, checkpointer, "auto", plugins)  verified
    settle_resumed_run(run, ranks, folder, saved, ...)          the run keeps its id
    restore(run, ranks, state, saved, reader)        after the model and optimizer exist
    position_source(source, state, config)           the data stream where it stopped
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import sys
from pathlib import Path

from ..config.moves import move_old_keys
from ..config.schema import CORE_SECTIONS, RunConfig, yaml_key
from ..contracts.checkpoint import Checkpoint
from ..contracts.checkpointer import Checkpointer
from ..contracts.errors import ConfigError, UserError, bounded_repr
from ..contracts.paths import RunPaths
from ..contracts.run import Run
from ..contracts.source import DataSource
from ..train.distributed import Distributed
from ..train.rng import restore_rng
from ..train.state import TrainingState
from .changes import config_changes, keep_checkpoint_values, say_changes
from .folder import RunFolder, recorded_checkpointer, run_folder_of

def load_resume_checkpoint(run: Run, checkpointer: Checkpointer | None, where: str,
                           plugins, source_class: type | None = None
                           ) -> tuple[Checkpoint | None, Checkpointer | None]:
    """The checkpoint `--resume` names (`where`: a checkpoint, a run folder or `auto`), read
    and verified, and the checkpointer that read it: the config's, or the one that saved
    the run folder's earlier sets (its config.yaml names it) when they differ; None when
    `auto` finds none of this run. Each config key that differs gets its fate (changes.py),
    said in one warning; the kept ones take the checkpoint's values in `run.config`."""
    saved, reader = find_checkpoint(run, checkpointer, where, plugins)
    if not saved:
        return None, None
    if saved.step >= run.config.run.steps:
        raise UserError(f"--resume: {saved.path} is at step {saved.step} and run.steps is "
                        f"{run.config.run.steps}: nothing left to train; raise --steps to "
                        "train on")
    recorded = in_new_form(saved.config, run.config)
    keep_the_schedule(run, recorded)
    changes = config_changes(recorded, run.config, saved.path, source_class)
    keep_checkpoint_values(run.config, changes)
    if run.is_main_process:
        say_changes(changes, saved.path)
        if reader is not checkpointer:
            print(f"resume: {saved.path} was saved by checkpointer {reader.name!r}; this run "
                  f"saves with {checkpointer.name!r} from here")
    return saved, reader


def find_checkpoint(run: Run, checkpointer: Checkpointer | None, where: str,
                    plugins) -> tuple[Checkpoint | None, Checkpointer]:
    """The checkpoint and its reader: each reader (the config's checkpointer first) tried
    in turn; the first reader's error when none reads it."""
    if checkpointer is None:
        raise UserError("--resume: checkpoint.checkpointer is null, so there is nothing to "
                        "resume from")
    folder = run.output_dir if where == "auto" else run_folder_of(Path(where))
    first_error = None
    for reader in (checkpointer, *earlier_checkpointer(folder, checkpointer, plugins)):
        try:
            saved = read_checkpoint(run, reader, where)
        except UserError as e:
            first_error = first_error or e
            continue
        if saved:
            return saved, reader
    if first_error is not None:
        raise first_error
    if where != "auto":
        raise UserError(f"--resume: {where} is a folder holding no intact checkpoint of "
                        f"checkpointer {checkpointer.name!r}; give a run folder that has "
                        "one, a checkpoint file, or auto")
    return None, checkpointer


def read_checkpoint(run: Run, reader: Checkpointer, where: str) -> Checkpoint | None:
    if where == "auto":
        return reader.newest(run.output_dir, run.run_id)
    if is_run_folder(Path(where), reader):  # as the model commands take: its newest
        return reader.newest(Path(where), None)
    return reader.load(where)


def earlier_checkpointer(folder: Path, checkpointer: Checkpointer, plugins) -> list:
    """The checkpointer the run in `folder` last saved with, when it is another installed
    one than the config's: a run may change checkpointers at a resume (three_file to
    sharded as it grows onto more ranks)."""
    name = recorded_checkpointer(RunPaths(folder))
    if not name or name == checkpointer.name:
        return []
    try:
        return [plugins.lookup("checkpointer", name)]
    except UserError:
        return []


def is_run_folder(path: Path, checkpointer: Checkpointer) -> bool:
    """Whether `path` names a run folder (its newest checkpoint is meant) rather than a
    checkpoint: a sharded checkpointer's checkpoint is a folder too, one without run.json."""
    return path.is_dir() and (not checkpointer.sharded or RunPaths(path).record.is_file())


def keep_the_schedule(run: Run, recorded: dict) -> None:
    """A resumed run with another run.steps keeps the learning-rate curve it was on (its decay
    ends where the checkpoint's run planned it to) unless schedule.total_steps re-plans it;
    the horizon in force goes into the config, so config.yaml and later checkpoints say it."""
    schedule, steps = run.config.schedule, run.config.run.steps
    planned = (recorded.get("schedule") or {}).get("total_steps") or \
        (recorded.get("run") or {}).get("steps")
    if schedule.total_steps is not None or not isinstance(planned, int) or planned == steps:
        return
    schedule.total_steps = planned
    if run.is_main_process:
        floor = run.config.optimizer.lr * schedule.min_lr_ratio
        after = f"then stays at its floor ({floor:.1e})" if planned < steps else \
            "and ends there"
        print(f"resume: run.steps is {steps} and the checkpoint's run planned its learning "
              f"rate to step {planned}: the rate keeps that curve (its {schedule.kind} decay "
              f"ends at step {planned}, {after}); to re-plan it, set schedule.total_steps "
              "(or schedule.kind: wsd with a later total_steps, to decay later)")


def settle_resumed_run(run: Run, ranks: Distributed, folder: RunFolder | None,
                       saved: Checkpoint | None, fresh_id: str, overwrite: bool) -> None:
    """The resumed run is the checkpoint's: it keeps its id. Resuming a checkpoint of one
    run into a folder holding another's outputs would mix them, and `--resume auto` finding
    no intact checkpoint of a run here that saved one (all damaged) would start it again
    over its outputs: both are refused unless `overwrite`, which moves the old outputs
    aside. A run killed before its first save starts again from step 0."""
    checkpoint_run = (saved.run_id if saved else None) or run.run_id or fresh_id

    def check():
        if not folder.holds_outputs():
            return
        if saved is None and not folder.saved_a_checkpoint():
            return  # killed before its first save: step 0 again loses nothing
        if saved is None or folder.run_id not in (None, checkpoint_run):
            if not overwrite:
                raise folder.refuse_to_restart() if saved is None else \
                    folder.refuse_to_mix(f"resuming {saved.path} into it")
            folder.move_aside()

    ranks.from_rank_zero(check, "checking the output folder")
    if saved is None:
        run.run_id = fresh_id if overwrite else run.run_id or fresh_id
        if run.is_main_process:
            print(f"resume: no checkpoint of this run in {run.output_dir}; starting from "
                  "step 0")
        return
    run.run_id = checkpoint_run


def restore(run: Run, ranks: Distributed, state: TrainingState, saved: Checkpoint,
            checkpointer: Checkpointer) -> None:
    """Put all of the record in place: model, optimizer, schedule, counters, this rank's
    data position and every random state. `checkpointer` is the one that read `saved`."""
    if saved.tokenizer_fingerprint != run.tokenizer.fingerprint:
        raise UserError(f"--resume: {saved.path} was trained with another tokenizer "
                        "(fingerprints differ); resume with the same tokenizer settings")
    in_force = optimizer_settings(state)
    try:
        if checkpointer.sharded:  # each rank reads its own share, whoever saved it
            ranks.load_shards(state.model, state.optimizer,
                              lambda shares: checkpointer.read_shards(saved, shares),
                              saved.optimizer["param_groups"])
        else:
            ranks.load_full_state(state.model, state.optimizer, saved.model, saved.optimizer)
    except RuntimeError as e:
        raise UserError(f"--resume: {saved.path} holds a model of another shape "
                        f"({(str(e).splitlines()[1:] or [str(e)])[0].strip()[:300]})") from None
    except UNRESTORABLE as e:
        raise damaged_record(saved.path, e) from None
    try:
        state.scheduler.load_state_dict(saved.scheduler)
        apply_optimizer_settings(state, in_force)
        follow_the_plan(state)
        state.step, state.tokens_seen = saved.step, saved.tokens_seen
        state.skipped_steps = saved.skipped_steps
        state.data_state = this_ranks_data_state(run, saved.data_state, saved.path)
        restore_rng(saved.rng)
    except UNRESTORABLE as e:
        raise damaged_record(saved.path, e) from None
    run.resumed_from = saved.path
    print(f"resume: continuing from step {state.step} ({saved.path})")


# What restoring a record that verified but holds values of the wrong kind raises (a crafted
# checkpoint whose digests were recomputed, or one of a release that stored another form).
UNRESTORABLE = (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError,
                OverflowError)


def damaged_record(path: str, error: BaseException) -> UserError:
    return UserError(f"--resume: {path} holds a record that cannot be restored "
                     f"({type(error).__name__}: {bounded_repr(str(error))}); give another "
                     "checkpoint")


def optimizer_settings(state: TrainingState) -> tuple[list[dict], list[float]]:
    """What the freshly built optimizer holds from the config in force: each group's
    settings but the rate (the schedule's), and each group's peak rate."""
    settings = [{key: value for key, value in group.items()
                 if key not in ("params", "lr", "initial_lr")}
                for group in state.optimizer.param_groups]
    return settings, list(state.scheduler.base_lrs)


def apply_optimizer_settings(state: TrainingState, in_force: tuple[list[dict], list[float]]):
    """The config's settings, not the checkpoint's, into the restored optimizer: its state
    carries the rates, betas, eps and weight decay it was saved with (a changed optimizer.lr
    was ignored while config.yaml said otherwise)."""
    settings, peaks = in_force
    state.scheduler.base_lrs = list(peaks)
    for group, fresh, peak in zip(state.optimizer.param_groups, settings, peaks):
        group.update(fresh)
        group["initial_lr"] = peak


def follow_the_plan(state: TrainingState) -> None:
    """The optimizer's rate from this run's schedule at the restored step: the checkpoint
    holds the rate its own plan gave, which a re-planned schedule (schedule.total_steps
    changed) would otherwise use for one more step."""
    scheduler = state.scheduler
    rates = [base * factor(scheduler.last_epoch)
             for base, factor in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, rate in zip(state.optimizer.param_groups, rates):
        group["lr"] = rate
    scheduler._last_lr = rates  # what get_last_lr() reports: the rate of the next step


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


def position_source(source: DataSource, state: TrainingState, config: RunConfig) -> None:
    """Put the data source after the batches `state` has trained on: from its saved position
    when it has one, else by replaying (sources are deterministic, so skipping the batches
    already trained on continues the stream exactly, at the cost of re-reading them). The
    source itself is what the run goes on with, so the next checkpoint stores its position
    again whichever way it was found."""
    if not state.step:
        return
    if state.data_state is not None and source.resumable:
        source.load_state_dict(state.data_state)
        return
    print(f"resume: the data source has no saved position for this job; replaying "
          f"{state.step} steps of data to find it", file=sys.stderr)
    source.skip(state.step * config.optimizer.grad_accum_steps)


def in_new_form(recorded: dict, config: RunConfig) -> dict:
    """A checkpoint's recorded config with keys of an older layout in their new places."""
    recorded = copy.deepcopy(recorded)
    sections = {**CORE_SECTIONS, **{name: type(section) for name, section
                                    in config.plugin_sections.items()}}
    with contextlib.suppress(ConfigError):  # a key nothing took over: left for the diff
        move_old_keys(recorded, sections, "", warn_user=False)
    if isinstance(recorded.get("optimizer"), dict):  # saved before optimizers had names
        recorded["optimizer"].setdefault("name", "adamw")
    for name, section in CORE_SECTIONS.items():  # keys added since: their defaults then
        if isinstance(recorded.setdefault(name, {}), dict):
            defaults = section()
            for field in dataclasses.fields(section):
                recorded[name].setdefault(yaml_key(field), getattr(defaults, field.name))
    return recorded


