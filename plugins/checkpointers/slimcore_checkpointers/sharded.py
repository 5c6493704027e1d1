"""Plugin `sharded`: checkpoints on torch.distributed.checkpoint (DCP), every rank writing and
reading its own share of the model and optimizer.

    checkpoints/sharded_step_N/
        __R_0.distcp    rank R's share of the model and the optimizer (DCP's files)
        .metadata       DCP's index: which file holds which part of which tensor
        record.bin      the record's other fields (step, config, RNG, every rank's data
                        position, ...), the manifest (sha256 and size of every other file) and
                        its own digest (safetensors, as three_file's .bin)

Saving (every rank together, on the checkpoint thread when async): the set is written into
`sharded_step_N.partial/`, each rank hashes the files it wrote, rank 0 gathers the digests,
writes `record.bin`, makes the folder durable and renames it: the rename commits the set,
so a kill at any moment leaves the previous set whole. No rank gathers the model.

Loading: `record.bin` and the manifest are verified, and each rank of the job hashes one in N
of the files; a damaged set is named and the previous set is used, the same one on every
rank. Each rank then reads only the parts of the files its share needs, whatever world size
saved them (DCP reshards). DCP's `.metadata` is a pickle: it is read only after its sha256
matched, by an unpickler that builds DCP's own index types and nothing else; the tensor
files are read by `torch.load(weights_only=True)`, and an entry that is not a tensor (which
DCP would unpickle freely) is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import metadata as dcp_metadata

from slimcore import Checkpoint, Checkpointer, Range, UserError, bounded_repr, hookimpl, \
    make_durable

from . import tensor_files
from .three_file import checkpoints_of, fault_point, header_state

NAME = "sharded"
FORMAT_VERSION = 1
RECORD = "record.bin"
METADATA = ".metadata"
DIGEST_KEY = "sha256"
PARTIAL = ".partial"
SET_NAME = re.compile(r"sharded_step_(\d+)")
DATA_FILE = re.compile(r"__\d+_\d+\.distcp")
HASH_CHUNK = 16 << 20

# DCP warns that it "assumes a single process" whenever no process group is up: in one
# process (a model command, a run without torchrun) that is what is meant.
warnings.filterwarnings("ignore", message=r"torch\.distributed is disabled")


@dataclass
class ShardedConfig:
    # Complete sets kept; older ones are deleted after a new one is whole. At least 2, so a
    # damaged newest set always has a predecessor.
    keep_last: Annotated[int, Range(min=2)] = 3
    # also keep every set whose step is a multiple of this
    keep_every: Annotated[int, Range(min=1)] | None = None


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
        self.indexes: dict[str, dcp_metadata.Metadata] = {}  # verified .metadata by set

    def save(self, checkpoint: Checkpoint, run) -> str:
        group = run.checkpoint_group
        final = checkpoints_of(run.output_dir) / f"sharded_step_{checkpoint.step}"
        partial = final.with_name(final.name + PARTIAL)
        agree(group, lambda: start_partial(partial) if rank_of(group) == 0 else None,
              final)
        write_shares(checkpoint, partial, group)
        digests = agree(group, lambda: digests_of(partial, rank_of(group)), final)
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
        for folder in reversed(complete_sets(checkpoints_of(output_dir))):
            try:
                saved = self.load(str(folder))
            except UserError as e:
                print(f"slimcore: warning: {e}; falling back to the previous checkpoint",
                      file=sys.stderr)
                continue
            if run_id is not None and saved.run_id not in (None, run_id):
                print(f"slimcore: warning: {folder} belongs to run {saved.run_id}, not to "
                      f"this folder's run {run_id}; skipped", file=sys.stderr)
                continue
            return saved
        return None

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


def write_shares(checkpoint: Checkpoint, partial: Path, group) -> None:
    """Every rank's share of the model and optimizer into `partial` (DCP: its collectives
    on `group`; each rank's files fsynced)."""
    state = {"model": checkpoint.model, "optimizer": {"state": checkpoint.optimizer["state"]}}
    for name, value in dcp_entries(state):
        if not isinstance(value, torch.Tensor):
            raise UserError(f"checkpoint: {name} is a {type(value).__name__}, not a tensor; "
                            f"checkpointer {NAME} stores tensors only (use three_file)")
    try:
        dcp.save(state, storage_writer=dcp.FileSystemWriter(partial, sync_files=True),
                 process_group=group, no_dist=group is None)
    except dcp.CheckpointException as e:
        raise UserError(f"checkpoint: could not write {partial} ({first_line(e)}); the "
                        "previous checkpoint is intact") from None


