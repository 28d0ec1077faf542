"""`camid evaluate`: accuracy of a stored model on a dataset's test images, unaltered and
manipulated (JPEG / gamma / resize), per camera, with confusion matrices."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from camid.cli.common import DeviceOpt, FormatOpt, JsonOpt, QuietOpt, output_from
from camid.cli.identify import (
    AgreementOpt,
    BatchOpt,
    TraceCheckOpt,
    TtaOpt,
    UnknownOpt,
    ViewsOpt,
    WorkersOpt,
)
from camid.errors import EXIT_INPUT
from camid.identify.evaluate import DEFAULT_MANIPULATIONS
from camid.report.output import Format


def register(app: typer.Typer) -> None:
    """Add `evaluate` to the root app."""

    @app.command()
    def evaluate(
        model: Annotated[str, typer.Argument(help="Registry name or .safetensors file.")],
        dataset: Annotated[
            str,
            typer.Argument(
                help="Manifest CSV or folder; split=test rows are used when there is a split "
                "column, else every image."
            ),
        ],
        manipulations: Annotated[
            str,
            typer.Option(
                "--manipulations",
                help="Manipulated copies to test besides the original, comma-separated "
                "(jpeg:Q, gamma:G, resize:F) or 'none'.",
            ),
        ] = DEFAULT_MANIPULATIONS,
        plot: Annotated[
            Path | None,
            typer.Option(
                "--plot", help="Write the confusion matrix of the unaltered images to this PNG."
            ),
        ] = None,
        unknown_threshold: UnknownOpt = None,
        min_agreement: AgreementOpt = None,
        trace_check: TraceCheckOpt = True,
        max_views: ViewsOpt = None,
        d4: TtaOpt = None,
        region: Annotated[
            str | None,
            typer.Option(
                help="Only views from this part of the frame: full, left, right, center80."
            ),
        ] = None,
        batch_size: BatchOpt = 128,
        workers: WorkersOpt = 2,
        device: DeviceOpt = "auto",
        fmt: FormatOpt = Format.auto,
        json_: JsonOpt = False,
        quiet: QuietOpt = 0,
    ) -> None:
        """Accuracy overall and per camera, confusion matrix, on unaltered and manipulated
        copies of the test images; the open-set 'unknown' rate for cameras the model does
        not know. JSON output is one object (see docs/identify.md)."""
        from camid.data.augment import parse_manipulations
        from camid.data.dataset import load_dataset
        from camid.identify import Identifier
        from camid.identify.evaluate import evaluate as run_eval
        from camid.identify.evaluate import test_items

        out = output_from(fmt, json_, quiet)
        conds = [None, *parse_manipulations(manipulations)]
        ident = Identifier.from_model(
            model,
            device=device,
            unknown_threshold=unknown_threshold,
            min_agreement=min_agreement,
            trace_check=trace_check,
            max_views=max_views,
            d4=d4,
            region=region,
            batch_size=batch_size,
            workers=workers,
        )
        ds = load_dataset(dataset)
        samples, note = test_items(ds.samples, ident.card.task)
        out.info(
            f"evaluating {ident.card.name} on {note}, conditions: "
            + ", ".join("original" if c is None else c.name for c in conds)
        )
        bar = out.progress_bar()
        tasks: dict[str, object] = {}

        def progress(cond: str, done: int, total: int) -> None:
            if cond not in tasks:
                tasks[cond] = bar.add_task(cond, total=total)
            bar.update(tasks[cond], completed=done)  # type: ignore[arg-type]

        with bar:
            report = run_eval(ident, samples, conditions=conds, progress=progress)
        report.dataset, report.test_selection = str(dataset), note
        for err in report.errors:
            out.error(err)
        if plot is not None and report.conditions:
            from camid.report.plots import confusion_figure

            c0 = report.conditions[0].figure_confusion()
            title = f"{ident.card.name}: unaltered test images"
            confusion_figure(c0["matrix"], c0["true"], c0["predicted"], plot, title=title)
            report.plot = str(plot)
            out.info(f"confusion matrix written to {plot}")
        if out.fmt in ("json", "ndjson"):
            out.emit_object(report.to_dict())
        else:
            out.emit(
                report.summary_rows(per_class=out.fmt == "csv"),
                title=f"{ident.card.name} on {dataset}",
            )
            if out.fmt == "table":
                out.emit(report.per_class_rows(), title="per camera (unaltered)")
                out.emit(report.confusion_rows(), title="confusion matrix (unaltered)")
        if report.errors:
            raise typer.Exit(EXIT_INPUT)
