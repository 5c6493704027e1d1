"""The rows of docs/configuration.md, from the sections themselves (a test holds the page to
them)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Annotated, Any, Literal

import yaml

from .schema import yaml_key


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
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
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
