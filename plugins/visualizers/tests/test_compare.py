"""`slimcore compare`: runs overlaid in one PNG."""

import json

from PIL import Image


def write_history(folder, losses, evaluated=()):
    viz = folder / "training_viz"
    viz.mkdir(parents=True)
    viz.joinpath("metrics_history.json").write_text(json.dumps(
        [{"step": i + 1, "loss": loss, "accuracy": 0.1, "tokens_per_second": 100.0,
          "eval_loss": 4.0 if i + 1 in evaluated else None,
          "eval_accuracy": 0.2 if i + 1 in evaluated else None}
         for i, loss in enumerate(losses)]))


def test_compare_two_runs_with_their_evaluations(cli, tmp_path):
    write_history(tmp_path / "a", [5, 4, 3], evaluated=(2, 3))
    write_history(tmp_path / "b", [6, 5, 4.5, None])
    output = tmp_path / "cmp" / "both.png"
    result = cli("compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(output))
    assert result.returncode == 0, result.stderr
    with Image.open(output) as image:
        image.load()
        assert json.loads(image.info["Runs"]) == ["a", "b"]
        assert json.loads(image.info["Evaluations"]) == {"a": 2, "b": 0}
    assert f"wrote {output}" in result.stdout
    # A place it cannot write (a file where its folder would be): one line naming it.
    (tmp_path / "a-file").write_text("mine")
    result = cli("compare", str(tmp_path / "a"), "--output", str(tmp_path / "a-file" / "x.png"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"slimcore: error: cannot write {tmp_path / 'a-file'}")
    assert (tmp_path / "a-file").read_text() == "mine"


def test_compare_bad_inputs(cli, tmp_path):
    result = cli("compare", str(tmp_path / "nothing"))
    assert result.returncode == 2
    assert "metrics_history.json not found" in result.stderr
    (tmp_path / "bad" / "training_viz").mkdir(parents=True)
    (tmp_path / "bad" / "training_viz" / "metrics_history.json").write_text("[{")
    result = cli("compare", str(tmp_path / "bad"))
    assert result.returncode == 2 and "is not valid JSON" in result.stderr
