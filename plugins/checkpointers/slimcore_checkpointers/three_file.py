"""Plugin `three_file`: a checkpoint as three safetensors files.

    checkpoint_step_N.bin             run state: step, resolved config, optimizer tensors and
                                      layout, scheduler, RNG, the data source's position,
                                      tokenizer fingerprint, format version, manifest of the
                                      other two
    checkpoint_step_N.bin.embeddings  the token embedding weights
    checkpoint_step_N.bin.decoder     every other model weight

No pickle anywhere: tensors live in safetensors (a JSON header and raw bytes) and the rest in
its JSON metadata, so loading can never run code. Each file is written aside, fsynced and
renamed into place; `.bin` goes last and is the commit mark: a set without its `.bin` is
incomplete and never read. Every byte is verified by sha256 before a tensor is returned.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes
from slimcore import ConfigError, Run, TrainingState, UserError, hookimpl

NAME = "three_file"
FORMAT_VERSION = 1
EMBEDDING_PREFIX = "embed."


@dataclass
class ThreeFileConfig:
    keep_last: int = 3  # complete sets kept; older ones are deleted after a new one is whole
    keep_every: int | None = None  # also keep every set whose step is a multiple of this

    def __post_init__(self):
        if self.keep_every is not None and self.keep_every < 1:
            raise ConfigError("keep_every", "must be at least 1, or null")
        if self.keep_last < 2:
            raise ConfigError("keep_last", "must be at least 2, so a damaged newest set "
                              "always has a predecessor")


@hookimpl
def declare_config():
    return {NAME: ThreeFileConfig}


@hookimpl
def save_checkpoint(checkpointer: str, run: Run, state: TrainingState):
    if checkpointer != NAME:
        return None
    folder = Path(run.output_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / f"checkpoint_step_{state.step}.bin"
    try:
        path = write_checkpoint(base, run, state)
    except OSError as e:
        for leftover in folder.glob(base.name + "*.tmp"):
            leftover.unlink(missing_ok=True)
        raise UserError(f"checkpoint: could not write {base} ({e.strerror or e}); the previous "
                        "checkpoint is intact") from None
    settings: ThreeFileConfig = run.config.section(NAME)
    keep = {Path(run.resumed_from).name} if run.resumed_from else set()
    prune(folder, settings.keep_last, settings.keep_every, keep)
    return path


@hookimpl
def load_checkpoint(checkpointer: str, run: Run, path: str):
    if checkpointer != NAME:
        return None
    if path == "auto":
        return newest_intact(Path(run.output_dir) / "checkpoints")
    return read_checkpoint(Path(path))


def newest_intact(folder: Path) -> dict[str, Any]:
    """The newest set that verifies; a damaged one is skipped loudly. {} when none."""
    for base in reversed(complete_sets(folder) if folder.is_dir() else []):
        try:
            return read_checkpoint(base)
        except UserError as e:
            print(f"slimcore: warning: {e}; falling back to the previous checkpoint",
                  file=sys.stderr)
    return {}


@hookimpl
def register_commands(subparsers):
    parser = subparsers.add_parser("inspect", help="describe and verify a checkpoint")
    parser.add_argument("checkpoint", help="a checkpoint_step_N.bin file")
    parser.set_defaults(handler=command_inspect)


def command_inspect(args) -> int:
    base = Path(args.checkpoint)
    saved = read_checkpoint(base)  # raises UserError (exit 2) when damaged
    model = saved["config"]["model"]
    parameters = sum(t.numel() for t in saved["model"].values())
    print(f"{base}: verified (sha256 of every file matches)")
    print(f"  step {saved['step']}, {saved['tokens_seen']:,} tokens seen, run "
          f"{saved['config']['run']['name']!r}")
    print(f"  model: width {model['width']}, {model['layers']} layers, {model['heads']} heads, "
          f"seq {model['seq_len']}, vocabulary {saved['model']['embed.weight'].shape[0]:,}, "
          f"{parameters:,} parameters")
    for suffix in ("", ".embeddings", ".decoder"):
        path = base.with_name(base.name + suffix)
        print(f"  {path.name}: {path.stat().st_size:,} bytes")
    return 0


# -- writing --------------------------------------------------------------------------------


def write_checkpoint(base: Path, run: Run, state: TrainingState) -> str:
    weights = {k: v.detach().cpu().contiguous() for k, v in state.model_state().items()}
    embeddings = {k: v for k, v in weights.items() if k.startswith(EMBEDDING_PREFIX)}
    decoder = {k: v for k, v in weights.items() if not k.startswith(EMBEDDING_PREFIX)}
    optimizer_tensors, optimizer_layout = split_optimizer_state(state.optimizer_state())

    manifest = {}
    for suffix, tensors in ((".embeddings", embeddings), (".decoder", decoder)):
        data = safetensors_bytes(tensors)
        write_aside(base.with_name(base.name + suffix), data)
        manifest[base.name + suffix] = {"sha256": hashlib.sha256(data).hexdigest(),
                                        "bytes": len(data)}
    run_state = {
        "format_version": FORMAT_VERSION,
        "step": state.step,
        "tokens_seen": state.tokens_seen,
        "config": run.config.to_dict(),
        "tokenizer_fingerprint": run.tokenizer.fingerprint if run.tokenizer else None,
        "optimizer": optimizer_layout,
        "scheduler": state.scheduler.state_dict(),
        "python_random": _jsonable(random.getstate()),
        "manifest": manifest,
    }
    tensors = {f"optimizer.{k}": v for k, v in optimizer_tensors.items()}
    run_state["data_state"] = split_tensors(state.data_state, "data", tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.numpy"] = torch.from_numpy(np.random.get_state()[1].astype(np.int64))
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    run_state["self_sha256"] = state_digest(run_state, tensors)
    write_aside(base, safetensors_bytes(tensors, metadata={"slimcore": json.dumps(run_state)}))
    fault_point("written", state.step)
    # Renames happen only now that every file is whole on disk; `.bin` last commits the set.
    for suffix in (".embeddings", ".decoder", ""):
        target = base.with_name(base.name + suffix)
        os.replace(target.with_name(target.name + ".tmp"), target)
        if suffix == ".decoder":
            fault_point("renamed", state.step)
    fsync_folder(base.parent)
    return str(base)


def fault_point(moment: str, step: int) -> None:
    """Fault injection for the kill tests: SLIMCORE_CHECKPOINT_PAUSE=STEP:MOMENT makes the
    save of step STEP announce itself on stderr and sleep at MOMENT (`written`: every file
    written aside, none renamed; `renamed`: the weights renamed into place, `.bin` not)."""
    if os.environ.get("SLIMCORE_CHECKPOINT_PAUSE") == f"{step}:{moment}":
        print(f"checkpoint paused: step {step} {moment}", file=sys.stderr, flush=True)
        time.sleep(3600)


def write_aside(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def split_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors out of an optimizer state dict (for safetensors), the rest as JSON."""
    tensors, layout = {}, {"param_groups": state_dict["param_groups"], "state": {}}
    for index, entry in state_dict["state"].items():
        layout["state"][str(index)] = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
                layout["state"][str(index)][key] = None  # a tensor, stored under index.key
            else:
                layout["state"][str(index)][key] = value
    return tensors, layout


