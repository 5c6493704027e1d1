"""The three-file checkpointer on real runs: what it writes, what it refuses to read."""

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import Losses, run_in_process
from slimcore import UserError
from slimcore_checkpointers.three_file import complete_sets, read_checkpoint


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
    assert state["record"]["step"] == 6 and state["format_version"] == 4
    assert state["record"]["config"]["model"]["width"] == 32
    assert set(state["manifest"]) == {"checkpoint_step_6.bin.embeddings",
                                      "checkpoint_step_6.bin.decoder"}
    assert not list(folder.glob("*.tmp"))


def test_round_trip_restores_weights_and_optimizer(trained):
    _, folder, _ = trained
    saved = read_checkpoint(folder / "checkpoint_step_6.bin")
    assert saved.step == 6 and saved.tokens_seen == 6 * 4 * 32
    assert saved.model["embed.weight"].shape[1] == 32
    exp_avg = [v["exp_avg"] for v in saved.optimizer["state"].values()]
    assert exp_avg and all(isinstance(t, torch.Tensor) for t in exp_avg)
    assert saved.scheduler["last_epoch"] == 6


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
    prune(tmp_path, None, keep_last=2, keep_every=4, keep={"checkpoint_step_2.bin"})
    assert [p.name for p in complete_sets(tmp_path)] == [
        "checkpoint_step_2.bin", "checkpoint_step_4.bin", "checkpoint_step_8.bin",
        "checkpoint_step_10.bin", "checkpoint_step_12.bin"]
    assert not (tmp_path / "checkpoint_step_6.bin.decoder").exists()


def test_keep_last_below_two_is_refused(write_config, cli):
    result = cli("config", str(write_config({"three_file": {"keep_last": 1}})))
    assert result.returncode == 2
    assert "three_file.keep_last: must be at least 2" in result.stderr


def rewrite_bin(path, edit_state=None, edit_header=None):
    """Rewrite a .bin: `edit_state(run_state)` with the digest recomputed (a crafted file),
    or `edit_header(header)` on the raw safetensors header alone (a tampered one)."""
    import struct

    from slimcore_checkpointers import tensor_files

    if edit_state is not None:
        tensors, metadata = tensor_files.read(path, digest_key="sha256")
        run_state = json.loads(metadata["slimcore"])
        edit_state(run_state)
        tensors = {k: v.clone() for k, v in tensors.items()}
        tensor_files.write(path, tensors, {"slimcore": json.dumps(run_state)},
                           digest_key="sha256")
        return
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    edit_header(header)
    encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    encoded += b" " * (length - len(encoded))  # same length (padded): offsets stay valid
    assert len(encoded) == length
    path.write_bytes(data[:8] + encoded + data[8 + length:])


@pytest.mark.parametrize("edit", [{"layers": 100_000}, {"width": 2**20, "heads": 2**10},
                                  {"seq_len": 2**40}])
def test_a_crafted_config_builds_no_model(trained, cli, edit):
    """A checkpoint whose recorded config was edited (its digest recomputed): generate,
    eval and export refuse in one line before any model is built (100,000 layers were built
    to the end of memory)."""
    _, folder, _ = trained
    base = folder / "checkpoint_step_6.bin"

    def enlarge(run_state):
        run_state["record"]["config"]["model"].update(edit)

    rewrite_bin(base, edit_state=enlarge)
    for argv in (["generate", str(base), "--prompt", "x"], ["eval", str(base)],
                 ["export", str(base), "--format", "hf", "--output", str(folder / "hf")]):
        result = cli(*argv, timeout=120)
        assert result.returncode == 2, (argv, result.stderr[-2000:])
        [line] = result.stderr.strip().splitlines()[-1:]
        assert "Traceback" not in result.stderr
        assert ("config and weights do not belong together" in line
                or "model.seq_len: must be at most 1048576" in line), line


