"""Exact resume, signals, NaN policy, the stall watchdog: the promises that keep a long run's
work, each checked on real runs (subprocesses where a process must die)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO, run_in_process
from slimcore import UserError, hookimpl
from slimcore.contracts.errors import TrainingHalted


def history(out):
    return {m["step"]: m["loss"] for m in
            json.loads((out / "training_viz" / "metrics_history.json").read_text())}


@pytest.mark.parametrize("source", ["chunk", "sample"])
def test_resume_is_bitwise_the_straight_run(write_config, tmp_path, source, capsys):
    """40 steps straight against 20 + resume + 20: identical losses for steps 21 to 40, the
    data source restored from the position saved in the checkpoint (no replay)."""
    straight = write_config({"run": {"steps": 40}, "data": {"source": source},
                             "intervals": {"checkpoint": 20}}, name="straight")
    run_in_process(straight)
    straight_losses = history(tmp_path / "out")
    resumed = write_config({"run": {"steps": 40}, "data": {"source": source},
                            "output": {"dir": str(tmp_path / "resumed")}}, name="resumed")
    run_in_process(resumed, resume=str(tmp_path / "out" / "checkpoints" /
                                       "checkpoint_step_20.bin"))
    assert "replaying" not in capsys.readouterr().err
    resumed_losses = history(tmp_path / "resumed")
    assert sorted(resumed_losses) == list(range(21, 41))
    assert [resumed_losses[s] for s in range(21, 41)] == [straight_losses[s]
                                                          for s in range(21, 41)]


def start_run(config, *args, env=None):
    return subprocess.Popen([sys.executable, "-m", "slimcore", "run", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, cwd=REPO)


def wait_for_line(stream, needle, timeout=120):
    deadline = time.monotonic() + timeout
    for line in stream:
        if needle in line:
            return line
        assert time.monotonic() < deadline, f"never saw {needle!r}"
    raise AssertionError(f"stream ended before {needle!r}")


def test_a_second_signal_exits_at_once(write_config, tmp_path):
    config = write_config({"run": {"steps": 400}, "intervals": {"checkpoint": 2}})
    # A save that hangs: the first signal waits for it, the second must not.
    process = start_run(config, env={"SLIMCORE_CHECKPOINT_PAUSE": "4:written"})
    wait_for_line(process.stderr, "checkpoint paused: step 4 written")
    process.send_signal(signal.SIGTERM)
    wait_for_line(process.stderr, "SIGTERM: finishing this step")
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGINT


@pytest.mark.parametrize("moment", ["written", "renamed"])
def test_sigkill_mid_checkpoint_leaves_the_previous_set(write_config, tmp_path, cli, moment):
    config = write_config({"run": {"steps": 6}, "intervals": {"checkpoint": 2}})
    process = start_run(config, env={"SLIMCORE_CHECKPOINT_PAUSE": f"4:{moment}"})
    wait_for_line(process.stderr, f"checkpoint paused: step 4 {moment}")
    process.kill()
    process.wait(timeout=30)
    folder = tmp_path / "out" / "checkpoints"
    assert not (folder / "checkpoint_step_4.bin").exists()  # never committed
    result = cli("run", str(config), "--resume", "auto")
    assert result.returncode == 0, result.stderr
    assert "resume: continuing from step 2" in result.stdout
    assert (folder / "checkpoint_step_6.bin").exists()


class PoisonStep:
    """Fills one weight with NaN just before step `k` and restores it after, so exactly
    step k's loss is NaN."""

    def __init__(self, k):
        self.k, self.saved = k, None

    @hookimpl
    def on_metrics(self, metrics, run):
        weight = run.model.head.weight
        if metrics.step == self.k - 1:
            self.saved = weight.detach().clone()
            weight.data.fill_(float("nan"))
        elif metrics.step == self.k and self.saved is not None:
            weight.data.copy_(self.saved)

    @hookimpl
    def on_run_start(self, run):
        if run.start_step == 0 and self.k == 1:
            run.model.head.weight.data.fill_(float("nan"))