def dcp_entries(state: dict, prefix: str = ""):
    """(dotted name, value) of every leaf of `state`, as DCP names them."""
    for key, value in state.items():
        if isinstance(value, dict):
            yield from dcp_entries(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def digests_of(partial: Path, rank: int) -> dict[str, dict]:
    """{file name: {"sha256", "bytes"}} of the data files this rank wrote."""
    return {path.name: file_digest(path)
            for path in sorted(partial.glob(f"__{rank}_*.distcp"))}


def file_digest(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}


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


# -- loading --------------------------------------------------------------------------------


def job_group():
    """The job's process group when there is one (a resume under torchrun), else None."""
    return dist.group.WORLD if dist.is_available() and dist.is_initialized() else None


def read_set(folder: Path, group) -> tuple[Checkpoint, dcp_metadata.Metadata]:
    """The set's record (weights as meta tensors) and its verified DCP index. Every rank of
    `group` verifies one in N of the data files; all learn every verdict."""
    if not (folder / RECORD).is_file():
        raise UserError(f"checkpoint: {folder} is not a sharded checkpoint (no {RECORD}); give "
                        "a checkpoints/sharded_step_N folder or a run folder")
    state = read_record(folder)
    manifest = checked_manifest(folder, state.get("manifest"))
    index = read_index(folder, manifest[METADATA])
    names = sorted(name for name in manifest if name != METADATA)
    rank, world = (rank_of(group), dist.get_world_size(group)) if group else (0, 1)
    found = [verdict(folder / name, manifest[name]) for name in names[rank::world]]
    verdicts = [found] if group is None else [None] * world
    if group is not None:
        dist.all_gather_object(verdicts, found, group=group)
    for problem in (p for share in verdicts for p in share if p):
        raise UserError(f"checkpoint: {problem}")
    check_index(folder, index, manifest)
    try:
        saved = Checkpoint.join(*join_parts(state, index), path=str(folder))
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise UserError(f"checkpoint: {folder} is not a slimcore checkpoint "
                        f"({type(e).__name__}: {str(e)[:200]} in its record)") from None
    return saved, index


def read_record(folder: Path) -> dict:
    try:
        tensors, metadata = tensor_files.read(folder / RECORD, digest_key=DIGEST_KEY)
        state = json.loads(metadata["slimcore"])
    except tensor_files.DigestMismatch:
        raise UserError(f"checkpoint: {folder / RECORD} fails its sha256 check "
                        "(damaged)") from None
    except tensor_files.Damaged as e:
        raise UserError(f"checkpoint: {folder / RECORD} is damaged ({e})") from None
    except (KeyError, ValueError, TypeError, RecursionError) as e:
        raise UserError(f"checkpoint: {folder / RECORD} is not a slimcore checkpoint "
                        f"({type(e).__name__})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        version = state.get("format_version") if isinstance(state, dict) else None
        raise UserError(f"checkpoint: {folder} has format {bounded_repr(version)}, this "
                        f"slimcore reads {FORMAT_VERSION}")
    state["tensors"] = tensors
    return state


def checked_manifest(folder: Path, manifest: Any) -> dict[str, dict]:
    """The manifest, naming only DCP's own files beside `record.bin` (never `../x`)."""
    if not isinstance(manifest, dict) or METADATA not in manifest:
        raise UserError(f"checkpoint: {folder}'s manifest is missing or lacks {METADATA}; not "
                        "a checkpoint to load")
    for name, entry in manifest.items():
        if not (name == METADATA or DATA_FILE.fullmatch(str(name))):
            raise UserError(f"checkpoint: {folder}'s manifest names {bounded_repr(name)}, not "
                            "a file of its own set; not a checkpoint to load")
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("bytes"), int)):
            raise UserError(f"checkpoint: {folder}'s manifest entry for {name} lacks its "
                            "sha256 or size; not a checkpoint to load")
    return manifest


