"""Text from outside (corpus records, prompts, task files) made into text that every part of
slimcore can encode, in one place: a lone surrogate, which valid JSON can hold (`"\\ud800"`)
and a command line makes of bytes that are not UTF-8, becomes U+FFFD. Everything that is
tokenized passes through `clean_text` (the Tokenizer calls it), so one such record costs a
character, not the run (and every resume, at the same record).
"""

from __future__ import annotations

import re

SURROGATES = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    if text.isascii() or not SURROGATES.search(text):
        return text
    return SURROGATES.sub(REPLACEMENT, text)


def clean_texts(texts: list[str]) -> list[str]:
    return [clean_text(text) for text in texts]
