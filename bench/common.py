"""Pieces the benchmarks share: the quickstart config, fixed batches from the real `chunk`
source, an in-process source that replays them, a clock driven by `on_metrics`, and a whole
quickstart run's history."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before `datasets` is imported
from slimcore import DataSource, hookimpl  # noqa: E402
from slimcore.config.resolve import resolve_config  # noqa: E402
from slimcore.host.manager import SlimcorePluginManager  # noqa: E402
from slimcore.host.roles import open_source  # noqa: E402
from slimcore.launch.preparation import prepare_tokenizer  # noqa: E402
from slimcore.launch.training import run_training  # noqa: E402
from slimcore.testing import make_run, run_config_file  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart.yaml"
# Off for runs timed whole: the dashboard's render process costs seconds, TensorBoard's import.
QUIET = {"dashboard", "tensorboard"}


def quickstart_history(overrides: list[str]) -> list[dict]:
    """`slimcore run examples/quickstart.yaml` with `overrides`, in this process, into a
    folder of its own that goes afterwards; every step's metrics record."""
    with tempfile.TemporaryDirectory() as folder:
        run, _ = run_config_file(QUICKSTART, overrides=[*overrides, f"output.dir={folder}"],
                                 disabled=QUIET)
        assert run.status == "completed", run.status
        lines = (Path(folder) / "history" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def optimizer_and_scheduler(model, config: dict | None = None, total_steps: int = 1000):
    """The optimizer and schedule a run of `config` (sections as YAML gives them) builds
    for `model`, through the installed plugins as the core builds them."""
    from slimcore.host.roles import build_optimizer, build_scheduler
    from slimcore.testing import plugin_manager

    config = {**(config or {}), "schedule": {**(config or {}).get("schedule", {}),
                                             "total_steps": total_steps}}
    pm, run = plugin_manager({}, set()), make_run(config)
    optimizer = build_optimizer(pm, run, model)
    return optimizer, build_scheduler(pm, run, optimizer)


def build_config(args, output_dir: Path, extra: tuple[str, ...] = (), disabled=()):
    pm = SlimcorePluginManager()
    pm.discover(disabled=set(disabled))
    overrides = [f"run.steps={args.steps}", f"run.device={args.device}", f"output.dir={output_dir}",
                 "checkpoint.checkpointer=null", "intervals.log=1000000", "samples.prompts=[]",
                 # the replayed batches have no held-out share (the quickstart evaluates)
                 "eval.interval=0", *extra]
    return resolve_config(REPO / "examples" / "quickstart.yaml", overrides, pm), pm


def fixed_batches(config, pm, count: int):
    """The batches both loops train on, made once by the real chunk source."""
    run = make_run(config.to_dict(), output_dir=config.output.dir)
    run.tokenizer = prepare_tokenizer(run, pm)
    source = open_source(pm, run)
    batches = [b for b, _ in zip(source, range(count))]
    source.close()
    return run.tokenizer, batches


class Replay:
    """An in-process plugin whose data source `replay` hands out the fixed batches."""

    def __init__(self, batches, tokenizer):
        self.batches, self.tokenizer = batches, tokenizer

    @hookimpl
    def register_data_sources(self):
        batches = self.batches

        class ReplaySource(DataSource):
            name = "replay"

            def __init__(self, run):
                self.batches = iter(batches)

            def __next__(self):
                return next(self.batches)

        return [ReplaySource]


class StepClock:
    """Wall time between the end of step `warmup` and the end of the last step."""

    def __init__(self, warmup):
        self.warmup, self.start, self.end = warmup, None, None

    @hookimpl
    def on_metrics(self, metrics):
        if metrics.step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def time_run(args, batches, tokenizer, output_dir: Path, extra=(), disabled=()) -> float:
    """Steps/s of a full slimcore run on the fixed batches, first `args.warmup` excluded."""
    config, pm = build_config(args, output_dir, extra, disabled)
    config.data.source = "replay"
    config.tokenizer.path = str(tokenizer.path)
    pm.register_in_process(Replay(batches, tokenizer), "replay")
    clock = StepClock(args.warmup)
    pm.register_in_process(clock, "clock")
    run_training(config, pm)
    return (args.steps - args.warmup) / (clock.end - clock.start)
