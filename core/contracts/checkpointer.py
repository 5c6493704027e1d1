"""The checkpointer and export-format contracts: named objects a plugin registers
(`register_checkpointers`, `register_export_formats`), selected by `checkpoint.checkpointer`
and `slimcore export --format`.

A checkpointer stores the core's `Checkpoint` record whole and hands it back as saved; it need
not know the record's fields (`checkpoint.split()` gives tensors and JSON values,
`Checkpoint.join()` puts them together again). An export format writes the trained model of a
verified record into a folder of another framework's layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from .checkpoint import Checkpoint
    from .run import Run


class Checkpointer:
    """Subclass, set `name`, implement `save`, `load` and `newest`; register an instance."""

    name: ClassVar[str] = ""  # what `checkpoint.checkpointer` selects
    # False: rank 0 alone saves the whole record (the model gathered under FSDP) and every
    # rank loads it whole. True: every rank saves and loads only its own share; see
    # `read_shards` for what changes.
    sharded: ClassVar[bool] = False

    def save(self, checkpoint: Checkpoint, run: Run) -> str:
        """Store `checkpoint` for `run` (inside `run.output_dir`) and return its path. All or
        nothing: a crash mid-save leaves the previous checkpoint usable. Store the tensors
        before returning and keep no reference to them (they are the live model's, or the
        core's reused snapshot buffers). With `checkpoint.async: true` this runs on the core's
        `slimcore-checkpoint` thread while training goes on: touch only `checkpoint`,
        `run.config`, `run.output_dir`, `run.resumed_from` and your own files. Prune only
        checkpoints of `checkpoint.run_id`. Raise `slimcore.UserError` for what the user can
        fix (a full disk). Called on rank 0.

        A `sharded` checkpointer: called on every rank (all together, on each rank's
        `slimcore-checkpoint` thread when async). `checkpoint.model` and
        `checkpoint.optimizer["state"]` hold this rank's share, keyed by parameter name
        (DTensor shards under FSDP, whole tensors otherwise; torch.distributed.checkpoint
        takes them as they are); `checkpoint.optimizer["param_groups"]` name their
        parameters; `data_state` is filled on rank 0 only. Make its own collectives on
        `run.checkpoint_group`, and return the same path on every rank."""
        raise NotImplementedError

    def load(self, path: str) -> Checkpoint:
        """The checkpoint at `path`, verified, exactly as saved, with `path` set
        (`Checkpoint.join(tensors, meta, path)`). Never run code from the file. Raise
        `slimcore.UserError` for a damaged or missing checkpoint. Called on every rank.

        A `sharded` checkpointer returns the record without the weights' values:
        `model` maps each saved name to a tensor on the meta device (shape and dtype only),
        `optimizer` is {"state": {}, "param_groups": [...] by name}; `read_shards` fills
        the live model's."""
        raise NotImplementedError

    def read_shards(self, checkpoint: Checkpoint, state: dict[str, Any]) -> None:
        """A `sharded` checkpointer only: fill `state`, {"model": {name: tensor},
        "optimizer": {"state": {name: {key: tensor}}}} (either may be left out), in place
        with the values `checkpoint` (from `load` or `newest`) holds for each tensor's part:
        a DTensor its shard, whatever world size saved it, a plain tensor all of it.
        Called on every rank of a job together, or in one process (the model commands).
        Raise `slimcore.UserError` for a damaged checkpoint or one that does not fit."""
        raise NotImplementedError

    def newest(self, output_dir: Path, run_id: str | None) -> Checkpoint | None:
        """The newest intact checkpoint of run `run_id` that this checkpointer saved in the
        run folder `output_dir` (what `--resume auto` and a run folder given to `generate`,
        `eval` or `export` mean), skipping damaged ones and other runs' with a warning; None
        when there is none."""
        raise NotImplementedError


class ExportFormat:
    """Subclass, set `name`, implement `export`; register an instance."""

    name: ClassVar[str] = ""  # what `slimcore export --format` selects

    def export(self, checkpoint: Checkpoint, output: Path, dtype: torch.dtype) -> str:
        """Write the trained model of `checkpoint` (verified by its checkpointer) into the
        folder `output`, which exists and is empty, with weights cast to `dtype`; return a
        one-line description of what was written. The core renames `output` into place when
        you return and removes it when you raise; raise `slimcore.UserError` for a model the
        format cannot hold."""
        raise NotImplementedError
