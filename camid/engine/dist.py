"""Distributed (torchrun) helpers: one process per device, rank 0 writes.

torch is imported only by the functions that use a process group, so `DistInfo` and
`env_dist` serve torch-free code too (`camid.engine.shard`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a torchrun job (world_size 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True under torchrun with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints."""
        return self.rank == 0


def env_dist() -> DistInfo:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (defaults: a single process)."""
    try:
        info = DistInfo(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )
    except ValueError:
        return DistInfo()
    return info if 0 <= info.rank < info.world_size else DistInfo()


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (nccl on CUDA, else gloo)."""
    import torch
    import torch.distributed as tdist

    info = env_dist()
    if info.enabled and not tdist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        tdist.init_process_group(backend=backend)
    return info


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """The device of this rank: cuda:LOCAL_RANK under torchrun on GPUs."""
    import torch

    if info.enabled and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op when not distributed)."""
    import torch.distributed as tdist

    if info.enabled and tdist.is_initialized():
        tdist.barrier()


def all_gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list when not distributed)."""
    import torch.distributed as tdist

    if not (info.enabled and tdist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * info.world_size
    tdist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank."""
    import torch.distributed as tdist

    if not (info.enabled and tdist.is_initialized()):
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown(info: DistInfo) -> None:
    """Leave the process group."""
    import torch.distributed as tdist

    if info.enabled and tdist.is_initialized():
        tdist.destroy_process_group()