def test_nan_loss_is_skipped_and_never_reaches_the_optimizer(write_config, tmp_path, capsys):
    recorder = []

    class Record:
        @hookimpl
        def on_metrics(self, metrics, run):
            recorder.append((metrics.step, metrics.loss, run.model.embed.weight.clone()))

    run_in_process(write_config({"run": {"steps": 6, "nan_policy": "skip"}}),
                   {"poison": PoisonStep(4), "record": Record()})
    assert "step 4: loss nan" in capsys.readouterr().err
    losses = {step: loss for step, loss, _ in recorder}
    assert losses[4] != losses[4]  # NaN
    assert all(losses[s] == losses[s] for s in (1, 2, 3, 5, 6))
    embed = {step: weights for step, _, weights in recorder}
    assert (embed[4] == embed[3]).all()  # no update at the NaN step
    assert not (embed[5] == embed[4]).all()  # and training goes on after it


def test_nan_loss_with_stop_policy_saves_and_exits_3(write_config, tmp_path):
    config = write_config({"run": {"steps": 6, "nan_policy": "stop"}})
    with pytest.raises(TrainingHalted, match="step 4: loss nan.*nan_policy is stop.*"
                                             "checkpoint_step_3.bin"):
        run_in_process(config, {"poison": PoisonStep(4)})
    assert (tmp_path / "out" / "checkpoints" / "checkpoint_step_3.bin").exists()
    assert TrainingHalted.exit_status == 3


def test_stall_watchdog_dumps_stacks_and_exits(write_config, tmp_path, cli, installed_plugins):
    config = write_config({"run": {"steps": 50, "stall_timeout_s": 2},
                           "data": {"source": "counting"}, "intervals": {"checkpoint": 2}})
    started = time.monotonic()
    # Step 2's save takes 3 s in the background, and step 3 hangs: the watchdog fires
    # before the save is done, and lets it finish before the process exits.
    result = cli("run", str(config), env={**installed_plugins, "COUNTING_STALL_AT": "3",
                                          "SLIMCORE_CHECKPOINT_PAUSE": "2:written:3"},
                 timeout=120)
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started < 60
    assert "no step completed in" in result.stderr
    assert "run.stall_timeout_s = 2" in result.stderr
    assert "Thread 0x" in result.stderr  # faulthandler's dump of every thread
    assert sorted(history(tmp_path / "out")) == [1, 2]  # metrics were flushed
    assert "checkpoint paused: step 2 written" in result.stderr
    assert (tmp_path / "out" / "checkpoints" / "checkpoint_step_2.bin").exists()


