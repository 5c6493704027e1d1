"""A file is there whole or as it was: written aside in its folder, then renamed into place.
Every file the core writes goes through here (plugins too: `slimcore.write_atomically`).

    write_atomically(path, data)              bytes or text; `durable` fsyncs file and rename
    with atomic_path(path) as aside: ...      for writers that want a path (savefig, a link)
    with atomic_folder(path) as aside: ...    a folder of files, renamed into place when whole
    make_durable(path)                        fsync a file, or a folder's entries

An OS error (a full disk, a read-only folder, a folder in the way) is one UserError that
names the path; nothing half-written is left behind.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
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
    """A fresh path beside `path` to write (its folder made if need be); renamed onto `path`
    when the block ends well, removed when it raises."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a file in the way: one line too
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


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A new folder beside `path` (which must not exist, or be an empty folder) to fill;
    renamed onto `path` when the block ends well, removed with what is in it when it raises
    (SIGTERM too, where the command turns it into an exception). Its name carries this
    host and process, so a folder left by a process that was killed (SIGKILL) is removed by
    the next writer of `path` on this host, and a folder of the user's is never touched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_left_by_dead_writers(path)
        aside = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.",
                                      suffix=f".partial-{socket.gethostname()}-{os.getpid()}"))
        os.chmod(aside, 0o777 & ~umask())  # mkdtemp's 0700 would stay on the renamed folder
    except OSError as e:
        raise cannot_write(path, e) from None
    try:
        yield aside
        if path.is_dir():
            path.rmdir()  # empty, or this raises: nothing of the user's is replaced
        os.rename(aside, path)
    except OSError as e:
        shutil.rmtree(aside, ignore_errors=True)
        raise cannot_write(path, e) from None
    except BaseException:
        shutil.rmtree(aside, ignore_errors=True)
        raise


def _remove_left_by_dead_writers(path: Path) -> None:
    host = socket.gethostname()
    for left in path.parent.glob(f".{glob.escape(path.name)}.*.partial-{glob.escape(host)}-*"):
        pid = left.name.rpartition("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(left, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


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
