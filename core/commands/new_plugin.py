'''`slimcore new-plugin KIND NAME`: a plugin distribution that installs and passes its own
tests as generated, one kind at a time.

    slimcore-NAME/
      pyproject.toml          the distribution, with its entry point in group `slimcore`
      README.md               what it does, how to install and test it
      slimcore_NAME/__init__.py   the plugin: the complete example of its kind
      tests/test_NAME.py      tests on a tiny in-process run (slimcore.testing)
'''

from __future__ import annotations

import re
from pathlib import Path
from string import Template

from ..contracts.errors import UserError

NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")

PYPROJECT = '''[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "slimcore-$dash"
version = "0.1.0"
description = "$summary"
requires-python = ">=3.10"
dependencies = ["slimcore"$extra_dependencies]

[project.entry-points.slimcore]
$name = "slimcore_$name$entry_object"

[tool.setuptools]
packages = ["slimcore_$name"]
'''

README = '''# slimcore-$dash

$summary

```
pip install -e .          # slimcore finds it through its entry point: `slimcore plugins`
pytest                    # its tests, on a tiny training run in this process
```

$usage
'''

KINDS: dict[str, dict[str, str]] = {}

KINDS["chart"] = dict(
    summary="A slimcore chart: the loss and its moving average.",
    usage="The chart is on in every run's dashboard; turn it off with `dashboard: {disable: "
          "[$name]}` in a run's YAML.",
    entry_object="",
    module='''"""slimcore plugin `$name`: a chart for the training dashboard."""

from slimcore import Chart, hookimpl


class ${Name}Chart(Chart):
    name = "$name"  # unique across plugins: how a run's YAML turns it off
    title = "Loss and its moving average"

    def draw(self, ax, data):
        """Runs in the dashboard's render process, from plain data (data.metrics: one dict
        per step); never touches the model."""
        steps, loss = data.series("loss")
        ax.plot(steps, loss, alpha=0.3, label="loss")
        window = data.moving_average
        if len(loss) >= window:
            averaged = [loss[i - window:i].mean() for i in range(window, len(loss) + 1)]
            ax.plot(steps[window - 1:], averaged, label=f"{window}-step average")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()


@hookimpl
def register_charts():
    return [${Name}Chart()]
''',
    test='''from slimcore import installed_charts
from slimcore.testing import tiny_run

from slimcore_$name import ${Name}Chart


def test_the_chart_draws_the_metrics_of_a_run(tmp_path):
    result = tiny_run(tmp_path / "run")
    png = result.draw(${Name}Chart())
    assert png.read_bytes()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"


def test_the_dashboard_finds_it_through_its_entry_point():
    assert [chart.name for chart in installed_charts({"$name"})] == ["$name"]
''')

KINDS["observer"] = dict(
    summary="A slimcore observer: every N steps' metrics as CSV, with its own YAML section.",
    usage="A run writes `<output dir>/$name.csv`; `$name: {every: 10}` in a run's YAML sets "
          "how often.",
    entry_object=":${Name}",
    module='''"""slimcore plugin `$name`: every `$name.every` steps' metrics into
<output dir>/$name.csv. A class, so each run gets an instance of its own."""

import csv
import os
from dataclasses import dataclass
from typing import Annotated

from slimcore import Range, hookimpl

COLUMNS = ["step", "loss", "accuracy", "learning_rate", "tokens_per_second"]


@dataclass
class ${Name}Config:
    every: Annotated[int, Range(min=1)] = 1  # steps between rows


class ${Name}:
    @hookimpl
    def declare_config(self):
        return {"$name": ${Name}Config}

    @hookimpl
    def on_run_start(self, run):
        self.every = run.config.section("$name").every
        path = run.output_dir / "$name.csv"
        # A resumed run appends to its file, after dropping rows past its checkpoint.
        kept = []
        if run.start_step and path.exists():
            with open(path, newline="") as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= run.start_step]
        self.file = open(path, "w", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=COLUMNS)
        self.writer.writeheader()
        self.writer.writerows(kept)

    @hookimpl
    def on_metrics(self, metrics, run):
        if metrics.step % self.every == 0:
            self.writer.writerow({c: getattr(metrics, c) for c in COLUMNS})

    @hookimpl
    def on_checkpoint(self, step, run):
        self.file.flush()  # a resume from this checkpoint goes on from the file as it is
        os.fsync(self.file.fileno())

    @hookimpl
    def on_run_end(self, run, status, error):
        if getattr(self, "file", None) is not None:
            self.file.close()
''',
    test='''import csv

import pytest
from slimcore import UserError
from slimcore.testing import tiny_run

from slimcore_$name import ${Name}


def rows(folder):
    with open(folder / "$name.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_every_nth_step_becomes_a_row(tmp_path):
    result = tiny_run(tmp_path / "run", plugins={"$name": ${Name}()},
                      config={"$name": {"every": 2}})
    assert result.status == "completed"
    written = rows(result.output_dir)
    assert [int(r["step"]) for r in written] == [2, 4, 6]
    assert float(written[-1]["loss"]) == pytest.approx(result.metrics[-1].loss)


def test_a_bad_value_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="$name.every"):
        tiny_run(tmp_path / "run", plugins={"$name": ${Name}()}, config={"$name": {"every": 0}})
''')

