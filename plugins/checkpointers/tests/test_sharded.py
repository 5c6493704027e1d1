"""The sharded checkpointer in one process: what it writes, how it resumes, what it refuses,
the model commands and `slimcore consolidate`. Its many-rank behaviour (resharding across
world sizes, a shard damaged under torchrun, a model too large for one rank) is in
tests/test_sharded_checkpoints.py."""

import json
import os
import pickle
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO, Losses, run_in_process
from slimcore import UserError
from slimcore_checkpointers import tensor_files
from slimcore_checkpointers.consolidate import read_whole
from slimcore_checkpointers.dcp_files import DIGEST_KEY, file_digest, read_set
from slimcore_checkpointers.three_file import read_checkpoint

SETTINGS = {"run": {"steps": 6}, "intervals": {"checkpoint": 2},
            "checkpoint": {"checkpointer": "sharded"}, "sharded": {"keep_last": 2}}


@pytest.fixture
def trained(write_config, tmp_path):
    """A 6-step run saving sharded sets every 2 steps, keeping the last 2."""
    config = write_config(SETTINGS)
    losses = Losses()
    run_in_process(config, {"losses": losses})
    return config, tmp_path / "out" / "checkpoints", losses.losses


def test_a_set_is_a_folder_of_dcp_files_and_a_record_and_rotates(trained):
    _, folder, _ = trained
    assert sorted(p.name for p in folder.iterdir()) == ["sharded_step_4", "sharded_step_6"]
    files = sorted(p.name for p in (folder / "sharded_step_6").iterdir())
    assert files == [".metadata", "__0_0.distcp", "record.bin"]
    _, metadata = tensor_files.read(folder / "sharded_step_6" / "record.bin",
                                    digest_key=DIGEST_KEY)
    state = json.loads(metadata["slimcore"])
    assert set(state["manifest"]) == {".metadata", "__0_0.distcp"}
    assert state["manifest"]["__0_0.distcp"] == file_digest(
        folder / "sharded_step_6" / "__0_0.distcp")
    assert state["record"]["step"] == 6 and state["record"]["model"] == {}


def test_a_loaded_record_holds_shapes_and_resumes_bit_for_bit(trained):
    config, folder, straight = trained
    saved, _ = read_set(folder / "sharded_step_4", group=None)
    assert saved.step == 4 and saved.data_state["world_size"] == 1
    embed = saved.model["embed.weight"]
    assert embed.is_meta and embed.shape[1] == 32 and embed.dtype == torch.float32
    assert saved.optimizer["state"] == {} and "embed.weight" in \
        saved.optimizer["param_groups"][0]["params"] + saved.optimizer["param_groups"][1]["params"]
    resumed = Losses()
    run_in_process(config, {"losses": resumed}, resume=str(folder / "sharded_step_4"))
    assert resumed.losses == {5: straight[5], 6: straight[6]}


def test_auto_resume_takes_the_newest_set_and_a_resumed_run_saves_again(trained, capsys):
    config, folder, _ = trained
    resumed = Losses()
    run_in_process(config, {"losses": resumed}, overrides=["run.steps=8"], resume="auto")
    assert "continuing from step 6" in capsys.readouterr().out
    assert sorted(resumed.losses) == [7, 8]
    assert sorted(p.name for p in folder.iterdir()) == ["sharded_step_6", "sharded_step_8"]
    assert read_set(folder / "sharded_step_8", group=None)[0].step == 8


@pytest.mark.parametrize("changes", [{"optimizer": {"name": "muon"}},
                                     {"model": {"tie_embeddings": True}}], ids=["muon", "tied"])
def test_muon_and_tied_weights_resume_bit_for_bit(write_config, changes):
    config = write_config({**SETTINGS, "run": {"steps": 4}, **changes})
    straight, resumed = Losses(), Losses()
    run_in_process(config, {"losses": straight})
    folder = config.parent / "out" / "checkpoints"
    run_in_process(config, {"losses": resumed}, resume=str(folder / "sharded_step_2"))
    assert resumed.losses == {3: straight.losses[3], 4: straight.losses[4]}


