"""Typed parsing: a raw mapping (YAML after overrides) into a RunConfig, every value checked
against its field's type and valid values, every failure one ConfigError naming the dotted key
and the file (or flag) it came from.

    parse_config(raw, plugin_sections, source, ignorable) -> RunConfig
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from typing import Annotated, Any, Literal

from ..contracts.errors import ConfigError, bounded_repr
from .schema import CORE_SECTIONS, RunConfig, yaml_key
from .moves import move_old_keys
from .suggest import suggest

INT64_MAX = 2**63 - 1


def parse_config(raw: dict, plugin_sections: dict[str, type], source: str,
                 ignorable: set[str] = frozenset(), warn_moves: bool = True) -> RunConfig:
    """Turn a raw dict into a RunConfig (moving keys of an older layout, moves.py, with a
    warning unless not `warn_moves`). `ignorable` names top-level sections that may stay
    unparsed (they belong to plugins that are blocked or failed to load)."""
    known = {**CORE_SECTIONS, **plugin_sections}
    raw = copy.deepcopy(raw)  # the caller's (a checkpoint's record, say) stays as it was
    moved = move_old_keys(raw, known, source, warn_moves)
    try:
        return _parse(raw, known, plugin_sections, source, ignorable)
    except ConfigError as e:
        old = next((o for new, o in moved.items() if e.key == new or e.key.startswith(new + ".")),
                   None)
        if old is None:
            raise
        raise ConfigError(old, f"{e.detail} (read as {e.key})", source) from None


def _parse(raw: dict, known: dict[str, type], plugin_sections: dict[str, type], source: str,
           ignorable: set[str]) -> RunConfig:
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


def checked_value(cls: type, field: str, value: Any, key: str) -> Any:
    """`value` as field `field` of the dataclass `cls` takes it: its type and valid values
    checked as a config key's are (ConfigError naming `key` otherwise)."""
    hint = typing.get_type_hints(cls, include_extras=True)[field]
    return _coerce(hint, value, key, "")


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


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"int of {len(hex(value)) * 4 - 8} bits"
    text = bounded_repr(value)
    return f"{type(value).__name__} {text[:80] + '...' if len(text) > 80 else text}"


