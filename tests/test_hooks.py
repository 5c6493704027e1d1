"""One test per hook, named test_hook_<name>, each driving the hook through a real run or
the real CLI; and the meta-tests that keep hookspecs, docs and tests in step."""

import inspect
import json
import re
from pathlib import Path

import pytest

from conftest import REPO, run_in_process, source_plugin
from slimcore import Chart, TextSample, TrainingMetrics, UserError, hookimpl
from slimcore.host import hookspecs
from slimcore.host.manager import SlimcorePluginManager

HOOK_NAMES = sorted(name for name, fn in vars(hookspecs).items()
                    if callable(fn) and hasattr(fn, "slimcore_spec"))


class Recorder:
    """Records every observer call of a run."""

    def __init__(self):
        self.calls = []
        self.metrics = []
        self.samples = []

    @hookimpl
    def on_run_start(self, run):
        self.calls.append(("start", run.model is not None, run.tokenizer is not None))

    @hookimpl
    def on_metrics(self, metrics, run):
        self.metrics.append(metrics)

    @hookimpl
    def on_text_samples(self, step, samples, run):
        self.samples.append((step, samples))

    @hookimpl
    def on_run_end(self, run, status, error):
        self.calls.append(("end", status, error))


def test_hook_declare_config(write_config):
    from dataclasses import dataclass

    @dataclass
    class GreetConfig:
        greeting: str = "hi"

    class Greeter:
        @hookimpl
        def declare_config(self):
            return {"greeter": GreetConfig}

        @hookimpl
        def on_run_start(self, run):
            self.seen = run.config.section("greeter").greeting

    greeter = Greeter()
    run_in_process(write_config({"greeter": {"greeting": "hello"}, "run": {"steps": 1}}),
                   {"greeter": greeter})
    assert greeter.seen == "hello"
    with pytest.raises(UserError, match="greeter.greting: unknown key"):
        run_in_process(write_config({"greeter": {"greting": "x"}}), {"greeter": Greeter()})


def test_hook_register_commands(cli, installed_plugins):
    result = cli("count", "4", env=installed_plugins)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 2 3 4"
    assert "count" in cli("--help", env=installed_plugins).stdout


def test_hook_register_charts():
    class Loss(Chart):
        name, title = "my_loss", "Loss"

    class Plotter:
        @hookimpl
        def register_charts(self):
            return [Loss()]

    class Clash:
        @hookimpl
        def register_charts(self):
            return [Loss()]

    pm = SlimcorePluginManager()
    pm.register_in_process(Plotter(), "plotter")
    assert [c.name for c in pm.charts()] == ["my_loss"]
    pm.register_in_process(Clash(), "clash")
    with pytest.raises(UserError) as clash:
        pm.charts()
    assert str(clash.value) == ("chart 'my_loss' is registered by both 'clash' and 'plotter'; "
                                "give one of them another Chart name, or turn one plugin off "
                                "(plugins.disable: [plotter])")


def test_hook_corpus_text(write_config):
    from slimcore.text.tokenizer import Tokenizer

    class Source:
        @hookimpl
        def corpus_text(self, source, run, max_documents):
            if source == "alphabet":
                self.asked = max_documents
                return ["abc def ghi jkl mno pqr stu vwx yz"] * 30

        @hookimpl
        def iterate_batches(self, source, run):
            if source == "alphabet":
                self.tokenizer = run.tokenizer
                return iter(())  # no batches: the run stops before step 1

    source = Source()
    status, _ = run_in_process(write_config({"data": {"source": "alphabet"},
                                             "tokenizer": {"vocab_size": 300}}),
                               {"alphabet": source})
    assert status == "stopped"
    assert source.asked == 40  # tokenizer.train_documents
    assert isinstance(source.tokenizer, Tokenizer)
    assert source.tokenizer.decode(source.tokenizer.encode("abc yz")) == "abc yz"


def test_hook_iterate_batches(write_config):
    recorder = Recorder()
    status, _ = run_in_process(write_config({"run": {"steps": 3}}), {"rec": recorder})
    assert status == "completed" and len(recorder.metrics) == 3
    with pytest.raises(UserError, match="data.source: unknown data source 'elsewhere'"):
        run_in_process(write_config({"data": {"source": "elsewhere"}}))


