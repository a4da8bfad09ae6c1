"""Distributed calibration: shard the calibration batches over processes, all-reduce the sums.

Every calibration statistic prunec uses is a sum over samples (per-channel sums and sums of
squares, position counts, Gram matrices, summed gradients), so each process accumulates over its
own share of the batches and one ``all_reduce(SUM)`` per tensor gives every process the totals of
the whole set.  Scores, plans and refits computed from the totals are then the same on every
process (up to floating-point summation order).

Nothing here does anything unless ``torch.distributed`` is initialised with more than one
process: launch with ``torchrun`` (the CLI initialises the process group from torchrun's
environment: gloo on CPU, NCCL when CUDA is available) or call ``init_process_group`` yourself.
"""

from __future__ import annotations

import os
from typing import Sequence, TypeVar

import torch

from prunec.errors import ConfigError

T = TypeVar("T")


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised process group, ``(0, 1)`` without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    return world()[1] > 1


def is_main_process() -> bool:
    """True on rank 0 (and without a process group): the process that writes outputs and prints."""
    return world()[0] == 0


def init_from_environment() -> bool:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1); True if joined.

    Backend: NCCL when CUDA is available, gloo otherwise.
    """
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() or dist.is_initialized():
        return dist.is_available() and dist.is_initialized()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


def shard_batches(batches: Sequence[T]) -> list[T]:
    """This process's share of the calibration batches (round robin: rank, rank + world, ...)."""
    rank, size = world()
    if size == 1:
        return list(batches)
    if len(batches) < size:
        raise ConfigError(f"{len(batches)} calibration batch(es) cannot be shared by {size} processes; "
                          f"give at least {size} samples (--calib-samples) or launch fewer processes")
    return list(batches[rank::size])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place; returns it (no-op without a process group)."""
    import torch.distributed as dist

    if not is_distributed():
        return tensor
    if dist.get_backend() == "nccl" and tensor.device.type != "cuda":
        on_device = tensor.to(f"cuda:{torch.cuda.current_device()}")
        dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
        tensor.copy_(on_device.to(tensor.device))
    else:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_count(count: int) -> int:
    """Sum an integer count over all processes."""
    if not is_distributed():
        return count
    return int(all_reduce_sum(torch.tensor([count], dtype=torch.int64)).item())


def check_same_keys(keys: Sequence[str], what: str) -> None:
    """Every process must reduce the same tensors in the same order, or the collectives mismatch."""
    import torch.distributed as dist

    if not is_distributed():
        return
    gathered: list[list[str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, list(keys))
    if any(g != gathered[0] for g in gathered):
        raise ConfigError(f"processes collected different {what}; every process must prune the same model "
                          "with calibration batches of one shape")
