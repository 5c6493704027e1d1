"""Shared fixtures: offline Hub, one tokenizer cache per session, tiny configs, the CLI in a
real subprocess, and real plugin distributions installed with pip into a private folder."""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml

# Set before anything imports `datasets`: it reads the flag at import time.
os.environ["HF_HUB_OFFLINE"] = "1"

# The suite stays home. Every process it starts (and this one) has a HOME, caches and
# configuration folders of its own under a temporary folder, and the network guard
# (tests/guard/sitecustomize.py): a connection or a name lookup past loopback fails, and is
# logged, and the test that made it fails (stays_on_the_machine below).
SANDBOX = Path(tempfile.mkdtemp(prefix="slimcore-suite-"))
atexit.register(shutil.rmtree, SANDBOX, ignore_errors=True)
GUARD = Path(__file__).resolve().parent / "tests" / "guard"
os.environ.update({
    "HOME": str(SANDBOX / "home"), "XDG_CACHE_HOME": str(SANDBOX / "cache"),
    "XDG_CONFIG_HOME": str(SANDBOX / "config"), "MPLCONFIGDIR": str(SANDBOX / "matplotlib"),
    "TORCHINDUCTOR_CACHE_DIR": str(SANDBOX / "inductor"), "HF_HOME": str(SANDBOX / "hf"),
    "TRITON_CACHE_DIR": str(SANDBOX / "triton"), "WANDB_CONFIG_DIR": str(SANDBOX / "wandb"),
    "SLIMCORE_TEST_NETWORK_LOG": str(SANDBOX / "network.log"),
    "WANDB_ERROR_REPORTING": "false",  # W&B posts its telemetry even offline
    "PYTHONPATH": os.pathsep.join(filter(None, [str(GUARD), os.environ.get("PYTHONPATH")])),
})
(SANDBOX / "home").mkdir()
_guard = importlib.util.spec_from_file_location("slimcore_network_guard",
                                                GUARD / "sitecustomize.py")
_guard.loader.exec_module(importlib.util.module_from_spec(_guard))  # guards this process

from slimcore import hookimpl as slimcore_hookimpl  # noqa: E402
from slimcore.testing import TINY_CONFIG  # noqa: E402

REPO = Path(__file__).resolve().parent

# slimcore.testing's tiny run, which authors' tests use too. The dashboard's render process
# costs seconds a run, TensorBoard's import one; their own tests turn them back on.
TINY = {**TINY_CONFIG, "corpus": {"path": "bundled", "shuffle_buffer": 8},
        "chunk": {"tokens_per_chunk": 4096}, "dashboard": {"every": 3},
        "json_export": {"every": 3}, "plugins": {"disable": ["dashboard", "tensorboard"]}}


@pytest.fixture(autouse=True)
def stays_on_the_machine():
    """A test that reached past loopback fails, even where the code under test swallowed
    the guard's OSError."""
    log = Path(os.environ["SLIMCORE_TEST_NETWORK_LOG"])
    before = log.read_text() if log.exists() else ""
    yield
    reached = (log.read_text() if log.exists() else "")[len(before):]
    assert not reached, f"the test reached past 127.0.0.1: {reached.strip()}"


def untracked_files() -> set[str]:
    """Files in the checkout that git does not track, ignored ones included (runs/, say),
    but the environment and caches a test run makes by design."""
    listed = subprocess.run(["git", "status", "--porcelain", "--ignored",
                             "--untracked-files=all"], cwd=REPO, capture_output=True,
                            text=True).stdout.splitlines()
    made_by_design = (".venv/", "build/", ".pytest_cache/", "__pycache__", ".egg-info/")
    return {line[3:] for line in listed if line[:2] in ("??", "!!")
            and not any(part in line for part in made_by_design)}


def pytest_collection_modifyitems(config, items):
    """Tests marked slow (minutes of set-up from nothing, timing across processes) run only
    in the slow tier: `make test-slow`, which CI runs after the suite."""
    if os.environ.get("SLIMCORE_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow tier: run with `make test-slow` (SLIMCORE_SLOW_TESTS=1)")
    for item in items:
        if item.get_closest_marker("slow"):
            item.add_marker(skip)


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput") and (REPO / ".git").exists():
        session.config.untracked_at_start = untracked_files()


