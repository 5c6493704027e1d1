"""Plugin `three_file`: a checkpoint as three safetensors files.

    checkpoint_step_N.bin             the record's JSON (step, config, run id, scheduler,
                                      RNG, data position, ...) and its other tensors
                                      (optimizer moments, RNG states), the format version,
                                      the manifest of the other two
    checkpoint_step_N.bin.embeddings  the token embedding weights
    checkpoint_step_N.bin.decoder     every other model weight

What is stored is the core's `slimcore.Checkpoint`, whole: `checkpoint.split()` on save,
`Checkpoint.join()` on load; the model's tensors go to the two weight files under their
state-dict names.

No pickle anywhere: tensors live in safetensors (a JSON header and raw bytes) and the rest in
its JSON metadata, so loading can never run code. Each file is written aside, fsynced and
renamed into place; `.bin` goes last and is the commit mark: a set without its `.bin` is
incomplete and never read. Every byte that makes up the loaded state is verified before a
tensor is returned: the manifest's sha256 covers the two weight files whole, and the
`.bin`'s own digest covers all of its bytes.

Every set names the run that wrote it (`run_id`): `--resume auto` and pruning take only this
run's sets, and leave another run's alone (with a warning). Files in `checkpoints/` that are
not checkpoints are ignored, with a warning.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from slimcore import (Checkpoint, Checkpointer, Range, UserError, bounded_repr, hookimpl,
                      make_durable)

from . import tensor_files
from .rotation import describe, expired, newest_of

NAME = "three_file"
# The .bin holds the core's Checkpoint record as split() gives it, written and read in one
# pass (tensor_files.py); its digest is the sha256 of all of its bytes, header included, and
# sits in the header's metadata under "sha256".
FORMAT_VERSION = 4
CHECKPOINTS = "checkpoints"  # the folder in a run's output folder
DIGEST_KEY = "sha256"
MODEL = "model."  # the record's model tensors; stored in the weight files without this
EMBEDDING_PREFIX = "embed."
SUFFIXES = (".embeddings", ".decoder")
SET_NAME = re.compile(r"checkpoint_step_(\d+)\.bin")
# What else a checkpoints/ folder holds in the normal course: a set's other files, and the
# files of a save in progress (or killed) that are never read.
SET_FILE = re.compile(r"checkpoint_step_\d+\.bin(\.embeddings|\.decoder)?"
                      r"(\.tmp|\.other-run-\w+)?")


@dataclass
class ThreeFileConfig:
    # Complete sets kept; older ones are deleted after a new one is whole. At least 2, so a
    # damaged newest set always has a predecessor.
    keep_last: Annotated[int, Range(min=2)] = 3
    # also keep every set whose step is a multiple of this
    keep_every: Annotated[int, Range(min=1)] | None = None


@hookimpl
def declare_config():
    return {NAME: ThreeFileConfig}


class ThreeFile(Checkpointer):
    name = NAME

    def save(self, checkpoint: Checkpoint, run) -> str:
        folder = checkpoints_of(run.output_dir)
        base = folder / f"checkpoint_step_{checkpoint.step}.bin"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            keep_other_runs_set(base, checkpoint.run_id)
            path = write_checkpoint(base, checkpoint)
        except OSError as e:
            for leftover in folder.glob(base.name + "*.tmp"):
                if leftover.is_file():  # ours; a folder of that name is the user's
                    with contextlib.suppress(OSError):
                        leftover.unlink()
            where = e.filename or base
            raise UserError(f"checkpoint: could not write {where} ({e.strerror or e}); the "
                            "previous checkpoint is intact") from None
        settings: ThreeFileConfig = run.config.section(NAME)
        keep = {Path(run.resumed_from).name} if run.resumed_from else set()
        prune(folder, checkpoint.run_id, settings.keep_last, settings.keep_every, keep)
        return path

    def load(self, path: str) -> Checkpoint:
        return read_checkpoint(Path(path))

    def newest(self, output_dir: Path, run_id: str | None) -> Checkpoint | None:
        return newest_intact(checkpoints_of(output_dir), run_id) or None


@hookimpl
def register_checkpointers():
    return [ThreeFile()]


def checkpoints_of(output_dir: Path) -> Path:
    """Where a run's sets go: <output_dir>/checkpoints."""
    return Path(output_dir) / CHECKPOINTS


def keep_other_runs_set(base: Path, run_id: str | None) -> None:
    """A set of another run where this one is about to save (copied in by hand) is renamed,
    not overwritten: `<name>.other-run-<id>`, which no later save or load touches."""
    other = run_id_of(base) if base.is_file() else None
    if other is None or other == run_id:
        return
    other = re.sub(r"\W", "_", str(other))[:64]  # a crafted id names no other folder
    for suffix in ("", *SUFFIXES):
        path = base.with_name(base.name + suffix)
        if path.exists():
            os.replace(path, path.with_name(f"{path.name}.other-run-{other}"))
    print(f"slimcore: warning: {base} belonged to run {other}; renamed to "
          f"{base.name}.other-run-{other} (and its .embeddings, .decoder) before saving this "
          "run's step there", file=sys.stderr)