def test_hook_validation_batches(write_config):
    import torch
    from slimcore import Batch

    class HeldOut:
        @hookimpl
        def validation_batches(self, source, run, count):
            if source == "chunk":
                self.count, self.run = count, run
                generator = torch.Generator().manual_seed(0)
                self.batch = Batch.from_sequences(torch.randint(
                    run.tokenizer.vocab_size, (2, 33), generator=generator))
                return [self.batch]

    held_out, recorder = HeldOut(), Recorder()
    run_in_process(write_config({"run": {"steps": 4}, "eval": {"interval": 2, "batches": 3}}),
                   {"held_out": held_out, "rec": recorder})
    assert held_out.count == 3
    assert [m.eval_loss is not None for m in recorder.metrics] == [False, True, False, True]
    # The last evaluation is the final model's loss and accuracy on the held-out batch.
    model = held_out.run.model.eval()
    with torch.no_grad():
        loss_sum, correct, count = model(held_out.batch.inputs, held_out.batch.targets)
    count = int(count)  # a 0-d tensor: pytest.approx would try to iterate it
    assert recorder.metrics[-1].eval_loss == pytest.approx(loss_sum.item() / count, rel=1e-5)
    assert recorder.metrics[-1].eval_accuracy == pytest.approx(correct.item() / count)


def test_hook_on_run_start(write_config):
    recorder = Recorder()
    run_in_process(write_config({"run": {"steps": 1}}), {"rec": recorder})
    assert recorder.calls[0] == ("start", True, True)


def test_hook_on_metrics(write_config):
    recorder = Recorder()
    run_in_process(write_config({"run": {"steps": 4}}), {"rec": recorder})
    metrics = recorder.metrics
    assert [m.step for m in metrics] == [1, 2, 3, 4]
    assert all(isinstance(m, TrainingMetrics) for m in metrics)
    tokens_per_step = 4 * 32  # batch_size x seq_len
    assert [m.tokens_seen for m in metrics] == [tokens_per_step * s for s in (1, 2, 3, 4)]
    for m in metrics:
        assert m.memory_kind == "cpu_rss" and m.memory_bytes > 50 * 2**20  # torch alone
        assert m.tokens_per_second == pytest.approx(tokens_per_step / m.step_time_s)
        assert 0 <= m.accuracy <= 1 and m.grad_norm > 0 and m.mfu is None


def test_a_plugin_whose_section_says_enabled_false_is_off_for_the_run(write_config, tmp_path,
                                                                      capsys):
    """`enabled: false` in a plugin's own section: none of its observer hooks called, and
    the run's `plugins:` line and plugins.json say it is off; `enabled: true` turns it on."""
    from dataclasses import dataclass

    @dataclass
    class QuietConfig:
        enabled: bool = False

    class Quiet(Recorder):
        @hookimpl
        def declare_config(self):
            return {"quiet": QuietConfig}

    for enabled, steps in ((None, []), (True, [1, 2])):
        quiet = Quiet()
        config = write_config({"run": {"steps": 2}, "output": {"dir": str(tmp_path / "o")},
                               **({"quiet": {"enabled": enabled}} if enabled else {})})
        run_in_process(config, {"quiet": quiet}, overwrite=True)
        listed = {p["name"]: p for p in json.loads((tmp_path / "o" / "plugins.json").read_text())}
        header = capsys.readouterr().out.splitlines()[0]
        assert [m.step for m in quiet.metrics] == steps and bool(quiet.calls) == bool(enabled)
        if enabled:
            assert listed["quiet"]["off"] is None and "off: quiet" not in header
        else:
            assert listed["quiet"]["off"] == "quiet.enabled is false"
            assert "; off: mlflow, quiet, wandb;" in header, header


def test_hook_on_text_samples(write_config):
    recorder = Recorder()
    run_in_process(write_config({"run": {"steps": 6}, "samples": {"prompts": ["We the"]}}),
                   {"rec": recorder})
    # viz every 3 steps, samples every 1 viz interval
    assert [step for step, _ in recorder.samples] == [3, 6]
    sample = recorder.samples[0][1][0]
    assert isinstance(sample, TextSample) and sample.prompt == "We the"
    assert isinstance(sample.text, str) and sample.text


