"""Test helpers for plugin authors: a tiny training run in this process, in seconds.

    from slimcore.testing import tiny_run

    def test_my_logger(tmp_path):
        result = tiny_run(tmp_path / "run", plugins={"csv_logger": CsvLogger()},
                          config={"csv_logger": {"every": 2}})
        assert result.status == "completed"
        assert [m.step for m in result.metrics] == [1, 2, 3, 4, 5, 6]
        png = result.draw(MyChart())          # a chart drawn on the run's metrics
        png = draw_chart(MyChart(), ChartData(metrics=[...]), tmp_path / "c.png")

The run is slimcore's own (`slimcore run` minus the process): a 2-layer, width-32 model on
the CPU, 6 steps, with the data source `data.source` names (the default's: the bundled
corpus, its tokenizer trained once and cached); every plugin section takes the values its
plugin asks a tiny run to use (a section's `tiny`). Installed plugins take part as in a real
run (the dashboard and TensorBoard are off unless `enable` names them: they cost seconds); a
plugin object passed in `plugins` stands in for an installed plugin of the same name. A
plugin that fails in an observer hook fails the test: tiny_run raises what it raised.

    run = make_run({"data": {"batch_size": 2}}, tokenizer=tok)   a Run for a config, to
                                                                 test a plugin's parts
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .config.parse import parse_config
from .config.resolve import resolve_config, tiny_values
from .contracts.charts import Chart, ChartData
from .contracts.metrics import TrainingMetrics
from .contracts.run import Run
from .contracts.samples import TextSample
from .host.hookspecs import hookimpl
from .host.manager import SlimcorePluginManager
from .launch.training import run_training

TINY_CONFIG: dict[str, dict[str, Any]] = {
    "run": {"steps": 6, "device": "cpu", "seed": 7},
    "model": {"width": 32, "layers": 2, "heads": 2, "mlp_hidden": 64, "seq_len": 32},
    "tokenizer": {"vocab_size": 600, "train_documents": 40},
    "data": {"batch_size": 4},
    "intervals": {"checkpoint": 2000, "log": 1},
    "samples": {"max_new_tokens": 4, "every": 3},
    "schedule": {"warmup_steps": 2},
}
SLOW_PLUGINS = {"dashboard", "tensorboard"}  # off unless `enable` names them


@dataclass
class TinyRun:
    status: str  # completed, stopped (the data ran out)
    output_dir: Path
    config_path: Path  # the YAML the run was resolved from
    run: Run  # the finished run: run.config, run.tokenizer, run.model, run.paths
    metrics: list[TrainingMetrics] = field(default_factory=list)  # every step, in order
    samples: list[TextSample] = field(default_factory=list)  # every text sample drawn
    failures: list[str] = field(default_factory=list)  # observer failures (allow_failures)

    def chart_data(self, moving_average: int = 50, recent_window: int = 200) -> ChartData:
        """What the dashboard hands each chart's `draw` at the end of this run."""
        return ChartData(metrics=[m.to_dict() for m in self.metrics],
                         samples=[s.to_dict() for s in self.samples],
                         moving_average=moving_average, recent_window=recent_window)

    def draw(self, chart: Chart, path: str | Path | None = None) -> Path:
        """Draw `chart` on this run's data into a PNG (default: <output_dir>/<name>.png);
        returns its path. Raises what `draw` raises."""
        path = Path(path) if path is not None else self.output_dir / f"{chart.name}.png"
        return draw_chart(chart, self.chart_data(), path)


