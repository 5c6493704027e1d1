"""Runs beyond one process, on torch.distributed as torchrun sets it up.

`torchrun --nproc-per-node N -m slimcore run CONFIG` starts N processes with RANK,
LOCAL_RANK, WORLD_SIZE and the rendezvous in the environment; `Distributed.start` joins the
process group (NCCL on GPUs, gloo on CPUs) with `distributed.timeout_s` on every collective,
so a rank that dies or hangs ends the job with a line instead of a silent wait.

Strategies: `ddp` (DistributedDataParallel: a replica per rank, gradients all-reduced) and
`fsdp` (FSDP2 `fully_shard` on each block and the root: parameters, gradients and optimizer
state sharded across ranks).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..config.schema import DistributedSection
from ..contracts.errors import TrainingHalted, UserError
from .heartbeat import Heartbeat

# What gloo and NCCL say when a peer died, hung or closed its connection.
PEER_TROUBLE = re.compile(r"gloo|nccl|connection|timed out|timeout|peer|socket", re.I)


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


@dataclass
class Distributed:
    """This process's place in the job; world_size 1 and no process group when alone."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: str = "none"
    timeout_s: float = 0.0
    # every rank's beat and last collective, to name the one that died or hung
    heartbeat: Heartbeat | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()

    @classmethod
    def start(cls, cfg: DistributedSection, device: torch.device) -> "Distributed":
        if not launched_by_torchrun():
            return cls()
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        backend = cfg.backend if cfg.backend != "auto" else (
            "nccl" if device.type == "cuda" else "gloo")
        device_id = None
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
            if backend == "nccl":
                # Named, NCCL binds this rank to its GPU at once instead of guessing from
                # the rank at the first collective (torch warns that a guess can hang).
                device_id = torch.device("cuda", local_rank)
        timeout = datetime.timedelta(seconds=cfg.timeout_s)
        store = attempt_store(rank, world, timeout)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                                timeout=timeout, device_id=device_id)
        return cls(rank, world, local_rank, cfg.strategy, cfg.timeout_s,
                   Heartbeat(store, rank, world))

    def stop(self, finished: bool) -> None:
        """Leave the job. After a finished run the ranks first wait for each other, so none
        leaves while another still needs it. Under torchrun the process group is not
        destroyed: the process exits at once after this (cli.main), and gloo's teardown
        racing a peer that already left aborted finished jobs (1 run in about 20)."""
        if not dist.is_initialized():
            return
        if finished:
            self.barrier("finishing the job")
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if not launched_by_torchrun():
            dist.destroy_process_group()

    # -- collectives that name what went wrong ----------------------------------------------

    @contextlib.contextmanager
    def collective(self, what: str):
        """Turn a peer's death or a timeout inside `what` into one line, naming the rank to
        blame where the heartbeats tell (heartbeat.py), and exit status 3."""
        if self.heartbeat is not None:
            self.heartbeat.at(what)
        try:
            yield
        except RuntimeError as e:  # DistBackendError and gloo's peer errors are RuntimeErrors
            if not self.active or not (isinstance(e, dist.DistBackendError)
                                       or PEER_TROUBLE.search(str(e))):
                raise  # not about the other ranks (an out-of-memory error, a bug)
            reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            blamed = self.heartbeat.suspects() if self.heartbeat is not None else ""
            raise TrainingHalted(
                f"distributed: rank {self.rank} of {self.world_size} gave up waiting for the "
                f"other ranks ({what}: {reason}){blamed or '; a rank died or hung'}, see its "
                f"log above (distributed.timeout_s = {self.timeout_s:g})") from None

    def sum(self, values: list[float], device: torch.device, what: str) -> list[float]:
        """Element-wise sum over ranks (the values themselves when alone)."""
        if not self.active:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        with self.collective(what):
            dist.all_reduce(tensor)
        return tensor.tolist()

    def gather(self, value, what: str) -> list | None:
        """Every rank's `value` on rank 0 (others get None); [value] when alone."""
        if not self.active:
            return [value]
        gathered = [None] * self.world_size if self.rank == 0 else None
        with self.collective(what):
            dist.gather_object(owning(value), gathered, dst=0)
        return gathered

    def share(self, value, what: str) -> list:
        """Every rank's `value` on every rank; [value] when alone."""
        if not self.active:
            return [value]
        gathered = [None] * self.world_size
        with self.collective(what):
            dist.all_gather_object(gathered, owning(value))
        return gathered

    def barrier(self, what: str) -> None:
        if self.active:
            with self.collective(what):
                dist.barrier()

    def from_rank_zero(self, compute, what: str):
        """`compute()` run on rank 0, its result handed to every rank. A UserError on rank 0
        (bad input it found) is raised on every rank, so none waits for a rank that stopped."""
        if not self.active:
            return compute()
        if self.rank != 0:
            return self._outcome_of_rank_zero(None, what)
        try:
            value = compute()
        except UserError as e:
            self._outcome_of_rank_zero(("error", str(e)), what)
            raise
        return self._outcome_of_rank_zero(("ok", value), what)

    @contextlib.contextmanager
    def rank_zero_first(self, what: str):
        """Rank 0 does the work first (e.g. fills a cache), then the others; a UserError on
        rank 0 stops every rank."""
        if not self.active:
            yield
            return
        if self.rank != 0:
            self._outcome_of_rank_zero(None, what)
            yield
            return
        try:
            yield
        except UserError as e:
            self._outcome_of_rank_zero(("error", str(e)), what)
            raise
        self._outcome_of_rank_zero(("ok", None), what)

    def _outcome_of_rank_zero(self, outcome: tuple | None, what: str):
        """Rank 0's ("ok", value) or ("error", message), broadcast; the value, or the
        message raised as a UserError, on the other ranks."""
        box = [outcome]
        with self.collective(what):
            dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error" and self.rank != 0:  # rank 0 raises its own, with its type
            raise UserError(value)
        return value

    # -- the model --------------------------------------------------------------------------

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module the training loop calls: `model` itself when alone; DDP or FSDP2."""
        if not self.active:
            return model
        if self.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for block in model.blocks:
                fully_shard(block)
            fully_shard(model)
            return model
        from torch.nn.parallel import DistributedDataParallel

        # No buffer broadcast before each forward: the model's only buffers are its rotary
        # tables, made alike on every rank from the config and never changed.
        return DistributedDataParallel(model, device_ids=[device.index] if device.type ==
                                       "cuda" else None, broadcast_buffers=False)

    def no_gradient_sync(self, wrapped: torch.nn.Module, last_micro_batch: bool):
        """Gradients are reduced once per step, on its last micro-batch."""
        if last_micro_batch or not self.active:
            return contextlib.nullcontext()
        if self.strategy == "fsdp":
            return _fsdp_sync_off(wrapped)
        return wrapped.no_sync()

    @contextlib.contextmanager
    def unsharded(self, model: torch.nn.Module):
        """The root's own parameters whole for calls that bypass its forward (generation);
        the blocks gather theirs in their own forward."""
        if self.strategy != "fsdp" or not self.active:
            yield
            return
        model.unshard()
        try:
            yield
        finally:
            model.reshard()

    def full_model_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The whole model's state dict on rank 0 (CPU), whatever the strategy."""
        if self.strategy != "fsdp" or not self.active:
            return model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        with self.collective("gathering the model for a checkpoint"):
            return get_model_state_dict(model, options=StateDictOptions(
                full_state_dict=True, cpu_offload=True))

    def full_optimizer_state(self, model, optimizer) -> dict:
        if self.strategy != "fsdp" or not self.active:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                             get_optimizer_state_dict)

        with self.collective("gathering the optimizer for a checkpoint"):
            full = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(
                full_state_dict=True, cpu_offload=True))
        if not full:  # ranks other than 0 receive nothing: rank 0 writes
            return full
        # Keyed by parameter name; a plain optimizer's state dict is keyed by position, and
        # checkpoints hold that form whatever the strategy, so any strategy can resume them.
        index = {name: i for i, name in enumerate(
            name for group in _parameter_names(model, optimizer) for name in group)}
        groups = [{**group, "params": [index[name] for name in group["params"]]}
                  for group in full["param_groups"]]
        return {"state": {index[name]: value for name, value in full["state"].items()},
                "param_groups": groups}

    def load_full_state(self, model, optimizer, model_state: dict, optimizer_state: dict) -> None:
        """Load full (unsharded) state dicts, present on every rank, into the local model."""
        if self.strategy != "fsdp" or not self.active:
            model.load_state_dict(model_state)
            optimizer.load_state_dict(optimizer_state)
            return
        from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                             set_model_state_dict,
                                                             set_optimizer_state_dict)

        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
        # Tensors are scattered one by one: every rank must walk them in the same order.
        expected = list(model.state_dict())
        if set(expected) != set(model_state):
            raise RuntimeError(f"parameters differ: {sorted(set(expected) ^ set(model_state))}")
        set_model_state_dict(model, {k: model_state[k] for k in expected}, options=options)
        names = [name for group in _parameter_names(model, optimizer) for name in group]
        by_name = {
            "state": {names[int(i)]: value for i, value in optimizer_state["state"].items()},
            "param_groups": [{**group, "params": [names[int(i)] for i in group["params"]]}
                             for group in optimizer_state["param_groups"]]}
        set_optimizer_state_dict(model, optimizer, by_name, options=options)

    def shard_state(self, model, optimizer) -> tuple[dict, dict]:
        """This rank's share of the model's and optimizer's state, keyed by parameter name
        (a sharded checkpointer's form): DTensor shards under FSDP, the tensors themselves
        otherwise. No collective."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        return get_state_dict(model, optimizer)

    def load_shards(self, model, optimizer, read, param_groups: list) -> None:
        """Fill the model and optimizer with `read({"model": ..., "optimizer": {"state":
        ...}})`, which writes into this rank's share in place (a sharded checkpointer's
        `read_shards`); `param_groups` (by parameter name) are the saved groups."""
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optimizer_state = get_state_dict(model, optimizer)  # state made if none
        with self.collective("reading a sharded checkpoint"):
            read({"model": model_state, "optimizer": {"state": optimizer_state["state"]}})
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict={
            "state": optimizer_state["state"], "param_groups": param_groups})

    def checkpoint_group(self):
        """A process group of every rank for a sharded checkpointer's collectives (gloo: its
        collectives run on host memory, on the checkpoint thread beside training's)."""
        if not self.active:
            return None
        return dist.new_group(backend="gloo",
                              timeout=datetime.timedelta(seconds=self.timeout_s))

    def check_replicas_agree(self, model: torch.nn.Module) -> None:
        """DDP with two ranks or more: every rank holds the same parameters after training,
        or TrainingHalted. Nothing to compare otherwise (FSDP holds no replicas)."""
        if self.strategy != "ddp" or self.world_size < 2:
            return
        checksum = sum(float(p.detach().double().abs().sum()) for p in model.parameters())
        checksums = self.gather(checksum, "comparing parameters across ranks")
        if self.rank != 0:
            return
        if len(set(checksums)) != 1:
            raise TrainingHalted(f"distributed: the ranks' parameters differ after training "
                                 f"(checksums {checksums})")
        print(f"distributed: parameters identical on {self.world_size} ranks "
              f"(checksum {checksum:.10e})")


def attempt_store(rank: int, world: int, timeout: datetime.timedelta):
    """torchrun's store, its keys under this attempt's name. After `--max-restarts` starts
    the job again, the workers share the store of the attempt before (torchrun's rendezvous
    store), whose keys still give the dead ranks' gloo addresses: a new rank read one and
    failed to connect ("Gloo connectFullMesh failed ... Connection refused")."""
    store, _, _ = next(dist.rendezvous("env://", rank, world, timeout=timeout))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"slimcore/attempt_{attempt}", store)


def owning(value):
    """`value` with each tensor that views a larger storage copied: pickling a tensor pickles
    its whole storage (a data position restored as a slice of something larger would cost
    that something on every rank's way to rank 0)."""
    if isinstance(value, torch.Tensor):
        whole = value.untyped_storage().nbytes()
        return value.clone() if whole > value.numel() * value.element_size() else value
    if isinstance(value, dict):
        return {key: owning(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(owning(item) for item in value)
    return value


def _parameter_names(model: torch.nn.Module, optimizer) -> list[list[str]]:
    """The names of the optimizer's parameters, group by group, in its order."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    return [[name_of[id(p)] for p in group["params"]] for group in optimizer.param_groups]


@contextlib.contextmanager
def _fsdp_sync_off(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
