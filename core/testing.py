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
the bundled corpus, its tokenizer trained once and cached, on the CPU, 6 steps. Installed
plugins take part as in a real run (the dashboard and TensorBoard are off unless
`enable` names them: they cost seconds); a plugin object passed in `plugins` stands in for an
installed plugin of the same name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .contracts.charts import Chart, ChartData
from .host.hookspecs import hookimpl
from .contracts.metrics import TrainingMetrics
from .contracts.run import Run
from .model.sampling import TextSample

TINY_CONFIG: dict[str, dict[str, Any]] = {
    "run": {"steps": 6, "device": "cpu", "seed": 7},
    "model": {"width": 32, "layers": 2, "heads": 2, "mlp_hidden": 64, "seq_len": 32},
    "tokenizer": {"vocab_size": 600, "train_documents": 40},
    "data": {"source": "chunk", "batch_size": 4},
    "corpus": {"path": "bundled", "shuffle_buffer": 8},
    "chunk": {"tokens_per_chunk": 4096},
    "intervals": {"viz": 3, "checkpoint": 2000, "sample_every": 1, "log": 1},
    "samples": {"max_new_tokens": 4},
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
             resume: str | None = None) -> TinyRun:
    """Train the tiny model into `output_dir` with the plugin objects `plugins` ({name:
    plugin}) registered beside the installed ones. `config` updates TINY_CONFIG section by
    section (`{"csv_logger": {"every": 2}}`, `{"data": {"source": "lines"}}`); `overrides`
    are `--set` strings applied after it. `enable` turns on the slow plugins (`dashboard`,
    `tensorboard`), `disable` turns others off; `resume` is `--resume`'s value. Bad input
    raises `slimcore.UserError` (the one line a user would see)."""
    output_dir = Path(output_dir)
    raw = copy.deepcopy(TINY_CONFIG)
    raw["run"]["steps"] = steps
    for section, values in (config or {}).items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    raw.setdefault("output", {})["dir"] = str(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    config_path = output_dir.with_name(output_dir.name + ".yaml")
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))

    recorder = _Recorder()
    run, _ = run_config_file(config_path, {**(plugins or {}), "slimcore_testing": recorder},
                             overrides, disabled=(SLOW_PLUGINS - set(enable)) | set(disable),
                             resume=resume)
    return TinyRun(status=run.status, output_dir=output_dir, config_path=config_path, run=run,
                   metrics=recorder.metrics, samples=recorder.samples)


def run_config_file(config_path: str | Path, plugins: dict[str, Any] | None = None,
                    overrides: list[str] = (), disabled=(), resume: str | None = None,
                    overwrite: bool = False):
    """`slimcore run CONFIG_PATH` in this process: (the finished Run, its plugin manager).
    The YAML's `plugins.disable` and `disabled` are turned off before discovery, as the
    CLI does; each object of `plugins` ({name: plugin}) is registered beside the installed
    plugins, in the place of an installed one of its name."""
    from .commands.cli import read_early_args
    from .config.schema import resolve_config
    from .launch.training import execute_run
    from .host.manager import SlimcorePluginManager

    plugins = dict(plugins or {})
    early = read_early_args(["run", str(config_path)])
    pm = SlimcorePluginManager()
    pm.discover(disabled=early.disabled | set(disabled) | set(plugins))
    for name, plugin in plugins.items():
        pm.register_in_process(plugin, name)
    config = resolve_config(config_path, list(overrides), pm)
    return execute_run(config, pm, resume=resume, overwrite=overwrite), pm


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
