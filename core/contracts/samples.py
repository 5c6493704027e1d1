"""A text sample: what `on_text_samples` hands observers, one per configured prompt."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TextSample:
    step: int
    prompt: str
    text: str  # the generated continuation, without the prompt

    def to_dict(self) -> dict:
        return asdict(self)
