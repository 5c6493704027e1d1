"""The contracts a plugin keeps, each checked on real runs: a checkpointer written from
docs/plugins.md alone resumes bit for bit; the core restores every random state it saves; a
data source from the docs resumes; a resume that had to replay the stream saves the
position again, so the next resume does not replay."""

import json
import random
import re
import types

import numpy as np
import pytest
import torch

from conftest import REPO, run_in_process, source_plugin
from slimcore import Batch, DataSource


def docs_block(containing: str) -> str:
    text = (REPO / "docs" / "plugins.md").read_text()
    return next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if containing in b)


def docs_plugin(containing: str, **names) -> types.ModuleType:
    """The code block of docs/plugins.md that holds `containing`, as a plugin module."""
    module = types.ModuleType("from_the_docs")
    module.__dict__.update(names)
    exec(compile(docs_block(containing), "docs/plugins.md", "exec"), module.__dict__)
    return module


def losses(folder):
    records = json.loads((folder / "training_viz" / "metrics_history.json").read_text())
    return {r["step"]: r["loss"] for r in records}


def test_a_checkpointer_written_from_the_docs_resumes_bitwise(write_config, tmp_path):
    simple = docs_plugin("def save_checkpoint(checkpointer, run, checkpoint)")
    settings = {"run": {"steps": 8}, "intervals": {"checkpoint": 4},
                "data": {"source": "chunk"}, "corpus": {"shuffle_buffer": 8}}
    three = write_config({**settings, "output": {"dir": str(tmp_path / "three")}}, "three")
    run_in_process(three)
    straight = write_config({**settings, "checkpoint": {"checkpointer": "simple"},
                             "output": {"dir": str(tmp_path / "simple")}}, "simple")
    run_in_process(straight, {"simple": simple})
    saved = sorted(p.name for p in (tmp_path / "simple" / "simple").iterdir())
    assert saved == ["step_4.json", "step_4.safetensors", "step_8.json", "step_8.safetensors"]
    resumed = write_config({**settings, "checkpoint": {"checkpointer": "simple"},
                            "output": {"dir": str(tmp_path / "resumed")}}, "resumed")
    run_in_process(resumed, {"simple": simple},
                   resume=str(tmp_path / "simple" / "simple" / "step_4.json"))
    reference = losses(tmp_path / "three")
    assert losses(tmp_path / "simple") == reference
    assert losses(tmp_path / "resumed") == {s: reference[s] for s in range(5, 9)}
    # --resume auto in its own folder finds its newest checkpoint through the same code.
    run_in_process(straight, {"simple": simple}, overrides=["run.steps=10"], resume="auto")
    assert sorted(losses(tmp_path / "simple")) == list(range(1, 11))


class RandomDraws(DataSource):
    """Batches whose tokens come from Python's and NumPy's global generators: a resume
    gives the same batches only if the core puts both generators back."""

    resumable = True

    def __init__(self, run):
        self.run, self.drawn = run, 0

    def __next__(self):
        row = self.run.config.model.seq_len + 1
        size = self.run.config.data.batch_size * row
        tokens = [random.randrange(100) for _ in range(size // 2)] + \
            np.random.randint(0, 100, size - size // 2).tolist()
        self.drawn += 1
        return Batch.from_sequences(torch.tensor(tokens).view(-1, row))

    def state_dict(self):
        return {"drawn": self.drawn}

    def load_state_dict(self, state):
        self.drawn = state["drawn"]


def straight_and_resumed(write_config, tmp_path, name, plugin):
    """Data source `name` for 6 steps straight (in a/), and resumed at step 3's checkpoint
    (in b/): the losses of both, by step."""
    settings = {"run": {"steps": 6}, "intervals": {"checkpoint": 3},
                "data": {"source": name}, "tokenizer": {"vocab_size": 300}}
    run_in_process(write_config({**settings, "output": {"dir": str(tmp_path / "a")}}, "a"),
                   {name: plugin})
    run_in_process(write_config({**settings, "output": {"dir": str(tmp_path / "b")}}, "b"),
                   {name: plugin},
                   resume=str(tmp_path / "a" / "checkpoints" / "checkpoint_step_3.bin"))
    return losses(tmp_path / "a"), losses(tmp_path / "b")


def test_numpy_and_python_random_states_survive_a_resume(write_config, tmp_path):
    plugin = source_plugin("random", RandomDraws, ["some words to train a tokenizer on"] * 50)
    straight, resumed = straight_and_resumed(write_config, tmp_path, "random", plugin)
    assert resumed == {s: straight[s] for s in (4, 5, 6)}


def test_the_data_source_in_the_docs_resumes(write_config, tmp_path, capsys):
    namespace = docs_plugin("class Counting(DataSource)", torch=torch)
    plugin = source_plugin("counting", namespace.Counting,
                           ["counting words for a tokenizer"] * 50)
    straight, resumed = straight_and_resumed(write_config, tmp_path, "counting", plugin)
    assert "replaying" not in capsys.readouterr().err
    assert resumed == {s: straight[s] for s in (4, 5, 6)}


def test_a_resume_that_replayed_saves_the_position_again(write_config, tmp_path, capsys):
    """A checkpoint without a data position (a source replaced by a resumable one, say)
    is replayed once; the run's next checkpoint has the position, and resuming that one
    reads on from it, exactly."""
    from slimcore_checkpointers.three_file import read_checkpoint, write_checkpoint

    # A flat schedule: a run of 6 steps then 9 follows the same rates as one of 9.
    settings = {"run": {"steps": 9}, "intervals": {"checkpoint": 3},
                "data": {"source": "chunk"}, "corpus": {"shuffle_buffer": 8},
                "schedule": {"warmup_steps": 2, "min_lr_ratio": 1.0}}
    run_in_process(write_config({**settings, "output": {"dir": str(tmp_path / "a")}}, "a"))
    straight = losses(tmp_path / "a")
    saved = read_checkpoint(tmp_path / "a" / "checkpoints" / "checkpoint_step_3.bin")
    saved.data_state = None
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    write_checkpoint(tmp_path / "b" / "checkpoints" / "checkpoint_step_3.bin", saved)
    b = write_config({**settings, "run": {"steps": 6},
                      "output": {"dir": str(tmp_path / "b")}}, "b")
    capsys.readouterr()
    run_in_process(b, resume="auto")
    assert "replaying 3 steps of data" in capsys.readouterr().err
    assert read_checkpoint(tmp_path / "b" / "checkpoints" / "checkpoint_step_6.bin"
                           ).data_state is not None
    run_in_process(b, overrides=["run.steps=9"], resume="auto")
    assert "replaying" not in capsys.readouterr().err
    assert losses(tmp_path / "b") == {s: straight[s] for s in range(4, 10)}


@pytest.mark.parametrize("broken", ["optimizer", "rng"])
def test_a_record_missing_a_part_is_refused_by_the_record_itself(broken):
    from slimcore import Checkpoint

    fields = dict(step=1, tokens_seen=0, skipped_steps=0, run_id=None, config={},
                  tokenizer_fingerprint=None, model={}, optimizer={"state": {},
                                                                   "param_groups": []},
                  scheduler={}, rng={}, data_state=None)
    fields[broken] = None
    with pytest.raises(ValueError, match=f"Checkpoint.{broken}"):
        Checkpoint(**fields)
