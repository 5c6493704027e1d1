"""From a YAML file and the command line to a RunConfig: the YAML, then `--test`, the flags and
`--set` in order, keys of an older layout moved to their new place (with a warning), then
typed parsing with the sections the loaded plugins declare.

    resolve_config(path, overrides, plugins, raw, origins) -> RunConfig
    smoke_overrides(sections)    `--test`: the core's tiny values and every section's `tiny`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..contracts.errors import ConfigError
from .parse import parse_config
from .schema import CORE_SECTIONS, RunConfig
from .moves import in_new_form, move_old_keys
from .yaml_text import apply_override, load_yaml

# `--test`: a smoke run that exercises every part in seconds (plugins add their sections'
# `tiny` values).
SMOKE_OVERRIDES = [
    "run.steps=10", "model.width=64", "model.layers=2", "model.heads=4",
    "model.mlp_hidden=128", "model.seq_len=64", "data.batch_size=4",
    "tokenizer.vocab_size=1000", "tokenizer.train_documents=50", "intervals.log=1",
    "samples.max_new_tokens=8",
]


def smoke_overrides(sections: dict[str, type]) -> list[str]:
    return SMOKE_OVERRIDES + [f"{name}.{key}={json.dumps(value)}"
                              for name, values in tiny_values(sections).items()
                              for key, value in values.items()]


def tiny_values(sections: dict[str, type]) -> dict[str, dict[str, Any]]:
    """{section: {key: value}} that each plugin section asks a tiny run to use (`tiny`)."""
    return {name: dict(cls.tiny) for name, cls in sections.items() if getattr(cls, "tiny", None)}


def resolve_config(path: str | Path, overrides: list[str], plugins, raw: dict | None = None,
                   origins: dict[str, str] | None = None) -> RunConfig:
    """`overrides` are `dotted.key=value` strings applied in order after the YAML; `plugins`
    the plugin manager (its loaded plugins' sections, and the names of those not loaded,
    whose sections may stay in the YAML unread). `origins`
    names where an override's key came from (`--steps`, `--test`); the rest are `--set`. A bad
    value is blamed on its origin; a check across keys that an override took part in, on the
    file and the override both."""
    raw = load_yaml(path) if raw is None else raw
    sections = {**CORE_SECTIONS, **plugins.sections}
    try:
        move_old_keys(raw, sections, str(path))  # the YAML's own, before what overrides them
    except ConfigError as e:
        raise blamed(e, {}, path) from None
    origins = dict(origins or {})
    for assignment in overrides:
        origins.setdefault(assignment.partition("=")[0].strip(), "--set")
    renamed: dict[str, str] = {}  # an override's new key -> the old key it was given as
    for assignment in overrides:
        key = assignment.partition("=")[0].strip()
        try:
            for moved in in_new_form(assignment, sections, raw, origins[key]):
                apply_override(raw, moved)
                new_key = moved.partition("=")[0]
                if new_key != key:
                    renamed[new_key], origins[new_key] = key, origins[key]
        except ConfigError as e:
            raise blamed(e, origins, path) from None
    raw.setdefault("run", {})
    if isinstance(raw["run"], dict) and not raw["run"].get("name"):
        raw["run"]["name"] = Path(path).stem
    try:
        return parse_config(raw, plugins.sections, str(path), plugins.unloaded())
    except ConfigError as e:
        if e.key in renamed:  # blamed on the key the user wrote
            e = ConfigError(renamed[e.key], f"{e.detail} (read as {e.key})")
        raise blamed(e, origins, path) from None


def blamed(error: ConfigError, origins: dict[str, str], path: str | Path) -> ConfigError:
    exact = [o for k, o in origins.items() if error.key == k or error.key.startswith(k + ".")
             or k.startswith(error.key + ".")]
    section = [o for k, o in origins.items() if k.split(".")[0] == error.key.split(".")[0]]
    if exact:
        return ConfigError(error.key, error.detail, exact[-1])
    if section:
        return ConfigError(error.key, error.detail, f"{path} with {section[-1]}")
    return error
