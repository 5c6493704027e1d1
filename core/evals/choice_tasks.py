"""The built-in multiple-choice scorer: a JSON-lines task file, one question a line,

    {"context": "The capital of France is", "choices": ["Paris", "Rome"], "answer": 0}

scored as lm-evaluation-harness scores a `multiple_choice` task: each choice is the
continuation " " + choice of the context, its log-likelihood summed over its tokens; `acc`
takes the most likely choice, `acc_norm` the most likely per character of the choice. A
tie is shared: a question whose top choices tie counts 1/k for each of the k tied, so
choices the model cannot tell apart score chance exactly (the harness counts the first).

Also taken: the fields `query` or `question` for `context`, `endings` for `choices`,
`gold` or `label` for `answer`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..contracts.errors import UserError
from .scoring import LikelihoodScorer

FIELDS = {"context": ("context", "query", "question"), "choices": ("choices", "endings"),
          "answer": ("answer", "gold", "label")}
DELIMITER = " "  # between a context and a choice, the harness's target_delimiter


@dataclass(frozen=True)
class Question:
    context: str
    choices: tuple[str, ...]
    answer: int


def read_questions(path: Path, limit: int, key: str = "evals.tasks") -> list[Question]:
    """The first `limit` questions of a task file (0: all), each checked; a bad one is one
    line naming the file, the line and the field."""
    questions = []
    try:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if limit and len(questions) == limit:
                    break
                if line.strip():
                    questions.append(_question(line, f"{path}:{number}", key))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{key}: cannot read task file {path} ({e}); give a JSON-lines file "
                        "of {\"context\", \"choices\", \"answer\"} questions") from None
    if not questions:
        raise UserError(f"{key}: task file {path} holds no questions")
    return questions


def _question(line: str, where: str, key: str) -> Question:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as e:  # ValueError: bad JSON, or a 5,000-digit number
        raise UserError(f"{key}: {where} is not JSON ({str(e)[:80]})") from None
    if not isinstance(record, dict):
        raise UserError(f"{key}: {where} is not a JSON object")
    found = {}
    for field, names in FIELDS.items():
        name = next((n for n in names if n in record), None)
        if name is None:
            raise UserError(f"{key}: {where} has no '{field}' field (or {', '.join(names[1:])})")
        found[field] = record[name]
    context, choices, answer = found["context"], found["choices"], found["answer"]
    if not isinstance(context, str):
        raise UserError(f"{key}: {where}: 'context' must be text")
    if not (isinstance(choices, list) and len(choices) >= 2
            and all(isinstance(c, str) and c for c in choices)):
        raise UserError(f"{key}: {where}: 'choices' must be a list of two or more non-empty "
                        "texts")
    if isinstance(answer, bool) or not isinstance(answer, int) \
            or not 0 <= answer < len(choices):
        raise UserError(f"{key}: {where}: 'answer' must be the index of a choice (0 to "
                        f"{len(choices) - 1}), not {str(answer)[:40]}")
    return Question(context, tuple(choices), answer)


def score_questions(scorer: LikelihoodScorer, questions: list[Question]) -> dict[str, float]:
    """acc and acc_norm over the questions, with the chance level of guessing."""
    pairs = [scorer.encode_pair(q.context, DELIMITER + choice)
             for q in questions for choice in q.choices]
    log_likelihoods = [ll for ll, _ in scorer.score(pairs)]
    acc = acc_norm = chance = 0.0
    start = 0
    for q in questions:
        lls = log_likelihoods[start:start + len(q.choices)]
        start += len(q.choices)
        acc += shared_credit(lls, q.answer)
        acc_norm += shared_credit([ll / len(c) for ll, c in zip(lls, q.choices)], q.answer)
        chance += 1 / len(q.choices)
    n = len(questions)
    return {"acc": acc / n, "acc_norm": acc_norm / n, "chance": chance / n}


def shared_credit(scores: list[float], answer: int) -> float:
    """1/k when the answer is among the k best (tied) scores, else 0."""
    best = max(scores)
    if not math.isfinite(best):
        return 0.0
    tied = [i for i, s in enumerate(scores) if s == best]
    return 1 / len(tied) if answer in tied else 0.0
