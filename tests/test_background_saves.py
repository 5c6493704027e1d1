"""Checkpoints saved in the background (checkpoint.async, the default): what training hands
over is a snapshot, failures stop the run as a synchronous save's would, a signal waits for
the save in flight, and killing a run at any moment loses no step of its history."""

import json
import random
import resource
import signal
import subprocess
import sys
import threading

import pytest
import torch

from conftest import REPO, run_in_process
from slimcore import UserError, hookimpl
from slimcore.train.writer import CheckpointWriter
from test_resume_and_guards import history, start_run, wait_for_line


class ThreadRecordingCheckpointer:
    """Records on which thread each save ran and what it was handed."""

    def __init__(self):
        self.saves = []

    @hookimpl
    def save_checkpoint(self, checkpointer, run, checkpoint):
        if checkpointer != "memo":
            return None
        weight = checkpoint.model["head.weight"]
        live = run.model.head.weight
        self.saves.append((checkpoint.step, threading.current_thread().name,
                           weight.data_ptr() == live.data_ptr(), weight.clone()))
        return f"memo:{checkpoint.step}"


@pytest.mark.parametrize("background", [True, False])
def test_saves_run_on_the_writer_thread_from_a_snapshot(write_config, background):
    memo = ThreadRecordingCheckpointer()
    status, _ = run_in_process(write_config({
        "run": {"steps": 5}, "intervals": {"checkpoint": 2},
        "checkpoint": {"checkpointer": "memo", "async": background}}), {"memo": memo})
    assert status == "completed"
    assert [s[0] for s in memo.saves] == [2, 4, 5]
    threads = {s[1] for s in memo.saves}
    shares_live_storage = {s[2] for s in memo.saves}
    if background:
        assert threads == {"slimcore-checkpoint"} and shares_live_storage == {False}
    else:
        assert threads == {"MainThread"} and shares_live_storage == {True}
    assert not torch.equal(memo.saves[0][3], memo.saves[1][3])  # each save its own step's


def test_the_writer_raises_a_background_failure_at_the_next_check():
    def failing_save(checkpoint):
        raise UserError("checkpoint: could not write x (No space left on device)")

    writer = CheckpointWriter(failing_save, background=True)
    writer.save(checkpoint_of_one_tensor())
    writer.thread.join()
    with pytest.raises(UserError, match="No space left"):
        writer.check()
    writer.check()  # raised once


def test_the_next_save_waits_for_the_one_in_flight_and_reuses_its_buffers():
    release, order = threading.Event(), []

    def slow_save(checkpoint):
        order.append(("start", checkpoint.step, checkpoint.model["w"].data_ptr()))
        release.wait(30)
        order.append(("end", checkpoint.step))
        return f"saved {checkpoint.step}"

    writer = CheckpointWriter(slow_save, background=True)
    writer.save(checkpoint_of_one_tensor(step=1))
    threading.Timer(0.2, release.set).start()
    writer.save(checkpoint_of_one_tensor(step=2))  # blocks until save 1 ended
    assert order[:2] == [("start", 1, order[0][2]), ("end", 1)]
    assert writer.wait() == "saved 2"
    assert order[2][2] == order[0][2]  # the same host buffer, reused


def test_buffers_made_beforehand_are_the_ones_the_first_save_fills():
    saved = []
    writer = CheckpointWriter(lambda c: saved.append(c.model["w"]) or "ok", background=True)
    writer.prepare(checkpoint_of_one_tensor(step=0))
    writer.preparing.join()
    prepared = writer.buffers.buffers["model.w"]
    assert prepared.shape == (4,) and float(prepared.sum()) == 0.0  # paged in: written
    writer.save(checkpoint_of_one_tensor(step=3))
    assert writer.wait() == "ok"
    assert saved[0].data_ptr() == prepared.data_ptr() and saved[0].tolist() == [3.0] * 4


def checkpoint_of_one_tensor(step=1):
    from slimcore import Checkpoint

    return Checkpoint(step=step, tokens_seen=0, skipped_steps=0, run_id="r", config={},
                      tokenizer_fingerprint=None, model={"w": torch.full((4,), float(step))},
                      optimizer={"state": {}, "param_groups": []}, scheduler={}, rng={},
                      data_state=None)


def test_sigterm_during_a_background_save_finishes_it_and_exits_143(write_config, tmp_path,
                                                                       cli):
    # TensorBoard on (the suite's default leaves it off): its steps must survive the resume.
    config = write_config({"run": {"steps": 400}, "intervals": {"checkpoint": 2},
                           "plugins": {"disable": ["dashboard"]}})
    # The save of step 4 takes 3 s; training goes on meanwhile, and the signal comes then.
    process = start_run(config, env={"SLIMCORE_CHECKPOINT_PAUSE": "4:written:3"})
    wait_for_line(process.stderr, "checkpoint paused: step 4 written")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "SIGTERM: finishing this step" in stderr
    assert f"go on with: slimcore run {config} --resume auto" in stderr
    folder = tmp_path / "out" / "checkpoints"
    last = max(history(tmp_path / "out"))
    assert (folder / "checkpoint_step_4.bin").exists()  # the save in flight was finished
    assert (folder / f"checkpoint_step_{last}.bin").exists() and not list(folder.glob("*.tmp"))
    result = cli("run", str(config), "--resume", "auto", "--steps", str(last + 2))
    assert result.returncode == 0, result.stderr
    assert f"resume: continuing from step {last}" in result.stdout
    assert sorted(history(tmp_path / "out")) == list(range(1, last + 3))  # history continues
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "out" / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("train/loss")}
    assert sorted(e.step for e in events.Scalars("train/loss")) == list(range(1, last + 3))
    assert logged == {s: pytest.approx(v, rel=1e-6) for s, v in history(tmp_path / "out").items()}


