"""What the core asks of the plugins' named objects, in one place: the data source's stream,
its tokenizer text and held-out batches, the checkpointer, the optimizer and the schedule.

    source = open_source(plugins, run)                    the selected DataSource, opened
    texts = corpus_text(plugins, config, run)             to train the tokenizer on
    batches = validation_batches(plugins, config, tokenizer, count, key)
    optimizer = build_optimizer(plugins, run, model)      over every trainable parameter once
    scheduler = build_scheduler(plugins, run, optimizer)

The old selection hooks (host/legacy.py) are asked first, as before: every plugin of the old
form could answer for any source's name.
"""

from __future__ import annotations

from typing import Iterable

from ..contracts.batch import Batch
from ..contracts.checkpointer import Checkpointer
from ..contracts.errors import UserError, describe_error
from ..contracts.run import Run
from ..contracts.source import DataSource
from ..optim import schedules
from ..optim.groups import parameter_groups
from . import legacy


def open_source(plugins, run: Run) -> DataSource:
    """The stream of the data source `data.source` names, for this run."""
    source_class = plugins.lookup("data source", run.config.data.source)
    return source_class(run)


def corpus_text(plugins, config, run: Run | None = None) -> Iterable[str]:
    name, documents = config.data.source, config.tokenizer.train_documents
    texts = legacy.ask(plugins, "corpus_text", source=name, run=run, config=config,
                       max_documents=documents)
    if texts is None:
        texts = plugins.lookup("data source", name).corpus_text(config, documents)
    if texts is None:
        raise UserError(f"tokenizer: data source '{name}' offers no text to train a tokenizer "
                        "on; give one with tokenizer.path")
    return texts


def validation_batches(plugins, config, tokenizer, count: int, key: str,
                       run: Run | None = None) -> list[Batch]:
    """`count` held-out batches of the selected source; UserError naming `key` (the setting
    that asked for them) when it has none, or too little for one batch."""
    name = config.data.source
    batches = legacy.ask(plugins, "validation_batches", source=name, run=run, config=config,
                         tokenizer=tokenizer, count=count)
    if batches is None:
        batches = plugins.lookup("data source", name).validation_batches(config, tokenizer,
                                                                         count)
    if batches is None:
        raise UserError(f"{key}: data source '{name}' offers no held-out data; "
                        + ("set eval.interval to 0 or pick a source that does"
                           if key == "eval.interval" else
                           "give --set data.source=NAME of one that does"))
    if not batches:
        raise UserError(f"eval: data source '{name}' has too little held-out data for one "
                        "batch; give it more (its settings say where it comes from)")
    return batches


def validation_components(plugins, config, tokenizer, count: int) -> dict | None:
    """Held-out batches of each component of the selected source, if it mixes some; a
    component with too little held-out data for one batch is left out."""
    source = plugins.lookup("data source", config.data.source)
    asked = getattr(source, "validation_components", None)
    components = asked(config, tokenizer, count) if asked is not None else None
    if not components:
        return None
    return {name: batches for name, batches in components.items() if batches} or None


def checkpointer(plugins, config) -> Checkpointer | None:
    """The checkpointer `checkpoint.checkpointer` names (None: checkpoints off)."""
    name = config.checkpoint.checkpointer
    return plugins.lookup("checkpointer", name) if name else None


def build_optimizer(plugins, run: Run, model):
    """The optimizer `optimizer.name` names, built over the model's parameter groups; one
    line naming it when it fails, or leaves out or repeats a parameter."""
    import torch

    name = run.config.optimizer.name
    builder = plugins.lookup("optimizer", name)
    try:
        optimizer = builder.build(parameter_groups(model), run)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - the builder is a plugin's: name it
        raise UserError(f"optimizer.name: optimizer '{name}' failed to build: "
                        f"{describe_error(e)}") from None
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise UserError(f"optimizer.name: optimizer '{name}' built {optimizer!r:.80}, not a "
                        "torch.optim.Optimizer")
    held = [id(p) for group in optimizer.param_groups for p in group["params"]]
    once = set(held)
    left_out = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in once]
    if left_out or len(held) != len(once):
        raise UserError(f"optimizer.name: optimizer '{name}' must hold every trainable "
                        f"parameter once; it " + (f"left out {', '.join(left_out[:3])}"
                                                  if left_out else "holds one twice"))
    return optimizer


def build_scheduler(plugins, run: Run, optimizer):
    """A LambdaLR over `optimizer` following the schedule `schedule.kind` names."""
    schedule = plugins.lookup("schedule", run.config.schedule.kind)
    return schedules.build_scheduler(optimizer, schedule, run.config)
