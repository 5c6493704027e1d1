"""What a resume does with each config key that differs from the checkpoint's.

    changes = config_changes(recorded, run.config, path, source_class)   refuses, or says each
    keep_checkpoint_values(run.config, changes)     the kept keys get the checkpoint's values

Each changed key has one fate, said in the resume's warning:
    applies    from the first resumed step (the default: optimizer, schedule, intervals, ...;
               the optimizer's settings are put into its restored state, see resume.py)
    kept       the checkpoint's value stays in force, and config.yaml records it: it carries
               its tokenizer (tokenizer.*), its random states replace the seed's (run.seed),
               and what the data source says it restores from its position
    buffered   the data source's: applies to what it reads after the data its saved position
               holds (packed rows, a shuffle buffer)
    refused    the checkpoint cannot go on with it: the model's shape, another data source,
               another optimizer (its state is another rule's), and what the data source
               says its position depends on (its corpus)
A data source names its keys' fates in `DataSource.resume_changes` ({dotted key: fate}).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from ..config.schema import RunConfig, yaml_key
from ..contracts.errors import UserError, bounded_repr

# Model settings that change how the model is computed, not what it is: free to differ.
HOW_NOT_WHAT = {"model.backend", "model.activation_checkpointing", "model.compile"}
# Where the run's first weights came from: the checkpoint's record of it stays.
STARTED_FROM = "model.init_from"
# The core's kept keys (a section name keeps all of its keys).
CORE_KEPT = ("tokenizer", "run.seed", STARTED_FROM)
FATES = ("applies", "kept", "buffered", "refused")
# The core's refused keys (beside the model's shape), and why.
REFUSED_BECAUSE = {"data.source": "its data position is another source's",
                   "optimizer.name": "its optimizer state is another rule's"}
SAID = {"applies": "applies from this step", "kept": "kept at the checkpoint's {old}",
        "buffered": "applies after the data the source's saved position holds"}


def config_changes(recorded: dict, config: RunConfig, path: str,
                   source_class: type | None) -> dict[str, tuple[Any, Any, str]]:
    """{dotted key: (checkpoint's value, this run's, fate)} for every key that differs;
    UserError (one line naming the first) when a refused key differs."""
    current = config.to_dict()
    declared = getattr(source_class, "resume_changes", None) or {}
    changes = {}
    for section in sorted(set(recorded) | set(current)):
        old_section, new_section = recorded.get(section) or {}, current.get(section) or {}
        for key in sorted(set(old_section) | set(new_section)):
            old, new = old_section.get(key), new_section.get(key)
            if old != new:
                dotted = f"{section}.{key}"
                changes[dotted] = (old, new, fate_of(dotted, declared))
    refuse_changes(changes, path)
    return changes


def refuse_changes(changes: dict[str, tuple[Any, Any, str]], path: str) -> None:
    """One line for the first refused key (the model's shape first), if any."""
    refused = [key for key, (_, _, fate) in changes.items() if fate == "refused"]
    shape = [key for key in refused if key.startswith("model.")]
    if shape:
        raise UserError(f"--resume: {path} holds another model shape ({', '.join(shape)} "
                        "differ); resume with the model section it was saved with")
    if refused:
        old, new, _ = changes[refused[0]]
        why = REFUSED_BECAUSE.get(refused[0], "the data source's saved position depends on it")
        raise UserError(f"--resume: {refused[0]} is {bounded_repr(new)} here and "
                        f"{bounded_repr(old)} in {path}, which cannot go on with it ({why}); "
                        f"resume with the checkpoint's value (differing too: "
                        f"{', '.join(refused[1:]) or 'nothing else'})")


def fate_of(key: str, declared: dict[str, str]) -> str:
    if key == STARTED_FROM:
        return "kept"
    if key.startswith("model.") and key not in HOW_NOT_WHAT:
        return "refused"
    if key in REFUSED_BECAUSE:
        return "refused"
    if key in declared:
        return declared[key] if declared[key] in FATES else "applies"
    if key in CORE_KEPT or key.split(".")[0] in CORE_KEPT:
        return "kept"
    return "applies"


def say_changes(changes: dict[str, tuple[Any, Any, str]], path: str) -> None:
    if changes:
        said = ", ".join(f"{key} ({SAID[fate].format(old=bounded_repr(old))})"
                         for key, (old, _, fate) in changes.items())
        print(f"slimcore: warning: resuming with config differences from {path}: {said}",
              file=sys.stderr)


def keep_checkpoint_values(config: RunConfig, changes: dict[str, tuple[Any, Any, str]]) -> None:
    """The kept keys back to the checkpoint's values, so the config in force (config.yaml,
    later checkpoints) says what the run does."""
    for key, (old, _, fate) in changes.items():
        if fate != "kept":
            continue
        section_name, _, name = key.partition(".")
        section = config.plugin_sections.get(section_name) or getattr(config, section_name, None)
        field = next((f for f in dataclasses.fields(section) if yaml_key(f) == name), None) \
            if dataclasses.is_dataclass(section) else None
        if field is not None:
            setattr(section, field.name, old)
