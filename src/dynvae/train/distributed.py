"""torch.distributed glue for the trainer: process group set-up, sharding, reductions.

A run started by ``torchrun --nproc_per_node=N`` sees ``WORLD_SIZE``/``RANK`` in its
environment; :func:`setup` then joins the process group (gloo on CPU, nccl on CUDA).
A plain ``python`` run is a world of one and every helper here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` of ``size`` processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def setup(device: torch.device) -> World:
    """Join (or reuse) the default process group when launched with several processes."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or not dist.is_available():
        return World()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return World(dist.get_rank(), dist.get_world_size())


def teardown() -> None:
    """Leave the default process group, if any, once every rank has reached this point:
    the end of a process that started it (``dynvae train`` under torchrun). A process
    that exits with the group alive can abort in the group's destructor ("terminate
    called without an active exception", exit -6) while another rank still talks to it."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch_rank() -> int:
    """This process's rank as set by ``torchrun`` (0 for a plain run), readable before
    the process group exists, e.g. to let only rank 0 prepare the run directory."""
    return int(os.environ.get("RANK", "0"))


def shard(indices: list[int], world: World) -> list[int]:
    """This rank's part of a global batch: every ``size``-th index from ``rank``.

    The same rule as ``DistributedSampler`` applied to one batch, so the union over
    ranks is exactly the global batch.
    """
    return indices[world.rank::world.size]


def all_reduce_sum(value: Tensor, world: World) -> Tensor:
    """Sum of ``value`` over ranks (a copy; the input is left unchanged)."""
    out = value.detach().clone()
    if world.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_objects(obj, world: World) -> list:
    """Every rank's ``obj`` as a list indexed by rank (``[obj]`` in a world of one)."""
    if not world.distributed:
        return [obj]
    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()
