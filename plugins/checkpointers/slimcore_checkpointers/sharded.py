"""Plugin `sharded`: checkpoints on torch.distributed.checkpoint (DCP), every rank writing and
reading its own share of the model and optimizer.

    checkpoints/sharded_step_N/
        __R_0.distcp    rank R's share of the model and the optimizer (DCP's files)
        .metadata       DCP's index: which file holds which part of which tensor
        record.bin      the record's other fields (step, config, RNG, every rank's data
                        position, ...), the manifest (sha256 and size of every other file) and
                        its own digest (safetensors, as three_file's .bin)

Saving (every rank together, on the checkpoint thread when async): the set is written into
`sharded_step_N.partial/`, each rank hashing its files as it writes them; rank 0 gathers the
digests,
writes `record.bin`, makes the folder durable and renames it: the rename commits the set,
so a kill at any moment leaves the previous set whole. No rank gathers the model.

Loading (dcp_files.py): the set is verified, each rank of the job hashing one in N of its
files; a damaged set is named and the previous set is used, the same one on every rank. Each
rank then reads only the parts of the files its share needs, whatever world size saved them
(DCP reshards).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.filesystem import FileSystem

from slimcore import Checkpoint, Checkpointer, UserError, hookimpl, make_durable

from . import tensor_files
from .consolidate import register_commands  # noqa: F401 - `slimcore consolidate`, its hook
from .dcp_files import (DATA_FILE, DIGEST_KEY, FORMAT_VERSION, METADATA, RECORD,
                        VerifiedReader, file_digest, first_line, job_group, read_set)
from .rotation import describe, expired, newest_of
from .three_file import ThreeFileConfig, checkpoints_of, fault_point, header_state

NAME = "sharded"
PARTIAL = ".partial"
SET_NAME = re.compile(r"sharded_step_(\d+)")

# DCP warns that it "assumes a single process" whenever no process group is up: in one
# process (a model command, a run without torchrun) that is what is meant.
warnings.filterwarnings("ignore", message=r"torch\.distributed is disabled")


@dataclass
class ShardedConfig(ThreeFileConfig):
    """The same keys as three_file's: keep_last, keep_every."""


@hookimpl
def declare_config():
    return {NAME: ShardedConfig}


@hookimpl
def register_checkpointers():
    return [Sharded()]


class Sharded(Checkpointer):
    name = NAME
    sharded = True

    def __init__(self):
        self.indexes: dict = {}  # each loaded set's verified DCP index, by path

    def save(self, checkpoint: Checkpoint, run) -> str:
        group = run.checkpoint_group
        final = checkpoints_of(run.output_dir) / f"sharded_step_{checkpoint.step}"
        partial = final.with_name(final.name + PARTIAL)
        agree(group, lambda: start_partial(partial) if rank_of(group) == 0 else None,
              final)
        written = write_shares(checkpoint, partial, group)
        digests = agree(group, lambda: written, final)
        fault_point("written", checkpoint.step)
        agree(group, lambda: commit(checkpoint, partial, final, digests)
              if rank_of(group) == 0 else None, final)
        if rank_of(group) == 0:
            settings: ShardedConfig = run.config.section(NAME)
            keep = {Path(run.resumed_from).name} if run.resumed_from else set()
            prune(final.parent, checkpoint.run_id, settings.keep_last, settings.keep_every,
                  keep)
        return str(final)

    def load(self, path: str) -> Checkpoint:
        saved, index = read_set(Path(path), job_group())
        self.indexes[saved.path] = index
        return saved

    def newest(self, output_dir: Path, run_id: str | None) -> Checkpoint | None:
        """Every rank of a job takes the same set: the verdicts are shared (dcp_files.py);
        rank 0 says what was skipped."""
        return newest_of(complete_sets(checkpoints_of(output_dir)),
                         lambda folder: self.load(str(folder)), run_id,
                         say=rank_of(job_group()) == 0)

    def read_shards(self, checkpoint: Checkpoint, state: dict[str, Any]) -> None:
        if checkpoint.path not in self.indexes:  # a record this instance did not load
            self.load(checkpoint.path)
        index = self.indexes[checkpoint.path]
        group = job_group()
        try:
            dcp.load(state, storage_reader=VerifiedReader(checkpoint.path, index),
                     process_group=group, no_dist=group is None)
        except (RuntimeError, ValueError, KeyError, dcp.CheckpointException) as e:
            raise UserError(f"checkpoint: {checkpoint.path} does not fit the model it is read "
                            f"into, or is damaged ({first_line(e)})") from None


# -- saving ---------------------------------------------------------------------------------


def rank_of(group) -> int:
    return dist.get_rank(group) if group is not None else 0


def agree(group, step, final: Path):
    """Run `step` on this rank, then learn every rank's outcome: the list of their results,
    or on every rank the same UserError naming the first rank that failed (so none waits
    in a collective for a rank that gave up)."""
    try:
        outcome = ("ok", step())
    except OSError as e:
        outcome = ("error", f"could not write {e.filename or final} ({e.strerror or e})")
    except UserError as e:
        outcome = ("error", str(e))
    outcomes = [outcome] if group is None else [None] * dist.get_world_size(group)
    if group is not None:
        dist.all_gather_object(outcomes, outcome, group=group)
    for rank, (kind, value) in enumerate(outcomes):
        if kind == "error":
            raise UserError(f"checkpoint: rank {rank}: {value}; the previous checkpoint is "
                            "intact")
    return [value for _, value in outcomes]


def start_partial(partial: Path) -> None:
    """An empty folder to write the set into (a killed save's leftovers removed)."""
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)


