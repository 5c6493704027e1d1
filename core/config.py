"""Run configuration: the typed schema of the core sections, YAML loading, overrides.

YAML only selects and sets values; each component owns a dataclass that says which keys
exist and of what type. Plugins declare their own sections through the `declare_config`
hook and are parsed by the same rules. Unknown keys and wrong types are `ConfigError`s that
name the dotted key and the file (or `--set`) the value came from.

    load_yaml(path) -> dict          strict YAML: safe_load, duplicate keys rejected
    apply_override(raw, "a.b=1")     one `--set` onto the raw dict
    parse_config(raw, sections, source) -> RunConfig
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError, UserError


@dataclass
class RunSection:
    name: str | None = None  # default: the config file's stem
    seed: int = 1337
    steps: int = 1000
    device: str = "auto"  # auto (cuda when available), cpu, cuda, cuda:N
    # A NaN or Inf loss or gradient norm never reaches the optimizer. skip: drop that update
    # and go on; stop: save a checkpoint of the last good state and exit with status 3.
    nan_policy: Literal["skip", "stop"] = "skip"
    stall_timeout_s: float | None = 900.0  # no step for this long: dump stacks, exit 3


@dataclass
class ModelSection:
    width: int = 1536
    layers: int = 16
    heads: int = 12
    mlp_hidden: int = 4096
    seq_len: int = 1024
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    init_std: float = 0.02
    # Which implementation runs the memory-bound ops (norm, rotary, SwiGLU, cross-entropy).
    # auto: the native kernels on a GPU, PyTorch's on the CPU (see docs/native.md).
    backend: Literal["auto", "native", "torch"] = "auto"
    compile: bool = False  # run the model under torch.compile (the native ops inside it)
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
    path: str | None = None  # a SentencePiece .model file; null trains one on the corpus
    vocab_size: int = 32000
    train_documents: int = 1000  # documents read from the corpus to train on
    train_max_chars: int = 20_000_000  # cap on the training text
    cache_dir: str | None = None  # default: $SLIMCORE_CACHE_DIR or ~/.cache/slimcore


@dataclass
class DataSection:
    source: str = "chunk"  # the data-source plugin that feeds the run
    path: str = "bundled"  # bundled, a local file or glob, or a Hub dataset id
    data_files: str | None = None  # a pattern inside a Hub dataset, e.g. train/chunk1/*.jsonl.zst
    text_field: str = "text"
    # Keep only records whose meta.redpajama_set_name is listed, e.g. [RedPajamaBook,
    # RedPajamaArXiv]; empty keeps everything.
    set_names: list[str] = field(default_factory=list)
    batch_size: int = 16  # sequences per micro-batch
    timeout_s: float = 60.0  # every record must arrive within this, or the read is retried
    max_retries: int = 5  # restarts in a row without a record before the run stops
    retry_backoff_s: float = 2.0  # the first wait before a retry; doubles each time
    # Documents leave through a seeded buffer of this many (0: file order); shards are read in
    # a new seeded order each epoch. The buffer fills before the first batch and is saved in
    # checkpoints, so keep it modest (SlimPajama's shards are shuffled already).
    shuffle_buffer: int = 100
    # Reader threads per rank, each with its own share of the rank's shards, taken in turn:
    # decompression and parsing of several shards overlap. A resume needs the same number.
    workers: int = 1

    def __post_init__(self):
        if self.shuffle_buffer < 0:
            raise ConfigError("shuffle_buffer", "must be 0 (no shuffling) or more")
        if self.workers < 1:
            raise ConfigError("workers", "must be at least 1")


@dataclass
class OptimizerSection:
    lr: float = 3e-4
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0
    grad_accum_steps: int = 1


@dataclass
class ScheduleSection:
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays from lr to lr * min_lr_ratio at the last step


@dataclass
class IntervalsSection:
    viz: int = 50
    checkpoint: int = 2000
    sample_every: int = 5  # in viz intervals
    log: int = 10  # steps between plain progress lines when stdout is not a terminal


@dataclass
class DistributedSection:
    """Used when launched by torchrun (WORLD_SIZE set); ignored in a single process."""

    strategy: Literal["ddp", "fsdp"] = "ddp"  # fsdp: FSDP2 shards parameters, grads, optimizer
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: nccl on GPUs, gloo on CPUs
    # A collective that waits longer than this (a rank died or hung) ends the job.
    timeout_s: float = 600.0

    def __post_init__(self):
        if self.timeout_s <= 0:
            raise ConfigError("timeout_s", "must be a positive number of seconds")


@dataclass
class EvalSection:
    interval: int = 0  # steps between evaluations on held-out data; 0: no evaluation
    batches: int = 8  # micro-batches of held-out data, the same ones at every evaluation
    # null: hold out the last shard of data.path (it is then left out of training); or a
    # held-out corpus of its own, e.g. cerebras/SlimPajama-627B with the data_files below.
    path: str | None = None
    data_files: str | None = None  # a pattern inside a Hub eval.path, e.g. validation/chunk1/*

    def __post_init__(self):
        if self.interval < 0:
            raise ConfigError("interval", "must be 0 (no evaluation) or a number of steps")
        if self.batches < 1:
            raise ConfigError("batches", "must be at least 1")


@dataclass
class SamplesSection:
    prompts: list[str] = field(default_factory=lambda: ["The state of the Union is", "We must"])
    max_new_tokens: int = 48
    temperature: float = 0.8
    top_k: int = 50


@dataclass
class CheckpointSection:
    checkpointer: str | None = "three_file"  # the checkpointer plugin; null: no checkpoints


@dataclass
class OutputSection:
    dir: str | None = None  # default: runs/<run.name>


@dataclass
class PluginsSection:
    disable: list[str] = field(default_factory=list)
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
        out = {name: dataclasses.asdict(getattr(self, name)) for name in CORE_SECTIONS}
        for name, value in self.plugin_sections.items():
            out[name] = dataclasses.asdict(value)
        return out


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
        data = yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 - safe subclass
    except yaml.constructor.ConstructorError as e:
        raise UserError(f"{path}: {e.problem}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of sections, "
                        f"not a {type(data).__name__}")
    return data


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `dotted.key=value`; the value is read as YAML (`8` is an int, `[a]` a list)."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"--set {assignment!r}: expected dotted.key=value, e.g. model.width=256")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is a value, not a section", "--set")
        node = child
    node[parts[-1]] = value


# -- typed parsing --------------------------------------------------------------------------


def parse_config(raw: dict, plugin_sections: dict[str, type], source: str,
                 ignorable: set[str] = frozenset()) -> RunConfig:
    """Turn a raw dict into a RunConfig. `ignorable` names top-level sections that may stay
    unparsed (they belong to plugins that are blocked or failed to load)."""
    known = {**CORE_SECTIONS, **plugin_sections}
    for name in raw:
        if name not in known and name not in ignorable:
            raise ConfigError(str(name), "unknown section" + _suggest(str(name), known)
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
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}"
        if key not in names:
            raise ConfigError(dotted, "unknown key" + _suggest(str(key), names), source)
        kwargs[key] = _coerce(hints[key], value, dotted, source)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{prefix}.{e.key}", str(e).split(": ", 1)[-1], source) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(prefix, str(e), source) from None


def _coerce(hint: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
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
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(key, f"must be one of {choices}, got {value!r}", source)
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
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Any:
        return value
    raise ConfigError(key, f"expected {getattr(hint, '__name__', hint)}, got {_describe(value)}",
                      source)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