@pytest.mark.slow  # timing across processes: the slow tier
def test_time_the_process_was_stopped_is_not_a_stall(write_config, tmp_path, installed_plugins):
    """SIGSTOP (Ctrl-Z, a suspended job) for longer than run.stall_timeout_s, then SIGCONT:
    the run goes on to the end; the watchdog counts only the time the process ran."""
    from conftest import SANDBOX, guarded

    # 5 s: a step on a machine loaded by the rest of the suite has taken 3 s
    config = write_config({"run": {"steps": 30, "stall_timeout_s": 5},
                           "data": {"source": "counting"}})
    process = subprocess.Popen([sys.executable, "-m", "slimcore", "run", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=SANDBOX, env=guarded({**installed_plugins,
                                                         "COUNTING_PAUSE_S": "0.2"}))
    log = tmp_path / "out" / "history" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (log.exists() and log.read_text().count("\n") >= 3):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.1)
    process.send_signal(signal.SIGSTOP)
    time.sleep(11)  # stopped for more than twice the stall timeout
    process.send_signal(signal.SIGCONT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "no step completed" not in err
    assert "run completed at step 30" in out


@pytest.mark.parametrize("loss", ["damaged", "checkpoints is a file"])
def test_resume_auto_with_no_intact_checkpoint_changes_nothing(write_config, tmp_path, cli,
                                                              loss):
    """Every set damaged (or the folder of sets replaced by a file): `--resume auto` says so
    in one line naming the run and offering --overwrite, and every byte stays as it was; with
    --overwrite the old run is moved aside, whole, and a new one starts."""
    config = write_config({"run": {"steps": 4}, "intervals": {"checkpoint": 2}})
    assert cli("run", str(config)).returncode == 0
    out = tmp_path / "out"
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    if loss == "damaged":
        for base in (out / "checkpoints").glob("*.bin"):
            data = bytearray(base.read_bytes())
            data[-1] ^= 0xFF
            base.write_bytes(bytes(data))
    else:
        (out / "checkpoints").rename(tmp_path / "moved-away")
        (out / "checkpoints").write_text("not a folder")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*")
              if p.is_file() and p.name != ".slimcore.lock"}
    refused = cli("run", str(config), "--set", "run.steps=6", "--resume", "auto")
    assert refused.returncode == 2, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith(f"slimcore: error: --resume auto: {out} holds the outputs of run "
                           f"{run_id} but no intact checkpoint of it")
    assert "--overwrite" in line and "Traceback" not in refused.stderr
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*")
             if p.is_file() and p.name != ".slimcore.lock"}
    assert after == before
    again = cli("run", str(config), "--set", "run.steps=6", "--resume", "auto", "--overwrite")
    assert again.returncode == 0, again.stderr
    [aside] = tmp_path.glob("out.replaced-*")
    assert {p.relative_to(aside): p.read_bytes() for p in aside.rglob("*")
            if p.is_file() and p.name != ".slimcore.lock"} == before
    assert json.loads((out / "run.json").read_text())["run_id"] != run_id
    assert sorted(history(out)) == [1, 2, 3, 4, 5, 6]


def test_resume_auto_after_a_kill_before_the_first_save_starts_again(write_config, tmp_path,
                                                                      cli):
    """A job script that always passes `--resume auto`, killed before the run's first save:
    the run starts again from step 0 in its folder (nothing saved is lost), and its history
    holds each step once. Once a save has finished, run.json says so."""
    config = write_config({"run": {"steps": 6}, "intervals": {"checkpoint": 1000}})
    process = start_run(config)
    wait_for_line(process.stdout, "step 3/6")
    process.kill()
    process.wait(timeout=30)
    out = tmp_path / "out"
    assert json.loads((out / "run.json").read_text())["checkpoint_saved_at_step"] is None
    again = cli("run", str(config), "--resume", "auto")
    assert again.returncode == 0, again.stderr
    assert "no checkpoint of this run" in again.stdout and "starting from step 0" in again.stdout
    logged = [json.loads(line)["step"] for line in
              (out / "history" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]
    assert json.loads((out / "run.json").read_text())["checkpoint_saved_at_step"] == 6


def test_resume_refuses_another_model_shape(write_config, tmp_path):
    run_in_process(write_config({"run": {"steps": 2}}))
    with pytest.raises(UserError, match="another model shape \\(model.width differ"):
        run_in_process(write_config({"run": {"steps": 4}, "model": {"width": 48}}),
                       resume="auto")


def test_resume_takes_a_run_folder_as_the_model_commands_do(write_config, tmp_path, capsys):
    """`--resume runs/x` (a folder) continues from that run's newest intact checkpoint; it
    said the folder "does not exist". A folder holding none is one line."""
    run_in_process(write_config({"run": {"steps": 4}, "intervals": {"checkpoint": 2}}))
    branch = write_config({"run": {"steps": 6}, "output": {"dir": str(tmp_path / "branch")}},
                          name="branch")
    run_in_process(branch, resume=str(tmp_path / "out"))
    assert str(tmp_path / "out" / "checkpoints" / "checkpoint_step_4.bin") in \
        capsys.readouterr().out
    assert sorted(history(tmp_path / "branch")) == [5, 6]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=f"--resume: {tmp_path / 'empty'} is a folder holding "
                                        "no intact checkpoint"):
        run_in_process(branch, resume=str(tmp_path / "empty"))


