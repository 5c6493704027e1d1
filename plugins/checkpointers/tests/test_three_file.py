"""The three-file checkpointer on real runs: what it writes, what it refuses to read."""

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import run_in_process
from slimcore import UserError, hookimpl
from slimcore_checkpointers.three_file import complete_sets, read_checkpoint


class Losses:
    def __init__(self):
        self.losses = {}

    @hookimpl
    def on_metrics(self, metrics):
        self.losses[metrics.step] = metrics.loss


@pytest.fixture
def trained(write_config, tmp_path):
    """A 6-step run that checkpoints every 2 steps, keeping the last 2 sets."""
    config = write_config({"run": {"steps": 6}, "intervals": {"checkpoint": 2},
                           "three_file": {"keep_last": 2}})
    losses = Losses()
    run_in_process(config, {"losses": losses})
    return config, tmp_path / "out" / "checkpoints", losses.losses


def test_three_files_per_set_and_rotation(trained):
    _, folder, _ = trained
    names = sorted(p.name for p in folder.iterdir())
    assert names == [f"checkpoint_step_{s}.bin{x}" for s in (4, 6)
                     for x in ("", ".decoder", ".embeddings")]
    with safe_open(str(folder / "checkpoint_step_6.bin.embeddings"), framework="pt") as f:
        assert list(f.keys()) == ["embed.weight"]
    with safe_open(str(folder / "checkpoint_step_6.bin.decoder"), framework="pt") as f:
        assert "head.weight" in f.keys() and "embed.weight" not in f.keys()
    with safe_open(str(folder / "checkpoint_step_6.bin"), framework="pt") as f:
        state = json.loads(f.metadata()["slimcore"])
    assert state["step"] == 6 and state["format_version"] == 1
    assert state["config"]["model"]["width"] == 32
    assert set(state["manifest"]) == {"checkpoint_step_6.bin.embeddings",
                                      "checkpoint_step_6.bin.decoder"}
    assert not list(folder.glob("*.tmp"))


def test_round_trip_restores_weights_and_optimizer(trained):
    _, folder, _ = trained
    saved = read_checkpoint(folder / "checkpoint_step_6.bin")
    assert saved["step"] == 6 and saved["tokens_seen"] == 6 * 4 * 32
    assert saved["model"]["embed.weight"].shape[1] == 32
    exp_avg = [v["exp_avg"] for v in saved["optimizer"]["state"].values()]
    assert exp_avg and all(isinstance(t, torch.Tensor) for t in exp_avg)
    assert saved["scheduler"]["last_epoch"] == 6


@pytest.mark.parametrize("suffix", [".decoder", ".embeddings", ""])
def test_a_flipped_byte_is_detected_and_auto_resume_falls_back(trained, suffix, capsys):
    config, folder, straight = trained
    damaged = folder / f"checkpoint_step_6.bin{suffix}"
    data = bytearray(damaged.read_bytes())
    data[len(data) - 3] ^= 0x01  # a byte of tensor data, near the end
    damaged.write_bytes(bytes(data))
    with pytest.raises(UserError, match="fails its sha256 check|damaged"):
        read_checkpoint(folder / "checkpoint_step_6.bin")
    resumed = Losses()
    run_in_process(config, {"losses": resumed}, overrides=["run.steps=6"], resume="auto")
    err = capsys.readouterr().err
    assert "falling back to the previous checkpoint" in err
    assert resumed.losses == {5: straight[5], 6: straight[6]}  # continued from step 4


def test_a_pickle_payload_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "checkpoint_step_1.bin"
    evil.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UserError, match="damaged or not a slimcore checkpoint"):
        read_checkpoint(evil)
    assert not marker.exists()


def test_missing_checkpoint_and_auto_without_any(write_config, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_checkpoint(tmp_path / "checkpoint_step_9.bin")
    assert complete_sets(tmp_path) == []
    status, _ = run_in_process(write_config({"run": {"steps": 1}}), resume="auto")
    assert status == "completed"


def test_inspect_describes_and_verifies(trained, cli):
    _, folder, _ = trained
    result = cli("inspect", str(folder / "checkpoint_step_6.bin"))
    assert result.returncode == 0, result.stderr
    assert "verified (sha256 of every file matches)" in result.stdout
    assert "step 6, 768 tokens seen" in result.stdout
    assert "model: width 32, 2 layers, 2 heads, seq 32" in result.stdout
    assert "checkpoint_step_6.bin.decoder:" in result.stdout
    damaged = folder / "checkpoint_step_6.bin.embeddings"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    result = cli("inspect", str(folder / "checkpoint_step_6.bin"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"slimcore: error: checkpoint: {damaged} fails its sha256 check (damaged)"]


def test_prune_keeps_milestones_and_the_set_resumed_from(tmp_path):
    from slimcore_checkpointers.three_file import prune

    for step in (2, 4, 6, 8, 10, 12):
        for suffix in ("", ".embeddings", ".decoder"):
            (tmp_path / f"checkpoint_step_{step}.bin{suffix}").write_bytes(b"x")
    prune(tmp_path, keep_last=2, keep_every=4, keep={"checkpoint_step_2.bin"})
    assert [p.name for p in complete_sets(tmp_path)] == [
        "checkpoint_step_2.bin", "checkpoint_step_4.bin", "checkpoint_step_8.bin",
        "checkpoint_step_10.bin", "checkpoint_step_12.bin"]
    assert not (tmp_path / "checkpoint_step_6.bin.decoder").exists()


def test_keep_last_below_two_is_refused(write_config, cli):
    result = cli("config", str(write_config({"three_file": {"keep_last": 1}})))
    assert result.returncode == 2
    assert "three_file.keep_last: must be at least 2" in result.stderr
