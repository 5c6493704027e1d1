"""The checkpoint record: everything a resume needs, in one object.

The core builds a `Checkpoint` at every save and hands it to the checkpointer the YAML names
(`save_checkpoint`); on `--resume` the checkpointer hands back the same record
(`load_checkpoint`) and the core restores all of it. A checkpointer stores the record and
nothing else, and need not know its fields: `split()` turns it into tensors and JSON, and
`Checkpoint.join()` puts those back together.

    tensors, meta = checkpoint.split()     # dict[str, Tensor] (CPU), JSON-ready dict
    checkpoint = Checkpoint.join(tensors, meta, path)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from .errors import bounded_repr

RECORD_VERSION = 2
TEXT_IN_TENSOR_CHARS = 256  # longer strings (a source's state may hold text) go into tensors


@dataclass
class Checkpoint:
    step: int  # optimizer steps done
    tokens_seen: int
    skipped_steps: int  # updates dropped for a NaN or Inf loss
    run_id: str | None  # the run it belongs to (run.json); None before run ids existed
    config: dict[str, Any]  # RunConfig.to_dict() of the run that saved it
    tokenizer_fingerprint: str | None
    # The whole model's state dict (gathered under FSDP; a `sharded` checkpointer gets this
    # rank's share, keyed by name). Its tensors may be the live model's own: a checkpointer
    # stores them before save_checkpoint returns.
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]  # the whole optimizer's state dict, by parameter position
    scheduler: dict[str, Any]  # the learning-rate scheduler's state dict (JSON values)
    # Every random state the run draws from: "torch" (CPU, a ByteTensor), "cuda" (a list, one
    # per device), "numpy" ({"keys", "position", "has_gauss", "cached_gaussian"}) and
    # "python" (random.getstate() as lists). Those absent from an old checkpoint are None.
    rng: dict[str, Any]
    # Every rank's data-source position: {"world_size": N, "ranks": [state, ...]}, or None.
    data_state: dict[str, Any] | None
    # The SentencePiece model file's bytes, so that a checkpoint generates, evaluates,
    # exports and resumes on its own (no tokenizer cache, no corpus).
    tokenizer_model: bytes | None = None
    path: str | None = None  # where load_checkpoint read it from; not stored

    def __post_init__(self):
        """A record from a file (a crafted one, too) is checked before the core uses it."""
        expected = {"step": int, "tokens_seen": int, "skipped_steps": int, "config": dict,
                    "model": dict, "optimizer": dict, "scheduler": dict, "rng": dict}
        for name, kind in expected.items():
            if not isinstance(getattr(self, name), kind) or isinstance(getattr(self, name), bool):
                raise ValueError(f"Checkpoint.{name} is {type(getattr(self, name)).__name__}, "
                                 f"not {kind.__name__}")
        if not all(isinstance(section, dict | None) for section in self.config.values()):
            raise ValueError("Checkpoint.config holds a section that is not a mapping")
        for name in ("step", "tokens_seen", "skipped_steps"):
            if not 0 <= getattr(self, name) < 2**63:
                raise ValueError(f"Checkpoint.{name} is {bounded_repr(getattr(self, name))}, "
                                 "not a count")
        for name in ("run_id", "tokenizer_fingerprint"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"Checkpoint.{name} is not a string")
        if not all(isinstance(t, torch.Tensor) for t in self.model.values()):
            raise ValueError("Checkpoint.model holds something other than tensors")
        if not (isinstance(self.optimizer.get("state"), dict)
                and isinstance(self.optimizer.get("param_groups"), list)):
            raise ValueError("Checkpoint.optimizer lacks its state and param_groups")
        if self.data_state is not None and not isinstance(self.data_state, dict):
            raise ValueError("Checkpoint.data_state is neither a dict nor None")
        if self.tokenizer_model is not None and not isinstance(self.tokenizer_model, bytes):
            raise ValueError("Checkpoint.tokenizer_model is neither bytes nor None")

    def split(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, meta): every tensor (and every long string) under a dotted name, on the
        CPU with storage of its own; the rest as JSON values, tensors replaced by
        {"__tensor__": name}. Store both; `Checkpoint.join` restores the record."""
        tensors: dict[str, torch.Tensor] = {}
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name != "path"}
        meta = {name: split_tensors(value, name, tensors) for name, value in fields.items()}
        meta["record_version"] = RECORD_VERSION
        return tensors, meta

    @classmethod
    def join(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any],
             path: str | None = None) -> "Checkpoint":
        """The record that `split()` gave `tensors` and `meta` for (after a JSON round trip);
        KeyError for a field `meta` lacks."""
        values = {f.name: join_tensors(meta[f.name], tensors) for f in dataclasses.fields(cls)
                  if f.name != "path"}
        return cls(**values, path=path)


def split_tensors(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` (nested dicts, lists, tuples) for JSON: each tensor moved into `tensors` under
    its dotted name, each long string (as UTF-8) and each bytes value too."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if not tensor.is_contiguous() or tensor.untyped_storage().nbytes() != \
                tensor.numel() * tensor.element_size():
            tensor = tensor.clone()  # a view: safetensors wants each tensor's storage its own
        tensors[name] = tensor
        return {"__tensor__": name}
    if isinstance(value, bytes):
        tensors[name] = torch.frombuffer(bytearray(value), dtype=torch.uint8) if value else \
            torch.empty(0, dtype=torch.uint8)
        return {"__bytes__": name}
    if isinstance(value, str) and len(value) > TEXT_IN_TENSOR_CHARS:
        tensors[name] = torch.frombuffer(bytearray(value.encode()), dtype=torch.uint8)
        return {"__text__": name}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: split_tensors(v, f"{name}.{k}", tensors) for k, v in value.items()}
        # Keys JSON would turn into strings (an optimizer's parameter indices): kept typed.
        return {"__items__": [[k, split_tensors(v, f"{name}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [split_tensors(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]
    return value


def join_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """What `split_tensors` split, whole again (after a JSON round trip)."""
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            return tensors[value["__tensor__"]]
        if set(value) == {"__text__"}:
            return bytes(tensors[value["__text__"]].numpy()).decode()
        if set(value) == {"__bytes__"}:
            return bytes(tensors[value["__bytes__"]].numpy())
        if set(value) == {"__items__"}:
            return {k: join_tensors(v, tensors) for k, v in value["__items__"]}
        return {k: join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [join_tensors(v, tensors) for v in value]
    return value