def newest_intact(folder: Path, run_id: str | None = None) -> Checkpoint | dict:
    """The newest set of run `run_id` (None: of any run) that verifies; a damaged one is
    skipped loudly, and so is another run's. {} when none."""
    return newest_of(complete_sets(folder, warn=True), read_checkpoint, run_id) or {}


@hookimpl
def register_commands(subparsers):
    parser = subparsers.add_parser("inspect", help="describe and verify a checkpoint")
    parser.add_argument("checkpoint", help="a checkpoint_step_N.bin file, a sharded set "
                                           "(checkpoints/sharded_step_N), or a run folder "
                                           "(its newest intact checkpoint)")
    parser.set_defaults(handler=command_inspect)


def command_inspect(args) -> int:
    base = Path(args.checkpoint)
    from .sharded import inspect_sharded, is_sharded  # the other format of this package

    if is_sharded(base):
        return inspect_sharded(base)
    if base.is_dir():  # a run folder, as every other model command takes
        newest = newest_intact(checkpoints_of(base))
        if not newest:
            raise UserError(f"inspect: {base} holds no intact checkpoint; give a run folder "
                            "that has one, or a checkpoint_step_N.bin file")
        base = Path(newest.path)
    saved = read_checkpoint(base)  # raises UserError (exit 2) when damaged
    describe(base, saved, [base.with_name(base.name + suffix) for suffix in ("", *SUFFIXES)])
    return 0


# -- writing --------------------------------------------------------------------------------


def write_checkpoint(base: Path, checkpoint: Checkpoint) -> str:
    tensors, record = checkpoint.split()
    weights = {name[len(MODEL):]: tensors.pop(name) for name in list(tensors)
               if name.startswith(MODEL)}
    embeddings = {k: v for k, v in weights.items() if k.startswith(EMBEDDING_PREFIX)}
    decoder = {k: v for k, v in weights.items() if not k.startswith(EMBEDDING_PREFIX)}

    manifest = {}
    # Streamed and hashed as written; fsynced all together once written, so that the disk
    # flushes one file while the next is written.
    for suffix, part in ((".embeddings", embeddings), (".decoder", decoder)):
        aside = tmp_of(base.with_name(base.name + suffix))
        digest = tensor_files.write(aside, part, durable=False)
        manifest[base.name + suffix] = {"sha256": digest, "bytes": aside.stat().st_size}
    run_state = {"format_version": FORMAT_VERSION, "record": record, "manifest": manifest}
    tensor_files.write(tmp_of(base), tensors, {"slimcore": json.dumps(run_state)},
                       digest_key=DIGEST_KEY, durable=False)
    for suffix in (".embeddings", ".decoder", ""):
        make_durable(tmp_of(base.with_name(base.name + suffix)))
    fault_point("written", checkpoint.step)
    # Renames happen only now that every file is whole on disk; `.bin` last commits the set.
    for suffix in (".embeddings", ".decoder", ""):
        target = base.with_name(base.name + suffix)
        os.replace(target.with_name(target.name + ".tmp"), target)
        if suffix == ".decoder":
            fault_point("renamed", checkpoint.step)
    make_durable(base.parent)  # the renames themselves
    return str(base)


def fault_point(moment: str, step: int) -> None:
    """Fault injection for the kill tests: SLIMCORE_CHECKPOINT_PAUSE=STEP:MOMENT[:SECONDS]
    makes the save of step STEP announce itself on stderr and sleep at MOMENT (`written`:
    every file written aside, none renamed; `renamed`: the weights renamed into place, `.bin`
    not) for SECONDS (default: an hour)."""
    pause = os.environ.get("SLIMCORE_CHECKPOINT_PAUSE", "").split(":")
    if pause[:2] == [str(step), moment]:
        print(f"checkpoint paused: step {step} {moment}", file=sys.stderr, flush=True)
        time.sleep(float(pause[2]) if len(pause) > 2 else 3600)


def tmp_of(path: Path) -> Path:
    """Where a file is written before it is renamed into place."""
    return path.with_name(path.name + ".tmp")


# -- reading --------------------------------------------------------------------------------


