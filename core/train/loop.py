"""The training loop: one `for` over steps that reads top to bottom in named steps.

    draw              grad_accum_steps micro-batches from the data source, each checked
    forward_backward  every micro-batch, the loss normalised by the whole step's target count
    update            clip, then AdamW unless the loss or gradient norm is not finite
                      (run.nan_policy), then the schedule
    measure           one TrainingMetrics (and a held-out evaluation every eval.interval,
                      the downstream tasks every evals.interval)
    after_step        the history and on_metrics, text samples, a checkpoint, a signal's stop,
                      run.stop_at's target

Under torchrun each rank draws its own batches; loss, accuracy and token counts are those of
the whole job's batch. Plugins hook in at the named points; the loop does not dissolve into
callbacks.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass

import torch

from ..contracts.batch import Batch
from ..contracts.errors import TrainingHalted, UserError
from ..contracts.metrics import TrainingMetrics
from ..contracts.target import Target
from ..evals.suite import flat_scores, timed_scores
from ..model.device import autocast_context
from ..model.sampling import sample_texts
from ..text.token_bytes import bits_per_byte
from .checkpoints import prepare_checkpoint_buffers, save_checkpoint
from .checks import check_batch, check_position, data_shares
from .evaluation import component_losses, evaluate
from .measure import StepTimer, device_peak_flops, flops_per_token, memory_in_use
from .state import Training


@dataclass
class StepTotals:
    """One step, summed over micro-batches and ranks."""

    loss: float
    accuracy: float
    bits_per_byte: float | None  # None: the targets stood for no text
    grad_norm: float
    tokens: int
    stop_votes: float  # ranks a signal asked to stop


def train_loop(t: Training, stop, watchdog, heldout: list[Batch] | None) -> str:
    """Train from `t.state.step` to run.steps; returns the run's end status. `stop` says when
    a signal asked to stop, `watchdog` is told of every finished step, `heldout` are the
    evaluation batches (None: no evaluation)."""
    meter = StepMeter(t)
    t.state.model.train()
    target = Target.parse(t.run.config.run.stop_at) if t.run.config.run.stop_at else None
    began = time.monotonic()
    for step in range(t.state.step + 1, t.run.config.run.steps + 1):
        t.writer.check()  # a background save that failed stops the run here, as a sync one would
        meter.start()
        drawn = draw(t, step)
        if drawn is None:
            print(f"slimcore: the data source ended after {step - 1} steps")
            return "stopped"
        batches, step_targets = drawn
        totals = forward_backward(t, step, batches, step_targets, stop)
        learning_rate = update(t, step, totals)
        metrics = measure(t, step, totals, learning_rate, meter, heldout)
        if after_step(t, step, metrics, totals.stop_votes, stop):
            return "stopped"
        watchdog.beat()
        if target and reached(t, target, metrics, time.monotonic() - began):
            return "completed"  # the end's save follows, as at run.steps
    return "completed"


def draw(t: Training, step: int) -> tuple[list[Batch], float] | None:
    """This step's micro-batches and the whole job's count of targets (the loss is normalised
    by it, so accumulation and ranks add up to one large batch even when micro-batches hold
    different numbers of counted targets); None when a rank's source ran out."""
    cfg, accum = t.run.config, t.run.config.optimizer.grad_accum_steps
    try:
        # range first: zip stops on it without drawing a batch too many
        batches = [b for _, b in zip(range(accum), t.source)]
        for index, batch in enumerate(batches):
            check_batch(batch, t.source_name, cfg, t.run.tokenizer.vocab_size,
                        (step - 1) * accum + index + 1)
    except UserError as e:
        raise halted_by_data(t, e) from None
    short, step_targets = t.ranks.sum([float(len(batches) < accum),
                                       sum(b.target_count for b in batches)],
                                      t.run.device, f"step {step}: counting targets")
    return None if short else (batches, step_targets)


