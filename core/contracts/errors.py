"""The one exception type that means "the user can fix this".

The CLI turns a `UserError` into one line on stderr and exit status 2, with no traceback.
Anything else that escapes is a bug in slimcore or a plugin: exit status 1 with a traceback.
Plugins raise `UserError` (or a subclass) for bad input they own: a missing file, an
unreachable dataset, a bad value in their config section.

`SLIMCORE_TRACEBACK=1` adds the traceback to every failure reported in one line: a plugin
that fails to load, an observer hook or a chart that fails, a `UserError`.
"""

import os
import reprlib
import traceback

TRACEBACK_VARIABLE = "SLIMCORE_TRACEBACK"


def traceback_wanted() -> bool:
    return os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0")


def describe_error(error: BaseException) -> str:
    """`Type: message` on one line (a library's message of several lines, as SQLAlchemy's,
    gives its first, at most 300 characters), and with SLIMCORE_TRACEBACK=1 the traceback
    after it (on lines of its own), for reporting a failure that is caught and survived."""
    lines = str(error).strip().splitlines() or [""]
    message = lines[0][:300] + (" ..." if len(lines) > 1 or len(lines[0]) > 300 else "")
    line = f"{type(error).__name__}: {message}"
    if traceback_wanted():
        return line + "\n" + "".join(traceback.format_exception(error)).rstrip()
    return line


class UserError(Exception):
    """A mistake the user can fix; the message says what is wrong and what to do."""


class ConfigError(UserError):
    """A config value is missing, unknown, mistyped or out of range.

    `key` is the dotted key (`model.width`), `source` the file or flag it came from.
    """

    def __init__(self, key: str, message: str, source: str | None = None):
        self.key = key
        self.detail = message  # the message without file and key
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key}: {message}")


class TrainingHalted(Exception):
    """Training stopped itself to protect the run (a NaN loss under `nan_policy: stop`, a
    stalled step). Not a bug and not bad input: the CLI prints one line, exit status 3.
    What was trained is saved before this is raised, where it can be."""

    exit_status = 3


class BoundedRepr(reprlib.Repr):
    """A value's text in a bounded time and length, whatever the value: a YAML alias bomb
    (a few lines) repr()s to gigabytes, and repr() of a huge int is refused."""

    def __init__(self):
        super().__init__()
        self.maxlevel, self.maxlist, self.maxdict, self.maxstring = 3, 4, 4, 80
        self.maxtuple = self.maxset = self.maxfrozenset = self.maxdeque = self.maxarray = 4
        self.maxother = 80

    def repr_int(self, value, level):
        if abs(value) > 10**30:
            return f"<int of {len(hex(value)) * 4 - 8} bits>"
        return repr(value)


def bounded_repr(value) -> str:
    """repr() for an error message about a value from a file or a user: at most a few hundred
    characters, in bounded time, whatever the value (deep nesting, an alias bomb, a huge
    int)."""
    return BoundedRepr().repr(value)