KINDS["source"] = dict(
    summary="A slimcore data source: a text file, one document per line, packed into rows.",
    usage="In a run's YAML: `data: {source: $name}` and `$name: {path: my_text.txt}`. It "
          "saves its position in checkpoints, so `--resume` reads on where it stopped.",
    entry_object="",
    module='''"""slimcore plugin `$name`: the lines of `$name.path` (a UTF-8 text file), one document
each, joined by EOS and packed into rows of model.seq_len + 1 tokens; endless (the file is
read again from its start). Its position (the line and the tokens not yet in a row) goes
into every checkpoint."""

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from slimcore import Batch, DataSource, NonEmpty, UserError, hookimpl


@dataclass
class ${Name}Config:
    path: Annotated[str, NonEmpty()] | None = None  # the text file; required


def lines_of(run) -> list[str]:
    settings = run.config.section("$name")
    if settings.path is None:
        raise UserError("$name.path: not set; give the text file to read ($name: {path: FILE})")
    try:
        lines = [l for l in Path(settings.path).read_text(encoding="utf-8").splitlines()
                 if l.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"$name.path: cannot read {settings.path} ({e})") from None
    if not lines:
        raise UserError(f"$name.path: {settings.path} holds no text")
    return lines


class ${Name}Source(DataSource):
    resumable = True

    def __init__(self, run):
        self.lines = lines_of(run)
        self.tokenizer = run.tokenizer
        self.rows = run.config.data.batch_size
        self.width = run.config.model.seq_len + 1  # inputs and the next-token targets
        # This rank's share: every world_size-th line.
        self.rank, self.world_size = run.rank, run.world_size
        self.line = self.rank  # the next line to read
        self.pending: list[int] = []  # tokens read but not yet in a row

    def __next__(self) -> Batch:
        needed = self.rows * self.width
        while len(self.pending) < needed:
            text = self.lines[self.line % len(self.lines)]
            self.pending += [self.tokenizer.bos_id, *self.tokenizer.encode(text),
                             self.tokenizer.eos_id]
            self.line += self.world_size
        rows, self.pending = self.pending[:needed], self.pending[needed:]
        return Batch.from_sequences(torch.tensor(rows).view(self.rows, self.width))

    def state_dict(self):
        return {"line": self.line, "pending": list(self.pending)}

    def load_state_dict(self, state):
        self.line, self.pending = state["line"], list(state["pending"])


@hookimpl
def declare_config():
    return {"$name": ${Name}Config}


@hookimpl
def corpus_text(source, run, max_documents):
    return lines_of(run)[:max_documents] if source == "$name" else None


@hookimpl
def iterate_batches(source, run):
    return ${Name}Source(run) if source == "$name" else None
''',
    test='''import json

import pytest
from slimcore import UserError
from slimcore.testing import tiny_run

import slimcore_$name

TEXT = "\\n".join(f"Line {i} of a small corpus, with words enough to train on."
                  for i in range(300))


def run(folder, corpus, **kwargs):
    # schedule.total_steps: one learning-rate curve, for the run trained in parts too
    return tiny_run(folder, plugins={"$name": slimcore_$name},
                    config={"data": {"source": "$name"}, "$name": {"path": str(corpus)},
                            "schedule": {"total_steps": 6}}, **kwargs)


def losses(result):
    return [m.loss for m in result.metrics]


def test_it_trains_and_resumes_where_it_stopped(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    straight = run(tmp_path / "straight", corpus, steps=6)
    assert straight.status == "completed" and len(straight.metrics) == 6
    run(tmp_path / "parts", corpus, steps=3, overrides=["intervals.checkpoint=3"])
    resumed = run(tmp_path / "parts", corpus, steps=6, resume="auto")
    assert losses(resumed) == losses(straight)[3:]


def test_an_unset_path_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="$name.path: not set"):
        tiny_run(tmp_path / "run", plugins={"$name": slimcore_$name},
                 config={"data": {"source": "$name"}})
''')