def split_tensors(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` (nested dicts and lists) with each tensor moved into `tensors` under its
    dotted name and replaced by {"__tensor__": name}, for the JSON metadata."""
    if isinstance(value, torch.Tensor):
        tensors[name] = value.detach().cpu().clone()  # own storage: safetensors needs it
        return {"__tensor__": name}
    if isinstance(value, dict):
        return {k: split_tensors(v, f"{name}.{k}", tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [split_tensors(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]
    return value


def join_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            return tensors[value["__tensor__"]]
        return {k: join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [join_tensors(v, tensors) for v in value]
    return value


def join_optimizer_state(tensors: dict[str, torch.Tensor], layout: dict) -> dict:
    state = {}
    for index, entry in layout["state"].items():
        state[int(index)] = {key: tensors[f"{index}.{key}"] if value is None else value
                             for key, value in entry.items()}
    return {"state": state, "param_groups": layout["param_groups"]}


def state_digest(run_state: dict, tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the JSON state (without this digest) and every tensor's name and bytes."""
    digest = hashlib.sha256(json.dumps({k: v for k, v in run_state.items()
                                        if k != "self_sha256"}, sort_keys=True).encode())
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


# -- reading --------------------------------------------------------------------------------


def read_checkpoint(base: Path) -> dict[str, Any]:
    """Verify every file of the set, then return its contents. UserError if damaged."""
    if not base.is_file():
        raise UserError(f"checkpoint: {base} does not exist (or its set is incomplete)")
    try:
        with safe_open(str(base), framework="pt") as f:
            run_state = json.loads((f.metadata() or {})["slimcore"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - any parse failure means a damaged file
        raise UserError(f"checkpoint: {base} is damaged or not a slimcore checkpoint "
                        f"({type(e).__name__}: {e})") from None
    if run_state.get("format_version") != FORMAT_VERSION:
        raise UserError(f"checkpoint: {base} has format {run_state.get('format_version')}, "
                        f"this slimcore reads {FORMAT_VERSION}")
    if state_digest(run_state, tensors) != run_state.get("self_sha256"):
        raise UserError(f"checkpoint: {base} fails its sha256 check (damaged)")
    weights = {}
    for name, expected in run_state["manifest"].items():
        # Parse the very bytes that were verified: no second read that could differ.
        weights.update(sorted(safetensors_load(_read_verified(base.with_name(name),
                                                              expected)).items()))
    optimizer_tensors = {k[len("optimizer."):]: v for k, v in tensors.items()
                         if k.startswith("optimizer.")}
    return {
        "step": run_state["step"],
        "tokens_seen": run_state["tokens_seen"],
        "config": run_state["config"],
        "tokenizer_fingerprint": run_state["tokenizer_fingerprint"],
        "model": weights,
        "optimizer": join_optimizer_state(optimizer_tensors, run_state["optimizer"]),
        "scheduler": run_state["scheduler"],
        "rng": {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")},
        "python_random": run_state["python_random"],
        "data_state": join_tensors(run_state.get("data_state"), tensors),
        "path": str(base),
    }


def _read_verified(path: Path, expected: dict) -> bytes:
    if not path.is_file():
        raise UserError(f"checkpoint: {path} is missing from its set")
    data = path.read_bytes()
    if len(data) != expected["bytes"] or hashlib.sha256(data).hexdigest() != expected["sha256"]:
        raise UserError(f"checkpoint: {path} fails its sha256 check (damaged)")
    return data


# -- rotation -------------------------------------------------------------------------------


def complete_sets(folder: Path) -> list[Path]:
    """`.bin` files of committed sets, oldest first."""
    return sorted(folder.glob("checkpoint_step_*.bin"), key=step_of)


def step_of(base: Path) -> int:
    return int(base.name[len("checkpoint_step_"):-len(".bin")])


def prune(folder: Path, keep_last: int, keep_every: int | None = None,
          keep: set[str] = frozenset()) -> None:
    """Delete sets beyond the newest `keep_last`, except milestones (`keep_every`) and
    those named in `keep` (the set this run resumed from)."""
    for old in complete_sets(folder)[:-keep_last]:
        if old.name in keep or (keep_every and step_of(old) % keep_every == 0):
            continue
        for suffix in ("", ".embeddings", ".decoder"):  # .bin first: the set stops counting
            old.with_name(old.name + suffix).unlink(missing_ok=True)