def draw_chart(chart: Chart, data: ChartData, path: str | Path) -> Path:
    """Draw `chart` on `data` into the PNG `path`, in a panel of the dashboard's size, as the
    dashboard's render process does; returns the path. Needs matplotlib (it comes with
    slimcore-visualizers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(12 if chart.wide else 6, 3.2 if chart.wide else 4),
                              layout="constrained")
    try:
        chart.draw(ax, data)
        figure.savefig(path, dpi=80)
    finally:
        plt.close(figure)
    return Path(path)


def tiny_run(output_dir: str | Path, plugins: dict[str, Any] | None = None,
             config: dict[str, dict[str, Any]] | None = None, overrides: list[str] = (),
             steps: int = 6, enable: list[str] = (), disable: list[str] = (),
             resume: str | None = None, allow_failures: bool = False) -> TinyRun:
    """Train the tiny model into `output_dir` with the plugin objects `plugins` ({name:
    plugin}) registered beside the installed ones. `config` updates the tiny config section
    by section (`{"csv_logger": {"every": 2}}`, `{"data": {"source": "lines"}}`); `overrides`
    are `--set` strings applied after it. `enable` turns on the slow plugins (`dashboard`,
    `tensorboard`), `disable` turns others off; `resume` is `--resume`'s value. Bad input
    raises `slimcore.UserError` (the one line a user would see). A plugin that fails in an
    observer hook makes tiny_run raise its error after the run, unless `allow_failures`
    (then `result.failures` lists them)."""
    output_dir = Path(output_dir)
    recorder = _Recorder()
    raw = tiny_config(config, steps, output_dir)
    disabled = (SLOW_PLUGINS - set(enable)) | set(disable) | set(raw["plugins"]["disable"])
    pm = plugin_manager({**(plugins or {}), "slimcore_testing": recorder}, disabled)
    for section, values in tiny_values(pm.sections).items():
        raw[section] = {**values, **raw.get(section, {})}
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    config_path = output_dir.with_name(output_dir.name + ".yaml")
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    trained = run_training(resolve_config(config_path, list(overrides), pm), pm, resume=resume)
    failures = [f"plugin '{name}' failed in {hook}: {type(error).__name__}: {error}"
                for name, hook, error in pm.observer_errors]
    if pm.observer_errors and not allow_failures:
        raise pm.observer_errors[0][2]
    return TinyRun(status=trained.run.status, output_dir=output_dir, config_path=config_path,
                   run=trained.run, metrics=recorder.metrics, samples=recorder.samples,
                   failures=failures)


def tiny_config(config: dict | None, steps: int, output_dir: Path) -> dict:
    """TINY_CONFIG updated section by section with `config`."""
    raw = copy.deepcopy(TINY_CONFIG)
    raw["run"]["steps"] = steps
    for section, values in (config or {}).items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    raw.setdefault("output", {})["dir"] = str(output_dir)
    raw.setdefault("plugins", {}).setdefault("disable", [])
    return raw


def make_run(config: dict[str, dict[str, Any]] | None = None, output_dir: str | Path = ".",
             plugins: dict[str, Any] | None = None, tokenizer=None, rank: int = 0,
             world_size: int = 1) -> Run:
    """A Run for `config` (sections as YAML gives them; the rest takes its defaults), with
    the sections of the installed plugins and of `plugins` ({name: plugin object}), on the
    CPU: what a plugin's parts are handed in a run, without training."""
    pm = plugin_manager(plugins or {}, set())
    parsed = parse_config(copy.deepcopy(config or {}), pm.sections, "make_run", pm.unloaded())
    return Run(config=parsed, output_dir=Path(output_dir), device=torch.device("cpu"),
               rank=rank, world_size=world_size, tokenizer=tokenizer)


def plugin_manager(plugins: dict[str, Any], disabled: set[str]):
    """The installed plugins but the `disabled` ones, with each object of `plugins`
    registered in the place of an installed one of its name."""
    pm = SlimcorePluginManager()
    pm.discover(disabled=set(disabled) | set(plugins))
    for name, plugin in plugins.items():
        pm.register_in_process(plugin, name)
    return pm


def run_config_file(config_path: str | Path, plugins: dict[str, Any] | None = None,
                    overrides: list[str] = (), disabled=(), resume: str | None = None,
                    overwrite: bool = False):
    """`slimcore run CONFIG_PATH` in this process: (the finished Run, its plugin manager).
    The YAML's `plugins.disable` and `disabled` are turned off before discovery, as the
    CLI does; each object of `plugins` ({name: plugin}) is registered beside the installed
    plugins, in the place of an installed one of its name."""
    from .commands.cli import read_early_args

    early = read_early_args(["run", str(config_path)])
    pm = plugin_manager(dict(plugins or {}), early.disabled | set(disabled))
    config = resolve_config(config_path, list(overrides), pm)
    return run_training(config, pm, resume=resume, overwrite=overwrite).run, pm


class _Recorder:
    def __init__(self):
        self.metrics: list[TrainingMetrics] = []
        self.samples: list[TextSample] = []

    @hookimpl
    def on_metrics(self, metrics):
        self.metrics.append(metrics)

    @hookimpl
    def on_text_samples(self, samples):
        self.samples.extend(samples)
