"""What the core checks of a data source against its contract, so that a source that breaks
it is named in one line where it breaks it, not deep inside the model or the checkpointer:

    check_batch(batch, source, config, vocab_size, index)   every micro-batch: a Batch of
                                                            int64 (B, T) rows, T within
                                                            model.seq_len, ids in the
                                                            vocabulary; documents marked
                                                            under data.document_mask
    data_shares(data_source, source)                        a mixing source's shares: numbers
                                                            by name, or None
    check_position(state, source)                           the first position a run takes:
                                                            JSON values and CPU tensors only
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..contracts.batch import IGNORE_INDEX, Batch
from ..contracts.errors import UserError, bounded_repr

CONTRACT = "docs/plugins.md, DataSource"


def check_batch(batch: Any, source: str, config, vocab_size: int, index: int) -> None:
    where = f"data source '{source}': batch {index}"
    if not isinstance(batch, Batch):
        raise UserError(f"{where} is {type(batch).__name__}, not a slimcore.Batch ({CONTRACT})")
    for name in ("inputs", "targets"):
        tensor = getattr(batch, name)
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.int64:
            kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise UserError(f"{where} has {name} of {kind}; a batch holds int64 token ids "
                            f"({CONTRACT})")
    rows, length = batch.inputs.shape
    seq_len = config.model.seq_len
    if rows < 1 or not 1 <= length <= seq_len:
        raise UserError(f"{where} has rows of shape ({rows}, {length}), and model.seq_len is "
                        f"{seq_len}; a batch is (data.batch_size, model.seq_len) ({CONTRACT})")
    if batch.inputs.is_cuda or batch.targets.is_cuda:
        raise UserError(f"{where} is on {batch.inputs.device}; sources hand the core CPU "
                        f"tensors, which it moves to the device ({CONTRACT})")
    _check_ids(batch.inputs, "inputs", where, vocab_size, allowed=None)
    _check_ids(batch.targets, "targets", where, vocab_size, allowed=IGNORE_INDEX)
    if config.data.document_mask:
        _check_documents(batch, where)


def _check_documents(batch: Batch, where: str) -> None:
    documents = batch.documents
    if documents is None:
        raise UserError(f"{where} has no document boundaries (Batch.documents), which "
                        f"data.document_mask needs; turn data.document_mask off, or use a "
                        f"source that marks documents ({CONTRACT})")
    if (not isinstance(documents, torch.Tensor) or documents.shape != batch.inputs.shape
            or documents.is_floating_point() or documents.is_cuda):
        shape = tuple(documents.shape) if isinstance(documents, torch.Tensor) else documents
        raise UserError(f"{where} has documents of {shape}; Batch.documents is a CPU integer "
                        f"tensor of the inputs' (B, T) shape ({CONTRACT})")


def _check_ids(ids: torch.Tensor, name: str, where: str, vocab_size: int,
               allowed: int | None) -> None:
    counted = ids if allowed is None else ids[ids != allowed]
    if counted.numel() == 0:
        return
    low, high = int(counted.min()), int(counted.max())
    if low < 0 or high >= vocab_size:
        bad = high if high >= vocab_size else low
        raise UserError(f"{where} has {name} id {bad}, outside the tokenizer's vocabulary of "
                        f"{vocab_size:,}" + (f" (or {allowed}, IGNORE_INDEX)" if allowed
                                             is not None else "") + f" ({CONTRACT})")


def data_shares(data_source, source: str) -> dict[str, float] | None:
    """The source's `data_shares()`, checked: {name: share} of finite numbers, or None."""
    shares = data_source.data_shares()
    if shares is None:
        return None
    if not isinstance(shares, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v) for k, v in shares.items()):
        raise UserError(f"data source '{source}': data_shares() gave {bounded_repr(shares)}; "
                        f"it gives {{name: share}} of numbers, or None ({CONTRACT})")
    return {name: float(share) for name, share in shares.items()}


def check_position(state: Any, source: str) -> None:
    """A position holds only what a checkpoint can store as JSON and tensors."""
    problem = _unstorable(state, "state_dict()")
    if problem:
        raise UserError(f"data source '{source}': its {problem}; a position holds JSON values "
                        "(str, int, float, bool, None) and CPU tensors, in dicts with string "
                        f"keys and lists ({CONTRACT})")


def _unstorable(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, (str, bool, int, float)):
        return None
    if isinstance(value, torch.Tensor):
        return None if value.device.type == "cpu" else f"{where} is a tensor on {value.device}"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has the key {key!r:.40} of {type(key).__name__}"
            problem = _unstorable(item, f"{where}[{key!r}]")
            if problem:
                return problem
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            problem = _unstorable(item, f"{where}[{i}]")
            if problem:
                return problem
        return None
    return f"{where} holds {type(value).__module__}.{type(value).__name__} {value!r:.40}"
