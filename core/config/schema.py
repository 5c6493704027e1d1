"""The core's config sections (typed dataclasses) and the RunConfig that holds them with the
sections plugins declare.

Each section says which keys exist, of what type and in what range (values.py). A section may
also say, as class attributes, which keys of an older layout it now holds (`moved_keys`:
{"old.dotted_key": "field"}, or (field, convert) where the meaning changed), which of its own
old keys have no place any more (`retired_keys`), and the values a tiny run uses (`tiny`:
`--test` and `slimcore.testing.tiny_run`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal

from ..contracts.errors import ConfigError
from ..contracts.target import Target
from .values import COUNT, FRACTION, POSITIVE, POSITIVE_INT, NonEmpty, Range


def _sample_every_in_steps(sample_every: Any, raw: dict) -> Any:
    """intervals.sample_every counted viz intervals (intervals.viz, default 50 steps)."""
    viz = (raw.get("intervals") or {}).get("viz", 50) if isinstance(raw.get("intervals"),
                                                                     dict) else 50
    both_ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (sample_every, viz))
    return sample_every * viz if both_ints else sample_every


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
    # "METRIC <= VALUE" or ">=" (eval_loss <= 4.9): the run stops at the first step that
    # reaches it, saved, and says the steps, tokens and time it took. null: run.steps only.
    stop_at: Annotated[str, NonEmpty()] | None = None

    def __post_init__(self):
        if self.stop_at is not None:
            try:
                Target.parse(self.stop_at)
            except ValueError as e:
                raise ConfigError("stop_at", str(e)) from None
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
    # at most 2**20: the rotary tables alone take seq_len x width bytes x 4
    seq_len: Annotated[int, Range(min=1, max=2**20)] = 1024
    # grouped-query attention: heads of keys and values, each shared by heads/kv_heads query
    # heads; null: as many as heads
    kv_heads: Annotated[int, POSITIVE_INT] | None = None
    # each head's width; null: width/heads
    head_dim: Annotated[int, POSITIVE_INT] | None = None
    tie_embeddings: bool = False  # the output layer reads the embedding's matrix
    # rows of the embedding (and output layer); null: the tokenizer's vocabulary
    vocab_size: Annotated[int, POSITIVE_INT] | None = None
    norm_eps: Annotated[float, POSITIVE] = 1e-5
    rope_theta: Annotated[float, POSITIVE] = 10000.0
    # rotary frequencies as trained for a longer context: Llama 3's rule (llama3) with the
    # four keys below, or none
    rope_scaling: Literal["none", "llama3"] = "none"
    rope_factor: Annotated[float, POSITIVE] = 8.0
    rope_low_freq_factor: Annotated[float, POSITIVE] = 1.0
    rope_high_freq_factor: Annotated[float, POSITIVE] = 4.0
    rope_original_context: Annotated[int, POSITIVE_INT] = 8192
    init_std: Annotated[float, POSITIVE] = 0.02
    # a local Hugging Face Llama folder to start from: its config.json gives the shape
    # above, its weights the model's first values, its tokenizer the run's (models.md)
    init_from: Annotated[str, NonEmpty()] | None = None
    # Which implementation runs the memory-bound ops (norm, rotary, SwiGLU, cross-entropy).
    # auto: the native kernels on a GPU, PyTorch's on the CPU (see docs/native.md).
    backend: Literal["auto", "native", "torch"] = "auto"
    compile: bool = False  # run the model under torch.compile (native ops: per ops.NATIVE_UNDER_COMPILE)
    # Recompute each block's activations in the backward pass instead of keeping them:
    # about a third more compute for activations that no longer grow with depth.
    activation_checkpointing: bool = False

    def __post_init__(self):
        if self.head_dim is None and self.width % self.heads:
            raise ConfigError("width", f"{self.width} is not divisible by heads={self.heads} "
                                       "(or set head_dim)")
        if self.head_size % 2:
            raise ConfigError("head_dim" if self.head_dim else "heads",
                              "each head's width must be even for rotary embeddings")
        if self.heads % self.key_value_heads:
            raise ConfigError("kv_heads", f"{self.kv_heads} does not divide heads={self.heads}")

    @property
    def head_size(self) -> int:
        """Each attention head's width."""
        return self.head_dim or self.width // self.heads

    @property
    def key_value_heads(self) -> int:
        return self.kv_heads or self.heads


