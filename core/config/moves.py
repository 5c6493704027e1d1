"""Keys of an older layout: a section says which old keys it now holds (`moved_keys`:
{"old.dotted_key": "field"}, or (field, convert) where the meaning changed) and which of its
own have no place any more (`retired_keys`). The old keys are read in their new place with a
warning until slimcore 0.3; an old key that nothing took over is an error, as an unknown key
is.

    move_old_keys(raw, sections, source)      the YAML's (or a recorded config's) old keys
    in_new_form(assignment, sections, raw)    a `--set` of an old key, as its new ones
"""

from __future__ import annotations

import json
import sys

from ..contracts.errors import ConfigError
from .yaml_text import parse_override_value

REMOVED_IN = "0.3"  # when the old keys stop being read


def move_old_keys(raw: dict, sections: dict[str, type], source: str,
                  warn_user: bool = True) -> dict[str, str]:
    """Each key a section says it now holds (`moved_keys`) goes to its new place, with one
    warning naming both (`warn_user`); a key that has no place any more (`retired_keys`) and
    that no loaded section took over is a ConfigError, as an unknown key is. Conversions
    read the raw config as the user gave it. Returns {new dotted key: old dotted key}."""
    given = {name: dict(values) for name, values in raw.items() if isinstance(values, dict)}
    moved: dict[str, str] = {}
    for old, targets in claims(sections).items():
        section, _, key = old.partition(".")
        if key not in given.get(section, {}):
            continue
        value = given[section][key]
        for name, field, convert in targets:
            place = raw.setdefault(name, {})
            if not isinstance(place, dict):
                continue  # the parser names a section that is not a mapping
            if field in place:
                raise ConfigError(old, f"is now {name}.{field}, which is set too; give only "
                                  f"{name}.{field}", source)
            place[field] = convert(value, given) if convert else value
            moved[f"{name}.{field}"] = old
        del raw[section][key]
        if warn_user:
            new = " and ".join(f"{name}.{field}" for name, field, _ in targets)
            warn(f"{source}: {old} is now {new}; read as such (the old key goes in slimcore "
                 f"{REMOVED_IN})")
    for name, cls in sections.items():
        for key in getattr(cls, "retired_keys", ()):
            if isinstance(raw.get(name), dict) and key in raw[name]:
                raise ConfigError(f"{name}.{key}", "is no longer read, and no loaded plugin "
                                  "took it over; remove it (`slimcore config` shows the keys "
                                  "in force)", source)
    return moved


def in_new_form(assignment: str, sections: dict[str, type], raw: dict,
                origin: str = "--set") -> list[str]:
    """An override (`key=value`) of an old key as the overrides of its new places, with the
    same warning as the YAML's for a `--set` (a flag such as `--viz-interval` is a standing
    shorthand, so it says nothing); a retired key nothing took over is a ConfigError; any
    other override as it is."""
    key, _, text = assignment.partition("=")
    key = key.strip()
    targets = claims(sections).get(key)
    retired = [f"{name}.{old}" for name, cls in sections.items()
               for old in getattr(cls, "retired_keys", ())]
    if targets:
        value = parse_override_value(text, key)
        new = [f"{name}.{field}" for name, field, _ in targets]
        if origin == "--set":
            warn(f"--set {key} is now {' and '.join(new)}; read as such (the old key goes in "
                 f"slimcore {REMOVED_IN})")
        return [f"{name}.{field}={json.dumps(convert(value, raw) if convert else value)}"
                for name, field, convert in targets]
    if key in retired:
        raise ConfigError(key, "is no longer read, and no loaded plugin took it over; remove "
                          "it (`slimcore config` shows the keys in force)", origin)
    return [assignment]


def claims(sections: dict[str, type]) -> dict[str, list[tuple]]:
    """old dotted key -> [(section, field, convert or None)] of every section claiming it."""
    found: dict[str, list[tuple]] = {}
    for name, cls in sections.items():
        for old, target in (getattr(cls, "moved_keys", None) or {}).items():
            field, convert = target if isinstance(target, tuple) else (target, None)
            found.setdefault(old, []).append((name, field, convert))
    return found


def warn(message: str) -> None:
    print(f"slimcore: warning: {message}", file=sys.stderr)