def write_shares(checkpoint: Checkpoint, partial: Path, group) -> dict[str, dict]:
    """Every rank's share of the model and optimizer into `partial` (DCP: its collectives
    on `group`; each rank's files fsynced); {file name: {"sha256", "bytes"}} of the files
    this rank wrote, hashed as they were written."""
    state = {"model": checkpoint.model, "optimizer": {"state": checkpoint.optimizer["state"]}}
    for name, value in dcp_entries(state):
        if not isinstance(value, torch.Tensor):
            raise UserError(f"checkpoint: {name} is a {type(value).__name__}, not a tensor; "
                            f"checkpointer {NAME} stores tensors only (use three_file)")
    writer = dcp.FileSystemWriter(partial, sync_files=True)
    writer.fs = HashingFileSystem()
    try:
        dcp.save(state, storage_writer=writer, process_group=group, no_dist=group is None)
    except dcp.CheckpointException as e:
        raise UserError(f"checkpoint: could not write {partial} ({first_line(e)}); the "
                        "previous checkpoint is intact") from None
    return {name: digest for name, digest in writer.fs.digests.items()
            if DATA_FILE.fullmatch(name)}


class HashingFileSystem(FileSystem):
    """DCP's file system, each file it writes hashed on its way to the disk (no second
    read): `digests` maps a file's name to its {"sha256", "bytes"}."""

    def __init__(self):
        super().__init__()
        self.digests: dict[str, dict] = {}

    @contextlib.contextmanager
    def create_stream(self, path, mode: str):
        with super().create_stream(path, mode) as stream:
            if "w" not in mode:
                yield stream
                return
            hashing = HashingStream(stream)
            yield hashing
            self.digests[Path(path).name] = hashing.digest()


class HashingStream:
    """A file opened for writing whose bytes also go into a sha256 as they are written
    (DCP only writes a file front to back, asking `tell()` where it is)."""

    def __init__(self, stream):
        self.stream, self.sha256, self.bytes = stream, hashlib.sha256(), 0

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self.sha256.update(view)
        self.bytes += len(view)
        return self.stream.write(view)

    def digest(self) -> dict:
        return {"sha256": self.sha256.hexdigest(), "bytes": self.bytes}

    def __getattr__(self, name):  # tell, flush, fileno, close: the file's own
        return getattr(self.stream, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()


def dcp_entries(state: dict, prefix: str = ""):
    """(dotted name, value) of every leaf of `state`, as DCP names them."""
    for key, value in state.items():
        if isinstance(value, dict):
            yield from dcp_entries(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def commit(checkpoint: Checkpoint, partial: Path, final: Path, digests: list[dict]) -> None:
    """Rank 0: the record and the manifest of every file, then the rename that commits."""
    manifest = {name: entry for share in digests for name, entry in share.items()}
    manifest[METADATA] = file_digest(partial / METADATA)
    rest = dataclasses.replace(checkpoint, model={}, optimizer={
        "state": {}, "param_groups": checkpoint.optimizer["param_groups"]})
    tensors, record = rest.split()
    state = {"format_version": FORMAT_VERSION, "record": record, "manifest": manifest}
    tensor_files.write(partial / RECORD, tensors, {"slimcore": json.dumps(state)},
                       digest_key=DIGEST_KEY)
    make_durable(partial)
    fault_point("renamed", checkpoint.step)
    if final.exists():  # a set of this step from an earlier attempt of the run
        shutil.rmtree(final)
    os.replace(partial, final)
    make_durable(final.parent)


# -- inspect (three_file's command, for this format's sets) ---------------------------------


def is_sharded(path: Path) -> bool:
    """A sharded set, or a run folder whose checkpoints are sharded sets only."""
    if (path / RECORD).is_file():
        return True
    folder = checkpoints_of(path)
    return folder.is_dir() and bool(complete_sets(folder)) and \
        not any(folder.glob("checkpoint_step_*.bin"))


def inspect_sharded(path: Path) -> int:
    if not (path / RECORD).is_file():
        newest = Sharded().newest(path, None)
        if newest is None:
            raise UserError(f"inspect: {path} holds no intact checkpoint")
        path = Path(newest.path)
    saved, _ = read_set(path, group=None)  # every file hashed; UserError (exit 2) if damaged
    ranks = (saved.data_state or {}).get("world_size", "?")
    describe(path, saved, sorted(path.iterdir()), f"saved by {ranks} rank(s)")
    return 0


# -- rotation -------------------------------------------------------------------------------


def complete_sets(folder: Path) -> list[Path]:
    """Committed sets (folders named sharded_step_N), oldest first."""
    if not folder.is_dir():
        return []
    sets = [path for path in folder.iterdir()
            if SET_NAME.fullmatch(path.name) and path.is_dir()]
    return sorted(sets, key=step_of)


def step_of(folder: Path) -> int:
    return int(SET_NAME.fullmatch(folder.name).group(1))


def run_id_of(folder: Path) -> str | None:
    """The run that wrote the set (its record's header, not verified); None if unreadable."""
    try:
        return header_state(folder / RECORD)["record"].get("run_id")
    except Exception:  # noqa: BLE001 - unreadable: treated as nobody's
        return None


def prune(folder: Path, run_id: str | None, keep_last: int, keep_every: int | None,
          keep: set[str]) -> None:
    """Delete this run's sets beyond its newest `keep_last`, except milestones and `keep`
    (the set this run resumed from); other runs' sets are never deleted."""
    own = [s for s in complete_sets(folder) if run_id is None or run_id_of(s) == run_id]
    for old in expired(own, keep_last, keep_every, keep, step_of):
        (old / RECORD).unlink(missing_ok=True)  # first: the set stops counting as intact
        shutil.rmtree(old, ignore_errors=True)
