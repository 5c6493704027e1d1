"""metrics_history.json and text_samples.json: strict JSON, every step, atomic."""

import json

from conftest import run_in_process
from slimcore import hookimpl


class NanAtStep3:
    """Turns step 3's loss into NaN on its way to the exporter (observers see the same
    object, and this one is registered first)."""

    @hookimpl(tryfirst=True)
    def on_metrics(self, metrics):
        if metrics.step == 3:
            metrics.loss = float("nan")
            metrics.grad_norm = float("inf")


def test_every_step_and_every_sample_strict_json(write_config, tmp_path):
    run_in_process(write_config({"run": {"steps": 7}, "dashboard": {"disable": ["loss"]}}),
                   {"nan": NanAtStep3()})
    viz = tmp_path / "out" / "training_viz"
    text = (viz / "metrics_history.json").read_text()
    history = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert [m["step"] for m in history] == list(range(1, 8))
    assert history[2]["loss"] is None and history[2]["grad_norm"] is None
    assert "NaN" not in text and "Infinity" not in text
    samples = json.loads((viz / "text_samples.json").read_text())
    assert [s["step"] for s in samples] == [3, 3, 6, 6]  # two prompts, every 3 steps
    assert set(samples[0]) == {"step", "prompt", "text"}
    assert not list(viz.glob("*.tmp"))