def test_hook_on_checkpoint(write_config, tmp_path):
    """Called before each save, with the step's records already in the core's history and
    the step's checkpoint not yet committed."""
    out = tmp_path / "out"

    class Flusher:
        calls = []

        @hookimpl
        def on_checkpoint(self, step, run):
            logged = [json.loads(line)["step"] for line in run.paths.metrics_log.open()]
            committed = (run.paths.checkpoints / f"checkpoint_step_{step}.bin").exists()
            self.calls.append((step, logged[-1], committed))

    run_in_process(write_config({"run": {"steps": 5}, "intervals": {"checkpoint": 2}}),
                   {"flusher": Flusher()})
    assert Flusher.calls == [(2, 2, False), (4, 4, False), (5, 5, False)]
    assert (out / "checkpoints" / "checkpoint_step_5.bin").exists()


class RecordingCheckpointer:
    def __init__(self):
        self.saved = []

    @hookimpl
    def save_checkpoint(self, checkpointer, run, checkpoint):
        if checkpointer == "memo":
            self.saved.append(checkpoint)
            return f"memo:{checkpoint.step}"


def test_hook_save_checkpoint(write_config):
    import numpy as np
    import torch

    memo = RecordingCheckpointer()
    status, _ = run_in_process(write_config({"run": {"steps": 5}, "intervals": {"checkpoint": 2},
                                             "checkpoint": {"checkpointer": "memo"}}),
                               {"memo": memo})
    assert [c.step for c in memo.saved] == [2, 4, 5]  # every interval, and the end
    last = memo.saved[-1]
    # The record holds everything a resume needs, and what it holds is a snapshot.
    assert last.run_id and last.config["run"]["steps"] == 5 and last.skipped_steps == 0
    assert set(last.rng) == {"torch", "cuda", "numpy", "python"}
    assert last.rng["numpy"]["keys"].shape == (624,) and len(last.rng["python"][1]) == 625
    assert last.data_state["world_size"] == 1 and last.tokenizer_fingerprint
    assert len(last.optimizer["state"]) == len(last.model)
    tensors, meta = last.split()
    again = type(last).join(tensors, json.loads(json.dumps(meta)))
    assert again.step == 5 and list(again.optimizer["state"]) == list(last.optimizer["state"])
    assert all(torch.equal(again.model[k], v) for k, v in last.model.items())
    assert np.array_equal(again.rng["numpy"]["keys"], last.rng["numpy"]["keys"])
    with pytest.raises(UserError, match="unknown checkpointer 'nobody'"):
        run_in_process(write_config({"run": {"steps": 1},
                                     "checkpoint": {"checkpointer": "nobody"}}))


def test_hook_load_checkpoint(write_config, tmp_path):
    """--resume hands the checkpointer the path and restores what it returns."""
    straight = Recorder()
    run_in_process(write_config({"run": {"steps": 6}, "intervals": {"checkpoint": 3}}),
                   {"rec": straight})
    checkpoints = tmp_path / "out" / "checkpoints"
    resumed = Recorder()
    run_in_process(write_config({"run": {"steps": 6}}), {"rec": resumed},
                   resume=str(checkpoints / "checkpoint_step_3.bin"))
    assert [m.step for m in resumed.metrics] == [4, 5, 6]
    # Bitwise: the same losses as the straight run for the steps after the checkpoint.
    assert [m.loss for m in resumed.metrics] == [m.loss for m in straight.metrics[3:]]


def test_hook_on_run_end(write_config, tmp_path):
    recorder = Recorder()
    run_in_process(write_config({"run": {"steps": 2}}), {"rec": recorder})
    assert recorder.calls[-1] == ("end", "completed", None)

    def batches(run):
        raise RuntimeError("disk on fire")
        yield


    recorder = Recorder()
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_in_process(write_config({"data": {"source": "exploding"},
                                     "tokenizer": {"vocab_size": 300},
                                     "output": {"dir": str(tmp_path / "exploding")}}),
                       {"rec": recorder, "exploding": source_plugin(
                           "exploding", batches, ["a b c d e f g h i j k l m n o p"] * 40)})
    kind, status, error = recorder.calls[-1]
    assert (kind, status) == ("end", "failed") and isinstance(error, RuntimeError)


# -- meta-tests -----------------------------------------------------------------------------


def test_every_hookspec_has_a_docstring_contract():
    for name in HOOK_NAMES:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 60, f"hookspec {name} needs a docstring stating its contract"


