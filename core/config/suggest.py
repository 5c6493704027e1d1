"""Did-you-mean for names the user typed: config keys, plugins, roles, hooks."""

from __future__ import annotations

import difflib


def suggest(word: str, options) -> str:
    """` (did you mean 'X'?)` for the option closest to a misspelled `word`, else ``."""
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""
