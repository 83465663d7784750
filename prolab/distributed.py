"""Running under ``torchrun``: which process this is, its share of the work, and sums across processes.

``torchrun --nproc_per_node N -m prolab train|evaluate|predict ...`` starts N processes and tells each its
place through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). :func:`init_distributed` joins
the process group only then; a plain ``python -m prolab ...`` is one process and never touches
``torch.distributed``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass
class DistInfo:
    """This process's place among the processes of one run (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process is the one that prints and writes the run's summary files."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether ``torchrun`` started this process with others (``WORLD_SIZE`` > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device | str = "cpu") -> DistInfo:
    """Join the process group when launched by torchrun with more than one process (NCCL for a CUDA
    ``device``, else gloo); otherwise :class:`DistInfo` of a single process, with no process group."""
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.device(device).type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def close_distributed(info: DistInfo) -> None:
    """Leave the process group :func:`init_distributed` joined (nothing for a single process)."""
    if info.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every process (nothing for a single process)."""
    if info.world > 1:
        dist.barrier()


def shard(items: Sequence[T], info: DistInfo) -> list[T]:
    """This process's share of ``items``: every ``world``-th one from its rank, so that the processes
    together take each item exactly once."""
    return list(items[info.rank::info.world])


def all_reduce_sum(array: np.ndarray, info: DistInfo) -> np.ndarray:
    """``array`` summed over every process (a copy; ``array`` itself for a single process). Needs a
    process group that reduces CPU tensors (gloo, what :func:`init_distributed` joins on the CPU)."""
    if info.world <= 1:
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array)).clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.numpy()
