"""Reusable CPU scratch buffers for the residual pipeline.

Large fresh allocations are expensive on the CPU: glibc maps every block above 32 MiB anew and
the kernel zero-fills each page on first touch, which costs several times a pass over the
data (about 20 ms per 40 MB buffer, i.e. per 10 MP float plane). The wavelet levels of camid's
residual therefore live in named buffers that are kept (per thread) and reused by the next
plane and the next image of the same or a smaller size. `release()` frees them.
"""

from __future__ import annotations

import math
import threading

import torch

_local = threading.local()


def buffer(name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised contiguous tensor of `shape` (dtype/device of `like`) for scratch `name`.

    The previous contents of the same name are invalidated; off the CPU this is new_empty.
    """
    if like.device.type != "cpu":
        return like.new_empty(shape)
    pool: dict = getattr(_local, "pool", None) or {}
    _local.pool = pool
    key = (name, like.dtype)
    n = math.prod(shape)
    t = pool.get(key)
    if t is None or t.numel() < n:
        pool.pop(key, None)  # free the old one first
        t = like.new_empty(n)
        pool[key] = t
    return t[:n].view(shape)


def release() -> None:
    """Free this thread's scratch buffers."""
    _local.pool = {}
