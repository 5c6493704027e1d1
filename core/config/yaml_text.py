"""Strict YAML in, one UserError out for anything wrong with it: safe loading, duplicate keys
refused, and `--set dotted.key=value` overrides applied onto the raw mapping."""

from __future__ import annotations

import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from ..contracts.errors import ConfigError, UserError, bounded_repr

class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    None, None, f"a {type(key).__name__} as a key (line {line}); keys are "
                    "names", key_node.start_mark)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {bounded_repr(key)} (line {line})",
                    key_node.start_mark)
            seen[key] = True
        return super().construct_mapping(node, deep=deep)


# YAML 1.1 (PyYAML's) reads `3e-4` as a string: a float needs a dot there (`3.0e-4`). Every
# user writes learning rates as `3e-4`, and YAML 1.2 reads it as a float; so does this.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


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


def parse_override_value(text: str, key: str) -> Any:
    """An override's value read as YAML (`8` is an int, `[a]` a list); text that is not YAML
    (a path with a colon, say) is itself."""
    try:
        return parse_yaml(text, f"--set {key}") if text.strip() else None
    except UserError:
        return text


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `dotted.key=value`; the value is read as YAML (`8` is an int, `[a]` a list)."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise UserError(f"--set {assignment!r}: expected dotted.key=value, e.g. model.width=256")
    value = parse_override_value(text, key)
    node = raw
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), "is a value, not a section", "--set")
        node = child
    node[parts[-1]] = value
