"""`camid dataset`: look at a dataset's camera x label structure before training on it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from camid.cli.common import FormatOpt, JsonOpt, QuietOpt, output_from
from camid.data.dataset import load_dataset, summarize
from camid.report.output import Format

app = typer.Typer(no_args_is_help=True)


@app.command()
def summary(
    source: Annotated[
        Path, typer.Argument(help="Dataset folder (root/<label>/...) or manifest CSV.")
    ],
    label_level: Annotated[
        int, typer.Option(help="Folder level holding the label (0 = root/<label>/...).")
    ] = 0,
    camera_level: Annotated[
        int | None,
        typer.Option(help="Folder level holding the camera (default: EXIF Make+Model)."),
    ] = None,
    fmt: FormatOpt = Format.auto,
    json_: JsonOpt = False,
    quiet: QuietOpt = 0,
) -> None:
    """Camera x label counts, with the files that carry no camera information."""
    out = output_from(fmt, json_, quiet)
    ds = load_dataset(source, label_level=label_level, camera_level=camera_level)
    for note in ds.notes:
        out.info(note)
    summ = summarize(ds)
    if summ["missing_camera"]:
        shown = summ["missing_camera"][:10]
        more = len(summ["missing_camera"]) - len(shown)
        out.warn(
            f"{len(summ['missing_camera'])} file(s) have no camera information: "
            + ", ".join(shown)
            + (f" (+{more} more)" if more else "")
        )
    conf = summ["confound"]
    if conf["full"]:
        out.warn(
            f"camera and label are fully confounded: each of the {conf['cameras']} cameras "
            f"appears under one of the {conf['labels']} labels only, so a model can score "
            "perfectly by recognising the camera instead of the content; `camid bias-check` "
            "measures how much a trained model relies on it (re-collect so that labels share "
            "cameras, or split the evaluation by camera)"
        )
    if out.fmt == "json":
        out.emit_object(summ)
        return
    labels = summ["labels"]
    rows = []
    for cam in summ["cameras"]:
        counts = summ["table"][cam]
        row = {"camera": cam}
        row.update({lab: counts.get(lab, 0) for lab in labels})
        row["total"] = sum(counts.values())
        rows.append(row)
    total_row = {"camera": "total"}
    total_row.update(
        {lab: sum(summ["table"][c].get(lab, 0) for c in summ["cameras"]) for lab in labels}
    )
    total_row["total"] = summ["n_images"]
    if out.fmt == "table":
        rows.append(total_row)
    out.emit(rows, columns=["camera", *labels, "total"], title=f"{source}: camera x label")


def register(root: typer.Typer) -> None:
    """Add the `dataset` command group to the root app."""
    root.add_typer(app, name="dataset", help="Dataset manifests and summaries (camera x label).")
