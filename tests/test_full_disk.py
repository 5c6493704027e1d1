"""A disk that fills: every write says which file it could not write, in one line, exit 2,
and what was written before stays whole. A full disk is made with RLIMIT_FSIZE (no file
of the process may grow past the limit: its writes fail with EFBIG, as on a full disk with
ENOSPC), SIGXFSZ ignored as a shell's `ulimit -f` leaves it."""

import json
import resource
import signal
import subprocess
import sys

import pytest

from conftest import SANDBOX, guarded


def run_with_file_limit(limit: int, *args: str) -> subprocess.CompletedProcess:
    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "slimcore", *args], capture_output=True,
                          text=True, env=guarded(), cwd=SANDBOX, timeout=300,
                          preexec_fn=limit_files)


@pytest.fixture
def warm_config(write_config, tmp_path, cli):
    """A config whose tokenizer and native libraries are already cached (their files are
    larger than the limits below)."""
    config = write_config({"run": {"steps": 300}, "intervals": {"checkpoint": 1000}})
    warm = cli("run", str(config), "--steps", "1", "--output-dir", str(tmp_path / "warm"))
    assert warm.returncode == 0, warm.stderr
    return config


def test_a_disk_full_at_the_start_is_one_line(warm_config, tmp_path):
    result = run_with_file_limit(100, "run", str(warm_config))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"slimcore: error: cannot write {tmp_path / 'out'}/") and \
        "(File too large)" in line


def test_a_disk_full_between_checkpoints_is_one_line_and_the_history_stays_whole(
        warm_config, tmp_path):
    """The history's log fills past 30 KB at about step 80: the run stops there with one
    line naming the file; the trackers' and the dashboard's failures are one line each,
    none a traceback (a thread of TensorBoard's printed one); the log holds whole lines."""
    result = run_with_file_limit(30_000, "run", str(warm_config))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"slimcore: error: cannot write {tmp_path / 'out'}/"), last
    log = (tmp_path / "out" / "history" / "metrics.jsonl").read_text()
    assert log.endswith("\n")
    steps = [json.loads(line)["step"] for line in log.splitlines()]
    assert steps == list(range(1, len(steps) + 1)) and 20 < len(steps) < 300


@pytest.mark.slow  # a CLI run past a warm-up run: the slow tier
def test_a_disk_full_in_a_sharded_save_is_one_line_and_commits_nothing(warm_config, tmp_path):
    """The sharded checkpointer's data file (about 800 KB for this model) cannot be written
    past 300 KB: the run stops at that save with one line naming the set being written; no
    set is committed, so a resume would take the one before."""
    result = run_with_file_limit(300_000, "run", str(warm_config), "--set",
                                 "checkpoint.checkpointer=sharded", "--steps", "4",
                                 "--checkpoint-interval", "2")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    partial = tmp_path / "out" / "checkpoints" / "sharded_step_2.partial"
    assert last.startswith(f"slimcore: error: checkpoint: could not write {partial} ("), last
    assert not list((tmp_path / "out" / "checkpoints").glob("sharded_step_?"))
