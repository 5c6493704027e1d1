"""`slimcore consolidate SOURCE OUTPUT`: a sharded checkpoint made whole, in one process and
without a GPU, as a three_file set every model command reads.

    slimcore consolidate runs/big OUTPUT              the run folder's newest sharded set
    slimcore consolidate runs/big/checkpoints/sharded_step_800 OUTPUT
    slimcore export OUTPUT --format hf --output hf/   (generate, eval, inspect, --resume too)

OUTPUT/checkpoints/checkpoint_step_N.bin holds the whole record: the model, the optimizer's
state by parameter position as three_file stores it, and everything else as saved. It needs
the whole model and optimizer in memory at once (16 bytes a parameter under AdamW).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from slimcore import Checkpoint, UserError, hookimpl

from .dcp_files import RECORD, VerifiedReader, first_line, read_set
from .three_file import CHECKPOINTS, write_checkpoint


@hookimpl
def register_commands(subparsers):
    parser = subparsers.add_parser(
        "consolidate", help="make a sharded checkpoint whole (a three_file set)")
    parser.add_argument("source", help="a sharded checkpoint (checkpoints/sharded_step_N) or a "
                                       "run folder (its newest intact sharded checkpoint)")
    parser.add_argument("output", help="a new (or empty) folder; the whole checkpoint goes to "
                                       "OUTPUT/checkpoints/")
    parser.set_defaults(handler=command_consolidate)


def command_consolidate(args) -> int:
    source, output = Path(args.source), Path(args.output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise UserError(f"consolidate: {output} exists and is not an empty folder; give a new "
                        "folder for the whole checkpoint")
    saved = read_whole(set_of(source))
    base = output / CHECKPOINTS / f"checkpoint_step_{saved.step}.bin"
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        write_checkpoint(base, saved)
    except OSError as e:
        raise UserError(f"consolidate: could not write {e.filename or base} "
                        f"({e.strerror or e})") from None
    parameters = sum(t.numel() for t in saved.model.values())
    print(f"consolidate: {saved.path} (step {saved.step}, {parameters:,} parameters) -> {base}")
    print(f"  use it with: slimcore export {output} --format hf --output DIR (or generate, "
          "eval, inspect, run --resume)")
    return 0


def set_of(source: Path) -> Path:
    """The sharded set `source` names: itself, or a run folder's newest intact one."""
    if (source / RECORD).is_file():
        return source
    if not source.is_dir():
        raise UserError(f"consolidate: {source} is not a sharded checkpoint or a run folder; "
                        "give checkpoints/sharded_step_N or the run folder holding it")
    from .sharded import Sharded

    newest = Sharded().newest(source, None)
    if newest is None:
        raise UserError(f"consolidate: {source} holds no intact sharded checkpoint")
    return Path(newest.path)


def read_whole(folder: Path) -> Checkpoint:
    """The set's record with every tensor read whole, the optimizer by parameter position."""
    saved, index = read_set(folder, group=None)
    try:
        flat = {name: torch.empty(tuple(entry.size), dtype=entry.properties.dtype)
                for name, entry in index.state_dict_metadata.items()}
        dcp.load(flat, storage_reader=VerifiedReader(str(folder), index), no_dist=True)
    except (RuntimeError, ValueError, MemoryError, dcp.CheckpointException) as e:
        raise UserError(f"consolidate: {folder} could not be read whole ({first_line(e)})") \
            from None
    model = {name[len("model."):]: t for name, t in flat.items() if name.startswith("model.")}
    config = {**saved.config, "checkpoint": {**(saved.config.get("checkpoint") or {}),
                                             "checkpointer": "three_file"}}
    return dataclasses.replace(saved, model=model, config=config,
                               optimizer=by_position(flat, saved.optimizer["param_groups"],
                                                     folder))


def by_position(flat: dict[str, torch.Tensor], groups: list[dict], folder: Path) -> dict:
    """The optimizer's state dict as a plain optimizer keys it (parameter positions, in the
    groups' order) from DCP's names (optimizer.state.NAME.KEY)."""
    position = {name: i for i, name in
                enumerate(name for group in groups for name in group["params"])}
    state: dict[int, dict] = {}
    for name, tensor in flat.items():
        if not name.startswith("optimizer.state."):
            continue
        parameter, _, key = name[len("optimizer.state."):].rpartition(".")
        if parameter not in position:
            raise UserError(f"consolidate: {folder} holds optimizer state for {parameter!r}, "
                            "which no parameter group names; the set is damaged")
        state.setdefault(position[parameter], {})[key] = tensor
    return {"state": dict(sorted(state.items())),
            "param_groups": [{**group, "params": [position[n] for n in group["params"]]}
                             for group in groups]}
