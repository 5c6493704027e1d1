"""The hook contract between the slimcore core and its plugins (pluggy project `slimcore`).

Every hook is called with keyword arguments; an implementation may accept any subset of
them. A plugin is a module or object with functions marked `@slimcore.hookimpl`, registered
through an entry point of group `slimcore` (the entry point's name is the plugin's name).

Kinds of hook:
- registration hooks (`register_data_sources`, `register_checkpointers`,
  `register_export_formats`, `register_charts`, `register_optimizers`, `register_schedules`):
  every plugin offers named objects of a role's contract type; the core keeps one registry
  (registry.py) and looks the YAML's choice up by name (`data.source`,
  `checkpoint.checkpointer`, `slimcore export --format`, the charts, `optimizer.name`,
  `schedule.kind`).
- observer hooks (`on_*`): every plugin is called in isolation; an exception is reported once
  with the plugin's name, and a plugin that keeps failing is switched off for the run.
  Training goes on. They run on the training thread: return quickly, hand heavy work
  (rendering, I/O) to a thread or process of your own.
- collection hooks (`declare_config`, `declare_flags`, `register_commands`): every plugin
  contributes; results are merged.
- the old selection hooks (`iterate_batches`, `corpus_text`, `validation_batches`,
  `save_checkpoint`, `load_checkpoint`, `export_model`): `firstresult`, asked by name; they
  keep working, with a deprecation warning, until slimcore 0.3 (legacy.py).

docs/plugins.md lists every hook with its exact signature; tests/test_hooks.py holds a
`test_hook_<name>` for each, and a meta-test fails when a hook lacks either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Iterator

import pluggy

if TYPE_CHECKING:
    import argparse
    from pathlib import Path

    import torch

    from ..contracts.batch import Batch
    from ..contracts.charts import Chart
    from ..contracts.metrics import TrainingMetrics
    from ..contracts.run import Run
    from ..model.sampling import TextSample
    from ..contracts.checkpoint import Checkpoint
    from ..contracts.optimizer import OptimizerBuilder, Schedule

hookspec = pluggy.HookspecMarker("slimcore")
hookimpl = pluggy.HookimplMarker("slimcore")


@hookspec
def declare_config() -> dict[str, type]:
    """Declare this plugin's config sections: ``{section_name: dataclass_type}``.

    The core parses the YAML section of that name into the dataclass with the same rules as
    its own sections (unknown keys and wrong types are errors naming the dotted key and the
    file). Give each field its valid values in its type, where the core checks them before
    any work: ``Annotated[int, slimcore.Range(min=1)]``, ``Annotated[str,
    slimcore.NonEmpty()]``; every float must be finite and every int fit in 64 bits anyway.
    Check what spans fields in ``__post_init__`` by raising ``slimcore.ConfigError(key,
    message)`` (the field's name, or the dotted key) or ``ValueError``. A section name must
    be unique across plugins and must not be a core section. The parsed instance is
    ``run.config.section(name)``.
    """


@hookspec
def declare_flags() -> dict[str, tuple[str, str]]:
    """Declare command-line shorthands for keys of your config sections, taken by
    ``slimcore run`` and ``slimcore config``: ``{"--log-every": ("csv_logger.every", "help
    text")}``. ``--log-every 3`` is then ``--set csv_logger.every=3`` (the value read as
    YAML, checked by your section), and a bad value is blamed on the flag. Flags are unique
    across plugins and the core's own.
    """


@hookspec
def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add CLI subcommands: ``parser = subparsers.add_parser(name, help=...)``, then
    ``parser.set_defaults(handler=fn)`` where ``fn(args) -> int`` returns the exit status.

    Raise ``slimcore.UserError`` from the handler for bad input (exit status 2, one line).
    """


@hookspec
def register_charts() -> list[Chart]:
    """Return the charts this plugin contributes to the training dashboard (a list of
    ``slimcore.Chart``). Chart names must be unique across plugins; a run turns charts on
    and off by name."""


@hookspec
def register_data_sources() -> list[type[DataSource]]:
    """Return the data sources this plugin offers: subclasses of ``slimcore.DataSource``,
    each with a ``name`` unique among data sources (``data.source`` selects one). The classes
    themselves: each run makes a stream of its own, ``SourceClass(run)``."""


@hookspec
def register_checkpointers() -> list[Checkpointer]:
    """Return the checkpointers this plugin offers: ``slimcore.Checkpointer`` instances, each
    with a unique ``name`` (``checkpoint.checkpointer`` selects one)."""


@hookspec
def register_export_formats() -> list[ExportFormat]:
    """Return the export formats this plugin offers: ``slimcore.ExportFormat`` instances, each
    with a unique ``name`` (``slimcore export --format`` selects one)."""


@hookspec
def register_optimizers() -> list[OptimizerBuilder]:
    """Return the optimizers this plugin offers: ``slimcore.OptimizerBuilder`` instances,
    each with a unique ``name`` (``optimizer.name`` selects one). The built-in plugin
    ``optimizers`` offers ``adamw`` and ``muon``."""


@hookspec
def register_schedules() -> list[Schedule]:
    """Return the learning-rate schedules this plugin offers: ``slimcore.Schedule``
    instances, each with a unique ``name`` (``schedule.kind`` selects one). The built-in
    plugin ``optimizers`` offers ``cosine``, ``linear``, ``constant`` and ``wsd``."""


@hookspec(firstresult=True)
def corpus_text(source: str, run: Run, max_documents: int) -> Iterable[str] | None:
    """Deprecated: the old form, which goes in slimcore 0.3 (host/legacy.py).

    Texts to train the tokenizer on: at most ``max_documents`` documents of the corpus
    that data source ``source`` would read for ``run``. Return None when ``source`` is not
    yours. The iterable must be finite and deterministic (the tokenizer cache is keyed by
    a fingerprint of this text). Raise ``slimcore.UserError`` if the corpus is unreachable.
    """


@hookspec(firstresult=True)
def iterate_batches(source: str, run: Run) -> Iterator[Batch] | None:
    """Deprecated: the old form, which goes in slimcore 0.3 (host/legacy.py).

    Return the batch iterator of data source ``source`` (``data.source`` in the YAML),
    or None when ``source`` is not yours.

    Each item is a ``slimcore.Batch`` of ``run.config.data.batch_size`` sequences of
    ``run.config.model.seq_len`` tokens, encoded with ``run.tokenizer``, on the CPU (the
    core moves it to the device). Targets equal to ``slimcore.IGNORE_INDEX`` are left out of
    loss and accuracy. Stopping the iteration ends the run early. Read only this rank's
    share: ``run.rank`` of ``run.world_size``. Raise ``slimcore.UserError`` for an
    unreachable or malformed corpus.

    Resumable sources also have ``state_dict() -> dict | None`` (the position after the
    last batch drawn: JSON values and CPU tensors, nested in dicts) and
    ``load_state_dict(state)`` (called before the first batch); checkpoints carry the state,
    and a resumed run reads on from it. Keep positions in it, not documents' text: it is
    saved at every checkpoint, by every rank. Without them a resumed run replays the stream
    from its start, skipping the batches already trained on.
    """


@hookspec(firstresult=True)
def validation_batches(source: str, run: Run, count: int) -> list[Batch] | None:
    """Deprecated: the old form, which goes in slimcore 0.3 (host/legacy.py).

    Return up to ``count`` batches of held-out data for data source ``source``, the same
    ones on every call and every rank, or None when ``source`` is not yours. The core
    evaluates on them every ``eval.interval`` steps. Raise ``slimcore.UserError`` when there
    is no held-out data to be had.
    """


@hookspec
def on_run_start(run: Run) -> None:
    """Observer: the run is about to take its first step; ``run`` has the resolved config,
    output folder, tokenizer, model and plugin report.

    Raise ``slimcore.UserError`` to refuse the run's settings (it stops with one line and
    exit status 2, before any step); any other exception is an observer failure.
    """


@hookspec
def on_metrics(metrics: TrainingMetrics, run: Run) -> None:
    """Observer: one optimizer step finished; ``metrics`` is its ``TrainingMetrics``.

    Called on every rank-0 step, on the training thread: store or hand off, never render
    here.
    """


@hookspec
def on_text_samples(step: int, samples: list[TextSample], run: Run) -> None:
    """Observer: the model generated ``samples`` (prompt and continuation) at ``step``,
    every ``samples.every`` steps."""


@hookspec
def on_checkpoint(step: int, run: Run) -> None:
    """Observer: a checkpoint of ``step`` is about to be saved. Make every record you keep
    up to ``step`` durable (written and fsynced) before returning: a resume from this
    checkpoint goes on from your files as they are now, so what is not on disk yet would be
    lost for good. Called on the training thread, before the checkpoint's state is copied;
    the checkpoint commits only after every observer returned. Keep it short: training
    waits for it.
    """


@hookspec(firstresult=True)
def save_checkpoint(checkpointer: str, run: Run, checkpoint: Checkpoint) -> str | None:
    """Deprecated: the old form, which goes in slimcore 0.3 (host/legacy.py).

    Store ``checkpoint`` with checkpointer ``checkpointer`` (``checkpoint.checkpointer``
    in the YAML); return the path of the saved checkpoint, or None when the name is not
    yours.

    ``checkpoint`` is a ``slimcore.Checkpoint``: everything a resume needs, built by the
    core (step, counters, run id, config, tokenizer fingerprint, the whole model and
    optimizer, scheduler, every random state, every rank's data position). Store all of it
    and nothing else; ``checkpoint.split()`` gives its tensors (CPU) and the rest as JSON
    values, and ``load_checkpoint`` hands them back through ``Checkpoint.join``. Called on
    rank 0 only.

    Must be all or nothing: a crash mid-save leaves the previous checkpoint usable. Prune
    only checkpoints of this run (``checkpoint.run_id``). Raise ``slimcore.UserError`` for a
    problem the user can fix (disk full, unwritable folder).
    """


@hookspec(firstresult=True)
def load_checkpoint(checkpointer: str, run: Run, path: str) -> Checkpoint | dict | None:
    """Deprecated: the old form, which goes in slimcore 0.3 (host/legacy.py).

    Load the checkpoint at ``path`` with checkpointer ``checkpointer``; return None when
    the name is not yours. ``path == "auto"`` means the newest intact checkpoint of this run
    (``run.run_id``, or one saved before run ids) in ``run.output_dir``, skipping damaged
    ones and other runs' with a warning, or ``{}`` when there is none. Called on every rank.

    Return the ``slimcore.Checkpoint`` exactly as it was saved, with ``path`` set:
    ``Checkpoint.join(tensors, meta, path)`` of what ``checkpoint.split()`` gave. Must
    verify integrity before returning a tensor and must never execute code from the file.
    Raise ``slimcore.UserError`` for a damaged or missing checkpoint.
    """


@hookspec(firstresult=True)
def export_model(format: str, checkpoint: Checkpoint, output: Path, dtype: torch.dtype
                 ) -> str | None:
    """Deprecated: the old form, which goes in slimcore 0.3 (host/legacy.py).

    Write the trained model of ``checkpoint`` in export format ``format`` (``slimcore
    export --format NAME``; the plugin's name is the format's) into the folder ``output``;
    return a one-line description of what was written, or None when ``format`` is not
    yours.

    ``checkpoint`` is a verified ``slimcore.Checkpoint``: ``checkpoint.model`` (the state
    dict, float32 on the CPU), ``checkpoint.config["model"]`` (width, layers, heads,
    mlp_hidden, seq_len, norm_eps, rope_theta; kv_heads, head_dim, tie_embeddings,
    vocab_size, rope_scaling where set) and ``checkpoint.tokenizer_model`` (the SentencePiece
    model's bytes, or a tokenizer.json in slimcore's JSON envelope: docs/plugins.md)
    describe the model whole. Cast the weights to ``dtype``.
    ``output`` exists and is empty; the core renames it into place when you return, and
    removes it if you raise. Raise ``slimcore.UserError`` for a model the format cannot
    hold.
    """


@hookspec
def on_run_end(run: Run, status: str, error: BaseException | None) -> None:
    """Observer: the run is over; called from a ``finally``, so it runs after a crash too.

    ``status`` is ``"completed"``, ``"stopped"`` (the data ran out or a signal arrived),
    or ``"failed"`` (``error`` holds the exception). Flush and close what you hold.
    """
