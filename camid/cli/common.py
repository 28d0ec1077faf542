"""Options and helpers shared by every camid command."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from camid.errors import EXIT_INPUT, EXIT_OK, AlreadyExistsError, UsageError
from camid.io.atomic import write_text_atomic
from camid.io.inputs import expand_inputs, parse_extensions
from camid.report.output import Format, Output

FormatOpt = Annotated[
    Format,
    typer.Option(
        "--format",
        "-f",
        help="Data format on stdout: table|json|csv|ndjson (auto: table on a terminal, "
        "json when piped).",
        case_sensitive=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Shorthand for --format json.")]
QuietOpt = Annotated[
    int, typer.Option("--quiet", "-q", count=True, help="-q hides info, -qq also warnings.")
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto|cpu|cuda[:N]|mps (auto: CUDA, then MPS, then CPU).")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed for repeatable runs.")]
RecursiveOpt = Annotated[
    bool, typer.Option("--recursive", "-r", help="Descend into sub-folders (hidden ones skipped).")
]
ExtOpt = Annotated[
    str | None,
    typer.Option("--ext", help="Only these extensions in folders, e.g. 'jpg,jpeg'."),
]
FailedListOpt = Annotated[
    Path | None,
    typer.Option("--failed-list", help="Write the paths that failed to this file (for re-runs)."),
]
InputsArg = Annotated[
    list[str],
    typer.Argument(
        help="Image files, folders, or '-' to read paths from stdin.", show_default=False
    ),
]


def output_from(fmt: Format = Format.auto, json_: bool = False, quiet: int = 0) -> Output:
    """Build the command's Output from the shared options (Python warnings go to it)."""
    out = Output(Format.json if json_ else fmt, quiet=quiet)
    out.route_warnings()
    return out


def gather_inputs(
    out: Output, items: Sequence[str], recursive: bool = False, ext: str | None = None
) -> tuple[list[Path], list[str]]:
    """Expand inputs; report each unusable one as a one-line error. Returns (paths, failed)."""
    paths, errors = expand_inputs(items, recursive=recursive, extensions=parse_extensions(ext))
    failed = []
    for err in errors:
        out.error(str(err))
        failed.append(getattr(err, "path", str(err)))
    return paths, failed


def finish_batch(
    out: Output,
    failed: Sequence[str],
    failed_list: Path | None = None,
    paths: Sequence[str | Path] = (),
) -> int:
    """Report a batch's failures, write --failed-list, and return the exit code (0 or 3).

    `paths` are the inputs the command went on to process (from `gather_inputs`); the
    batch counts distinct inputs: those paths plus any failure that is not one of them
    (a missing file, a FIFO in a folder, ...), so "N input(s) of M" is the same for every
    command however often a path was reported.
    """
    unique_failed = list(dict.fromkeys(str(f) for f in failed))
    if failed_list is not None:
        write_text_atomic(failed_list, "".join(f"{p}\n" for p in unique_failed))
    if unique_failed:
        total = len(set(map(str, paths)) | set(unique_failed))
        out.warn(f"{len(unique_failed)} input(s) of {total} could not be read")
        return EXIT_INPUT
    return EXIT_OK


@contextmanager
def replace_hint(flag: str) -> Iterator[None]:
    """Name the CLI flag that allows replacing an existing output (the library cannot)."""
    try:
        yield
    except AlreadyExistsError as exc:
        raise UsageError(f"{exc} (use {flag} to replace it)") from exc
