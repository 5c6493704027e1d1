"""Run configuration: the typed schema of the core sections, YAML loading, overrides.

YAML only selects and sets values; each component owns a dataclass that says which keys
exist, of what type and in what range. Plugins declare their own sections through the
`declare_config` hook and are parsed by the same rules. Unknown keys, wrong types and values
out of range are `ConfigError`s that name the dotted key and the file (or `--set`) the value
came from, all raised here, before a run does any work.

A field's valid range is part of its type: `Annotated[int, Range(min=1)]`,
`Annotated[float, Range(above=0, max=1)]`, `Annotated[str, NonEmpty()]`. Every float must be
finite (NaN and infinity are refused; use null where a field means "no limit") and every int
must fit in 64 bits, whether annotated or not.

    load_yaml(path) -> dict          strict YAML: safe_load, duplicate keys rejected
    apply_override(raw, "a.b=1")     one `--set` onto the raw dict
    parse_config(raw, sections, source) -> RunConfig
    resolve_config(path, overrides, pm)   YAML + --test + flags + --set, with the sections
                                          the loaded plugins declare -> RunConfig
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from ..contracts.errors import ConfigError, UserError

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Range:
    """The values a number may take: `min`/`max` inclusive, `above`/`below` exclusive."""

    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None

    def problem(self, value: float) -> str | None:
        if self.min is not None and value < self.min:
            return f"must be at least {_number(self.min)}"
        if self.above is not None and value <= self.above:
            return f"must be more than {_number(self.above)}"
        if self.max is not None and value > self.max:
            return f"must be at most {_number(self.max)}"
        if self.below is not None and value >= self.below:
            return f"must be less than {_number(self.below)}"
        return None

    def __str__(self) -> str:
        low = f"[{_number(self.min)}" if self.min is not None else \
            f"({_number(self.above)}" if self.above is not None else "(-inf"
        high = f"{_number(self.max)}]" if self.max is not None else \
            f"{_number(self.below)})" if self.below is not None else "inf)"
        return f"{low}, {high}"


def _number(value: float) -> str:
    """1000000, not 1e+06; 0.5 as 0.5."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else f"{value:g}"


@dataclass(frozen=True)
class NonEmpty:
    """A string that must not be empty (a path, a name)."""

    def problem(self, value: str) -> str | None:
        return "must not be empty" if not value.strip() else None

    def __str__(self) -> str:
        return "non-empty"


# The ranges most fields use.
POSITIVE_INT = Range(min=1)
COUNT = Range(min=0)  # zero allowed
POSITIVE = Range(above=0)
FRACTION = Range(min=0, max=1)


@dataclass
class RunSection:
    name: Annotated[str, NonEmpty()] | None = None  # default: the config file's stem
    seed: Annotated[int, Range(min=0)] = 1337
    steps: Annotated[int, POSITIVE_INT] = 1000
    device: Annotated[str, NonEmpty()] = "auto"  # auto (cuda when available), cpu, cuda, cuda:N
    # A NaN or Inf loss or gradient norm never reaches the optimizer. skip: drop that update
    # and go on; stop: save a checkpoint of the last good state and exit with status 3.
    nan_policy: Literal["skip", "stop"] = "skip"
    # No step for this long: dump stacks, exit 3. null: no watchdog.
    stall_timeout_s: Annotated[float, Range(above=0, max=1e7)] | None = 900.0

    def __post_init__(self):
        # The name becomes a folder (runs/<name>): one folder, not a path.
        if self.name is not None and ("/" in self.name or "\\" in self.name
                                      or self.name.strip() in (".", "..")):
            raise ConfigError("name", f"{self.name!r} is a path; give a plain name (the "
                              "outputs go to runs/<name>, or set output.dir)")


