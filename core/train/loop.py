"""The training loop: one `for` over steps that anyone can read top to bottom.

Each step: take `grad_accum_steps` micro-batches, forward and backward each with the loss
normalised by the token count of the whole step, clip, AdamW, schedule, then hand a
`TrainingMetrics` to the plugins. Plugins hook in at named points (on_metrics,
on_text_samples, save_checkpoint); the loop does not dissolve into callbacks.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import time

import torch

from ..contracts.checkpoint import Checkpoint, capture_rng
from ..train.writer import CheckpointWriter
from ..config.schema import OptimizerSection, RunConfig, ScheduleSection
from ..contracts.errors import TrainingHalted, UserError
from ..train.evaluation import evaluate, validation_batches
from ..contracts.metrics import (StepTimer, TrainingMetrics, device_peak_flops, flops_per_token,
                      memory_in_use)
from ..contracts.run import Run
from ..model.sampling import sample_texts
from ..launch.signals import GracefulStop
from ..contracts.source import DataSource
from ..train.state import TrainingState
from ..launch.watchdog import StallWatchdog


def build_optimizer(model: torch.nn.Module, cfg: OptimizerSection, device: torch.device):
    # Weight decay on matrices only: decaying norm gains pulls them toward zero for nothing.
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             fused=device.type == "cuda")


def build_scheduler(optimizer, cfg: ScheduleSection, run_steps: int):
    """Linear warmup over `warmup_steps`, then `cfg.kind` up to `cfg.total_steps` (default
    `run_steps`); the rate then stays at the floor. The curve depends on the config only, so
    a resumed run follows it from where it stopped."""
    factor = lr_factor(cfg, run_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lr_factor(cfg: ScheduleSection, run_steps: int):
    """step (0-based, the scheduler's count) -> the learning rate's share of `lr`."""
    total = cfg.total_steps or run_steps
    warmup = max(0, min(cfg.warmup_steps, total - 1))
    decay_steps = max(1, total - warmup)
    floor = cfg.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / decay_steps)
        if cfg.kind == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if cfg.kind == "linear":
            return 1 - (1 - floor) * progress
        if cfg.kind == "wsd":
            stable = 1 - cfg.wsd_decay_fraction  # share of the steps at the full rate
            if progress < stable or cfg.wsd_decay_fraction == 0:
                return 1.0 if progress < 1 else floor
            return 1 - (1 - floor) * (progress - stable) / cfg.wsd_decay_fraction
        return 1.0  # constant

    return factor


def autocast_context(device: torch.device):
    # bf16 autocast on CUDA: matrix products in bf16 on tensor cores, reductions in fp32.
    # The CPU trains in fp32: CPU bf16 matmuls are slower than fp32 on most hosts.
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_loop(run: Run, state: TrainingState, batches: DataSource, stop: GracefulStop,
               watchdog: StallWatchdog, writer: CheckpointWriter) -> str:
    """Train from `state.step` to `run.config.run.steps`; returns the run's end status.
    `batches` is the data source (core/source.py); its position is taken after every step.
    `stop` says when a signal asked to stop; `watchdog` is told of every finished step;
    `writer` saves checkpoints (in the background, unless checkpoint.async is false). Under
    torchrun each rank draws its own batches; loss, accuracy and token counts are those of
    the whole job's batch."""
    cfg: RunConfig = run.config
    model, optimizer, scheduler = state.model, state.optimizer, state.scheduler
    wrapped = model if state.wrapped is None else state.wrapped
    ranks = run.distributed
    device = run.device
    timer = StepTimer(device)
    peak = device_peak_flops(device)
    flops_token = flops_per_token(model.matmul_parameters(), cfg.model.layers, cfg.model.width,
                                  cfg.model.seq_len)
    accum = cfg.optimizer.grad_accum_steps
    sample_interval = cfg.intervals.viz * cfg.intervals.sample_every
    heldout = validation_batches(run) if cfg.eval.interval else None
    model.train()

    for step in range(state.step + 1, cfg.run.steps + 1):
        writer.check()  # a background save that failed stops the run here, as a sync one would
        timer.start()
        try:
            # range first: zip stops on it without drawing a batch too many
            micro_batches = [b for _, b in zip(range(accum), batches)]
        except UserError as e:
            raise halted_by_data(run, state, e, writer) from None
        # Every rank learns whether any ran out, and the whole job's count of targets: the
        # loss is normalised by it, so accumulation and ranks add up to one large batch
        # even when micro-batches hold different numbers of counted targets.
        local_targets = sum(b.target_count for b in micro_batches)
        short, step_targets = ranks.sum([float(len(micro_batches) < accum), local_targets],
                                        device, f"step {step}: counting targets")
        if short:
            print(f"slimcore: the data source ended after {step - 1} steps")
            return "stopped"
        # DDP and FSDP average gradients over ranks; the world size turns that into a sum.
        scale = ranks.world_size / step_targets
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        for index, batch in enumerate(micro_batches):
            batch = batch.to(device)
            with ranks.no_gradient_sync(wrapped, index == len(micro_batches) - 1):
                with autocast_context(device):
                    micro_loss, micro_correct, _ = wrapped(batch.inputs, batch.targets)
                with ranks.collective(f"step {step}: backward"):
                    (micro_loss * scale).backward()
            loss_sum += micro_loss.detach()
            correct += micro_correct
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optimizer.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        tokens = sum(b.inputs.numel() for b in micro_batches)
        # host syncs: loss, accuracy, tokens, whether a rank was asked to stop, the norm
        loss_sum, correct, tokens, stop_votes = ranks.sum(
            [loss_sum.item(), correct.item(), tokens, float(stop.requested is not None)],
            device, f"step {step}: summing metrics")
        loss = loss_sum / step_targets
        grad_norm = grad_norm.item()
        learning_rate = scheduler.get_last_lr()[0]
        if math.isfinite(loss) and math.isfinite(grad_norm):
            optimizer.step()
        else:
            # A NaN or Inf never reaches the optimizer state: its gradients are dropped below.
            if cfg.run.nan_policy == "stop":
                path = save_checkpoint(run, state, writer, wait=True) \
                    if cfg.checkpoint.checkpointer else None
                raise TrainingHalted(
                    f"step {step}: loss {loss}, gradient norm {grad_norm}; run.nan_policy is "
                    f"stop" + (f"; the last good state is saved in {path}" if path else ""))
            state.skipped_steps += 1
            print(f"slimcore: warning: step {step}: loss {loss}, gradient norm {grad_norm}; "
                  f"update skipped ({state.skipped_steps} so far)", file=sys.stderr)
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        step_time = timer.stop()

        tokens = int(tokens)
        state.step = step
        state.tokens_seen += tokens
        state.data_state = batches.state_dict()
        if step == run.start_step + 1:  # the optimizer state exists now: its shapes are known
            prepare_checkpoint_buffers(run, state, writer)
        memory, memory_kind = memory_in_use(device)
        tokens_per_second = tokens / step_time
        eval_loss = eval_accuracy = None
        if heldout and (step % cfg.eval.interval == 0 or step == cfg.run.steps):
            # Every rank evaluates the same batches (a sharded model needs them all).
            eval_loss, eval_accuracy = evaluate(wrapped, heldout, device,
                                                autocast_context(device))
        metrics = TrainingMetrics(
            step=step,
            loss=loss,
            accuracy=correct / step_targets,
            learning_rate=learning_rate,
            tokens_per_second=tokens_per_second,
            tokens_seen=state.tokens_seen,
            step_time_s=step_time,
            grad_norm=grad_norm,
            memory_bytes=memory,
            memory_kind=memory_kind,
            mfu=tokens_per_second * flops_token / (peak * ranks.world_size) if peak else None,
            timestamp=time.time(),
            eval_loss=eval_loss,
            eval_accuracy=eval_accuracy,
        )
        if run.history is not None:
            run.history.metrics(metrics.to_dict())
        run.plugins.notify("on_metrics", run=run, metrics=metrics)
        if cfg.samples.prompts and step % sample_interval == 0:
            # A sharded model generates on every rank together; a replica on rank 0 alone.
            if run.is_main_process or ranks.strategy == "fsdp":
                with ranks.unsharded(model):
                    samples = sample_texts(model, run.tokenizer, cfg.samples, step,
                                           cfg.run.seed)
                if run.history is not None:
                    run.history.samples([sample.to_dict() for sample in samples])
                run.plugins.notify("on_text_samples", run=run, step=step, samples=samples)
        saved = cfg.checkpoint.checkpointer and step % cfg.intervals.checkpoint == 0
        if saved:
            save_checkpoint(run, state, writer)
        watchdog.beat()
        if stop_votes:
            if cfg.checkpoint.checkpointer and not saved:
                save_checkpoint(run, state, writer)
            writer.wait()  # the save in flight is whole before the process exits
            run.stop_signal = stop.requested or signal.SIGTERM  # another rank's signal
            return "stopped"
    return "completed"


def halted_by_data(run: Run, state: TrainingState, error: UserError,
                   writer: CheckpointWriter) -> BaseException:
    """The data source gave up mid-run: keep what was trained (exit 3), unless nothing was."""
    if state.step == run.start_step:
        return error
    saved = ""
    if run.distributed.active:
        # The other ranks are inside a collective of the next step, not ready for a save.
        saved = f"; rank {run.rank} stops the job without a checkpoint (the last one stands)"
    elif run.config.checkpoint.checkpointer:
        path = save_checkpoint(run, state, writer, wait=True)
        saved = f"; step {state.step} is saved in {path}, resume " \
                "with --resume auto"
    return TrainingHalted(f"{error}{saved}")


def save_final_checkpoint(run: Run, state: TrainingState, writer: CheckpointWriter) -> None:
    """The end of a run is saved too, unless its last step was just saved; returns once
    every save is whole on disk."""
    cfg = run.config
    if cfg.checkpoint.checkpointer and state.step > 0 and state.step % cfg.intervals.checkpoint:
        save_checkpoint(run, state, writer)
    writer.wait()


def save_checkpoint(run: Run, state: TrainingState, writer: CheckpointWriter,
                    wait: bool = False) -> str | None:
    """Save through the checkpointer the YAML names, by way of `writer`; with `wait`, return
    once it is saved, with its path (None on ranks other than 0). Every rank takes part: its
    data position (and, for a sharded model, its shard) is gathered on rank 0, which builds
    the record and hands it over.

    Before the record leaves, every output record up to this step is made durable (the
    core's history, and each observer's through `on_checkpoint`), so a resume from this
    checkpoint never loses a step of what was written."""
    ranks = run.distributed
    if run.history is not None:
        run.history.flush(durable=True)
    run.plugins.notify("on_checkpoint", run=run, step=state.step)
    data_states = ranks.gather(state.data_state, "gathering data positions for a checkpoint")
    model_state = ranks.full_model_state(state.model)
    optimizer_state = ranks.full_optimizer_state(state.model, state.optimizer)
    if run.is_main_process:
        writer.save(checkpoint_record(run, state, model_state, optimizer_state, data_states))
    ranks.barrier("waiting for rank 0 to write a checkpoint")
    return writer.wait() if wait else None


def checkpoint_record(run: Run, state: TrainingState, model_state: dict, optimizer_state: dict,
                      data_states: list) -> Checkpoint:
    ranks = run.distributed
    return Checkpoint(
        step=state.step, tokens_seen=state.tokens_seen, skipped_steps=state.skipped_steps,
        run_id=run.run_id, config=run.config.to_dict(),
        tokenizer_fingerprint=run.tokenizer.fingerprint if run.tokenizer else None,
        tokenizer_model=run.tokenizer.model_proto if run.tokenizer else None,
        model=model_state, optimizer=optimizer_state,
        scheduler=state.scheduler.state_dict(), rng=capture_rng(),
        data_state=None if all(d is None for d in data_states) else
        {"world_size": ranks.world_size, "ranks": data_states})


def prepare_checkpoint_buffers(run: Run, state: TrainingState, writer: CheckpointWriter) -> None:
    """Have the writer make its host buffers now, on a thread, for records shaped like this
    one (the local state dicts: no collective; under FSDP the gathered state differs, and
    its first save makes them)."""
    if run.config.checkpoint.checkpointer and run.is_main_process and \
            run.distributed.strategy != "fsdp":
        writer.prepare(checkpoint_record(run, state, state.model.state_dict(),
                                         state.optimizer.state_dict(), [state.data_state]))


def checkpoint_writer(run: Run) -> CheckpointWriter:
    """The run's writer: the checkpointer's hook, in the background unless checkpoint.async
    is false."""
    name = run.config.checkpoint.checkpointer

    def save(checkpoint: Checkpoint) -> str:
        path = run.plugins.hook.save_checkpoint(checkpointer=name, run=run,
                                                checkpoint=checkpoint)
        if path is None:
            raise UserError(f"checkpoint.checkpointer: no plugin saves checkpoints as "
                            f"'{name}' (see `slimcore plugins`)")
        return path

    return CheckpointWriter(save, background=run.config.checkpoint.async_)