KINDS["checkpointer"] = dict(
    summary="A slimcore checkpointer: one safetensors file and one JSON file per checkpoint.",
    usage="In a run's YAML: `checkpoint: {checkpointer: $name}`; checkpoints go to "
          "`<output dir>/$name/`.",
    entry_object="",
    extra_dependencies=', "safetensors>=0.4"',
    module='''"""slimcore plugin `$name`: each checkpoint as step_N.safetensors (the record's tensors)
and step_N.json (the rest, with the sha256 of the tensors' file), the JSON renamed into
place last: it commits the checkpoint."""

import hashlib
import json
import os
from pathlib import Path

from safetensors.torch import load, save
from slimcore import Checkpoint, UserError, hookimpl


@hookimpl
def save_checkpoint(checkpointer, run, checkpoint):
    if checkpointer != "$name":
        return None
    folder = run.output_dir / "$name"
    folder.mkdir(parents=True, exist_ok=True)
    tensors, meta = checkpoint.split()
    data = save(tensors)
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    base = folder / f"step_{checkpoint.step}"
    for path, content in ((base.with_suffix(".safetensors"), data),
                          (base.with_suffix(".json"), json.dumps(meta).encode())):
        Path(f"{path}.tmp").write_bytes(content)
        os.replace(f"{path}.tmp", path)
    return str(base.with_suffix(".json"))


@hookimpl
def load_checkpoint(checkpointer, run, path):
    if checkpointer != "$name":
        return None
    if path == "auto":
        mine = [p for p in (run.output_dir / "$name").glob("step_*.json")
                if json.loads(p.read_text())["run_id"] in (None, run.run_id)]
        if not mine:
            return {}
        path = max(mine, key=lambda p: int(p.stem[len("step_"):]))
    meta = json.loads(Path(path).read_text())
    data = Path(path).with_suffix(".safetensors").read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.pop("sha256"):
        raise UserError(f"checkpoint: {path} is damaged (sha256)")
    return Checkpoint.join(load(data), meta, path=str(path))
''',
    test='''import pytest
from slimcore import UserError
from slimcore.testing import tiny_run

import slimcore_$name

# One learning-rate curve for a run trained in parts: its decay ends at step 6 whatever
# run.steps says.
SETTINGS = {"checkpoint": {"checkpointer": "$name"}, "schedule": {"total_steps": 6}}


def test_a_resume_from_its_checkpoint_gives_the_same_losses(tmp_path):
    straight = tiny_run(tmp_path / "straight", plugins={"$name": slimcore_$name},
                        config=SETTINGS, steps=6)
    tiny_run(tmp_path / "parts", plugins={"$name": slimcore_$name}, config=SETTINGS, steps=3)
    resumed = tiny_run(tmp_path / "parts", plugins={"$name": slimcore_$name}, config=SETTINGS,
                       steps=6, resume="auto")
    assert [m.loss for m in resumed.metrics] == [m.loss for m in straight.metrics][3:]


def test_a_damaged_checkpoint_is_refused(tmp_path):
    tiny_run(tmp_path / "run", plugins={"$name": slimcore_$name}, config=SETTINGS, steps=2)
    tensors = tmp_path / "run" / "$name" / "step_2.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-1] + b"?")
    with pytest.raises(UserError, match="damaged"):
        tiny_run(tmp_path / "run", plugins={"$name": slimcore_$name}, config=SETTINGS,
                 steps=4, resume="auto")
''')

KINDS["export"] = dict(
    summary="A slimcore export format: the weights as safetensors, the model's shape as JSON.",
    usage="`slimcore export runs/NAME --format $name --output DIR`.",
    entry_object="",
    extra_dependencies=', "safetensors>=0.4"',
    module='''"""slimcore plugin `$name`: `slimcore export SOURCE --format $name --output DIR` writes
weights.safetensors (slimcore's names), model.json (the model section) and
tokenizer.model."""

import json

from safetensors.torch import save_file
from slimcore import hookimpl


@hookimpl
def export_model(format, checkpoint, output, dtype):
    if format != "$name":
        return None
    save_file({name: t.to(dtype).contiguous() for name, t in checkpoint.model.items()},
              str(output / "weights.safetensors"))
    (output / "model.json").write_text(json.dumps(checkpoint.config["model"], indent=2))
    (output / "tokenizer.model").write_bytes(checkpoint.tokenizer_model)
    return f"{len(checkpoint.model)} tensors"
''',
    test='''import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from slimcore import Checkpoint
from slimcore.testing import tiny_run

import slimcore_$name


def test_the_export_holds_the_trained_weights(tmp_path):
    result = tiny_run(tmp_path / "run", steps=2)
    model = {k: v.detach().cpu() for k, v in result.run.model.state_dict().items()}
    record = Checkpoint(step=2, tokens_seen=0, skipped_steps=0, run_id=None,
                        config=result.run.config.to_dict(), tokenizer_fingerprint=None,
                        model=model, optimizer={"state": {}, "param_groups": []},
                        scheduler={}, rng={}, data_state=None,
                        tokenizer_model=result.run.tokenizer.model_proto)
    out = tmp_path / "export"
    out.mkdir()
    assert slimcore_$name.export_model(format="$name", checkpoint=record, output=out,
                                       dtype=torch.float16)
    weights = load_file(out / "weights.safetensors")
    assert weights["head.weight"].dtype == torch.float16
    torch.testing.assert_close(weights["head.weight"].float(), model["head.weight"],
                               rtol=1e-3, atol=1e-4)
    assert json.loads((out / "model.json").read_text())["width"] == 32
    assert slimcore_$name.export_model(format="other", checkpoint=record, output=out,
                                       dtype=torch.float32) is None
''')

