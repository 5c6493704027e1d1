"""The TensorBoard exporter, read back with tensorboard's own reader."""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_in_process


def read_events(folder):
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def losses_by_step(events):
    return [(e.step, e.value) for e in events.Scalars("train/loss")]


def test_every_step_sample_and_the_config_are_in_tensorboard(write_config, tmp_path):
    off = tmp_path / "off"
    run_in_process(write_config({"output": {"dir": str(off)}}, name="off"))
    assert not (off / "tensorboard").exists()  # off (the suite's default): no files

    out = tmp_path / "on"
    run_in_process(write_config({"run": {"steps": 6}, "output": {"dir": str(out)},
                                 "samples": {"prompts": ["We the"]},
                                 "eval": {"interval": 3, "batches": 1},
                                 "plugins": {"disable": ["dashboard"]}}, name="on"))
    events = read_events(out / "tensorboard")
    history = json.loads((out / "training_viz" / "metrics_history.json").read_text())
    assert losses_by_step(events) == [(m["step"], pytest.approx(m["loss"], rel=1e-6))
                                      for m in history]
    tags = set(events.Tags()["scalars"])
    assert {"train/accuracy", "train/learning_rate", "train/tokens_per_second",
            "train/grad_norm", "eval/loss", "eval/accuracy"} <= tags
    assert [e.step for e in events.Scalars("eval/loss")] == [3, 6]
    samples = json.loads((out / "training_viz" / "text_samples.json").read_text())
    texts = events.Tensors("samples/We the/text_summary")
    assert [(t.step, t.tensor_proto.string_val[0].decode()) for t in texts] == \
        [(s["step"], s["text"]) for s in samples]
    config = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "width: 32" in config and "steps: 6" in config