def test_every_hookspec_is_documented_with_its_exact_signature():
    docs = (REPO / "docs" / "plugins.md").read_text()
    for name in HOOK_NAMES:
        fn = getattr(hookspecs, name)
        signature = f"def {name}{inspect.signature(fn)}".replace("'", "")
        assert signature in docs, f"docs/plugins.md lacks `{signature}`"


def test_every_hookspec_has_a_test_named_for_it():
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    for name in HOOK_NAMES:
        assert re.search(rf"def test_hook_{name}\b", tests), f"no test_hook_{name}"


def test_hook_declare_flags(write_config, capsys):
    """A plugin's flags are shorthands for its own keys; the chunk source's are the
    original scripts' --max-chunks and --tokens-per-chunk."""
    import yaml

    from slimcore.commands.cli import main

    config = str(write_config())
    assert main(["config", config, "--max-chunks", "3", "--tokens-per-chunk", "2048"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["chunk"] == {"tokens_per_chunk": 2048,
                                                                "max_chunks": 3}
    assert main(["config", config, "--max-chunks", "many"]) == 2
    assert capsys.readouterr().err.strip() == ("slimcore: error: --max-chunks: chunk.max_chunks:"
                                               " expected int, got str 'many'")
    # Blocked with its plugin, the flag is gone too.
    assert main(["config", config, "-p", "no:chunk", "--max-chunks", "3"]) == 2
    assert capsys.readouterr().err.strip() == ("slimcore: error: unrecognized arguments: "
                                               "--max-chunks 3 (see `slimcore --help`)")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--tokens-per-chunk" in capsys.readouterr().out


def test_hook_export_model(trained_run, tmp_path, capsys):
    """`slimcore export --format NAME` hands the verified checkpoint to the plugin named so
    (the docs' example format); a format that fails leaves no folder behind."""
    import torch
    from safetensors.torch import load_file

    from slimcore.commands.cli import build_parser
    from test_contracts import docs_plugin

    class Failing:
        @hookimpl
        def export_model(self, format, checkpoint, output, dtype):
            if format == "failing":
                (output / "half.bin").write_bytes(b"...")
                raise UserError("failing: this model is too wide for the format")

    pm = SlimcorePluginManager()
    pm.discover()
    pm.register_in_process(docs_plugin("def export_model(format, checkpoint, output, dtype)"),
                           "weights_only")
    pm.register_in_process(Failing(), "failing")

    def export(fmt, output):
        args = build_parser(pm).parse_args(["export", str(trained_run), "--format", fmt,
                                            "--output", str(output), "--dtype", "float16"])
        args.plugin_manager = pm
        return args.handler(args)

    assert export("weights_only", tmp_path / "w") == 0
    assert "format weights_only: 15 tensors" in capsys.readouterr().out  # 3 + 6 per block
    weights = load_file(tmp_path / "w" / "weights.safetensors")
    saved = (trained_run / "checkpoints" / "checkpoint_step_20.bin")
    reference = load_file(str(saved) + ".decoder")
    assert weights["head.weight"].dtype == torch.float16
    torch.testing.assert_close(weights["head.weight"].float(), reference["head.weight"],
                               rtol=1e-3, atol=1e-4)
    assert (tmp_path / "w" / "tokenizer.model").read_bytes() == \
        (trained_run / "tokenizer.model").read_bytes()
    with pytest.raises(UserError, match="too wide"):
        export("failing", tmp_path / "f")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]


def test_the_plugin_reference_names_every_public_name_and_field():
    """docs/plugins.md is the author's reference: every name `slimcore` exports, and every
    field or public member of the types a plugin reads, appears in it."""
    import dataclasses

    import slimcore
    from slimcore import Run, TrainingMetrics
    from slimcore.text.tokenizer import Tokenizer

    docs = (REPO / "docs" / "plugins.md").read_text()
    missing = [name for name in slimcore.__all__ if f"`{name}" not in docs
               and f"{name}(" not in docs]
    assert not missing, f"docs/plugins.md never names {missing}"
    for cls in (TrainingMetrics, Run):
        fields = [f.name for f in dataclasses.fields(cls) if f.name not in ("plugins",
                                                                             "history",
                                                                             "distributed",
                                                                             "stop_signal")]
        assert not [f for f in fields if f"`{f}`" not in docs], cls.__name__
    members = [name for name in vars(Tokenizer) if not name.startswith("_")
               and name not in ("processor", "path", "word_cache")]
    assert not [m for m in members if f"`{m}" not in docs], members


def test_the_docs_chart_and_command_work_as_written(trained_run, tmp_path, capsys):
    """The complete chart and command of docs/plugins.md, run as written."""
    import argparse

    from slimcore import ChartData
    from slimcore.testing import draw_chart
    from test_contracts import docs_plugin

    charts = docs_plugin("class PerplexityChart(Chart)")
    [chart] = charts.register_charts()
    metrics = [json.loads(line) for line in
               (trained_run / "history" / "metrics.jsonl").read_text().splitlines()]
    assert any(m["eval_loss"] is not None for m in metrics)  # the held-out points drawn too
    png = draw_chart(chart, ChartData(metrics=metrics), tmp_path / "perplexity.png")
    assert png.read_bytes()[:4] == b"\x89PNG"

    command = docs_plugin("def register_commands(subparsers)")
    parser = argparse.ArgumentParser()
    command.register_commands(subparsers=parser.add_subparsers())
    args = parser.parse_args(["last", str(trained_run)])
    assert args.handler(args) == 0
    assert capsys.readouterr().out == f"step 20: loss {metrics[-1]['loss']:.4f}\n"
    with pytest.raises(UserError, match="holds no steps"):
        args.handler(parser.parse_args(["last", str(tmp_path)]))


def test_the_docs_exporter_writes_its_csv_and_a_resume_keeps_each_step_once(tmp_path):
    import csv

    from slimcore.testing import tiny_run
    from test_contracts import docs_block, docs_plugin

    namespace = {}
    exec(compile(docs_block("class CsvLoggerConfig"), "docs/plugins.md", "exec"), namespace)
    logger = docs_plugin("class CsvLogger:", CsvLoggerConfig=namespace["CsvLoggerConfig"])
    settings = {"csv_logger": {"every": 2}, "schedule": {"total_steps": 6}}
    first = tiny_run(tmp_path / "run", plugins={"csv_logger": logger.CsvLogger()},
                     config=settings, steps=4, overrides=["intervals.checkpoint=2"])
    assert first.status == "completed"
    tiny_run(tmp_path / "run", plugins={"csv_logger": logger.CsvLogger()}, config=settings,
             steps=6, resume="auto")
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [2, 4, 6]
    assert float(rows[0]["loss"]) == pytest.approx(first.metrics[1].loss)


def test_hook_register_data_sources(write_config, tmp_path):
    """The docs' Counting source, registered as a class: it trains, resumes from its
    position bit for bit, and a name nobody registered is one line with a suggestion."""
    from test_contracts import docs_plugin

    plugin = docs_plugin("class Counting(DataSource)")
    assert [s.name for s in plugin.register_data_sources()] == ["counting"]
    settings = {"run": {"steps": 6}, "intervals": {"checkpoint": 3},
                "data": {"source": "counting"}, "tokenizer": {"vocab_size": 300}}
    straight, resumed = Recorder(), Recorder()
    run_in_process(write_config({**settings, "output": {"dir": str(tmp_path / "a")}}, "a"),
                   {"counting": plugin, "rec": straight})
    run_in_process(write_config({**settings, "output": {"dir": str(tmp_path / "b")}}, "b"),
                   {"counting": plugin, "rec": resumed},
                   resume=str(tmp_path / "a" / "checkpoints" / "checkpoint_step_3.bin"))
    assert [m.loss for m in resumed.metrics] == [m.loss for m in straight.metrics[3:]]
    with pytest.raises(UserError, match="unknown data source 'countin' \\(did you mean "
                                        "'counting'\\?\\)"):
        run_in_process(write_config({**settings, "data": {"source": "countin"}}),
                       {"counting": plugin})


def test_hook_register_checkpointers(write_config, tmp_path):
    """The docs' checkpointer object saves at every interval and the end, and a resume from
    its files (and `--resume auto` in its folder) gives the same losses."""
    from test_contracts import docs_plugin

    plugin = docs_plugin("class Simple(Checkpointer)")
    settings = {"run": {"steps": 6}, "intervals": {"checkpoint": 3},
                "checkpoint": {"checkpointer": "simple"}, "corpus": {"shuffle_buffer": 8}}
    straight, resumed = Recorder(), Recorder()
    run_in_process(write_config({**settings, "output": {"dir": str(tmp_path / "a")}}, "a"),
                   {"simple": plugin, "rec": straight})
    assert sorted(p.name for p in (tmp_path / "a" / "simple").iterdir()) == [
        "step_3.json", "step_3.safetensors", "step_6.json", "step_6.safetensors"]
    run_in_process(write_config({**settings, "output": {"dir": str(tmp_path / "b")}}, "b"),
                   {"simple": plugin, "rec": resumed},
                   resume=str(tmp_path / "a" / "simple" / "step_3.json"))
    assert [m.loss for m in resumed.metrics] == [m.loss for m in straight.metrics[3:]]
    again = Recorder()
    run_in_process(write_config({**settings, "output": {"dir": str(tmp_path / "a")}}, "a"),
                   {"simple": plugin, "rec": again}, overrides=["run.steps=7"],
                   resume="auto")
    assert [m.step for m in again.metrics] == [7]


def test_hook_register_export_formats(trained_run, tmp_path, capsys):
    """`slimcore export --format NAME` hands the verified checkpoint to the format
    registered under that name (the docs' object form)."""
    from safetensors.torch import load_file

    from slimcore.commands.cli import build_parser
    from test_contracts import docs_plugin

    pm = SlimcorePluginManager()
    pm.discover()
    pm.register_in_process(docs_plugin("class WeightsOnly(ExportFormat)"), "my_formats")
    args = build_parser(pm).parse_args(["export", str(trained_run), "--format",
                                        "weights_only", "--output", str(tmp_path / "w")])
    args.plugin_manager = pm
    assert args.handler(args) == 0
    assert "format weights_only: 15 tensors" in capsys.readouterr().out
    assert set(load_file(tmp_path / "w" / "weights.safetensors")) >= {"head.weight"}


def test_hook_register_optimizers(write_config, tmp_path):
    """docs/optimizers.md's sign descent, in process: selected by name, its section read, its
    updates the sign of the gradient at the scheduled rate."""
    import types

    text = (REPO / "docs" / "optimizers.md").read_text()
    plugin = types.ModuleType("sign_descent")
    exec(compile(next(b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                      if "class SignDescentBuilder" in b), "docs/optimizers.md", "exec"),
         plugin.__dict__)
    assert [o.name for o in plugin.register_optimizers()] == ["sign_descent"]
    recorder = Recorder()
    run_in_process(write_config({"run": {"steps": 3}, "optimizer": {"name": "sign_descent"},
                                 "sign_descent": {"lr": 0.01}, "schedule": {"warmup_steps": 0,
                                                                            "kind": "constant"},
                                 "intervals": {"checkpoint": 3}}),
                   {"sign_descent": plugin, "rec": recorder})
    assert [m.learning_rate for m in recorder.metrics] == [0.01] * 3
    from slimcore_checkpointers.three_file import read_checkpoint

    saved = read_checkpoint(tmp_path / "out" / "checkpoints" / "checkpoint_step_3.bin")
    assert {s["steps"] for s in saved.optimizer["state"].values()} == {3}
    # The plugin's two groups (matrices and embeddings, gains) reached the checkpoint whole.
    assert [len(g["params"]) for g in saved.optimizer["param_groups"]] == [
        sum(1 for n in saved.model if not n.endswith("norm.weight")),
        sum(1 for n in saved.model if n.endswith("norm.weight"))]


def test_hook_register_schedules(write_config):
    """The docs' StepDecay: the full rate for the first half of the decay, then the floor."""
    from test_contracts import docs_plugin

    plugin = docs_plugin("class StepDecay(Schedule)")
    recorder = Recorder()
    run_in_process(write_config({"run": {"steps": 6}, "optimizer": {"lr": 0.01},
                                 "schedule": {"kind": "step_decay", "warmup_steps": 2,
                                              "min_lr_ratio": 0.25}}),
                   {"steps": plugin, "rec": recorder})
    assert [m.learning_rate for m in recorder.metrics] == pytest.approx(
        [0.005, 0.01, 0.01, 0.01, 0.0025, 0.0025])