def read_checkpoint(base: Path) -> Checkpoint:
    """Verify every file of the set, then return its record. UserError if damaged."""
    if not base.is_file():
        raise UserError(f"checkpoint: {base} does not exist (or its set is incomplete)")
    version = format_of(base)
    if version != FORMAT_VERSION:
        raise UserError(f"checkpoint: {base} has format {version}, this slimcore reads "
                        f"{FORMAT_VERSION}")
    try:
        tensors, metadata = tensor_files.read(base, digest_key=DIGEST_KEY)
        run_state = json.loads(metadata["slimcore"])
    except tensor_files.DigestMismatch:
        raise UserError(f"checkpoint: {base} fails its sha256 check (damaged)") from None
    except tensor_files.Damaged as e:
        raise UserError(f"checkpoint: {base} is damaged ({e})") from None
    except (KeyError, ValueError, TypeError, RecursionError) as e:  # nested past Python's depth
        raise UserError(f"checkpoint: {base} is not a slimcore checkpoint "
                        f"({type(e).__name__}: {str(e)[:200]})") from None
    # The digest matched, so the file is as written; what follows guards against a crafted
    # file whose digest was recomputed.
    try:
        for name, expected in weight_files(base, run_state["manifest"]).items():
            if not name.is_file():
                raise UserError(f"checkpoint: {name} is missing from its set")
            try:
                weights, _ = tensor_files.read(name, expected["sha256"])
            except tensor_files.Damaged:
                raise UserError(f"checkpoint: {name} fails its sha256 check (damaged)") from None
            tensors.update({MODEL + key: tensor for key, tensor in weights.items()})
        return Checkpoint.join(tensors, run_state["record"], path=str(base))
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise UserError(f"checkpoint: {base} is not a slimcore checkpoint ({type(e).__name__}: "
                        f"{str(e)[:200]} in its state)") from None


def format_of(base: Path) -> Any:
    """The format version a set's `.bin` header names (its header only, not verified)."""
    try:
        return header_state(base)["format_version"]
    except Exception as e:  # noqa: BLE001 - any parse failure means a damaged file
        raise UserError(f"checkpoint: {base} is damaged or not a slimcore checkpoint "
                        f"({type(e).__name__}: {str(e)[:200]})") from None


def header_state(base: Path) -> dict:
    """The JSON state in a `.bin`'s safetensors header, read without the tensors and not
    verified; raises whatever a file that is no checkpoint makes it raise."""
    with open(base, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        if length > min(tensor_files.MAX_HEADER, base.stat().st_size):
            raise ValueError(f"a header of {length:,} bytes")
        header = json.loads(f.read(length))
    return json.loads(header["__metadata__"]["slimcore"])


def weight_files(base: Path, manifest: Any) -> dict[Path, dict]:
    """The manifest's files, which must be this set's own `.embeddings` and `.decoder`
    beside it: a manifest that names other paths (`../x`) is not followed."""
    if not isinstance(manifest, dict) or \
            sorted(manifest) != sorted(base.name + suffix for suffix in SUFFIXES):
        names = sorted(map(str, manifest)) if isinstance(manifest, dict) else manifest
        raise UserError(f"checkpoint: {base}'s manifest names {bounded_repr(names)}, not its own "
                        f"{base.name}.embeddings and .decoder; not a checkpoint to load")
    for name, entry in manifest.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                and isinstance(entry.get("bytes"), int)):
            raise UserError(f"checkpoint: {base}'s manifest entry for {name} lacks its "
                            "sha256 or size; not a checkpoint to load")
    return {base.with_name(name): entry for name, entry in manifest.items()}


def run_id_of(base: Path) -> str | None:
    """The run that wrote the set at `base` (its header only, not verified); None for one
    whose header does not parse."""
    try:
        return header_state(base)["record"].get("run_id")
    except Exception:  # noqa: BLE001 - unreadable: treated as nobody's
        return None


# -- rotation -------------------------------------------------------------------------------


def complete_sets(folder: Path, warn: bool = False) -> list[Path]:
    """`.bin` files of committed sets, oldest first. Other files (a copy named `... (copy).bin`,
    notes) are not checkpoints: ignored, with a warning when `warn`."""
    if not folder.is_dir():
        return []
    sets = []
    for path in folder.iterdir():
        if SET_NAME.fullmatch(path.name) and path.is_file():
            sets.append(path)
        elif warn and not SET_FILE.fullmatch(path.name) and str(path) not in _WARNED:
            _WARNED.add(str(path))
            print(f"slimcore: warning: {path} is not a checkpoint file (checkpoint_step_N.bin "
                  "and its .embeddings and .decoder); ignored", file=sys.stderr)
    return sorted(sets, key=step_of)


_WARNED: set[str] = set()  # stray files already reported by this process


def step_of(base: Path) -> int:
    return int(SET_NAME.fullmatch(base.name).group(1))


def prune(folder: Path, run_id: str | None, keep_last: int, keep_every: int | None = None,
          keep: set[str] = frozenset()) -> None:
    """Delete this run's sets beyond its newest `keep_last`, except milestones (`keep_every`)
    and those named in `keep` (the set this run resumed from). Sets of other runs are never
    deleted, nor is a `.bin` whose header names no run (junk named like a set, or a set
    from before run ids): it is nobody's, so it neither takes a slot nor is removed."""
    own = [base for base in complete_sets(folder, warn=True)
           if run_id is None or run_id_of(base) == run_id]
    for old in expired(own, keep_last, keep_every, keep, step_of):
        for suffix in ("", *SUFFIXES):  # .bin first: the set stops counting
            old.with_name(old.name + suffix).unlink(missing_ok=True)
