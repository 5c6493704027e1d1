"""A run's downstream tasks (the `evals` section), read and checked once before the first
step, scored on the live model every `evals.interval` steps:

    evals:
      tasks: [tasks/capitals.jsonl, harness:arc_easy]
      interval: 1000

An entry is a JSON-lines multiple-choice file (choice_tasks.py; named by its file's stem) or
`harness:NAME`, a task of lm-evaluation-harness (harness.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from ..config.schema import EvalsSection
from ..contracts.errors import UserError
from ..train.distributed import Distributed
from .choice_tasks import Question, read_questions, score_questions
from .scoring import LikelihoodScorer

HARNESS = "harness:"


class TaskSuite:
    def __init__(self, section: EvalsSection, key: str = "evals.tasks"):
        self.section = section
        self.questions: dict[str, list[Question]] = {}
        self.harness_names: list[str] = []
        self.manager = None
        for entry in section.tasks:
            name = entry[len(HARNESS):] if entry.startswith(HARNESS) else Path(entry).stem
            if name in self.questions or name in self.harness_names or not name:
                raise UserError(f"{key}: '{entry}' names the task '{name}' again (or none); "
                                "give each task once, task files under different names")
            if entry.startswith(HARNESS):
                self.harness_names.append(name)
            else:
                self.questions[name] = read_questions(Path(entry), section.limit, key)
        if self.harness_names:
            self._check_harness(key)

    def _check_harness(self, key: str) -> None:
        from .harness import check_task_names, require_harness, task_manager

        require_harness(key)
        folder = self.section.harness_dir
        if folder is not None and not Path(folder).is_dir():
            raise UserError(f"evals.harness_dir: {folder} is not a folder (of harness task "
                            "YAMLs)")
        self.manager = task_manager(folder)
        check_task_names(self.manager, self.harness_names, key)

    @classmethod
    def of(cls, section: EvalsSection) -> "TaskSuite | None":
        """The section's tasks; None when it names none."""
        return cls(section) if section.tasks else None

    def score(self, model: torch.nn.Module, tokenizer, device: torch.device,
              ranks: Distributed | None = None) -> dict[str, dict[str, float]]:
        """{task: {metric: value}} for every task, in the order configured."""
        scorer = LikelihoodScorer(model, tokenizer, device, ranks, self.section.batch_size)
        scores = {name: score_questions(scorer, questions)
                  for name, questions in self.questions.items()}
        if self.harness_names:
            from .harness import evaluate_harness_tasks

            scores.update(evaluate_harness_tasks(scorer, self.harness_names, self.manager,
                                                 self.section.limit))
        return scores


def flat_scores(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"task/metric": value}, as the history and trackers take them (chance left out: it
    is the task's, not the model's)."""
    return {f"{task}/{metric}": value for task, metrics in scores.items()
            for metric, value in metrics.items() if metric != "chance"}


def timed_scores(suite: TaskSuite, model, tokenizer, device, ranks) -> tuple[dict, float]:
    began = time.monotonic()
    scores = suite.score(model, tokenizer, device, ranks)
    return scores, time.monotonic() - began