@pytest.mark.parametrize("background", [True, False])
def test_a_full_disk_during_a_save_stops_the_run_with_one_line(write_config, tmp_path,
                                                                 background):
    """The filesystem refuses the write (a file-size limit, RLIMIT_FSIZE: what the kernel
    does to a process that writes past it is what a full disk does, a failed write)."""
    config = write_config({"run": {"steps": 4}, "intervals": {"checkpoint": 2},
                           "checkpoint": {"async": background}})
    run_in_process(config)  # a healthy run: steps 2 and 4 saved
    folder = tmp_path / "out" / "checkpoints"
    sizes = {p.name: p.stat().st_size for p in folder.glob("checkpoint_step_4.bin*")}
    # Room for the weight files, not for the .bin: the save fails with two files written.
    limit = max(sizes["checkpoint_step_4.bin.embeddings"],
                sizes["checkpoint_step_4.bin.decoder"]) + 4096
    assert sizes["checkpoint_step_4.bin"] > limit

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "slimcore", "run", str(config), "--resume", "auto",
         "--steps", "9"], capture_output=True, text=True, cwd=REPO, timeout=300,
        preexec_fn=limit_file_size)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [f"slimcore: error: checkpoint: could not write {folder}/"
                      "checkpoint_step_6.bin (File too large); the previous checkpoint is "
                      "intact"], result.stderr
    # Stopped at the first step that found the save failed (7, or 8 if the save was slow).
    assert max(json.loads(line)["step"] for line in
               (tmp_path / "out" / "history" / "metrics.jsonl").open()) <= 8
    assert sorted(p.name for p in folder.iterdir()) == [
        f"checkpoint_step_{s}.bin{suffix}" for s in (2, 4)
        for suffix in ("", ".decoder", ".embeddings")]
    from slimcore_checkpointers.three_file import read_checkpoint
    assert read_checkpoint(folder / "checkpoint_step_4.bin").step == 4


def test_killed_at_random_moments_and_resumed_the_history_is_the_straight_runs(
        write_config, tmp_path, cli):
    """SIGKILL three times at random steps (often mid-save: a checkpoint every 2 steps, a
    viz interval of 3, so the two never line up), `--resume auto` each time, then to the
    end: metrics history and text samples equal an uninterrupted run's, step for step."""
    settings = {"run": {"steps": 24}, "intervals": {"checkpoint": 2}, "json_export": {"every": 3},
                "samples": {"prompts": ["We the"]}, "plugins": {"disable": ["dashboard"]}}
    run_in_process(write_config({**settings, "output": {"dir": str(tmp_path / "straight")}},
                                name="straight"))
    config = write_config(settings)
    rng = random.Random(1234)
    kill_at = sorted(rng.sample(range(3, 21), 3))
    for index, step in enumerate(kill_at):
        process = start_run(config, *(["--resume", "auto"] if index else []))
        wait_for_line(process.stdout, f"step {step}/24")
        process.kill()
        process.wait(timeout=30)
    result = cli("run", str(config), "--resume", "auto")
    assert result.returncode == 0, result.stderr
    for name in ("metrics_history.json", "text_samples.json"):
        straight = json.loads((tmp_path / "straight" / "training_viz" / name).read_text())
        resumed = json.loads((tmp_path / "out" / "training_viz" / name).read_text())
        keep = ("step", "loss", "accuracy", "prompt", "text")
        assert [{k: r[k] for k in keep if k in r} for r in resumed] == \
            [{k: r[k] for k in keep if k in r} for r in straight], name
    # TensorBoard: what the killed processes logged past their checkpoints is purged on
    # resume, so each step shows once, with the straight run's loss.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tensorboard_losses(folder):
        events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0})
        events.Reload()
        return [(e.step, e.value) for e in events.Scalars("train/loss")]

    assert tensorboard_losses(tmp_path / "out") == tensorboard_losses(tmp_path / "straight")
    assert [step for step, _ in tensorboard_losses(tmp_path / "out")] == list(range(1, 25))


def test_a_snapshot_of_a_shard_keeps_its_place_in_host_buffers_reused(tmp_path):
    """A sharded checkpointer's record holds DTensor shards (FSDP): the snapshot copies each
    rank's local part into a host buffer kept from one save to the next, and hands it on as
    a DTensor placed as the shard is (its mesh, placements and global shape), its local part
    that very buffer."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor, init_device_mesh

    from slimcore import Checkpoint
    from slimcore.train.writer import HostBuffers

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        shard = distribute_tensor(torch.randn(6, 4), init_device_mesh("cpu", (1,)), [Shard(0)])
        record = Checkpoint(step=1, tokens_seen=0, skipped_steps=0, run_id=None, config={},
                            tokenizer_fingerprint=None, model={"w": shard},
                            optimizer={"state": {}, "param_groups": []}, scheduler={}, rng={},
                            data_state=None)
        buffers = HostBuffers()
        first = buffers.snapshot(record).model["w"]
        assert isinstance(first, DTensor) and first.placements == shard.placements
        assert first.shape == shard.shape and torch.equal(first.to_local(), shard.to_local())
        assert first.to_local().data_ptr() == buffers.buffers["model.w"].data_ptr()
        shard.to_local().add_(1)  # training goes on: the snapshot does not change
        assert not torch.equal(first.to_local(), shard.to_local())
        second = buffers.snapshot(record).model["w"]
        assert second.to_local().data_ptr() == first.to_local().data_ptr()  # reused
        assert torch.equal(second.to_local(), shard.to_local())
    finally:
        dist.destroy_process_group()
