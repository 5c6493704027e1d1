"""What both checkpointers of this package do alike with a folder of sets: take the newest
intact one of a run, choose the old ones to delete, and describe one for `slimcore inspect`.
Each format says what its sets are (their paths, oldest first) and how one is read.

    saved = newest_of(sets, read, run_id)              falling back past damaged sets, loudly
    for old in expired(own, keep_last, keep_every, keep, step_of): ...delete it
    describe(path, saved, files, "saved by 2 rank(s)")
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from slimcore import Checkpoint, UserError


def newest_of(sets: list[Path], read: Callable[[Path], Checkpoint], run_id: str | None,
              say: bool = True) -> Checkpoint | None:
    """The newest of `sets` (oldest first) that `read` verifies and that belongs to run
    `run_id` (None: any run); a damaged set or another run's is skipped with a warning
    (when `say`); None when none is left."""
    for path in reversed(sets):
        try:
            saved = read(path)
        except UserError as e:
            if say:
                print(f"slimcore: warning: {e}; falling back to the previous checkpoint",
                      file=sys.stderr)
            continue
        if run_id is not None and saved.run_id not in (None, run_id):
            if say:
                print(f"slimcore: warning: {path} belongs to run {saved.run_id}, not to this "
                      f"folder's run {run_id}; skipped", file=sys.stderr)
            continue
        return saved
    return None


def expired(own: list[Path], keep_last: int, keep_every: int | None, keep: set[str],
            step_of: Callable[[Path], int]) -> list[Path]:
    """Of a run's own sets (oldest first), those beyond its newest `keep_last`, except
    milestones (a step that is a multiple of `keep_every`) and those named in `keep` (the
    set the run resumed from)."""
    return [old for old in own[:-keep_last]
            if old.name not in keep and not (keep_every and step_of(old) % keep_every == 0)]


def describe(path: Path, saved: Checkpoint, files: list[Path], saved_by: str = "") -> None:
    """`slimcore inspect`'s lines for a verified set: its step, run, model and files."""
    config = saved.config if isinstance(saved.config, dict) else {}
    model = config.get("model") or {}
    parameters = sum(t.numel() for t in saved.model.values())
    embed = saved.model.get("embed.weight")
    vocabulary = f"{embed.shape[0]:,}" if embed is not None else "?"
    print(f"{path}: verified (sha256 of every file matches)")
    print(f"  step {saved.step}, {saved.tokens_seen:,} tokens seen, run "
          f"{(config.get('run') or {}).get('name')!r} (id {saved.run_id})"
          + (f", {saved_by}" if saved_by else ""))
    print(f"  model: width {model.get('width')}, {model.get('layers')} layers, "
          f"{model.get('heads')} heads, seq {model.get('seq_len')}, vocabulary {vocabulary}, "
          f"{parameters:,} parameters")
    for file in files:
        print(f"  {file.name}: {file.stat().st_size:,} bytes")
