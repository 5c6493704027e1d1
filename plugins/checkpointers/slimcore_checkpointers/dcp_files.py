"""A sharded set's files, read and verified: its record, its manifest, DCP's index.

    saved, index = read_set(folder, group)    the record (weights as meta tensors), verified
    dcp.load(state, storage_reader=VerifiedReader(folder, index))

`record.bin` verifies itself (its own sha256); the manifest in it gives the sha256 of every
other file; every rank of `group` hashes one in N of the data files and all learn every
verdict, so a damaged set is refused the same on every rank. DCP's `.metadata` is a pickle:
it is parsed only after its digest matched, by an unpickler that builds DCP's own index types
and nothing else, and an entry that is not a tensor (which DCP would unpickle freely) is
refused. DCP's reader loads tensor data with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import re
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import metadata as dcp_metadata

from slimcore import Checkpoint, UserError, bounded_repr

from . import tensor_files

FORMAT_VERSION = 1
RECORD = "record.bin"
METADATA = ".metadata"
DIGEST_KEY = "sha256"
DATA_FILE = re.compile(r"__\d+_\d+\.distcp")
HASH_CHUNK = 16 << 20


def file_digest(path: Path) -> dict:
    """{"sha256", "bytes"} of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}


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
    rank, world = (dist.get_rank(group), dist.get_world_size(group)) if group else (0, 1)
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
