"""Checkpoints written beside training: the training thread copies the state into host memory
and goes on; a thread of its own hands the copy to the checkpointer.

    writer = CheckpointWriter(save, background=config.checkpoint.async_)
    writer.prepare(checkpoint)  host buffers allocated (and paged in) on a thread, early
    writer.save(checkpoint)   background: returns once the snapshot is taken; else when saved
    writer.check()            a background save's failure, raised on the training thread
    path = writer.wait()      the save in flight finished (its failure raised); its path

At most one save is in flight: the next one waits for it, since the snapshot's buffers are
reused (pinned when the state lives on a GPU, so the copy runs at the bus's speed). Making
them costs more than the copy (6.6 GB of fresh pages took 7 s on a CPU host, a plain copy
into them again 0.8 s), so the loop has them made on a thread after its first step, long
before the first save. The
snapshot is consistent because it is taken between steps, on the training thread; what the
checkpointer then does (write, hash, fsync, commit, prune) touches the copy only. A failure
in the background is raised by the next `check()` (the training loop calls it every step)
as it would have been raised by a synchronous save: the same UserError, the same exit status.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable

import torch

from ..contracts.checkpoint import Checkpoint


class CheckpointWriter:
    def __init__(self, save: Callable[[Checkpoint], str | None], background: bool):
        self._save = save  # the checkpointer's hook, bound to the run
        self.background = background
        self.buffers = HostBuffers()
        self.preparing: threading.Thread | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.path: str | None = None  # of the newest save that finished

    def prepare(self, checkpoint: Checkpoint) -> None:
        """Make the host buffers for records shaped like `checkpoint` on a thread, so the
        first save only copies. Background saves only."""
        if self.background and self.preparing is None:
            self.preparing = threading.Thread(target=self.buffers.allocate, args=(checkpoint,),
                                              name="slimcore-checkpoint-buffers", daemon=True)
            self.preparing.start()

    def save(self, checkpoint: Checkpoint) -> None:
        """Save `checkpoint` (whose tensors may be the live model's and optimizer's)."""
        if not self.background:
            self.path = self._save(checkpoint)
            return
        self.wait()  # one in flight: its buffers are about to be overwritten
        if self.preparing is not None:
            self.preparing.join()
        snapshot = self.buffers.snapshot(checkpoint)
        # Not a daemon: an interpreter that exits while a save runs waits for it.
        self.thread = threading.Thread(target=self._write, args=(snapshot,),
                                       name="slimcore-checkpoint")
        self.thread.start()

    def _write(self, snapshot: Checkpoint) -> None:
        try:
            self.path = self._save(snapshot)
        except BaseException as e:  # noqa: BLE001 - handed to the training thread
            self.error = e

    @property
    def in_flight(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def check(self) -> None:
        """Raise the failure of a background save that has ended, if it failed."""
        if self.thread is not None and not self.thread.is_alive():
            self.wait()

    def wait(self, timeout_s: float | None = None) -> str | None:
        """Let the save in flight finish; raise its failure; the newest saved path. With
        `timeout_s`, give up waiting after that long (a stalled run's last resort)."""
        if self.thread is not None:
            self.thread.join(timeout_s)
            if self.thread.is_alive():
                return None
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.path


class HostBuffers:
    """Host memory a snapshot is copied into, kept from one save to the next."""

    def __init__(self):
        self.buffers: dict[str, torch.Tensor] = {}

    def snapshot(self, checkpoint: Checkpoint) -> Checkpoint:
        """`checkpoint` with every tensor copied into a buffer of this object's and every
        container copied, so that training on cannot change what is saved."""
        seen: set[str] = set()

        def copy(name: str, tensor: torch.Tensor) -> torch.Tensor:
            seen.add(name)
            local = held_part(tensor.detach())
            copied = self._buffer(name, local).copy_(local, non_blocking=local.is_cuda)
            return as_shard_like(copied, tensor) if is_dtensor(tensor) else copied

        snapshot = Checkpoint(**self._mirror(checkpoint, copy))
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # the non-blocking copies have landed
        for name in set(self.buffers) - seen:  # a tensor the state no longer has
            del self.buffers[name]
        return snapshot

    def allocate(self, checkpoint: Checkpoint) -> None:
        """Buffers for every tensor of records shaped like `checkpoint`, their pages touched
        (the kernel maps fresh memory on first write: that is the slow part)."""
        self._mirror(checkpoint, lambda name, tensor:
                     self._buffer(name, held_part(tensor.detach())).zero_())

    def _mirror(self, checkpoint: Checkpoint, on_tensor) -> dict[str, Any]:
        """The record's fields with every container rebuilt and each tensor replaced by
        `on_tensor(dotted name, tensor)`; the names are the buffers' keys."""
        def walk(value: Any, name: str) -> Any:
            if isinstance(value, torch.Tensor):
                return on_tensor(name, value)
            if isinstance(value, dict):
                return {k: walk(v, f"{name}.{k}") for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                copied = [walk(v, f"{name}.{i}") for i, v in enumerate(value)]
                return tuple(copied) if isinstance(value, tuple) else copied
            return value  # numbers, strings, None: immutable

        return {f.name: walk(getattr(checkpoint, f.name), f.name)
                for f in dataclasses.fields(Checkpoint) if f.name != "path"}

    def _buffer(self, name: str, like: torch.Tensor) -> torch.Tensor:
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape != like.shape or buffer.dtype != like.dtype:
            buffer = torch.empty(like.shape, dtype=like.dtype, pin_memory=like.is_cuda)
            self.buffers[name] = buffer
        return buffer


def is_dtensor(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def held_part(tensor: torch.Tensor) -> torch.Tensor:
    """What this rank holds of `tensor`: a DTensor's shard (a sharded checkpointer's record
    under FSDP), else the tensor itself."""
    return tensor.to_local() if is_dtensor(tensor) else tensor


def as_shard_like(local: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The host copy `local` of DTensor `like`'s shard, as a DTensor placed as `like` is, so
    the checkpointer still sees where the shard sits in the whole. Made from `like`'s spec,
    as torch.distributed.checkpoint's own staging makes its host copies: `from_local` would
    move the copy back to the mesh's device (a GPU)."""
    from torch.distributed.tensor import DTensor

    return DTensor(local, like._spec, requires_grad=False)
