"""Running under ``torchrun``: which process this is, its share of the work, and sums across processes.

``torchrun --nproc_per_node N -m prolab train|evaluate|predict ...`` starts N processes and tells each its
place through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). :func:`init_distributed` joins
the process group only then; a plain ``python -m prolab ...`` is one process and never touches
``torch.distributed``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
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


def shard(items: Sequence[T], info: DistInfo, key: Callable[[T], object] | None = None) -> list[T]:
    """This process's share of ``items``: every ``world``-th one from its rank, so that the processes
    together take each item exactly once. With ``key`` the items sharing a key (e.g. images whose outputs
    share a file name) all go to one process, so no two processes write the same file."""
    if info.world <= 1:
        return list(items)
    if key is None:
        return list(items[info.rank::info.world])
    mine = set(list(dict.fromkeys(key(x) for x in items))[info.rank::info.world])
    return [x for x in items if key(x) in mine]


def all_reduce_sum(array: np.ndarray, info: DistInfo) -> np.ndarray:
    """``array`` summed over every process (a copy; ``array`` itself for a single process). Needs a
    process group that reduces CPU tensors (gloo, what :func:`init_distributed` joins on the CPU)."""
    if info.world <= 1:
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array)).clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.numpy()


def gather_json(obj, info: DistInfo) -> list:
    """``obj`` (anything :func:`json.dumps` writes) of every process, in rank order (``[obj]`` for a single
    process). Sent as JSON text, never pickled: what another process sends is only ever parsed."""
    if info.world <= 1:
        return [obj]
    data = torch.frombuffer(bytearray(json.dumps(obj).encode("utf-8")), dtype=torch.uint8)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(info.world)]
    dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64))
    longest = int(max(s.item() for s in sizes))
    parts = [torch.zeros(longest, dtype=torch.uint8) for _ in range(info.world)]
    dist.all_gather(parts, torch.cat([data, torch.zeros(longest - data.numel(), dtype=torch.uint8)]))
    return [json.loads(p[:int(n.item())].numpy().tobytes().decode("utf-8")) for p, n in zip(parts, sizes)]


def together(work: Callable[[], T], info: DistInfo) -> T:
    """``work()`` in every process, then a check that all of them finished it: when one raises, the
    others raise too (a :class:`~prolab.errors.ProLabError` naming that process's error) instead of
    waiting in the next collective call until the process group's timeout (30 minutes for gloo). The
    process that failed raises its own exception. Call it where every process reaches it."""
    if info.world <= 1:
        return work()
    from prolab.errors import ProLabError

    error: BaseException | None = None
    result = None
    try:
        result = work()
    except Exception as exc:  # noqa: BLE001 - told to the others, then raised again below
        error = exc
    messages = gather_json(None if error is None else str(getattr(error, "message", error))[:500], info)
    if error is not None:
        raise error
    failed = [(rank, m) for rank, m in enumerate(messages) if m is not None]
    if failed:
        rank, message = failed[0]
        raise ProLabError(f"Process {rank} of {info.world} stopped: {message}")
    return result
