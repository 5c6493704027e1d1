"""`slimcore new-plugin KIND NAME`: a plugin distribution that installs and passes its own
tests as generated, one kind at a time (the files are templates/KIND/).

    slimcore-NAME/
      pyproject.toml              the distribution, with its entry point in group `slimcore`
      README.md                   what it does, how to install and test it
      slimcore_NAME/__init__.py   the plugin: the complete example of its kind
      tests/test_NAME.py          tests on a tiny in-process run (slimcore.testing)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
from pathlib import Path
from string import Template

from ..contracts.errors import UserError

NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")
TEMPLATES = Path(__file__).parent / "templates"
KINDS = {
    "chart": dict(
        summary="A slimcore chart: the loss and its moving average.",
        usage="The chart is on in every run's dashboard; turn it off with `dashboard: "
              "{disable: [$name]}` in a run's YAML."),
    "observer": dict(
        summary="A slimcore observer: every N steps' metrics as CSV, with its own YAML section.",
        usage="A run writes `<output dir>/$name.csv`; `$name: {every: 10}` in a run's YAML "
              "sets how often.",
        entry_object=":${Name}"),
    "source": dict(
        summary="A slimcore data source: a text file, one document per line, packed into rows.",
        usage="In a run's YAML: `data: {source: $name}` and `$name: {path: my_text.txt}`. It "
              "saves its position in checkpoints, so `--resume` reads on where it stopped."),
    "checkpointer": dict(
        summary="A slimcore checkpointer: one safetensors file and one JSON file per "
                "checkpoint.",
        usage="In a run's YAML: `checkpoint: {checkpointer: $name}`; checkpoints go to "
              "`<output dir>/$name/`.",
        extra_dependencies=', "safetensors>=0.4"'),
    "export": dict(
        summary="A slimcore export format: the weights as safetensors, the model's shape as "
                "JSON.",
        usage="`slimcore export runs/NAME --format $name --output DIR`.",
        extra_dependencies=', "safetensors>=0.4"'),
    "command": dict(
        summary="A slimcore command: `slimcore $name RUN_DIR` prints a run's last metrics.",
        usage="`slimcore $name runs/quickstart`."),
    "optimizer": dict(
        summary="A slimcore optimizer: sign descent, with its own YAML section.",
        usage="In a run's YAML: `optimizer: {name: $name}` and `$name: {lr: 0.001}`; the "
              "schedule scales the rate as it does AdamW's."),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    new = sub.add_parser("new-plugin", help="write a new plugin distribution to start from",
                         description="Write an installable plugin distribution of KIND, with "
                                     "tests that pass as generated.")
    new.add_argument("kind", metavar="KIND", help=f"one of: {', '.join(KINDS)}")
    new.add_argument("name", metavar="NAME", help="the plugin's name (lower case, digits, _)")
    new.add_argument("--output", metavar="DIR",
                     help="where to write it (default ./slimcore-NAME)")
    new.set_defaults(handler=command_new_plugin)


def new_plugin(kind: str, name: str, output: Path | None = None) -> Path:
    """Write the distribution of plugin `name` of `kind`; returns its folder."""
    check_name(kind, name)
    folder = Path(output) if output is not None else Path(f"slimcore-{name.replace('_', '-')}")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UserError(f"--output: {folder} exists and is not an empty folder; give a new one")
    for relative, text in plugin_files(kind, name).items():
        path = folder / relative
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        except OSError as e:
            raise UserError(f"--output: cannot write {path} ({e.strerror or e}); give a "
                            "folder you can write to") from None
    return folder


def check_name(kind: str, name: str) -> None:
    if kind not in KINDS:
        raise UserError(f"new-plugin: unknown kind '{kind}' (kinds: {', '.join(KINDS)})")
    if not NAME.fullmatch(name):
        raise UserError(f"new-plugin: '{name}' is not a plugin name: lower-case letters, digits "
                        "and _, starting with a letter (it becomes the module slimcore_NAME)")
    taken = {ep.name: ep.dist for ep in importlib.metadata.entry_points(group="slimcore")}
    if name in taken or name == "progress":
        owner = taken[name].name if name in taken and taken[name] else "slimcore"
        raise UserError(f"new-plugin: '{name}' is the name of an installed plugin (of "
                        f"{owner}); two plugins of one name are ambiguous, so pick another")


def plugin_files(kind: str, name: str) -> dict[str, str]:
    """{path in the distribution: text} of plugin `name` of `kind`."""
    spec = KINDS[kind]
    values = {"name": name, "Name": "".join(p.title() for p in name.split("_")),
              "dash": name.replace("_", "-")}

    def fill(text: str) -> str:
        return Template(text).substitute(values)

    values.update(summary=fill(spec["summary"]), entry_object=fill(spec.get("entry_object", "")),
                  extra_dependencies=spec.get("extra_dependencies", ""))
    values["usage"] = fill(spec["usage"])
    return {"pyproject.toml": fill((TEMPLATES / "pyproject.toml.tmpl").read_text()),
            "README.md": fill((TEMPLATES / "README.md.tmpl").read_text()),
            f"slimcore_{name}/__init__.py": fill((TEMPLATES / kind / "plugin.py.tmpl").read_text()),
            f"tests/test_{name}.py": fill((TEMPLATES / kind / "test.py.tmpl").read_text())}


def command_new_plugin(args) -> int:
    folder = new_plugin(args.kind, args.name, Path(args.output) if args.output else None)
    print(f"new-plugin: a {args.kind} plugin '{args.name}' in {folder}; next: cd {folder} && "
          "pip install -e . && pytest")
    return 0
