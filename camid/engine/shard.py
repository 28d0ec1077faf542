"""Deterministic shards of a batch: `K/N` for independent processes, ranks under torchrun.

A shard is a contiguous block of the expanded input list (the order `camid` would process
the inputs in a single process), so the N shards' outputs, concatenated in shard order,
are the single-process output. Under torchrun each rank takes the same kind of block of its
shard, and the blocks gathered in rank order are again the input order.

This module imports torch only when a process group is really used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from camid.engine.dist import DistInfo, env_dist

T = TypeVar("T")

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count`; written 1-based as `K/N` (K = index + 1)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index + 1}/{self.count} does not exist")

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"

    @property
    def first(self) -> bool:
        """True for shard 1 (the one that reports inputs that could not be expanded)."""
        return self.index == 0

    def bounds(self, n: int) -> tuple[int, int]:
        """[start, stop) of this shard's block of `n` items (sizes differ by at most one)."""
        return self.index * n // self.count, (self.index + 1) * n // self.count

    def take(self, items: Sequence[T]) -> list[T]:
        """This shard's contiguous block of `items`."""
        start, stop = self.bounds(len(items))
        return list(items[start:stop])


def parse_shard(text: str | None) -> Shard | None:
    """`K/N` (1-based: 1/2 and 2/2 are the two halves) as a Shard; None for None or ''."""
    if text is None or not str(text).strip():
        return None
    m = _SPEC.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not K/N (e.g. 1/4: the first of four shards)")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise ValueError(f"{text!r}: K must be between 1 and N (shards are numbered 1..N)")
    return Shard(k - 1, n)


class ShardGroup:
    """The ranks of one torchrun job as a batch command sees them (one rank when alone).

    `start(device)` joins the process group (gloo on CPU, nccl on CUDA) and returns this
    rank's device; `gather` / `collect` / `concat` / `total` / `broadcast` exchange
    picklable Python values; every method is a cheap no-op for a single process.
    """

    def __init__(self, ranks: DistInfo | None = None) -> None:
        self.ranks = ranks or env_dist()
        self._joined = False

    @property
    def enabled(self) -> bool:
        """True when this process is one of several ranks."""
        return self.ranks.enabled

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.ranks.is_main

    def start(self, device: Any) -> Any:
        """Join the process group (when there are several ranks); this rank's device."""
        if not self.enabled:
            return device
        from camid.engine import dist

        info = dist.init_distributed(device)
        self._joined = True
        return dist.local_device(device, info)

    def _info(self) -> DistInfo:
        return self.ranks

    @property
    def rank_shard(self) -> Shard:
        """This rank's block of the inputs (the whole list for a single process)."""
        return Shard(self.ranks.rank, self.ranks.world_size)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` in rank order (on every rank)."""
        if not self._live():
            return [value]
        from camid.engine import dist

        return dist.all_gather(value, self._info())

    def collect(self, value: Any, take: Callable[[Any], None]) -> None:
        """Rank 0 hands its own `value` to `take`, then each other rank's in rank order,
        received one at a time (so rank 0 holds one rank's part at a time); the other
        ranks send theirs to rank 0."""
        if not self._live():
            take(value)
            return
        import torch.distributed as tdist

        if self.is_main:
            take(value)
            for r in range(1, self.ranks.world_size):
                box: list[Any] = [None]
                tdist.recv_object_list(box, src=r)
                take(box[0])
        else:
            tdist.send_object_list([value], dst=0)

    def concat(self, items: Sequence[T]) -> list[T]:
        """Every rank's list joined in rank order, on rank 0 (the others get their own)."""
        if not self.is_main:
            self.collect(list(items), lambda part: None)
            return list(items)
        joined: list[T] = []
        self.collect(list(items), joined.extend)
        return joined

    def total(self, n: int) -> int:
        """The sum of `n` over the ranks."""
        return int(sum(self.gather(int(n))))

    def broadcast(self, value: Any) -> Any:
        """Rank 0's `value` on every rank."""
        if not self._live():
            return value
        from camid.engine import dist

        return dist.broadcast(value, self._info())

    def close(self) -> None:
        """Leave the process group (when this object joined it and it is still open)."""
        if self._live():
            from camid.engine import dist

            dist.shutdown(self._info())
        self._joined = False

    def _live(self) -> bool:
        if not (self.enabled and self._joined):
            return False
        import torch.distributed as tdist

        return tdist.is_initialized()
