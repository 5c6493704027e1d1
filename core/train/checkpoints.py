"""When and what the core saves: the Checkpoint record built between steps, every output made
durable before it leaves, and the hand-over to the writer (writer.py), which copies it to
host buffers and has the checkpointer store it on a thread of its own.

    t.writer = checkpoint_writer(run, checkpointer, on_saved)
    save_checkpoint(t)                       every interval, at a signal, at the end
    save_final_checkpoint(t)                 the last step too; returns once all are whole
    finish_save_in_flight(writer, error)     a run ending by an error lets its save finish
"""

from __future__ import annotations

import sys
from typing import Callable

from ..contracts.checkpoint import Checkpoint
from ..contracts.checkpointer import Checkpointer
from ..contracts.run import Run
from .rng import capture_rng
from .state import Training
from .writer import CheckpointWriter


def checkpoint_writer(run: Run, checkpointer: Checkpointer | None,
                      on_saved: Callable[[int], None] | None = None) -> CheckpointWriter:
    """The run's writer: the checkpointer's `save`, in the background unless
    checkpoint.async is false (with no checkpointer, a writer that is never asked); then
    `on_saved(step)` once that step's checkpoint is whole."""
    def save(checkpoint: Checkpoint) -> str:
        path = checkpointer.save(checkpoint, run)
        if on_saved is not None:
            on_saved(checkpoint.step)
        return path

    return CheckpointWriter(save, background=run.config.checkpoint.async_)


def save_checkpoint(t: Training, wait: bool = False) -> str | None:
    """Save through the run's checkpointer; with `wait`, return once it is saved, with its
    path (None on ranks other than 0). Every rank takes part: its data position (and, for a
    sharded model, its shard) is gathered on rank 0, which builds the record and hands it
    over; a sharded checkpointer instead gets each rank's own share on that rank.

    Before the record leaves, every output record up to this step is made durable (the
    core's history, and each observer's through `on_checkpoint`), so a resume from this
    checkpoint never loses a step of what was written."""
    ranks, state = t.ranks, t.state
    if t.history is not None:
        t.history.flush(durable=True)
    t.notify("on_checkpoint", step=state.step)
    data_states = ranks.gather(state.data_state, "gathering data positions for a checkpoint")
    if t.checkpointer.sharded:  # every rank hands over its own share
        model_state, optimizer_state = ranks.shard_state(state.model, state.optimizer)
        t.writer.save(checkpoint_record(t, model_state, optimizer_state, data_states))
        return t.writer.wait() if wait else None
    model_state = ranks.full_model_state(state.model)
    optimizer_state = ranks.full_optimizer_state(state.model, state.optimizer)
    if t.run.is_main_process:
        t.writer.save(checkpoint_record(t, model_state, optimizer_state, data_states))
    ranks.barrier("waiting for rank 0 to write a checkpoint")
    return t.writer.wait() if wait else None


def save_final_checkpoint(t: Training) -> None:
    """The end of a run is saved too, unless its last step was just saved; returns once
    every save is whole on disk."""
    every = t.run.config.intervals.checkpoint
    if t.checkpointer is not None and t.state.step > 0 and t.state.step % every:
        save_checkpoint(t)
    t.writer.wait()


def checkpoint_record(t: Training, model_state: dict, optimizer_state: dict,
                      data_states: list) -> Checkpoint:
    run, state = t.run, t.state
    return Checkpoint(
        step=state.step, tokens_seen=state.tokens_seen, skipped_steps=state.skipped_steps,
        run_id=run.run_id, config=run.config.to_dict(),
        tokenizer_fingerprint=run.tokenizer.fingerprint if run.tokenizer else None,
        tokenizer_model=run.tokenizer.model_proto if run.tokenizer else None,
        model=model_state, optimizer=optimizer_state,
        scheduler=state.scheduler.state_dict(), rng=capture_rng(),
        data_state=None if not data_states or all(d is None for d in data_states) else
        {"world_size": t.ranks.world_size, "ranks": data_states})


def prepare_checkpoint_buffers(t: Training) -> None:
    """Have the writer make its host buffers now, on a thread, for records shaped like this
    one (the local state dicts: no collective; under FSDP the gathered state differs, and
    its first save makes them). A sharded checkpointer's: every rank's share."""
    if t.checkpointer is None:
        return
    if t.checkpointer.sharded:
        t.writer.prepare(checkpoint_record(
            t, *t.ranks.shard_state(t.state.model, t.state.optimizer), [t.state.data_state]))
    elif t.run.is_main_process and t.ranks.strategy != "fsdp":
        t.writer.prepare(checkpoint_record(t, t.state.model.state_dict(),
                                           t.state.optimizer.state_dict(),
                                           [t.state.data_state]))


def finish_save_in_flight(writer: CheckpointWriter, error: BaseException | None,
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