def forward_backward(t: Training, step: int, batches: list[Batch], step_targets: float,
                     stop) -> StepTotals:
    """Gradients of the step's loss, clipped; the step's totals over ranks (a host sync)."""
    device, ranks, cfg = t.run.device, t.ranks, t.run.config
    wrapped, masked = t.state.module, cfg.data.document_mask
    scale = ranks.world_size / step_targets  # DDP and FSDP average gradients over ranks
    loss_sum = torch.zeros((), device=device)
    correct, byte_count = (torch.zeros((), dtype=torch.long, device=device) for _ in range(2))
    for index, batch in enumerate(batches):
        batch = batch.to(device)
        byte_count += t.token_bytes.count(batch)
        with ranks.no_gradient_sync(wrapped, index == len(batches) - 1):
            with ranks.collective(f"step {step}: forward"), autocast_context(device):
                micro_loss, micro_correct, _ = wrapped(batch.inputs, batch.targets,
                                                       batch.documents if masked else None)
            with ranks.collective(f"step {step}: backward"):
                (micro_loss * scale).backward()
        loss_sum += micro_loss.detach()
        correct += micro_correct
    with ranks.collective(f"step {step}: the gradient norm"):
        grad_norm = torch.nn.utils.clip_grad_norm_(t.state.model.parameters(),
                                                   cfg.optimizer.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
    loss_sum, correct, byte_count, tokens, stop_votes = ranks.sum(
        [loss_sum.item(), correct.item(), byte_count.item(), sum(b.inputs.numel() for b in batches),
         float(stop.requested is not None)], device, f"step {step}: summing metrics")
    return StepTotals(loss=loss_sum / step_targets, accuracy=correct / step_targets,
                      bits_per_byte=bits_per_byte(loss_sum, byte_count),
                      grad_norm=grad_norm.item(), tokens=int(tokens), stop_votes=stop_votes)


def update(t: Training, step: int, totals: StepTotals) -> float:
    """The optimizer's step unless the loss or norm is not finite (run.nan_policy: skip
    drops the update, stop saves the last good state and halts); returns the rate used."""
    state = t.state
    learning_rate = state.scheduler.get_last_lr()[0]
    if math.isfinite(totals.loss) and math.isfinite(totals.grad_norm):
        with t.ranks.collective(f"step {step}: the optimizer's step"):  # Muon gathers, FSDP
            state.optimizer.step()
    elif t.run.config.run.nan_policy == "stop":
        path = save_checkpoint(t, wait=True) if t.checkpointer else None
        raise TrainingHalted(
            f"step {step}: loss {totals.loss}, gradient norm {totals.grad_norm}; "
            "run.nan_policy is stop" + (f"; the last good state is saved in {path}" if path
                                        else ""))
    else:  # A NaN or Inf never reaches the optimizer state: its gradients are dropped below.
        state.skipped_steps += 1
        print(f"slimcore: warning: step {step}: loss {totals.loss}, gradient norm "
              f"{totals.grad_norm}; update skipped ({state.skipped_steps} so far)",
              file=sys.stderr)
    state.optimizer.zero_grad(set_to_none=True)
    state.scheduler.step()
    return learning_rate


def measure(t: Training, step: int, totals: StepTotals, learning_rate: float,
            meter: StepMeter, heldout: list[Batch] | None) -> TrainingMetrics:
    """The step's metrics; the state moves on to this step (and the source's position)."""
    step_time = meter.stop()
    state, cfg = t.state, t.run.config
    state.step, state.tokens_seen = step, state.tokens_seen + totals.tokens
    state.data_state = t.source.state_dict()
    if step == t.run.start_step + 1:  # the first position, and the optimizer's shapes
        check_position(state.data_state, t.source_name)
        prepare_checkpoint_buffers(t)
    held_out, per_component = evaluate_held_out(t, step, heldout)
    task_scores = score_tasks(t, step)
    memory, memory_kind = memory_in_use(t.run.device)
    tokens_per_second = totals.tokens / step_time
    return TrainingMetrics(
        step=step, loss=totals.loss, accuracy=totals.accuracy, learning_rate=learning_rate,
        tokens_per_second=tokens_per_second, tokens_seen=state.tokens_seen,
        step_time_s=step_time, grad_norm=totals.grad_norm, memory_bytes=memory,
        memory_kind=memory_kind, mfu=meter.mfu(tokens_per_second), timestamp=time.time(),
        eval_loss=held_out[0], eval_accuracy=held_out[1], bits_per_byte=totals.bits_per_byte,
        eval_bits_per_byte=held_out[2], task_scores=task_scores,
        data_shares=data_shares(t.source, t.source_name),
        eval_component_losses=per_component)


def evaluate_held_out(t: Training, step: int, heldout: list[Batch] | None):
    """At eval.interval steps and the last: (loss, accuracy, bits per byte) of the held-out
    batches, and the loss of each mixture component's ({name: loss}, or None)."""
    cfg = t.run.config
    if not heldout or not (step % cfg.eval.interval == 0 or step == cfg.run.steps):
        return (None, None, None), None

    masked, device = cfg.data.document_mask, t.run.device
    # Every rank evaluates the same batches (a sharded model needs them all).
    with t.ranks.collective(f"step {step}: evaluation"):
        return (evaluate(t.state.module, heldout, device, autocast_context(device),
                         t.token_bytes, document_mask=masked),
                component_losses(t.state.module, t.heldout_components, device, t.token_bytes,
                                 masked))


def score_tasks(t: Training, step: int) -> dict[str, float] | None:
    """The downstream tasks at every evals.interval steps and the last; every rank scores
    its share of the questions (the model replica itself under DDP: no collectives)."""
    cfg = t.run.config
    if t.tasks is None or not (step % cfg.evals.interval == 0 or step == cfg.run.steps):
        return None
    with t.ranks.collective(f"step {step}: downstream tasks"):
        scores, seconds = timed_scores(t.tasks, t.state.model, t.run.tokenizer, t.run.device,
                                       t.ranks)
    flat = flat_scores(scores)
    if t.run.is_main_process:
        print(f"evals: step {step}: " + ", ".join(f"{name} {value:.4f}"
                                                  for name, value in flat.items())
              + f" ({seconds:.1f} s)")
    return flat


def after_step(t: Training, step: int, metrics: TrainingMetrics, stop_votes: float,
               stop) -> bool:
    """Hand the step out (history, on_metrics, samples), save at the interval and at a
    signal; True when the run stops here."""
    cfg = t.run.config
    if t.history is not None:
        t.history.metrics(metrics.to_dict())
    t.notify("on_metrics", metrics=metrics)
    if cfg.samples.prompts and step % cfg.samples.every == 0:
        draw_samples(t, step)
    saved = t.checkpointer is not None and step % cfg.intervals.checkpoint == 0
    if saved:
        save_checkpoint(t)
    if not stop_votes:
        return False
    if t.checkpointer is not None and not saved:
        save_checkpoint(t)
    t.writer.wait()  # the save in flight is whole before the process exits
    t.stop_signal = stop.requested or signal.SIGTERM  # another rank's signal
    return True


def reached(t: Training, target: Target, metrics: TrainingMetrics, elapsed: float) -> bool:
    """run.stop_at's target reached at this step: said on rank 0 (every rank decides alike:
    the metrics are the whole job's)."""
    if not target.reached({target.metric: getattr(metrics, target.metric)}):
        return False
    if t.run.is_main_process:
        print(f"run.stop_at: {target.metric} {getattr(metrics, target.metric):.4f} reached "
              f"{target} at step {metrics.step}, {metrics.tokens_seen:,} tokens, "
              f"{elapsed:.1f} s after this process's first step")
    return True


def draw_samples(t: Training, step: int) -> None:
    """A continuation per prompt: a sharded model generates on every rank together, a
    replica on rank 0 alone."""
    if not (t.run.is_main_process or t.ranks.strategy == "fsdp"):
        return
    cfg = t.run.config
    with t.ranks.collective(f"step {step}: text samples"), t.ranks.unsharded(t.state.model):
        samples = sample_texts(t.state.model, t.run.tokenizer, cfg.samples, step, cfg.run.seed)
    if t.history is not None:
        t.history.samples([sample.to_dict() for sample in samples])
    t.notify("on_text_samples", step=step, samples=samples)


def halted_by_data(t: Training, error: UserError) -> BaseException:
    """The data source gave up (or broke its contract) mid-run: keep what was trained
    (exit 3), unless nothing was."""
    if t.state.step == t.run.start_step:
        return error
    saved = ""
    if t.ranks.active:
        # The other ranks are inside a collective of the next step, not ready for a save.
        saved = f"; rank {t.run.rank} stops the job without a checkpoint (the last one stands)"
    elif t.checkpointer is not None:
        path = save_checkpoint(t, wait=True)
        saved = f"; step {t.state.step} is saved in {path}, resume with --resume auto"
    return TrainingHalted(f"{error}{saved}")


class StepMeter:
    """A step's wall time and its model FLOPs utilisation (where the device's peak is known)."""

    def __init__(self, t: Training):
        cfg = t.run.config.model
        self.timer = StepTimer(t.run.device)
        self.peak = device_peak_flops(t.run.device)
        self.world_size = t.ranks.world_size
        self.flops_per_token = flops_per_token(t.state.model.matmul_parameters(), cfg.layers,
                                               cfg.width, cfg.seq_len)

    def start(self) -> None:
        self.timer.start()

    def stop(self) -> float:
        return self.timer.stop()

    def mfu(self, tokens_per_second: float) -> float | None:
        if not self.peak:
            return None
        return tokens_per_second * self.flops_per_token / (self.peak * self.world_size)
