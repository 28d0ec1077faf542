"""`camid exif`: what each file's metadata claims (EXIF, JPEG tables, quality, sha256)."""

from __future__ import annotations

from typing import Annotated

import typer

from camid.cli.common import (
    ExtOpt,
    FailedListOpt,
    FormatOpt,
    InputsArg,
    JsonOpt,
    QuietOpt,
    RecursiveOpt,
    finish_batch,
    gather_inputs,
    output_from,
)
from camid.errors import InputError
from camid.io.exif import read_exif
from camid.report.output import Format

TABLE_COLUMNS = [
    "path", "camera", "software", "datetime_original", "size", "jpeg_quality", "sha256",
    "orientation", "conversion",
]  # fmt: skip
"""What the table shows, most useful first (a narrow terminal leaves out the last ones)."""


def register(app: typer.Typer) -> None:
    """Add `exif` to the root app."""

    @app.command()
    def exif(
        inputs: InputsArg,
        recursive: RecursiveOpt = False,
        ext: ExtOpt = None,
        tables: Annotated[
            bool, typer.Option("--tables/--no-tables", help="Include JPEG quantisation tables.")
        ] = True,
        failed_list: FailedListOpt = None,
        fmt: FormatOpt = Format.auto,
        json_: JsonOpt = False,
        quiet: QuietOpt = 0,
    ) -> None:
        """Metadata of photos: Make, Model, Software, dates, lens, serial, orientation,
        dimensions, JPEG quantisation tables, estimated JPEG quality and sha256."""
        out = output_from(fmt, json_, quiet)
        paths, failed = gather_inputs(out, inputs, recursive, ext)
        for p in out.progress(paths, description="Reading metadata"):
            try:
                info = read_exif(p)
            except InputError as exc:
                out.error(str(exc))
                failed.append(str(p))
                continue
            for w in info.warnings:
                out.info(f"{p}: {w}")
            rec = info.to_record(with_tables=tables and out.machine)
            if not out.machine:
                rec["size"] = f"{rec.get('width')}x{rec.get('height')}"
            out.record(rec)
        out.finish(columns=None if out.machine else TABLE_COLUMNS, title="EXIF")
        raise typer.Exit(finish_batch(out, failed, failed_list, paths))
