"""run.stop_at: a run stops at the first step that reaches its target, saved, and says the
steps, tokens and time; `slimcore compare` shows each run's time to a target."""

import json

import pytest

from conftest import run_in_process
from slimcore import Target


def history(out):
    return [json.loads(line) for line in
            (out / "history" / "metrics.jsonl").read_text().splitlines()]


def test_a_target_is_reached_by_the_first_record_that_meets_it():
    loss, accuracy = Target.parse("eval_loss<=4.5"), Target.parse(" eval_accuracy >= 0.25 ")
    records = [{"eval_loss": None, "eval_accuracy": None}, {"eval_loss": 4.6, "eval_accuracy": 0.2},
               {"eval_loss": 4.5, "eval_accuracy": 0.25}, {"eval_loss": 4.4, "eval_accuracy": 0.3}]
    assert loss.first_reached(records) is records[2]
    assert accuracy.first_reached(records) is records[2]
    assert str(loss) == "eval_loss <= 4.5" and not loss.reached({"eval_loss": float("nan")})


@pytest.mark.parametrize("given, message", [
    ("eval_loss < 4", "'eval_loss < 4' is not METRIC <= VALUE or METRIC >= VALUE "
                      "(eval_loss <= 4.9)"),
    ("perplexity <= 3", "'perplexity' is no metric a target can name (one of loss, eval_loss, "
                        "bits_per_byte, eval_bits_per_byte, accuracy, eval_accuracy)"),
    ("eval_loss <= nan", "'nan' is not a finite number"),
    ("eval_loss <= 1e999", "'1e999' is not a finite number"),
    ("eval_loss <= four", "'four' is not a finite number")])
def test_a_bad_target_is_one_line_naming_the_key(cli, write_config, given, message):
    result = cli("run", str(write_config()), "--set", f"run.stop_at={given}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"slimcore: error: --set: run.stop_at: {message}"]


def test_a_run_stops_at_its_target_saved_and_compare_shows_the_time_to_it(
        write_config, tmp_path, cli):
    settings = {"run": {"steps": 12}, "intervals": {"checkpoint": 100}}
    run_in_process(write_config({**settings, "output": {"dir": str(tmp_path / "straight")}},
                                name="straight"))
    losses = [r["loss"] for r in history(tmp_path / "straight")]
    target = sorted(losses)[len(losses) // 2]  # the median: reached mid-run
    expected = next(step for step, loss in enumerate(losses, 1) if loss <= target)
    assert expected < 12
    config = write_config({**settings, "run": {"steps": 12, "stop_at": f"loss <= {target!r}"}},
                          name="target")
    result = cli("run", str(config))
    assert result.returncode == 0, result.stderr
    records = history(tmp_path / "out")
    assert [r["step"] for r in records] == list(range(1, expected + 1))
    assert [r["loss"] for r in records] == losses[:expected]  # the same run, cut short
    tokens = records[-1]["tokens_seen"]
    assert f"run.stop_at: loss {losses[expected - 1]:.4f} reached loss <= {target:g} at step " \
           f"{expected}, {tokens:,} tokens, " in result.stdout
    assert (tmp_path / "out" / "checkpoints" / f"checkpoint_step_{expected}.bin").is_file()
    compared = cli("compare", str(tmp_path / "out"), str(tmp_path / "straight"), "--output",
                   str(tmp_path / "c.png"))
    assert compared.returncode == 0, compared.stderr
    assert f"out: loss <= {target:g} at step {expected}, {tokens:,} tokens, " in compared.stdout
    assert "straight" not in compared.stdout.replace(str(tmp_path), "")  # it set no target
    given = cli("compare", str(tmp_path / "straight"), "--output", str(tmp_path / "c.png"),
                "--target", f"loss <= {min(losses) - 1}")
    assert f"straight: loss <= {min(losses) - 1:g} not reached (best loss {min(losses):.4f})" \
        in given.stdout
