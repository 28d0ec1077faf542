"""`--shard K/N` and torchrun ranks for the batch commands (identify, prnu, bias-check).

A command builds one `ShardedBatch`, takes its inputs from it, runs its loop on
`batch.out` (the real Output; on torchrun ranks other than 0 one that records every row
and message), then calls `merge`: rank 0, having written its own block as it went,
replays the other ranks' rows and messages rank by rank, so stdout is the single-process
output in input order; the other ranks write nothing to stdout.
See docs/scale.md.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from camid.cli.common import finish_batch, gather_inputs
from camid.engine.shard import Shard, ShardGroup, parse_shard
from camid.errors import UsageError
from camid.report.output import Output

T = TypeVar("T")

ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="K/N",
        help="Process only shard K of N (1-based, e.g. 2/4): a contiguous block of the "
        "inputs; the N shards' ndjson outputs concatenated in order are the whole run's.",
    ),
]


def shard_option(text: str | None) -> Shard | None:
    """The --shard value as a Shard, or a one-line UsageError."""
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise UsageError(f"--shard {exc}") from exc


class RecordingOutput(Output):
    """An Output that keeps rows and messages (in order) for rank 0 to replay; progress
    bars still go to the real Output, so only rank 0 draws them."""

    def __init__(self, real: Output) -> None:
        super().__init__(real.fmt, quiet=real.quiet, stdout=io.StringIO(), stderr=io.StringIO())
        self.real = real
        self.events: list[tuple[str, Any]] = []

    def info(self, msg: str) -> None:
        """Kept for replay."""
        self.events.append(("info", msg))

    def warn(self, msg: str) -> None:
        """Kept for replay."""
        self.events.append(("warn", msg))

    def error(self, msg: str) -> None:
        """Kept for replay (and counted here, as Output does)."""
        self.errors.append(msg)
        self.events.append(("error", msg))

    def record(self, rec: dict) -> None:
        """Kept for replay."""
        self.events.append(("record", rec))

    def progress(
        self, iterable: Iterable[T], total: int | None = None, description: str = ""
    ) -> Iterator[T]:
        """The real Output's bar (drawn on rank 0 only: the others are quiet)."""
        return self.real.progress(iterable, total, description)

    def progress_bar(self):
        """The real Output's bar."""
        return self.real.progress_bar()


def replay(out: Output, events: Iterable[tuple[str, Any]]) -> None:
    """Send recorded rows and messages to `out`, in order."""
    for kind, value in events:
        if kind == "record":
            out.record(value)
        else:
            getattr(out, kind)(value)


class ShardedBatch:
    """One batch command's share of the inputs: `--shard K/N`, then torchrun's rank.

    Inputs that cannot be expanded (a missing file) are reported by shard 1 and rank 0
    only, so the shards' error lists add up to the whole run's.
    """

    def __init__(self, out: Output, shard: str | None = None) -> None:
        self.shard = shard_option(shard)
        self.group = ShardGroup()
        self.real = out
        self.out: Output = out
        self.paths: list[Path] = []
        """The inputs of this shard (all ranks together): what `finish` counts."""
        self.expand_failed: list[str] = []

    @property
    def is_main(self) -> bool:
        """True on the process that writes stdout and output files of the whole shard."""
        return self.group.is_main

    def start(self, device: Any) -> Any:
        """Join the torchrun group (if any) and mute every rank but 0; this rank's device.

        Rank 0 writes its own rows as they come (its block is first in input order); the
        other ranks record theirs for `merge`."""
        device = self.group.start(device)
        if self.group.enabled and not self.is_main:
            self.real.stdout = io.StringIO()
            self.real.quiet = 2
            self.out = RecordingOutput(self.real)
        return device

    def inputs(
        self, items: Sequence[str], recursive: bool = False, ext: str | None = None
    ) -> tuple[list[Path], list[str]]:
        """(this rank's paths, failed) - failed holds the unusable inputs this process
        reports (shard 1, rank 0); expanded once on rank 0 under torchrun."""
        reports = self.shard is None or self.shard.first
        if self.is_main:
            sink = self.real if reports else Output(self.real.fmt, 2, io.StringIO(), io.StringIO())
            paths, failed = gather_inputs(sink, items, recursive, ext)
            failed = failed if reports else []
        else:
            paths, failed = [], []
        if self.group.enabled:
            paths, failed = self.group.broadcast(([str(p) for p in paths], failed))
            paths = [Path(p) for p in paths]
            failed = failed if self.is_main else []
        if self.shard is not None:
            paths = self.shard.take(paths)
        self.paths = paths
        self.expand_failed = list(failed)
        return self.group.rank_shard.take(paths), list(failed)

    def concat(self, items: Sequence[T]) -> list[T]:
        """Every rank's list joined in rank order (= input order) on rank 0."""
        return self.group.concat(items)

    def total(self, n: int) -> int:
        """`n` summed over the ranks."""
        return self.group.total(n)

    def merge(self, failed: Sequence[str]) -> list[str]:
        """Rank 0 replays the other ranks' rows and messages after its own, rank by rank;
        returns the batch's failed inputs (on rank 0: every rank's)."""
        if not self.group.enabled:
            return list(failed)
        events = self.out.events if isinstance(self.out, RecordingOutput) else []
        own = list(failed)[len(self.expand_failed) :]  # the loop's own failures
        merged = list(self.expand_failed)

        def take(part: tuple[list, list[str]]) -> None:
            replay(self.real, part[0])
            merged.extend(part[1])

        self.group.collect((events, own), take)
        self.out = self.real
        return merged

    def finish(self, failed: Sequence[str], failed_list: Path | None = None) -> int:
        """finish_batch over this shard (rank 0 writes --failed-list)."""
        return finish_batch(self.real, failed, failed_list if self.is_main else None, self.paths)

    def exit_code(self, code: int) -> int:
        """Rank 0's exit code on every rank; leaves the process group."""
        code = int(self.group.broadcast(code))
        self.group.close()
        return code
