"""The README's first command on a fresh clone: `make quickstart` sets up `.venv/` from
nothing (no environment, no installed slimcore) and trains with it.

Minutes of pip installs: the slow tier (`make test-slow`, which CI runs after the suite).
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def base_python() -> str:
    """The interpreter outside any virtual environment: what a newcomer's python3 is."""
    for candidate in (getattr(sys, "_base_executable", None),
                      Path(sys.base_prefix) / "bin" / "python3"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return shutil.which("python3")


def clean_environment(home: Path) -> dict:
    """No virtual environment active, none of this suite's settings, a home of its own (so
    no user config or cache is borrowed); pip's own index settings stay, as a user's would."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "SLIMCORE_CACHE_DIR")
           and not key.startswith(("PYTEST", "SLIMCORE_"))}
    venv = os.environ.get("VIRTUAL_ENV")
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep)
                                  if not venv or not p.startswith(venv))
    env["HOME"] = str(home)
    env["HF_HUB_OFFLINE"] = "1"
    return env


def test_make_quickstart_sets_up_a_fresh_clone_and_trains(tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    assert not (clone / ".venv").exists()
    env = clean_environment(tmp_path / "home")

    result = subprocess.run(["make", "quickstart", "ARGS=--test", f"PYTHON={base_python()}"],
                            cwd=clone, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "setup: no GPU" in result.stdout or "setup: a GPU is here" in result.stdout
    assert "run completed at step 10" in result.stdout
    venv_python = clone / ".venv" / "bin" / "python"
    facts = json.loads(subprocess.run(
        [str(venv_python), "-c",
         "import json, sys, torch, slimcore, slimcore_visualizers\n"
         "from importlib.util import find_spec\n"
         "from importlib.metadata import distributions\n"
         "print(json.dumps({"
         "'prefix': sys.prefix, 'cuda': torch.version.cuda, "
         "'slimcore': slimcore.__file__, 'visualizers': slimcore_visualizers.__file__, "
         "'count': len({d.metadata['Name'] for d in distributions()}), "
         "'extras': [m for m in ('pytest', 'transformers', 'wandb', 'mlflow') "
         "if find_spec(m)]}))"],
        env=env, capture_output=True, text=True, check=True, timeout=300).stdout)
    # Training's set-up: no test tools, trackers or transformers (make test adds them).
    assert facts["extras"] == [] and facts["count"] < 80, facts
    # The environment is the clone's own, and its slimcore is the clone's source.
    assert Path(facts["prefix"]).resolve() == (clone / ".venv").resolve()
    assert Path(facts["slimcore"]).resolve().is_relative_to(clone.resolve())
    assert Path(facts["visualizers"]).resolve().is_relative_to(clone.resolve())
    if shutil.which("nvidia-smi") is None:
        assert facts["cuda"] is None  # the CPU build where no GPU is found
    output = clone / "runs" / "quickstart-test"  # the smoke run's own folder
    assert (output / "checkpoints" / "checkpoint_step_10.bin").exists()
    assert (output / "training_viz" / "metrics_history.json").exists()

    # Made once: a second command reuses it (no pip), until a requirements file changes.
    again = subprocess.run(["make", "setup", f"PYTHON={base_python()}"], cwd=clone, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "pip" not in again.stdout + again.stderr, again.stdout
    assert "setup:" not in again.stdout
