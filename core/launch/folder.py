"""A run's output folder has one owner at a time, and holds one run.

    folder = RunFolder.claim(path)   lock it (or UserError naming the run that holds it)
    folder.run_id                    the run whose outputs it holds (run.json), or None
    folder.holds_outputs()           checkpoints or training history are there
    folder.note_saved(step)          run.json records the step of the newest finished save
    folder.saved_a_checkpoint()      run.json says a save of its run finished
    folder.move_aside()              --overwrite: the old run goes to <path>.replaced-<time>

The lock is `fcntl.flock` on `<path>/.slimcore.lock`, held for the whole run: the kernel
drops it when the process ends, however it ends (SIGKILL included), so a lock is never
stale. The lock file names its holder (PID, host, start time), so a second run into the
folder can say whose it is. `run.json` names the run (a random id given when it started);
checkpoints carry the same id, so `--resume auto` and checkpoint pruning never take another
run's checkpoints for this one's.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from pathlib import Path

import yaml

from ..contracts.errors import UserError
from ..contracts.paths import RunPaths
from ..storage.atomic import write_atomically

try:
    import fcntl
except ImportError:  # not POSIX: no lock, the folder checks below still apply
    fcntl = None



# run.json's key for the step of the run's newest finished save: `--resume auto` that finds no
# intact checkpoint starts again from step 0 only where none was ever saved.
SAVED_STEP = "checkpoint_saved_at_step"


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


def run_folder_of(path: Path) -> Path:
    """A folder with a run record itself; else the nearest folder above it with one (a
    sharded checkpoint is a folder inside its run's)."""
    if path.is_dir() and RunPaths(path).record.is_file():
        return path
    for folder in path.resolve().parents:
        if RunPaths(folder).record.is_file():
            return folder
    return path if path.is_dir() else path.parent


def recorded_checkpointer(paths: RunPaths) -> str | None:
    """The checkpointer the run in this folder last used (its config.yaml), if it says."""
    try:
        recorded = yaml.safe_load(paths.config.read_text())
        return recorded["checkpoint"]["checkpointer"] or None
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None


def read_run_record(root: Path) -> dict:
    """run.json as a dict; {} when it is missing or damaged (not JSON, nested past Python's
    depth, not a mapping, a run id that is not a short string)."""
    try:
        record = json.loads(RunPaths(root).record.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(record, dict):
        return {}
    run_id = record.get("run_id")
    if run_id is not None and not (isinstance(run_id, str) and re.fullmatch(r"\w{1,64}", run_id)):
        return {}
    return record


class RunFolder:
    def __init__(self, path: Path, lock_file, holder: str = ""):
        self.path = path
        self.lock_file = lock_file
        self.holder = holder  # what the lock file says: this process, its host, its start
        self.written: dict = {}  # run.json as this process last wrote it

    @classmethod
    def claim(cls, path: Path) -> "RunFolder":
        """Create the folder if need be and lock it; UserError if another run holds it."""
        if path.exists() and not path.is_dir():
            raise UserError(f"output.dir: {path} is a file, not a folder; give a folder "
                            "(--output-dir DIR)")
        try:
            path.mkdir(parents=True, exist_ok=True)
            lock_file = open(RunPaths(path).lock, "a+")
        except OSError as e:
            raise UserError(f"output.dir: cannot write to {path} ({e.strerror or e}); give a "
                            "folder you can write to (--output-dir DIR)") from None
        if fcntl is not None:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock_file.seek(0)
                holder = lock_file.read().strip() or "another process"
                lock_file.close()
                raise UserError(f"output.dir: {path} is in use by another run ({holder}); wait "
                                "for it to end, or give this run another --output-dir") from None
        holder = (f"PID {os.getpid()} on {socket.gethostname()}, since "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}")
        lock_file.seek(0)
        lock_file.truncate()
        lock_file.write(holder + "\n")
        lock_file.flush()
        return cls(path, lock_file, holder)

    @staticmethod
    def locked_by(path: Path, holder: str) -> bool:
        """Whether the folder at `path`, seen from this process, is locked by `holder`."""
        try:
            return RunPaths(path).lock.read_text().strip() == holder
        except OSError:
            return False

    def release(self) -> None:
        if self.lock_file is not None:
            self.lock_file.close()  # closing drops the flock
            self.lock_file = None

    # -- what the folder holds ----------------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        return read_run_record(self.path).get("run_id")

    def record(self, run_id: str, name: str) -> None:
        """Name the run whose outputs this folder holds. A resumed run keeps the step of
        its newest save (see `note_saved`)."""
        earlier = read_run_record(self.path)
        saved = earlier.get(SAVED_STEP) if earlier.get("run_id") == run_id else None
        self._write({"run_id": run_id, "name": name,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S"), SAVED_STEP: saved})

    def note_saved(self, step: int) -> None:
        """A checkpoint of `step` is whole (called on the checkpoint thread, after `record`)."""
        self._write({**self.written, SAVED_STEP: step})

    def _write(self, record: dict) -> None:
        write_atomically(RunPaths(self.path).record, json.dumps(record, indent=2) + "\n")
        self.written = record

    def saved_a_checkpoint(self) -> bool:
        """Whether this folder's run saved a checkpoint (True when run.json, written before
        0.2 or damaged, cannot say: the careful answer)."""
        record = read_run_record(self.path)
        return SAVED_STEP not in record or record[SAVED_STEP] is not None

    def holds_outputs(self) -> bool:
        """A run trained here: the core's history of it has a step or a sample (a run logs
        every step before its first checkpoint). A folder of a run that failed before its
        first step (config and plugin records only) holds nothing."""
        paths = RunPaths(self.path)
        return any(log.is_file() and log.stat().st_size > 0
                   for log in (paths.metrics_log, paths.samples_log))

    def describe(self) -> str:
        run_id = self.run_id
        return f"the outputs of run {run_id}" if run_id else "the outputs of an earlier run"

    def refuse_to_mix(self, what: str) -> UserError:
        flag = _as_typed()
        return UserError(
            f"output.dir: {self.path} holds {self.describe()}; {what} would mix the two. "
            f"Continue that run with {flag('--resume auto')}, give this one another "
            f"{flag('--output-dir DIR')}, or start over with {flag('--overwrite')} (the old "
            f"run is moved to {self.path.name}.replaced-<time>, not deleted)")

    def refuse_to_restart(self) -> UserError:
        """`--resume auto` found no intact checkpoint of the run here: starting from step 0
        would replace its history and overwrite its sets (whose weight files may be whole)."""
        flag = _as_typed()
        return UserError(
            f"--resume auto: {self.path} holds {self.describe()} but no intact checkpoint of "
            "it (the warnings above name each set skipped); starting from step 0 here would "
            f"replace them, so nothing was changed. Start over here with {flag('--overwrite')} "
            f"(the old run is moved to {self.path.name}.replaced-<time>, not deleted), or "
            f"give another {flag('--output-dir DIR')}")

    def move_aside(self) -> None:
        """Move this folder (where a link to it leads) to a sibling `<name>.replaced-<time>`;
        this claim then holds the fresh, empty folder in its place."""
        here = self.path.resolve()
        if Path.cwd() == here or here in Path.cwd().parents:
            raise UserError(f"--overwrite: {self.path} is the folder this command runs in (or "
                            "holds it), which cannot be moved aside; run from elsewhere, or "
                            "give another --output-dir")
        target = here.with_name(f"{here.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        suffix = 1
        while target.exists():
            suffix += 1
            target = target.with_name(f"{target.name.split('~')[0]}~{suffix}")
        os.replace(here, target)  # the lock moves with its file, still held
        try:
            # `here`, not the path given: a symbolic link to the folder then leads to the
            # fresh one (the link itself is left as it is)
            fresh = RunFolder.claim(here)
        finally:
            self.release()
        self.lock_file, fresh.lock_file = fresh.lock_file, None
        print(f"output: --overwrite: the earlier run in {self.path} was moved to {target}")


def _as_typed():
    """A flag as the user gives it: under make (`make quickstart`), through ARGS."""
    return (lambda f: f"ARGS='{f}'") if os.environ.get("MAKELEVEL") else (lambda f: f)
