"""A run's target: `run.stop_at: "eval_loss <= 4.9"` stops training at the first step whose
metric reaches it (saved, with steps, tokens and time to it said), and `slimcore compare`
shows each run's time to it.

    target = Target.parse("eval_accuracy >= 0.3")      ValueError naming what is wrong
    target.reached(metrics.to_dict())                  a metrics record
    target.first_reached(history)                      the first record that reaches it
    seconds_to(history, record)                        the training time up to a record
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

# The metrics a target may name: what a step measures of the model, not of the machine.
METRICS = ("loss", "eval_loss", "bits_per_byte", "eval_bits_per_byte", "accuracy",
           "eval_accuracy")
FORM = re.compile(r"\s*([A-Za-z_]+)\s*(<=|>=)\s*(\S+)\s*")


@dataclass(frozen=True)
class Target:
    metric: str
    op: str  # "<=" (a loss at most) or ">=" (an accuracy at least)
    value: float

    @classmethod
    def parse(cls, text: str) -> Target:
        found = FORM.fullmatch(text)
        if not found:
            raise ValueError(f"{text[:80]!r} is not METRIC <= VALUE or METRIC >= VALUE "
                             "(eval_loss <= 4.9)")
        metric, op, number = found.groups()
        if metric not in METRICS:
            raise ValueError(f"{metric[:80]!r} is no metric a target can name (one of "
                             f"{', '.join(METRICS)})")
        try:
            value = float(number)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"{number[:80]!r} is not a finite number")
        return cls(metric, op, value)

    def reached(self, record: dict) -> bool:
        measured = record.get(self.metric)
        if not isinstance(measured, (int, float)) or not math.isfinite(measured):
            return False  # not measured at this step (eval_* between evaluations)
        return measured <= self.value if self.op == "<=" else measured >= self.value

    def first_reached(self, history: list[dict]) -> dict | None:
        return next((record for record in history if self.reached(record)), None)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


def seconds_to(history: list[dict], record: dict) -> float:
    """Seconds from the start of the history's first step to the end of `record`'s step, as
    the records' timestamps say (a resumed run's history counts the time between its
    processes too)."""
    first = history[0]
    return record["timestamp"] - first["timestamp"] + first["step_time_s"]
