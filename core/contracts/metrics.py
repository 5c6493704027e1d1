"""TrainingMetrics: what the core measured at one optimizer step (`on_metrics`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


@dataclass
class TrainingMetrics:
    step: int
    loss: float
    accuracy: float  # next-token top-1 over the step's counted targets
    learning_rate: float
    tokens_per_second: float
    tokens_seen: int
    step_time_s: float
    grad_norm: float
    memory_bytes: int  # CUDA: bytes allocated by tensors; CPU: the process's resident set
    memory_kind: str  # "cuda_allocated" or "cpu_rss"
    mfu: float | None  # model FLOPs utilisation, when the device peak is known
    timestamp: float
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    # The loss in bits per UTF-8 byte of the text the targets stand for (text/token_bytes.py):
    # comparable across tokenizers. None where the targets stood for no text.
    bits_per_byte: float | None = None
    eval_bits_per_byte: float | None = None
    # Downstream tasks scored at this step (`evals`): {"task/metric": value}, e.g.
    # {"arc_easy/acc_norm": 0.41}; None at a step without them.
    task_scores: dict[str, float] | None = None
    # A data source that mixes several components (DataSource.data_shares): each one's
    # share of the tokens drawn so far, {name: share} summing to 1 (rank 0's); None for one
    # that does not.
    data_shares: dict[str, float] | None = None
    # The held-out loss of each component of a mixing source (its validation_components),
    # {name: loss}, at evaluation steps; None elsewhere.
    eval_component_losses: dict[str, float] | None = None

    def to_dict(self) -> dict:
        """Plain values for strict JSON: NaN and Inf become None."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def metric_names() -> list[str]:
    """The fields of TrainingMetrics, in order: what a chart may ask ChartData for."""
    return [f.name for f in fields(TrainingMetrics)]