def test_resume_says_what_each_changed_key_does_and_records_what_is_in_force(
        write_config, tmp_path, capsys):
    """Each changed key has its fate: optimizer.lr applies from the first resumed step (it
    was ignored while config.yaml recorded it), the tokenizer and the seed stay the
    checkpoint's (config.yaml says so), chunk.tokens_per_chunk applies after the rows
    already packed, and corpus.path is refused (the saved position indexes the old corpus;
    it trained on the buffered old tokens)."""
    steady = {"schedule": {"kind": "constant", "warmup_steps": 0}}
    run_in_process(write_config({"run": {"steps": 2}, **steady}))
    changed = {"run": {"steps": 4, "seed": 8}, **steady, "optimizer": {"lr": 1e-3},
               "tokenizer": {"vocab_size": 700}, "chunk": {"tokens_per_chunk": 2048}}
    capsys.readouterr()
    run_in_process(write_config(changed), resume="auto")
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "resuming with config differences" in x)
    assert "optimizer.lr (applies from this step)" in line
    assert "tokenizer.vocab_size (kept at the checkpoint's 600)" in line
    assert "run.seed (kept at the checkpoint's 7)" in line
    assert "chunk.tokens_per_chunk (applies after the data the source's saved position " \
           "holds)" in line
    rates = {m["step"]: m["learning_rate"] for m in json.loads(
        (tmp_path / "out" / "training_viz" / "metrics_history.json").read_text())}
    assert rates[1] == pytest.approx(3e-4) and rates[3] == rates[4] == pytest.approx(1e-3)
    in_force = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert in_force["optimizer"]["lr"] == 1e-3 and in_force["run"]["seed"] == 7
    assert in_force["tokenizer"]["vocab_size"] == 600
    with pytest.raises(UserError, match=r"--resume: corpus.path is 'elsewhere/\*.jsonl' here "
                                        r"and 'bundled' in .* which cannot go on with it \(the "
                                        r"data source's saved position depends on it\)"):
        run_in_process(write_config({**changed, "run": {"steps": 6},
                                     "corpus": {"path": "elsewhere/*.jsonl"}}), resume="auto")


def test_a_run_extended_with_a_larger_steps_keeps_its_learning_rate_curve(tmp_path, capsys):
    """300 steps planned, then `--resume auto --steps` more: the rate stays on the curve the
    run was on (at its floor after step 300, here step 4), with a line that says so; setting
    schedule.total_steps re-plans it, from the first resumed step on."""
    from slimcore.testing import tiny_run

    settings = {"schedule": {"warmup_steps": 1, "min_lr_ratio": 0.1},
                "optimizer": {"lr": 1e-3}}
    first = tiny_run(tmp_path / "run", config=settings, steps=4,
                     overrides=["intervals.checkpoint=4"])
    assert first.metrics[-1].learning_rate > 1e-4  # the cosine's last step, above its floor
    capsys.readouterr()
    extended = tiny_run(tmp_path / "run", config=settings, steps=7, resume="auto")
    assert [m.learning_rate for m in extended.metrics] == pytest.approx([1e-4] * 3)
    out = capsys.readouterr().out
    assert ("run.steps is 7 and the checkpoint's run planned its learning rate to step 4: "
            "the rate keeps that curve") in out and "set schedule.total_steps" in out
    assert extended.run.config.schedule.total_steps == 4  # what is in force, in config.yaml
    assert "total_steps: 4" in (tmp_path / "run" / "config.yaml").read_text()

    replanned = tiny_run(tmp_path / "again", config=settings, steps=4,
                         overrides=["intervals.checkpoint=4"])
    again = tiny_run(tmp_path / "again", config={**settings, "schedule": {
        **settings["schedule"], "total_steps": 7}}, steps=7, resume="auto")
    straight = tiny_run(tmp_path / "straight", config={**settings, "schedule": {
        **settings["schedule"], "total_steps": 7}}, steps=7)
    assert replanned.metrics[-1].learning_rate != straight.metrics[3].learning_rate
    # the first resumed step already follows the new plan (it used the old one's rate)
    assert [m.learning_rate for m in again.metrics] == \
        pytest.approx([m.learning_rate for m in straight.metrics[4:]])