def pytest_sessionfinish(session, exitstatus):
    """The suite fails if it left a file in the checkout."""
    before = getattr(session.config, "untracked_at_start", None)
    if before is None:
        return
    left = sorted(untracked_files() - before)
    if left:
        print(f"\nslimcore suite: the tests left files in the checkout: {', '.join(left)}")
        session.exitstatus = 1


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory):
    """One cache for the session: the bundled shards and tokenizers are built once."""
    path = tmp_path_factory.mktemp("slimcore-cache")
    os.environ["SLIMCORE_CACHE_DIR"] = str(path)
    return path


@pytest.fixture
def write_config(tmp_path):
    """Write a YAML config (TINY updated section by section) and return its path."""

    def write(updates: dict | None = None, name: str = "tiny", text: str | None = None) -> Path:
        path = tmp_path / f"{name}.yaml"
        if text is not None:
            path.write_text(textwrap.dedent(text))
            return path
        config = {section: dict(values) for section, values in TINY.items()}
        config["output"] = {"dir": str(tmp_path / "out")}
        for section, values in (updates or {}).items():
            if values is None:
                config.pop(section, None)
            elif isinstance(values, dict):
                config.setdefault(section, {}).update(values)
            else:
                config[section] = values
        path.write_text(yaml.safe_dump(config))
        return path

    return write


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m slimcore ARGS` in a real subprocess, in a folder of the sandbox (a run
    with no output.dir writes there, never in the checkout)."""
    return subprocess.run([sys.executable, "-m", "slimcore", *args], capture_output=True,
                          text=True, env=guarded(env), cwd=cwd or SANDBOX, timeout=timeout)


def guarded(env: dict | None = None) -> dict:
    """The environment for a subprocess: the suite's, with `env` over it; a PYTHONPATH in
    `env` keeps the network guard in front."""
    full = {**os.environ, **(env or {})}
    if env and "PYTHONPATH" in env:
        full["PYTHONPATH"] = os.pathsep.join([str(GUARD), env["PYTHONPATH"]])
    return full


@pytest.fixture
def cli():
    return run_cli


# -- real plugin distributions, installed with pip -------------------------------------------

PLUGIN_PACKAGES = {
    # Raises on import: must be listed as failed, and break nothing that does not select it.
    "slimcore-broken-plugin": ("broken_plugin", "broken", "slimcore_broken_plugin",
                               'raise RuntimeError("this plugin is broken on purpose")\n'),
    # A data source from a third party: proves sources are found through entry points.
    "slimcore-counting-source": ("counting_source", "counting", "slimcore_counting_source", '''
import os
import signal
import time

import torch
from slimcore import Batch, hookimpl

@hookimpl
def corpus_text(source, run, max_documents):
    if source == "counting":
        return ["one two three four five six seven eight nine ten"] * 20

@hookimpl
def iterate_batches(source, run):
    if source != "counting":
        return None
    stall_at = int(os.environ.get("COUNTING_STALL_AT", "0"))
    pause_s = float(os.environ.get("COUNTING_PAUSE_S", "0"))  # a stream slower than the step
    # exit|kill|stop|hang:RANK:BATCH - that rank of a torchrun job exits, is SIGKILLed, is
    # SIGSTOPped or hangs at
    # that batch; with COUNTING_FAULT_ONCE=PATH, only while PATH does not exist (it is made)
    fault, fault_rank, fault_at = (os.environ.get("COUNTING_FAULT", "none:-1:0").split(":"))
    once = os.environ.get("COUNTING_FAULT_ONCE")
    if once and os.path.exists(once):
        fault = "none"

    def batches():
        row = run.config.model.seq_len + 1
        for start in range(10**9):
            time.sleep(pause_s)
            if start + 1 == stall_at:
                time.sleep(3600)  # a data stream that hangs
            if fault != "none" and run.rank == int(fault_rank) and start + 1 == int(fault_at):
                print(f"rank {run.rank}: {fault} at batch {start + 1}", flush=True)
                if once:
                    open(once, "w").close()
                if fault == "exit":
                    os._exit(1)
                if fault == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if fault == "stop":
                    os.kill(os.getpid(), signal.SIGSTOP)
                # Hung where no Python handler runs: torchrun's SIGTERM ends it at once.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                time.sleep(3600)
            ids = torch.arange(start, start + run.config.data.batch_size * row) % 50
            yield Batch.from_sequences(ids.view(-1, row))
    return batches()

@hookimpl
def register_commands(subparsers):
    parser = subparsers.add_parser("count", help="count to N")
    parser.add_argument("n", type=int)
    parser.set_defaults(handler=lambda args: print(" ".join(map(str, range(1, args.n + 1)))))
'''),
    # A chart whose drawing raises: the dashboard must switch it off and go on.
    "slimcore-exploding-chart": ("exploding_chart", "exploding_chart", "slimcore_exploding_chart",
                                 '''
from slimcore import Chart, hookimpl

class Exploding(Chart):
    name, title = "exploding_chart", "Explodes"

    def draw(self, ax, data):
        return 1 / 0

@hookimpl
def register_charts():
    return [Exploding()]
'''),
}


@pytest.fixture(scope="session")
def installed_plugins(tmp_path_factory) -> dict[str, str]:
    """pip-install the test plugin distributions into a private folder; returns the env
    (PYTHONPATH) under which a subprocess sees them as installed."""
    return pip_install(PLUGIN_PACKAGES, tmp_path_factory.mktemp("plugin-src"),
                       tmp_path_factory.mktemp("plugin-site"), version="0.0.7")


def pip_install(packages: dict, root: Path, target: Path, version: str) -> dict[str, str]:
    """One-module plugin distributions ({distribution: (folder, entry point, module,
    code)}), written under `root` and pip-installed into `target`; the env that sees them."""
    sources = []
    for dist, (folder, ep_name, module, code) in packages.items():
        src = root / folder
        (src / module).mkdir(parents=True)
        (src / module / "__init__.py").write_text(textwrap.dedent(code))
        (src / "pyproject.toml").write_text(textwrap.dedent(f"""
            [build-system]
            requires = ["setuptools>=64"]
            build-backend = "setuptools.build_meta"
            [project]
            name = "{dist}"
            version = "{version}"
            [project.entry-points.slimcore]
            {ep_name} = "{module}"
            """))
        sources.append(str(src))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "--target",
                    str(target), *sources], check=True, capture_output=True)
    return {"PYTHONPATH": str(target)}


def source_plugin(name: str, batches, texts: list[str]):
    """An in-process data source plugin answering for `name`: `texts` to train the tokenizer,
    `batches(run)` for the batches."""
    from slimcore import hookimpl

    class Source:
        @hookimpl
        def corpus_text(self, source, run, max_documents):
            return texts if source == name else None

        @hookimpl
        def iterate_batches(self, source, run):
            return batches(run) if source == name else None

    return Source()


QUICKSTART = REPO / "examples" / "quickstart.yaml"
QUIET = {"dashboard", "tensorboard"}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A run folder of the quickstart as `--test` trains it: 20 steps, evaluated and saved
    at the last. Shared: copy it before changing it."""
    from slimcore.config.resolve import SMOKE_OVERRIDES

    folder = tmp_path_factory.mktemp("quickstart") / "run"
    status, _ = run_in_process(QUICKSTART, overrides=[
        *SMOKE_OVERRIDES, "run.steps=20", "eval.interval=20", "eval.batches=2",
        f"output.dir={folder}"], disabled=QUIET)
    assert status == "completed"
    return folder


def run_in_process(config_path, plugins: dict | None = None, overrides=(), resume=None,
                   disabled=(), overwrite=False):
    """One run in this process with extra in-process plugins ({name: object}).
    Returns (status, plugin manager)."""
    from slimcore.testing import run_config_file

    run, pm = run_config_file(config_path, plugins, overrides, disabled, resume, overwrite)
    return run.status, pm


class Losses:
    """An in-process plugin that keeps each step's loss:
    `run_in_process(config, {"losses": losses})`, then `losses.losses[step]`."""

    def __init__(self):
        self.losses: dict[int, float] = {}

    @slimcore_hookimpl
    def on_metrics(self, metrics):
        self.losses[metrics.step] = metrics.loss


def steps_of(folder: Path) -> dict[int, dict]:
    """A run folder's history (history/metrics.jsonl), each step's record by its step."""
    lines = (Path(folder) / "history" / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record for record in map(json.loads, lines)}