def test_a_dtype_changed_in_the_header_fails_the_digest(trained, cli):
    _, folder, _ = trained
    base = folder / "checkpoint_step_6.bin"

    def reinterpret(header):  # the first float32 optimizer tensor read as int32: same bytes
        name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
        header[name]["dtype"] = "I32"

    rewrite_bin(base, edit_header=reinterpret)
    with pytest.raises(UserError, match="fails its sha256 check"):
        read_checkpoint(base)
    result = cli("inspect", str(base))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"slimcore: error: checkpoint: {base} fails its sha256 check (damaged)"]


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["manifest"].update({"../../elsewhere.bin": s["manifest"].popitem()[1]}),
     "manifest names .*elsewhere.bin.*not its own"),
    (lambda s: s.pop("manifest"), "not a slimcore checkpoint \\(KeyError: 'manifest'"),
    (lambda s: s["record"].pop("step"), "not a slimcore checkpoint \\(KeyError: 'step'"),
    (lambda s: s["record"].update(optimizer="garbage"),
     "not a slimcore checkpoint \\(ValueError: Checkpoint.optimizer is str"),
    (lambda s: s["record"].update(step="ten"), "Checkpoint.step is str, not int"),
    (lambda s: next(iter(s["manifest"].values())).pop("sha256"), "lacks its sha256"),
    (lambda s: s.update(format_version=99), "has format 99, this slimcore reads 4"),
])
def test_crafted_states_are_one_line_not_a_traceback(trained, cli, edit, message):
    _, folder, _ = trained
    base = folder / "checkpoint_step_6.bin"
    rewrite_bin(base, edit_state=edit)
    with pytest.raises(UserError, match=message):
        read_checkpoint(base)
    result = cli("inspect", str(base))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_files_that_are_not_checkpoints_are_ignored(trained, capsys):
    config, folder, straight = trained
    (folder / "checkpoint_step_10 (copy).bin").write_bytes(b"a copy made by hand")
    (folder / "notes.txt").write_text("lr 3e-4 looked fine")
    assert [p.name for p in complete_sets(folder)] == ["checkpoint_step_4.bin",
                                                       "checkpoint_step_6.bin"]
    resumed = Losses()
    run_in_process(config, {"losses": resumed}, overrides=["run.steps=8"], resume="auto")
    err = capsys.readouterr().err
    assert "checkpoint_step_10 (copy).bin is not a checkpoint file" in err
    assert "notes.txt is not a checkpoint file" in err
    assert sorted(resumed.losses) == [7, 8]
    assert (folder / "checkpoint_step_8.bin").is_file()
    assert (folder / "checkpoint_step_10 (copy).bin").read_bytes() == b"a copy made by hand"


def test_a_junk_set_takes_no_slot_of_the_runs_and_is_not_deleted(trained, capsys):
    """A `checkpoint_step_99.bin` that is no checkpoint (its header does not parse): this
    run still keeps its newest keep_last (2) sets and the set it resumed from (6), and the
    junk stays as it was (it counted as this run's newest, so one real set fewer was kept)."""
    config, folder, _ = trained
    junk = folder / "checkpoint_step_99.bin"
    junk.write_bytes(b"\xff" * 64)
    for suffix in (".embeddings", ".decoder"):
        (folder / f"checkpoint_step_99.bin{suffix}").write_bytes(b"junk")
    run_in_process(config, overrides=["run.steps=10"], resume="auto")
    assert [p.name for p in complete_sets(folder)] == [
        "checkpoint_step_6.bin", "checkpoint_step_8.bin", "checkpoint_step_10.bin",
        "checkpoint_step_99.bin"]
    assert junk.read_bytes() == b"\xff" * 64


def test_long_texts_of_a_data_position_go_into_tensors(tmp_path):
    """A source that keeps documents in its position (a third party's) does not bloat the
    header past safetensors' cap: long strings travel as uint8 tensors."""
    from slimcore.contracts.checkpoint import join_tensors, split_tensors

    book = "chapter one. " * 400_000  # 5.2 MB
    state = {"buffer": [book, "short"], "carry": torch.arange(5), "name": "ß" * 300}
    tensors = {}
    meta = split_tensors(state, "data", tensors)
    assert len(json.dumps(meta)) < 500
    assert tensors["data.buffer.0"].dtype == torch.uint8
    restored = join_tensors(json.loads(json.dumps(meta)), tensors)
    assert restored["buffer"] == [book, "short"] and restored["name"] == "ß" * 300
    assert torch.equal(restored["carry"], torch.arange(5))


def test_every_tensor_read_owns_its_memory_alone(trained):
    """No tensor of a read checkpoint is a view of a buffer holding the others: a restored
    step counter or data position kept for a run keeps only its own bytes alive."""
    _, folder, _ = trained
    saved = read_checkpoint(folder / "checkpoint_step_6.bin")
    tensors = [*saved.model.values(),
               *(t for state in saved.optimizer["state"].values() for t in state.values()
                 if isinstance(t, torch.Tensor))]
    assert len(tensors) > 2 * len(saved.model)
    for tensor in tensors:
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()


def test_tensors_that_overlap_in_a_file_are_refused(tmp_path):
    """Each tensor is read into memory of its own: overlapping entries (no writer makes them)
    would let a small crafted file ask for gigabytes."""
    from slimcore_checkpointers import tensor_files

    path = tmp_path / "crafted.safetensors"
    tensor_files.write(path, {"a": torch.zeros(1000)})
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + length])
    header.update({f"copy{i}": header["a"] for i in range(3)})
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + length:])
    with pytest.raises(tensor_files.Damaged, match="tensors that overlap in its bytes"):
        tensor_files.read(path)