@pytest.mark.parametrize("name", ["__0_0.distcp", ".metadata", "record.bin"])
def test_a_damaged_file_is_named_and_auto_resume_falls_back(trained, name, capsys):
    config, folder, straight = trained
    damaged = folder / "sharded_step_6" / name
    data = bytearray(damaged.read_bytes())
    data[len(data) - 3] ^= 0x01
    damaged.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{name}.*(sha256|damaged)"):
        read_set(folder / "sharded_step_6", group=None)
    resumed = Losses()
    run_in_process(config, {"losses": resumed}, overrides=["run.steps=6"], resume="auto")
    err = capsys.readouterr().err
    assert f"{name}" in err and "falling back to the previous checkpoint" in err
    assert resumed.losses == {5: straight[5], 6: straight[6]}  # from step 4


def rewrite_record(set_folder, change):
    """The set's record.bin rewritten with `change(state)` applied and its digest
    recomputed, as a crafter would."""
    tensors, metadata = tensor_files.read(set_folder / "record.bin", digest_key=DIGEST_KEY)
    state = json.loads(metadata["slimcore"])
    change(state)
    tensor_files.write(set_folder / "record.bin", tensors, {"slimcore": json.dumps(state)},
                       digest_key=DIGEST_KEY)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_index_never_runs_code(trained, tmp_path):
    _, folder, _ = trained
    target = folder / "sharded_step_6"
    marker = tmp_path / "pwned"
    (target / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    rewrite_record(target, lambda s: s["manifest"].update(
        {".metadata": file_digest(target / ".metadata")}))
    with pytest.raises(UserError, match="not a checkpoint index"):
        read_set(target, group=None)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../../escape.distcp", "notes.txt"])
def test_a_manifest_naming_other_files_is_refused(trained, name):
    _, folder, _ = trained
    target = folder / "sharded_step_6"
    rewrite_record(target, lambda s: s["manifest"].update(
        {name: {"sha256": "0" * 64, "bytes": 1}}))
    with pytest.raises(UserError, match="not a file of its own set"):
        read_set(target, group=None)


@pytest.mark.slow  # two CLI runs, one killed: the slow tier
def test_a_kill_mid_save_leaves_the_previous_set_and_is_cleaned_up(write_config, tmp_path):
    config = write_config(SETTINGS)
    process = subprocess.Popen(
        [sys.executable, "-m", "slimcore", "run", str(config)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "SLIMCORE_CHECKPOINT_PAUSE": "4:renamed"})
    for line in process.stderr:
        if "checkpoint paused: step 4 renamed" in line:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    folder = tmp_path / "out" / "checkpoints"
    # Everything of step 4 written, record included; only the rename is missing.
    assert (folder / "sharded_step_4.partial" / "record.bin").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["sharded_step_2",
                                                         "sharded_step_4.partial"]
    result = subprocess.run([sys.executable, "-m", "slimcore", "run", str(config), "--resume",
                             "auto"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resume: continuing from step 2" in result.stdout
    # The set it resumed from is kept beside the newest two; nothing unfinished is left.
    assert sorted(p.name for p in folder.iterdir()) == ["sharded_step_2", "sharded_step_4",
                                                         "sharded_step_6"]


@pytest.mark.slow  # seven CLI processes and a second training run: the slow tier
def test_model_commands_and_consolidate_read_a_sharded_run(trained, write_config, tmp_path,
                                                           cli):
    _, folder, _ = trained
    run = tmp_path / "out"
    whole = tmp_path / "whole"
    result = cli("consolidate", str(run), str(whole))
    assert result.returncode == 0, result.stderr
    assert "(step 6," in result.stdout
    # The whole set holds what a three_file run of the same config saves, bit for bit.
    run_in_process(write_config({**SETTINGS, "checkpoint": {"checkpointer": "three_file"},
                                 "output": {"dir": str(tmp_path / "plain")}}, "plain"))
    made = read_checkpoint(whole / "checkpoints" / "checkpoint_step_6.bin")
    plain = read_checkpoint(tmp_path / "plain" / "checkpoints" / "checkpoint_step_6.bin")
    assert made.model.keys() == plain.model.keys()
    assert all(torch.equal(made.model[k], plain.model[k]) for k in plain.model)
    assert made.optimizer["param_groups"] == plain.optimizer["param_groups"]
    assert made.optimizer["state"].keys() == plain.optimizer["state"].keys()
    for i, moments in plain.optimizer["state"].items():
        assert all(torch.equal(made.optimizer["state"][i][k], moments[k]) for k in moments)
    assert (made.step, made.tokens_seen, made.rng["python"]) == \
        (plain.step, plain.tokens_seen, plain.rng["python"])
    assert torch.equal(made.rng["torch"], plain.rng["torch"])
    # Generation from the sharded run folder, from one of its sets and from the whole copy.
    texts = set()
    for source in (run, folder / "sharded_step_6", whole):
        generated = cli("generate", str(source), "--prompt", "The state", "--max-new-tokens",
                        "8", "--temperature", "0")
        assert generated.returncode == 0, generated.stderr
        texts.add(generated.stdout.strip().splitlines()[-1])
    assert len(texts) == 1
    # The hf export of the sharded run equals the whole copy's, file for file.
    for source, out in ((run, "hf-sharded"), (whole, "hf-whole")):
        exported = cli("export", str(source), "--format", "hf", "--output",
                       str(tmp_path / out))
        assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "hf-sharded" / "model.safetensors").read_bytes() == \
        (tmp_path / "hf-whole" / "model.safetensors").read_bytes()


@pytest.mark.slow  # three CLI processes: the slow tier
def test_consolidate_refuses_bad_input_in_one_line(trained, tmp_path, cli):
    _, folder, _ = trained
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    cases = [(tmp_path / "nowhere", tmp_path / "o1", "is not a sharded checkpoint"),
             (tmp_path / "taken", tmp_path / "o2", "holds no intact sharded checkpoint"),
             (folder / "sharded_step_6", taken, "is not an empty folder")]
    for source, output, message in cases:
        result = cli("consolidate", str(source), str(output))
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (taken / "keep.txt").read_text() == "mine"


def test_read_whole_gives_the_optimizer_by_position(trained):
    _, folder, _ = trained
    saved = read_whole(folder / "sharded_step_6")
    groups = saved.optimizer["param_groups"]
    positions = sorted(i for group in groups for i in group["params"])
    assert positions == list(range(len(saved.model)))
    assert sorted(saved.optimizer["state"]) == positions


def test_inspect_describes_and_verifies_a_sharded_set(trained, cli):
    _, folder, _ = trained
    for source in (folder.parent, folder / "sharded_step_4"):
        result = cli("inspect", str(source))
        assert result.returncode == 0, result.stderr
        step = 6 if source == folder.parent else 4
        assert f"sharded_step_{step}: verified" in result.stdout
        assert f"step {step}, " in result.stdout and "saved by 1 rank(s)" in result.stdout
        assert "__0_0.distcp" in result.stdout
    damaged = folder / "sharded_step_4" / "__0_0.distcp"
    damaged.write_bytes(damaged.read_bytes()[:-1])
    result = cli("inspect", str(folder / "sharded_step_4"))
    assert result.returncode == 2 and "__0_0.distcp fails its sha256 check" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_run_changes_checkpointers_at_a_resume_both_ways(write_config, tmp_path, capsys):
    """A run saved by three_file goes on with the sharded checkpointer (the run folder's
    config.yaml names the one that saved it), and back, as the run never stopped."""
    plain = {**SETTINGS, "checkpoint": {"checkpointer": "three_file"}}
    straight = Losses()
    run_in_process(write_config({**plain, "output": {"dir": str(tmp_path / "straight")}},
                                "straight"), {"losses": straight})
    run_in_process(write_config({**plain, "run": {"steps": 4}, "schedule": {"total_steps": 6}},
                                "first"))  # stopped at 4 of the straight run's 6
    resumed = Losses()
    run_in_process(write_config(SETTINGS, "second"), {"losses": resumed}, resume="auto")
    out = capsys.readouterr().out
    assert "was saved by checkpointer 'three_file'; this run saves with 'sharded'" in out
    assert resumed.losses == {5: straight.losses[5], 6: straight.losses[6]}
    folder = tmp_path / "out" / "checkpoints"
    assert (folder / "sharded_step_6" / "record.bin").is_file()
    back = Losses()
    run_in_process(write_config({**plain, "run": {"steps": 8}}, "third"), {"losses": back},
                   resume=str(folder / "sharded_step_6"))
    assert "was saved by checkpointer 'sharded'; this run saves with 'three_file'" in \
        capsys.readouterr().out
    assert sorted(back.losses) == [7, 8] and (folder / "checkpoint_step_8.bin").is_file()
