"""Data-parallel training with ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc_per_node N -m flow_escnn.experiments train ...`` starts N processes (and
more nodes through torchrun's rendezvous); each reads ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` from its environment. The global batch (``--batch-size``) is the same
seeded batch a single process would draw at that step; rank ``r`` takes the ``r``-th of
``N`` equal contiguous shards, and ``DistributedDataParallel`` averages the gradients, so
one step equals the single-process step up to the order of float additions. Rank 0 alone
writes files (config, checkpoints, metrics, plots) and evaluates; checkpoints hold the
unwrapped model, so a run resumes under any number of processes. Results are
deterministic for a fixed number of processes (and threads).

Backends: ``nccl`` on CUDA (each process uses ``cuda:LOCAL_RANK``), ``gloo`` on CPU.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Iterator

import torch
import torch.distributed as dist

__all__ = ["World", "world_from_env", "distributed_world"]


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among the training processes (``size == 1``: not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and evaluates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, device: torch.device) -> torch.device:
        """This process's device: ``cuda:LOCAL_RANK`` for a distributed CUDA run, else ``device``."""
        if self.distributed and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.size:
            raise ValueError(
                f"--batch-size {batch_size} (the global batch) does not split into {self.size} equal shards: "
                f"use a multiple of the number of processes"
            )

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch's indices."""
        n = index.shape[0] // self.size
        return index[self.rank * n : (self.rank + 1) * n]

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of ``value`` over the processes (``value`` itself when not distributed)."""
        if not self.distributed:
            return value
        total = value.detach().clone().to(torch.float64)
        dist.all_reduce(total)
        return total / self.size

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` is set on any process (every process gets the same answer)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def world_from_env() -> World:
    """The :class:`World` that torchrun's environment variables describe (``World()`` without them).

    Raises:
        ValueError: when the variables are inconsistent.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={size}")
    return World(rank, size, local)


@contextlib.contextmanager
def distributed_world(device_type: str) -> Iterator[World]:
    """Join the process group for the block when launched by torchrun (and leave it after).

    Args:
        device_type: ``"cpu"`` (gloo) or ``"cuda"`` (nccl).
    """
    world = world_from_env()
    if not world.distributed or dist.is_initialized():
        yield world
        return
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    try:
        yield world
    finally:
        dist.destroy_process_group()
