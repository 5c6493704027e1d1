"""slimcore's cache folder: trained tokenizers, the bundled corpus's shards, native builds.
One setting moves all of them: `tokenizer.cache_dir` (a run sets it for the whole process
with `use`), else $SLIMCORE_CACHE_DIR, else ~/.cache/slimcore.

    cache_dir()                  the folder, created and checked writable (or one UserError
                                 that names it and how to move it)
    use(folder)                  the run's tokenizer.cache_dir, for every cache of the process
    write_checked(path, data)    a file with its sha256 beside it (`<path>.sha256`)
    read_checked(path)           its bytes if they match that sha256, else None

What the cache holds is derived (it can always be made again), so a cached file that fails
its check is made again, with a warning, instead of failing every later run.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path

from ..contracts.errors import UserError
from .atomic import write_atomically

MOVE_HINT = "move it with tokenizer.cache_dir in the config (or SLIMCORE_CACHE_DIR)"
_run_setting: Path | None = None  # tokenizer.cache_dir of the run in this process


def use(folder: str | Path | None) -> None:
    """Every cache of this process goes to `folder` (a run's tokenizer.cache_dir; None: the
    variable's or the home folder's)."""
    global _run_setting
    _run_setting = Path(folder) if folder else None


def default_cache_dir() -> Path:
    return _run_setting or Path(os.environ.get("SLIMCORE_CACHE_DIR")
                                or Path.home() / ".cache" / "slimcore")


def cache_dir(configured: str | Path | None = None) -> Path:
    """`configured` if given, else the run's tokenizer.cache_dir, else $SLIMCORE_CACHE_DIR,
    else ~/.cache/slimcore; created and checked writable."""
    return usable(Path(configured) if configured else default_cache_dir())


@functools.cache
def usable(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as e:
        raise UserError(f"cache: cannot write to {folder} ({e.strerror or e}); make it "
                        f"writable, or {MOVE_HINT}") from None
    return folder


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_checked(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, its sha256 beside it (last: a file without its
    digest is made again)."""
    write_atomically(path, data)
    write_atomically(_digest_path(path), hashlib.sha256(data).hexdigest())


def read_checked(path: Path) -> bytes | None:
    """The bytes of `path` if its sha256 file vouches for them; None if either is missing
    or they differ."""
    try:
        data = path.read_bytes()
        expected = _digest_path(path).read_text().strip()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == expected else None


def vouch(path: Path) -> None:
    """Record the sha256 of a file written by other means (a compiler's output)."""
    write_atomically(_digest_path(path), hashlib.sha256(path.read_bytes()).hexdigest())
