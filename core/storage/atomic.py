"""A file is there whole or as it was: written aside in its folder, then renamed into place.
Every file the core writes goes through here (plugins too: `slimcore.write_atomically`).

    write_atomically(path, data)              bytes or text; `durable` fsyncs file and rename
    with atomic_path(path) as aside: ...      for writers that want a path (savefig, a link)
    make_durable(path)                        fsync a file, or a folder's entries

An OS error (a full disk, a read-only folder, a folder in the way) is one UserError that
names the path; nothing half-written is left behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from ..contracts.errors import UserError


def write_atomically(path: str | Path, data: bytes | str, durable: bool = False) -> None:
    with atomic_path(path, durable) as aside:
        with open(aside, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """A fresh path beside `path` to write; renamed onto `path` when the block ends well,
    removed when it raises."""
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o666 & ~umask())  # mkstemp's 0600 would stay on the renamed file
        os.close(fd)
    except OSError as e:
        raise cannot_write(path, e) from None
    aside = Path(name)
    try:
        yield aside
        os.replace(aside, path)
        if durable:
            make_durable(path.parent)
    except OSError as e:
        aside.unlink(missing_ok=True)
        raise cannot_write(path, e) from None
    except BaseException:
        aside.unlink(missing_ok=True)
        raise


def umask() -> int:
    """This process's umask, read without changing it (os.umask sets it, racing threads)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):
        return 0o022


def make_durable(path: str | Path) -> None:
    """fsync a file (its bytes on the disk), or a folder (its entries: the renames in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def cannot_write(path: Path, error: OSError) -> UserError:
    return UserError(f"cannot write {path} ({error.strerror or error}); free space or "
                     "give a folder you can write to")