def verdict(path: Path, expected: dict) -> str | None:
    """None when the file is as the manifest says, else what is wrong with it."""
    if not path.is_file():
        return f"{path} is missing from its set"
    if path.stat().st_size != expected["bytes"] or \
            file_digest(path)["sha256"] != expected["sha256"]:
        return f"{path} fails its sha256 check (damaged)"
    return None


# What DCP's index is made of; nothing else is built from the pickle.
INDEX_TYPES = {
    ("torch.distributed.checkpoint.metadata", name) for name in (
        "Metadata", "TensorStorageMetadata", "TensorProperties", "ChunkStorageMetadata",
        "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
     ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"),
     ("pathlib", "WindowsPath"), ("collections", "OrderedDict")}


class IndexUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in INDEX_TYPES or \
                (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint index")


def read_index(folder: Path, expected: dict) -> dcp_metadata.Metadata:
    """DCP's `.metadata`, its bytes checked against the manifest before they are parsed."""
    path = folder / METADATA
    try:
        raw = path.read_bytes()
    except OSError:
        raise UserError(f"checkpoint: {path} is missing from its set") from None
    if hashlib.sha256(raw).hexdigest() != expected["sha256"]:
        raise UserError(f"checkpoint: {path} fails its sha256 check (damaged)")
    try:
        index = IndexUnpickler(io.BytesIO(raw)).load()
    except Exception as e:  # noqa: BLE001 - a crafted index whose digest was recomputed
        raise UserError(f"checkpoint: {path} is not a checkpoint index ({first_line(e)})") \
            from None
    if not isinstance(index, dcp_metadata.Metadata):
        raise UserError(f"checkpoint: {path} is not a checkpoint index")
    return index


def check_index(folder: Path, index: dcp_metadata.Metadata, manifest: dict) -> None:
    """Every entry a tensor, every part in a file the manifest verified."""
    try:
        for name, entry in index.state_dict_metadata.items():
            if not isinstance(entry, dcp_metadata.TensorStorageMetadata):
                raise UserError(f"checkpoint: {folder} holds {bounded_repr(name)}, which is not "
                                "a tensor; not a checkpoint to load")
        for where in index.storage_data.values():
            if where.relative_path not in manifest:
                raise UserError(f"checkpoint: {folder}'s index names "
                                f"{bounded_repr(where.relative_path)}, outside its manifest; "
                                "not a checkpoint to load")
    except AttributeError as e:
        raise UserError(f"checkpoint: {folder}'s index is malformed ({e})") from None


def join_parts(state: dict, index: dcp_metadata.Metadata) -> tuple[dict, Any]:
    """(tensors, record) for Checkpoint.join: the record file's, the model being the index's
    model tensors on the meta device (their shapes and dtypes; no values)."""
    tensors: dict[str, torch.Tensor] = dict(state["tensors"])
    model = {}
    for name, entry in index.state_dict_metadata.items():
        if name.startswith("model."):
            model[name[len("model."):]] = {"__tensor__": name}
            tensors[name] = torch.empty(tuple(entry.size), dtype=entry.properties.dtype,
                                        device="meta")
    return tensors, {**state["record"], "model": model}


class VerifiedReader(dcp.FileSystemReader):
    """DCP's file reader, with the index already read and verified (DCP's own unpickles
    it freely)."""

    def __init__(self, path: str, index: dcp_metadata.Metadata):
        super().__init__(path)
        self.index = index

    def read_metadata(self, *args, **kwargs) -> dcp_metadata.Metadata:
        return self.index


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


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
    for old in own[:-keep_last]:
        if old.name in keep or (keep_every and step_of(old) % keep_every == 0):
            continue
        (old / RECORD).unlink(missing_ok=True)  # first: the set stops counting as intact
        shutil.rmtree(old, ignore_errors=True)
