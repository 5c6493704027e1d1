"""A record longer than corpus.max_document_chars, cut into documents (SlimPajama's books
run to millions of characters): where the cuts go, so each part is sliced as it is handed on.

    document_bounds(text, max_chars) -> [(begin, end), ...]
"""

from __future__ import annotations


def document_bounds(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Where `text` is cut into documents of at most `max_chars` characters: after a line
    break where there is one in the second half of the window, else after a space, else at
    the limit. Bounds, not the parts: each part is sliced as it is handed on, so a long
    record is not held twice."""
    bounds, start = [], 0
    while len(text) - start > max_chars:
        end = start + max_chars
        cut = text.rfind("\n", start + max_chars // 2, end)
        if cut < 0:
            cut = text.rfind(" ", start + max_chars // 2, end)
        cut = end if cut < 0 else cut + 1
        bounds.append((start, cut))
        start = cut
    bounds.append((start, len(text)))
    return bounds