KINDS["command"] = dict(
    summary="A slimcore command: `slimcore $name RUN_DIR` prints a run's last metrics.",
    usage="`slimcore $name runs/quickstart`.",
    entry_object="",
    module='''"""slimcore plugin `$name`: the command `slimcore $name RUN_DIR`, the last step's metrics
of a run, from its history (written by every run, whatever plugins were on)."""

import json

from slimcore import RunPaths, UserError, hookimpl


@hookimpl
def register_commands(subparsers):
    parser = subparsers.add_parser("$name", help="print the last metrics of a run")
    parser.add_argument("run_dir", help="a run's output folder (runs/NAME)")
    parser.set_defaults(handler=command)


def command(args) -> int:
    log = RunPaths(args.run_dir).metrics_log
    try:
        last = log.read_text().splitlines()[-1]
    except (OSError, IndexError):
        raise UserError(f"$name: {log} holds no steps; give a run's output folder") from None
    metrics = json.loads(last)
    print(f"step {metrics['step']}: loss {metrics['loss']:.4f}, "
          f"accuracy {metrics['accuracy']:.3f}")
    return 0
''',
    test='''import argparse

import pytest
from slimcore import UserError
from slimcore.testing import tiny_run

import slimcore_$name


def invoke(*argv):
    parser = argparse.ArgumentParser()
    slimcore_$name.register_commands(subparsers=parser.add_subparsers())
    args = parser.parse_args(["$name", *map(str, argv)])
    return args.handler(args)


def test_it_prints_the_last_step(tmp_path, capsys):
    result = tiny_run(tmp_path / "run", steps=3)
    capsys.readouterr()  # what the run printed
    assert invoke(result.output_dir) == 0
    assert capsys.readouterr().out.startswith(f"step 3: loss {result.metrics[-1].loss:.4f}")


def test_a_folder_without_a_run_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="holds no steps"):
        invoke(tmp_path)
''')


def new_plugin(kind: str, name: str, output: Path | None = None) -> Path:
    """Write the distribution of plugin `name` of `kind`; returns its folder."""
    if kind not in KINDS:
        raise UserError(f"new-plugin: unknown kind '{kind}' (kinds: {', '.join(KINDS)})")
    if not NAME.fullmatch(name):
        raise UserError(f"new-plugin: '{name}' is not a plugin name: lower-case letters, digits "
                        "and _, starting with a letter (it becomes the module slimcore_NAME)")
    folder = Path(output) if output is not None else Path(f"slimcore-{name.replace('_', '-')}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"--output: {folder} exists and is not an empty folder; give a new one")
    spec = KINDS[kind]
    values = {"name": name, "Name": "".join(p.title() for p in name.split("_")),
              "dash": name.replace("_", "-")}
    fill = lambda text: Template(text).substitute(values)  # noqa: E731
    values.update(summary=fill(spec["summary"]), entry_object=fill(spec["entry_object"]),
                  extra_dependencies=spec.get("extra_dependencies", ""))
    values["usage"] = fill(spec["usage"])
    files = {
        "pyproject.toml": fill(PYPROJECT),
        "README.md": fill(README),
        f"slimcore_{name}/__init__.py": fill(spec["module"]),
        f"tests/test_{name}.py": fill(spec["test"]),
    }
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def command_new_plugin(args) -> int:
    folder = new_plugin(args.kind, args.name, Path(args.output) if args.output else None)
    print(f"new-plugin: a {args.kind} plugin '{args.name}' in {folder}; next: cd {folder} && "
          "pip install -e . && pytest")
    return 0
