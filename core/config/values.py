"""Valid values as part of a field's type: `Annotated[int, Range(min=1)]`,
`Annotated[str, NonEmpty()]`. The parser (parse.py) checks every constraint that has a
`problem(value)` method; docs/configuration.md shows each with `str()`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    """The values a number may take: `min`/`max` inclusive, `above`/`below` exclusive."""

    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None

    def problem(self, value: float) -> str | None:
        if self.min is not None and value < self.min:
            return f"must be at least {_number(self.min)}"
        if self.above is not None and value <= self.above:
            return f"must be more than {_number(self.above)}"
        if self.max is not None and value > self.max:
            return f"must be at most {_number(self.max)}"
        if self.below is not None and value >= self.below:
            return f"must be less than {_number(self.below)}"
        return None

    def __str__(self) -> str:
        low = f"[{_number(self.min)}" if self.min is not None else \
            f"({_number(self.above)}" if self.above is not None else "(-inf"
        high = f"{_number(self.max)}]" if self.max is not None else \
            f"{_number(self.below)})" if self.below is not None else "inf)"
        return f"{low}, {high}"


def _number(value: float) -> str:
    """1000000, not 1e+06; 0.5 as 0.5."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else f"{value:g}"


@dataclass(frozen=True)
class NonEmpty:
    """A string that must not be empty (a path, a name)."""

    def problem(self, value: str) -> str | None:
        return "must not be empty" if not value.strip() else None

    def __str__(self) -> str:
        return "non-empty"


# The ranges most fields use.
POSITIVE_INT = Range(min=1)
COUNT = Range(min=0)  # zero allowed
POSITIVE = Range(above=0)
FRACTION = Range(min=0, max=1)