@dataclass
class TokenizerSection:
    # a SentencePiece .model file; null trains one on the corpus
    path: Annotated[str, NonEmpty()] | None = None
    vocab_size: Annotated[int, Range(min=1, below=2**31)] = 32000  # ids are int32
    train_documents: Annotated[int, POSITIVE_INT] = 1000  # documents read to train on
    train_max_chars: Annotated[int, POSITIVE_INT] = 20_000_000  # cap on the training text
    # Where every cache of a run goes: trained tokenizers, the bundled corpus's shards and the
    # native builds. null: $SLIMCORE_CACHE_DIR, else ~/.cache/slimcore.
    cache_dir: Annotated[str, NonEmpty()] | None = None


@dataclass
class DataSection:
    """What the core asks of the data source; where its data comes from and how it is read
    are the source's own settings (the bundled sources: the `corpus` section)."""

    source: Annotated[str, NonEmpty()] = "chunk"  # the data-source plugin that feeds the run
    batch_size: Annotated[int, POSITIVE_INT] = 16  # sequences per micro-batch, per rank
    # Rows packed with several documents keep them apart: attention within a document only,
    # rotary positions restarting at each (the source marks them: Batch.documents)
    document_mask: bool = False


@dataclass
class OptimizerSection:
    # adamw, muon (its own settings in the muon section), or a plugin's (`slimcore plugins`)
    name: Annotated[str, NonEmpty()] = "adamw"
    lr: Annotated[float, POSITIVE] = 3e-4  # the AdamW rule's peak rate (muon: outside matrices)
    weight_decay: Annotated[float, COUNT] = 0.1
    beta1: Annotated[float, Range(min=0, below=1)] = 0.9
    beta2: Annotated[float, Range(min=0, below=1)] = 0.95
    eps: Annotated[float, POSITIVE] = 1e-8
    grad_clip: Annotated[float, POSITIVE] = 1.0
    grad_accum_steps: Annotated[int, POSITIVE_INT] = 1


@dataclass
class ScheduleSection:
    # after the warmup: cosine or linear decay to lr * min_lr_ratio at total_steps; constant;
    # wsd (warmup, stable at lr, then a linear decay over the last wsd_decay_fraction); or a
    # plugin's schedule
    kind: Annotated[str, NonEmpty()] = "cosine"
    warmup_steps: Annotated[int, COUNT] = 100
    min_lr_ratio: Annotated[float, FRACTION] = 0.1  # the decay's floor, as a share of lr
    # the step the decay ends at (the rate then stays at the floor); null: run.steps. Set it
    # beyond run.steps to train in parts on one curve.
    total_steps: Annotated[int, POSITIVE_INT] | None = None
    wsd_decay_fraction: Annotated[float, FRACTION] = 0.2  # wsd: share of the post-warmup steps


@dataclass
class IntervalsSection:
    checkpoint: Annotated[int, POSITIVE_INT] = 2000  # steps between checkpoints
    # steps between plain progress lines when stdout is not a terminal
    log: Annotated[int, POSITIVE_INT] = 10

    # Plugins that draw or write at intervals have keys of their own now (`slimcore config`
    # shows them); a section of theirs that reads this one's old `viz` says so.
    retired_keys: ClassVar[tuple] = ("viz",)


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
class EvalsSection:
    # downstream tasks: JSON-lines multiple-choice files, or harness:NAME (an
    # lm-evaluation-harness task); empty: none
    tasks: list[Annotated[str, NonEmpty()]] = field(default_factory=list)
    interval: Annotated[int, POSITIVE_INT] = 1000  # steps between scorings (and the last step)
    limit: Annotated[int, COUNT] = 200  # questions per task, the first in the file; 0: all
    batch_size: Annotated[int, POSITIVE_INT] = 16  # sequences per forward
    harness_dir: Annotated[str, NonEmpty()] | None = None  # local harness task YAMLs


@dataclass
class SamplesSection:
    prompts: list[str] = field(default_factory=lambda: ["The state of the Union is", "We must"])
    max_new_tokens: Annotated[int, Range(min=0, max=100_000)] = 48
    temperature: Annotated[float, COUNT] = 0.8  # 0: greedy
    top_k: Annotated[int, COUNT] = 50  # 0: no top-k cut
    every: Annotated[int, POSITIVE_INT] = 250  # steps between samples

    moved_keys: ClassVar[dict] = {"intervals.sample_every": ("every", _sample_every_in_steps)}


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
    "evals": EvalsSection,
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
    evals: EvalsSection
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