@dataclass
class ModelSection:
    width: Annotated[int, POSITIVE_INT] = 1536
    layers: Annotated[int, POSITIVE_INT] = 16
    heads: Annotated[int, POSITIVE_INT] = 12
    mlp_hidden: Annotated[int, POSITIVE_INT] = 4096
    seq_len: Annotated[int, POSITIVE_INT] = 1024
    norm_eps: Annotated[float, POSITIVE] = 1e-5
    rope_theta: Annotated[float, POSITIVE] = 10000.0
    init_std: Annotated[float, POSITIVE] = 0.02
    # Which implementation runs the memory-bound ops (norm, rotary, SwiGLU, cross-entropy).
    # auto: the native kernels on a GPU, PyTorch's on the CPU (see docs/native.md).
    backend: Literal["auto", "native", "torch"] = "auto"
    compile: bool = False  # run the model under torch.compile (native ops: per ops.NATIVE_UNDER_COMPILE)
    # Recompute each block's activations in the backward pass instead of keeping them:
    # about a third more compute for activations that no longer grow with depth.
    activation_checkpointing: bool = False

    def __post_init__(self):
        if self.width % self.heads:
            raise ConfigError("width", f"{self.width} is not divisible by heads={self.heads}")
        if (self.width // self.heads) % 2:
            raise ConfigError("heads", "width/heads must be even for rotary embeddings")


@dataclass
class TokenizerSection:
    # a SentencePiece .model file; null trains one on the corpus
    path: Annotated[str, NonEmpty()] | None = None
    vocab_size: Annotated[int, Range(min=1, below=2**31)] = 32000  # ids are int32
    train_documents: Annotated[int, POSITIVE_INT] = 1000  # documents read to train on
    train_max_chars: Annotated[int, POSITIVE_INT] = 20_000_000  # cap on the training text
    # default: $SLIMCORE_CACHE_DIR or ~/.cache/slimcore
    cache_dir: Annotated[str, NonEmpty()] | None = None


@dataclass
class DataSection:
    """What the core asks of the data source; where its data comes from and how it is read
    are the source's own settings (the bundled sources: the `corpus` section)."""

    source: Annotated[str, NonEmpty()] = "chunk"  # the data-source plugin that feeds the run
    batch_size: Annotated[int, POSITIVE_INT] = 16  # sequences per micro-batch, per rank


@dataclass
class OptimizerSection:
    lr: Annotated[float, POSITIVE] = 3e-4
    weight_decay: Annotated[float, COUNT] = 0.1
    beta1: Annotated[float, Range(min=0, below=1)] = 0.9
    beta2: Annotated[float, Range(min=0, below=1)] = 0.95
    eps: Annotated[float, POSITIVE] = 1e-8
    grad_clip: Annotated[float, POSITIVE] = 1.0
    grad_accum_steps: Annotated[int, POSITIVE_INT] = 1


@dataclass
class ScheduleSection:
    # after the warmup: cosine or linear decay to lr * min_lr_ratio at total_steps; constant;
    # wsd (warmup, stable at lr, then a linear decay over the last wsd_decay_fraction)
    kind: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    warmup_steps: Annotated[int, COUNT] = 100
    min_lr_ratio: Annotated[float, FRACTION] = 0.1  # the decay's floor, as a share of lr
    # the step the decay ends at (the rate then stays at the floor); null: run.steps. Set it
    # beyond run.steps to train in parts on one curve.
    total_steps: Annotated[int, POSITIVE_INT] | None = None
    wsd_decay_fraction: Annotated[float, FRACTION] = 0.2  # wsd: share of the post-warmup steps


@dataclass
class IntervalsSection:
    viz: Annotated[int, POSITIVE_INT] = 50
    checkpoint: Annotated[int, POSITIVE_INT] = 2000
    sample_every: Annotated[int, POSITIVE_INT] = 5  # in viz intervals
    # steps between plain progress lines when stdout is not a terminal
    log: Annotated[int, POSITIVE_INT] = 10


@dataclass
class DistributedSection:
    """Used when launched by torchrun (WORLD_SIZE set); ignored in a single process."""

    strategy: Literal["ddp", "fsdp"] = "ddp"  # fsdp: FSDP2 shards parameters, grads, optimizer
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: nccl on GPUs, gloo on CPUs
    # A collective that waits longer than this (a rank died or hung) ends the job.
    timeout_s: Annotated[float, Range(above=0, max=1e7)] = 600.0


@dataclass
class EvalSection:
    # steps between evaluations on held-out data; 0: no evaluation
    interval: Annotated[int, COUNT] = 0
    # micro-batches of held-out data (validation_batches), the same at every evaluation
    batches: Annotated[int, POSITIVE_INT] = 8


@dataclass
class SamplesSection:
    prompts: list[str] = field(default_factory=lambda: ["The state of the Union is", "We must"])
    max_new_tokens: Annotated[int, Range(min=0, max=100_000)] = 48
    temperature: Annotated[float, COUNT] = 0.8  # 0: greedy
    top_k: Annotated[int, COUNT] = 50  # 0: no top-k cut


@dataclass
class CheckpointSection:
    # the checkpointer plugin; null: no checkpoints
    checkpointer: Annotated[str, NonEmpty()] | None = "three_file"
    # true: training goes on while a thread writes the checkpoint (it waits only for a copy
    # of the state in host memory, which doubles the state's host memory); false: training
    # waits for the whole save. YAML key `async` (a Python keyword, hence the field's `_`).
    async_: bool = field(default=True, metadata={"yaml": "async"})


@dataclass
class OutputSection:
    dir: Annotated[str, NonEmpty()] | None = None  # default: runs/<run.name>


@dataclass
class PluginsSection:
    disable: list[Annotated[str, NonEmpty()]] = field(default_factory=list)
    strict: bool = False  # every plugin failure is fatal, not only the selected ones'


CORE_SECTIONS: dict[str, type] = {
    "run": RunSection,
    "model": ModelSection,
    "tokenizer": TokenizerSection,
    "data": DataSection,
    "optimizer": OptimizerSection,
    "schedule": ScheduleSection,
    "intervals": IntervalsSection,
    "eval": EvalSection,
    "distributed": DistributedSection,
    "samples": SamplesSection,
    "checkpoint": CheckpointSection,
    "output": OutputSection,
    "plugins": PluginsSection,
}


@dataclass
class RunConfig:
    run: RunSection
    model: ModelSection
    tokenizer: TokenizerSection
    data: DataSection
    optimizer: OptimizerSection
    schedule: ScheduleSection
    intervals: IntervalsSection
    eval: EvalSection
    distributed: DistributedSection
    samples: SamplesSection
    checkpoint: CheckpointSection
    output: OutputSection
    plugins: PluginsSection
    # Sections declared by plugins, parsed into the plugin's own dataclass.
    plugin_sections: dict[str, Any] = field(default_factory=dict)
    source: str = "<defaults>"  # the YAML file this came from

    def section(self, name: str) -> Any:
        """A plugin's parsed section (its dataclass instance)."""
        return self.plugin_sections[name]

    def to_dict(self) -> dict:
        """The config as YAML would give it: each key under its YAML name."""
        out = {name: _as_yaml(getattr(self, name)) for name in CORE_SECTIONS}
        for name, value in self.plugin_sections.items():
            out[name] = _as_yaml(value)
        return out


def yaml_key(f: dataclasses.Field) -> str:
    """A field's key in YAML: its name, or `metadata={"yaml": ...}` where the name cannot be
    (a Python keyword such as `async`)."""
    return f.metadata.get("yaml", f.name)


def _as_yaml(value: Any) -> Any:
    """dataclasses.asdict, with each field under its YAML key."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {yaml_key(f): _as_yaml(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_as_yaml(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_yaml(v) for k, v in value.items()}
    return value


# -- YAML -----------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (line {line})", key_node.start_mark)
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path} (give the path to a YAML file, "
                        "e.g. examples/quickstart.yaml)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                        f"{e.start}); save the config as UTF-8") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the config ({e.strerror or e})") from None
    data = parse_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections, "
                        f"not a {type(data).__name__}")
    return data


def parse_yaml(text: str, where: str) -> Any:
    """Strict YAML (no Python objects, no duplicate keys), every failure one UserError."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - safe subclass
    except yaml.constructor.ConstructorError as e:
        raise UserError(f"{where}: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where}: malformed YAML{at}: {problem}") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to be a config") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise UserError(f"{where}: a value YAML cannot read ({str(e)[:120]})") from None


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `dotted.key=value`; the value is read as YAML (`8` is an int, `[a]` a list)."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise UserError(f"--set {assignment!r}: expected dotted.key=value, e.g. model.width=256")
    try:
        value = parse_yaml(text, f"--set {key}") if text.strip() else None
    except UserError:
        value = text  # not YAML: the text itself (a path with a colon, say)
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is a value, not a section", "--set")
        node = child
    node[parts[-1]] = value


# -- from a YAML file and the command line to a RunConfig -----------------------------


# `--test`: a smoke run that exercises every part in seconds.
SMOKE_OVERRIDES = [
    "run.steps=10", "model.width=64", "model.layers=2", "model.heads=4",
    "model.mlp_hidden=128", "model.seq_len=64", "data.batch_size=4",
    "tokenizer.vocab_size=1000", "tokenizer.train_documents=50", "intervals.viz=5",
    "intervals.log=1", "samples.max_new_tokens=8",
]


def declared_sections(pm) -> dict[str, type]:
    """The sections plugins declare (`declare_config`), each name owned once."""
    sections: dict[str, type] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.declare_config.get_hookimpls():
        for name, cls in (impl.function() or {}).items():
            if name in CORE_SECTIONS or name in sections:
                other = owners.get(name, "slimcore")
                raise UserError(f"plugin '{impl.plugin_name}' declares config section '{name}', "
                                f"which '{other}' already owns; disable one of them")
            sections[name], owners[name] = cls, impl.plugin_name
    return sections


def resolve_config(path: str | Path, overrides: list[str], pm,
                   raw: dict | None = None, origins: dict[str, str] | None = None) -> RunConfig:
    """`overrides` are `dotted.key=value` strings applied in order after the YAML.
    `origins` names where an override's key came from (`--steps`, `--test`); the rest are
    `--set`. A bad value is blamed on its origin; a check across keys that an override took
    part in, on the file and the override both."""
    raw = load_yaml(path) if raw is None else raw
    for assignment in overrides:
        apply_override(raw, assignment)
    raw.setdefault("run", {})
    if isinstance(raw["run"], dict) and not raw["run"].get("name"):
        raw["run"]["name"] = Path(path).stem
    origins = dict(origins or {})
    for assignment in overrides:
        origins.setdefault(assignment.partition("=")[0].strip(), "--set")
    ignorable = {i.name for i in pm.infos.values() if i.status != "loaded"}
    try:
        return parse_config(raw, declared_sections(pm), str(path), ignorable)
    except ConfigError as e:
        exact = [o for k, o in origins.items() if e.key == k or e.key.startswith(k + ".")
                 or k.startswith(e.key + ".")]
        section = [o for k, o in origins.items() if k.split(".")[0] == e.key.split(".")[0]]
        if exact:
            raise ConfigError(e.key, e.detail, exact[-1]) from None
        if section:
            raise ConfigError(e.key, e.detail, f"{path} with {section[-1]}") from None
        raise


# -- typed parsing --------------------------------------------------------------------------


def parse_config(raw: dict, plugin_sections: dict[str, type], source: str,
                 ignorable: set[str] = frozenset()) -> RunConfig:
    """Turn a raw dict into a RunConfig. `ignorable` names top-level sections that may stay
    unparsed (they belong to plugins that are blocked or failed to load)."""
    known = {**CORE_SECTIONS, **plugin_sections}
    for name in raw:
        if name not in known and name not in ignorable:
            raise ConfigError(str(name), "unknown section" + suggest(str(name), known)
                              + " (a plugin's section is known only while the plugin is loaded)",
                              source)
    parsed = {}
    for name, cls in known.items():
        value = raw.get(name)
        if value is None:
            value = {}
        parsed[name] = parse_dataclass(cls, value, name, source)
    core = {name: parsed[name] for name in CORE_SECTIONS}
    extra = {name: parsed[name] for name in plugin_sections}
    return RunConfig(**core, plugin_sections=extra, source=source)


def parse_dataclass(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"expected a section (mapping), got {_describe(data)}", source)
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {yaml_key(f): f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}"
        if key not in names:
            raise ConfigError(dotted, "unknown key" + suggest(str(key), list(names)), source)
        kwargs[names[key]] = _coerce(hints[names[key]], value, dotted, source)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(section_key(e.key, prefix, names.values()), e.detail, source) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(prefix, str(e), source) from None


def section_key(key: str, prefix: str, fields) -> str:
    """The dotted key a section's own error names, whatever form its author gave: the
    field's name (`every`), the dotted key (`csv.every`), or a dotted key under another
    section name whose last part is a field of this one."""
    if key == prefix or key.startswith(prefix + "."):
        return key
    last = key.rsplit(".", 1)[-1]
    return f"{prefix}.{last}" if last in fields else f"{prefix}.{key}"


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        value = _coerce(args[0], value, key, source)
        for constraint in args[1:]:
            problem = constraint.problem(value) if hasattr(constraint, "problem") else None
            if problem:
                raise ConfigError(key, f"{problem}, got {_describe(value)}", source)
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(option, value, key, source)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if origin is Literal:
        if not isinstance(value, typing.Hashable) or value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(key, f"must be one of {choices}, got {_describe(value)}", source)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {_describe(value)}", source)
        return [_coerce(args[0], v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {_describe(value)}", source)
        return {str(k): _coerce(args[1], v, f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return parse_dataclass(hint, value, key, source)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > INT64_MAX:
                raise ConfigError(key, "does not fit in 64 bits", source)
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) > INT64_MAX or not math.isfinite(value):
                raise ConfigError(key, f"must be a finite number, got {_describe(value)} (use "
                                  "null where the key allows no limit)", source)
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Any:
        return value
    raise ConfigError(key, f"expected {getattr(hint, '__name__', hint)}, got {_describe(value)}",
                      source)


def field_reference(cls: type, prefix: str) -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, valid values) of each field of a section: the rows of
    docs/configuration.md, which a test holds to this."""
    hints = typing.get_type_hints(cls, include_extras=True)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((f"{prefix}.{yaml_key(f)}", _type_name(hints[f.name]), _yaml_value(default),
                     _valid_values(hints[f.name])))
    return rows


def _type_name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "choice"
    if origin is list:
        return f"list of {_type_name(args[0])}"
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _valid_values(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        return ", ".join(str(c) for c in args[1:] if hasattr(c, "problem"))
    if origin in (typing.Union, types.UnionType):
        return ", ".join(v for v in (_valid_values(a) for a in args) if v)
    if origin is Literal:
        return " / ".join(map(str, args))
    if origin is list:
        inner = _valid_values(args[0])
        return f"each {inner}" if inner else ""
    return ""


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix(
        "\n...").removesuffix(" ...").strip()


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"int of {len(hex(value)) * 4 - 8} bits"  # repr() of a huge int is refused
    text = repr(value)
    return f"{type(value).__name__} {text[:80] + '...' if len(text) > 80 else text}"


def suggest(word: str, options) -> str:
    """` (did you mean 'X'?)` for the option closest to a misspelled `word`, else ``."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
