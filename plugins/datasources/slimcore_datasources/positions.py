"""A saved data position put back: checked as it is applied, so one that does not fit (a
crafted checkpoint whose digests were recomputed, another source's) is one line naming the
source, not a traceback from the reading thread.

    with restoring("chunk"):                   any error of a value that does not fit: a UserError
        positions = counts(saved, "a position")   ints of at least 0, or ValueError
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from slimcore import UserError, bounded_repr


@contextlib.contextmanager
def restoring(source: str) -> Iterator[None]:
    """Applying a saved position: one that does not fit (a crafted checkpoint whose digests
    were recomputed, a foreign source's) is one line naming the source, not a traceback from
    the reading thread."""
    try:
        yield
    except UserError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, RuntimeError,
            OverflowError) as e:
        raise UserError(f"--resume: the checkpoint's position of data source {source!r} "
                        f"cannot be restored ({type(e).__name__}: {bounded_repr(str(e))}); "
                        "resume from another checkpoint") from None


def counts(values, what: str) -> list[int]:
    """`values` as ints of at least 0 (positions, sizes), or ValueError naming `what`."""
    values = list(values)
    if not all(type(v) is int and v >= 0 for v in values):
        raise ValueError(f"{what} holds {bounded_repr(values)}, not counts")
    return values
