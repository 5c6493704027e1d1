"""An output folder holds one run, and one process at a time: a second run into a busy
folder, a new run into a finished one, another run's checkpoints in the folder. Real runs
in real subprocesses where a process must hold a lock or die."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_in_process
from slimcore import UserError
from slimcore_checkpointers.three_file import complete_sets, read_checkpoint


def start_run(config, *args):
    return subprocess.Popen([sys.executable, "-m", "slimcore", "run", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env=os.environ.copy())


def wait_for(stream, needle, timeout=120):
    deadline = time.monotonic() + timeout
    for line in stream:
        if needle in line:
            return
        assert time.monotonic() < deadline, f"never saw {needle!r}"
    raise AssertionError(f"the stream ended before {needle!r}")


def one_line_error(result):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slimcore: error: "), result.stderr
    return lines[0]


def test_a_second_run_into_a_busy_folder_stops_at_once_naming_the_first(write_config, tmp_path,
                                                                       cli):
    # Steps enough that the first run is still training when the last refusal comes, on a
    # loaded machine too (it is stopped below).
    config = write_config({"run": {"steps": 100_000}, "intervals": {"checkpoint": 5}})
    first = start_run(config)
    try:
        wait_for(first.stdout, "step 2/100000")
        out = tmp_path / "out"
        # run.json, less the step of the first run's newest save (which it moves on)
        def record_now():
            run = json.loads((out / "run.json").read_text())
            del run["checkpoint_saved_at_step"]
            return (out / "config.yaml").read_bytes(), run

        record = record_now()
        started = time.monotonic()
        line = one_line_error(cli("run", str(config), "--steps", "3"))
        assert time.monotonic() - started < 30
        assert f"is in use by another run (PID {first.pid} on " in line
        # The same with --resume auto and --overwrite: nothing gets past a held lock.
        for flags in (["--resume", "auto"], ["--overwrite"]):
            assert "in use by another run" in one_line_error(cli("run", str(config), *flags))
        assert record_now() == record
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 143
    # The first run's checkpoints are whole: nothing else wrote into the folder.
    for base in complete_sets(tmp_path / "out" / "checkpoints"):
        read_checkpoint(base)


def test_a_killed_run_leaves_no_stale_lock(write_config, tmp_path, cli):
    config = write_config({"run": {"steps": 400}, "intervals": {"checkpoint": 2}})
    first = start_run(config)
    wait_for(first.stdout, "step 5/400")
    first.kill()
    first.wait(timeout=30)
    result = cli("run", str(config), "--resume", "auto", "--steps", "8")
    assert result.returncode == 0, result.stderr
    assert "resume: continuing from step" in result.stdout


def test_a_new_run_into_a_folder_of_another_run_is_refused(write_config, tmp_path, cli):
    config = write_config({"run": {"steps": 4}})
    run_in_process(config)
    out = tmp_path / "out"
    history = (out / "training_viz" / "metrics_history.json").read_bytes()
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    line = one_line_error(cli("run", str(config), "--steps", "6"))
    assert f"{out} holds the outputs of run {run_id}" in line
    assert "--resume auto" in line and "--output-dir" in line and "--overwrite" in line
    with pytest.raises(UserError, match="holds the outputs of run"):
        run_in_process(config, overrides=["run.steps=3"])
    # Nothing of the earlier run was touched.
    assert (out / "training_viz" / "metrics_history.json").read_bytes() == history
    assert [p.name for p in complete_sets(out / "checkpoints")] == ["checkpoint_step_4.bin"]
    assert json.loads((out / "run.json").read_text())["run_id"] == run_id


def test_overwrite_moves_the_old_run_aside(write_config, tmp_path, cli):
    config = write_config({"run": {"steps": 4}})
    run_in_process(config)
    old_id = json.loads((tmp_path / "out" / "run.json").read_text())["run_id"]
    result = cli("run", str(config), "--steps", "2", "--overwrite")
    assert result.returncode == 0, result.stderr
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("out.replaced-")]
    assert len(moved) == 1 and f"was moved to {moved[0]}" in result.stdout
    assert json.loads((moved[0] / "run.json").read_text())["run_id"] == old_id
    assert read_checkpoint(moved[0] / "checkpoints" / "checkpoint_step_4.bin").step == 4
    new = tmp_path / "out"
    assert json.loads((new / "run.json").read_text())["run_id"] != old_id
    # The folder the command runs in cannot be moved aside.
    line = one_line_error(cli("run", str(config), "--overwrite", cwd=new))
    assert "is the folder this command runs in" in line
    assert [p.name for p in complete_sets(new / "checkpoints")] == ["checkpoint_step_2.bin"]
    steps = [m["step"] for m in json.loads(
        (new / "training_viz" / "metrics_history.json").read_text())]
    assert steps == [1, 2]


def test_overwrite_through_a_linked_output_folder_keeps_the_link(write_config, tmp_path, cli):
    """output.dir a symbolic link (to a bigger disk, say): --overwrite moves the folder it
    leads to aside and starts in a fresh one there; the link still leads to the run (it was
    left dangling, and the run failed after moving the data)."""
    real = tmp_path / "disk" / "run"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    config = write_config({"run": {"steps": 2}, "output": {"dir": str(tmp_path / "link")}})
    assert cli("run", str(config)).returncode == 0
    old = (real / "run.json").read_bytes()
    result = cli("run", str(config), "--overwrite")
    assert result.returncode == 0, result.stderr
    [aside] = (tmp_path / "disk").glob("run.replaced-*")
    assert (aside / "run.json").read_bytes() == old
    assert (tmp_path / "link").resolve() == real and (real / "run.json").read_bytes() != old
    assert (tmp_path / "link" / "checkpoints" / "checkpoint_step_2.bin").is_file()


def test_resume_auto_and_pruning_never_take_another_runs_checkpoints(write_config, tmp_path,
                                                                     capsys):
    # Run A in folder a; run B in folder b, whose sets of steps 7 and 8 are copied into a.
    a = write_config({"run": {"steps": 4}, "intervals": {"checkpoint": 2},
                      "three_file": {"keep_last": 2}, "output": {"dir": str(tmp_path / "a")}},
                     name="a")
    b = write_config({"run": {"steps": 8}, "intervals": {"checkpoint": 7},
                      "output": {"dir": str(tmp_path / "b")}}, name="b")
    run_in_process(a)
    run_in_process(b)
    folder = tmp_path / "a" / "checkpoints"
    for step in (7, 8):
        for suffix in ("", ".embeddings", ".decoder"):
            name = f"checkpoint_step_{step}.bin{suffix}"
            (folder / name).write_bytes((tmp_path / "b" / "checkpoints" / name).read_bytes())
    a_id, b_id = (json.loads((tmp_path / x / "run.json").read_text())["run_id"] for x in "ab")
    capsys.readouterr()
    run_in_process(a, overrides=["run.steps=10"], resume="auto")
    out = capsys.readouterr()
    assert "resume: continuing from step 4" in out.out  # A's own newest, not B's 7 or 8
    assert f"checkpoint_step_8.bin belongs to run {b_id}" in out.err
    # A saved 6, 8 and 10 (B's set 8 renamed first, not overwritten), then pruned its own
    # sets to keep_last = 2 plus the one it resumed from (4); B's 7 is left alone.
    owners = {p.name: read_checkpoint(p).run_id for p in complete_sets(folder)}
    assert owners == {"checkpoint_step_4.bin": a_id, "checkpoint_step_7.bin": b_id,
                      "checkpoint_step_8.bin": a_id, "checkpoint_step_10.bin": a_id}
    assert f"renamed to checkpoint_step_8.bin.other-run-{b_id}" in out.err
    kept = folder / f"checkpoint_step_8.bin.other-run-{b_id}"
    assert kept.read_bytes() == (tmp_path / "b" / "checkpoints" / "checkpoint_step_8.bin"
                                 ).read_bytes()


def test_resuming_a_checkpoint_into_a_folder_of_another_run_is_refused(write_config,
                                                                       tmp_path):
    a = write_config({"run": {"steps": 2}, "output": {"dir": str(tmp_path / "a")}}, name="a")
    b = write_config({"run": {"steps": 2}, "output": {"dir": str(tmp_path / "b")}}, name="b")
    run_in_process(a)
    run_in_process(b)
    with pytest.raises(UserError, match="holds the outputs of run .* resuming .*a/checkpoints/"
                                        "checkpoint_step_2.bin into it would mix the two"):
        run_in_process(b, overrides=["run.steps=4"],
                       resume=str(tmp_path / "a" / "checkpoints" / "checkpoint_step_2.bin"))
    # Into a fresh folder it continues run A, under A's id.
    fresh = write_config({"run": {"steps": 4}, "output": {"dir": str(tmp_path / "c")}}, name="c")
    run_in_process(fresh, resume=str(tmp_path / "a" / "checkpoints" / "checkpoint_step_2.bin"))
    a_id = json.loads((tmp_path / "a" / "run.json").read_text())["run_id"]
    assert json.loads((tmp_path / "c" / "run.json").read_text())["run_id"] == a_id
    assert read_checkpoint(tmp_path / "c" / "checkpoints" / "checkpoint_step_4.bin").run_id \
        == a_id


def test_bad_output_folders_and_step_counts_are_one_line(write_config, tmp_path, cli):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = write_config({"output": {"dir": str(blocker)}})
    assert "a-file is a file, not a folder" in one_line_error(cli("run", str(config)))
    assert blocker.read_text() == "not a folder"
    config = write_config({"run": {"steps": 2}})
    assert "--steps: run.steps: must be at least 1" in one_line_error(
        cli("run", str(config), "--steps", "0"))  # and -1, and the rest: test_config.py
    run_in_process(config)
    with pytest.raises(UserError, match="is at step 2 and run.steps is 2: nothing left to "
                                        "train; raise --steps"):
        run_in_process(config, resume="auto")


def test_completed_is_said_only_after_the_final_save(write_config, tmp_path, cli):
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoints").write_text("a file where the checkpoints folder goes")
    result = cli("run", str(write_config({"run": {"steps": 3}})))
    line = one_line_error(result)
    assert "checkpoint: could not write" in line
    assert "run completed" not in result.stdout
    assert "run failed at step 3" in result.stdout


def test_plugins_disable_from_set_is_obeyed(write_config, tmp_path, cli, capsys):
    config = write_config({"run": {"steps": 2}})
    result = cli("run", str(config), "--set", "plugins.disable=[json_export]")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "out" / "training_viz" / "metrics_history.json").exists()
    statuses = {p["name"]: p["status"] for p in json.loads(
        (tmp_path / "out" / "plugins.json").read_text())}
    assert statuses["json_export"] == "blocked"
    from slimcore.commands.cli import main

    assert main(["config", str(config), "--set", "plugins.disable=json_export"]) == 2
    assert capsys.readouterr().err.strip() == ("slimcore: error: --set: plugins.disable: "
                                               "expected a list of plugin names")


@pytest.mark.parametrize("damage", ['{"run_id": ["a"]}', '{"run_id": "../x"}', "[1, 2]",
                                    "[" * 100_000 + "]" * 100_000, "folder"])
def test_a_damaged_run_json_is_read_as_unknown(write_config, tmp_path, damage):
    """run.json of the wrong shape (a list, a run id that is no id, nested past Python's
    depth, a folder): `--resume auto` goes on from the newest intact set and writes it
    again; it was a traceback."""
    config = write_config({"run": {"steps": 2}})
    run_in_process(config)
    record = tmp_path / "out" / "run.json"
    run_id = json.loads(record.read_text())["run_id"]
    record.unlink()
    if damage == "folder":
        record.mkdir()
    else:
        record.write_text(damage)
    if damage == "folder":  # not a file to replace: one line naming it
        with pytest.raises(UserError, match=f"cannot write {record} "):
            run_in_process(config, overrides=["run.steps=3"], resume="auto")
        return
    run_in_process(config, overrides=["run.steps=3"], resume="auto")
    assert json.loads(record.read_text())["run_id"] == run_id
