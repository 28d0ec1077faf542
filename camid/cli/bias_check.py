"""`camid bias-check DATASET`: does the dataset leak the camera into the label?"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from camid.cli.common import DeviceOpt, FormatOpt, JsonOpt, QuietOpt, SeedOpt, output_from
from camid.report.output import Format, Output

STYLE = {"PASS": "green", "INFO": "cyan", "WARN": "yellow", "FAIL": "bold red"}


def _progress_hook(out: Output, stack: ExitStack):
    """A (stage, done, total) callback drawing one rich bar per stage on stderr."""
    bar = stack.enter_context(out.progress_bar())
    tasks: dict[str, int] = {}

    def hook(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return hook


def _events_hook(out: Output):
    def on_event(ev: dict) -> None:
        if ev.get("event") == "epoch":
            out.info(
                f"  epoch {ev['epoch']}: train loss {ev['train_loss']:.3f}, validation accuracy "
                f"{ev.get('val_accuracy', float('nan')):.3f} ({ev['seconds']:.0f} s)"
            )

    return on_event


def render_summary(out: Output, report) -> None:
    """The human summary: verdict, one line per check, the camera x label table.

    Everything goes through the output layer (tables fit the width; names from the data
    are plain text, never markup)."""
    from rich.console import Console
    from rich.text import Text

    from camid.report.output import printable, table_width

    console = Console(file=out.stdout, highlight=False, soft_wrap=False, width=table_width())
    head = Text("bias-check ", style="bold")
    head.append(printable(str(report.dataset)) + ": ")
    head.append(report.verdict, style=STYLE.get(report.status, ""))
    head.append(f" ({report.status}) - {report.verdict_text}")
    console.print(head)
    console.print(
        Text(
            printable(
                f"{report.n_images} images, {len(report.labels)} labels, "
                f"{len(report.cameras)} cameras from {report.camera_source.description}; "
                f"stage {report.stage}, {report.seconds:.1f} s"
            )
        )
    )
    out.emit(
        [{"status": c.status, "check": c.name, "finding": c.summary} for c in report.checks],
        columns=["status", "check", "finding"],
        title="checks",
    )
    a = report.association
    if a is not None and a.stats is not None:
        t = a.stats.table
        tied = {(c.camera, c.label) for c in a.tied}
        rows = [
            {
                "camera": cam,
                **{
                    lab: f"{t.counts[i, j]}{'*' if (cam, lab) in tied else ''}"
                    for j, lab in enumerate(t.cols)
                },
            }
            for i, cam in enumerate(t.rows)
        ]
        scope = "training rows" if a.scope == "train" else "all rows"
        out.emit(
            rows,
            columns=["camera", *t.cols],
            title=f"camera x label ({scope}; * = tied to that camera)",
        )
    sc = report.shortcut
    if sc is not None and sc.prediction_table is not None:
        labels = sc.prediction_table["labels"]
        rows = [
            {
                "camera": row["camera"],
                "n": row["n"],
                "accuracy": round(row["accuracy"], 2),
                **{f"pred {lab}": row["predicted"].get(lab, 0) for lab in labels},
                "flag": "; ".join(row["flags"]),
            }
            for row in sc.per_camera
        ]
        out.emit(
            rows,
            columns=["camera", "n", "accuracy", *[f"pred {lab}" for lab in labels], "flag"],
            title="test predictions per camera (like seed 000 Fig. 3)",
        )
    for n in report.notes:
        out.info(f"note: {n}")


def register(app: typer.Typer) -> None:
    """Add `bias-check` to the root app."""

    @app.command("bias-check")
    def bias_check(
        dataset: Annotated[
            Path, typer.Argument(help="A folder (root/<label>/...) or a CSV manifest.")
        ],
        quick: Annotated[
            bool, typer.Option("--quick", help="Stage 0 only: metadata statistics, no training.")
        ] = False,
        camera_level: Annotated[
            int | None,
            typer.Option("--camera-level", help="Folder level that names the camera (0 = first)."),
        ] = None,
        label_level: Annotated[
            int, typer.Option("--label-level", help="Folder level that names the label.")
        ] = 0,
        fail_on: Annotated[
            str, typer.Option("--fail-on", help="Exit 1 on a finding at this level: warn|fail.")
        ] = "fail",
        gain_warn: Annotated[
            float, typer.Option("--gain-warn", help="Camera-only baseline gain that warns.")
        ] = 0.2,
        gain_fail: Annotated[
            float, typer.Option("--gain-fail", help="Camera-only baseline gain that fails.")
        ] = 0.3,
        time_budget: Annotated[
            float, typer.Option("--time-budget", help="Seconds of training for stage 1.")
        ] = 60.0,
        arch: Annotated[str, typer.Option("--arch", help="Task model architecture.")] = "tracenet",
        save_model: Annotated[
            str | None,
            typer.Option("--save-model", help="Keep the stage-1 task model under this name."),
        ] = None,
        counterfactual: Annotated[
            bool,
            typer.Option(
                "--counterfactual",
                help="Stage 1: also retrain on a camera-balanced resampling of the training "
                "rows and compare test accuracy (doubles the training time).",
            ),
        ] = False,
        html: Annotated[
            Path | None, typer.Option("--html", help="Write a self-contained HTML report.")
        ] = None,
        write_split: Annotated[
            Path | None,
            typer.Option(
                "--write-split",
                help="Write camera-balanced and camera-disjoint split manifests into this folder.",
            ),
        ] = None,
        export_cameras: Annotated[
            Path | None,
            typer.Option("--export-cameras", help="Write each image's camera as a manifest."),
        ] = None,
        seed: SeedOpt = 0,
        device: DeviceOpt = "auto",
        fmt: FormatOpt = Format.auto,
        json_: JsonOpt = False,
        quiet: QuietOpt = 0,
    ) -> int:
        """Prove or clear camera/label leakage: statistics, a trained probe, a verdict.

        Exit 1 when a check reaches --fail-on, 0 otherwise (3: unreadable input). Under
        torchrun (with --quick) the ranks share the pseudo-camera feature pass; rank 0
        writes the report and files.
        """
        import io

        from camid.audit import bias
        from camid.engine.shard import ShardGroup
        from camid.errors import UsageError

        out = output_from(fmt, json_, quiet)
        if fail_on.lower() not in ("warn", "fail"):
            raise UsageError("--fail-on must be warn or fail")
        group = ShardGroup()
        if group.enabled and not quick:
            raise UsageError(
                "under torchrun bias-check splits only its pseudo-camera feature pass: add "
                "--quick (and --export-cameras FILE), then run stage 1 on that manifest in "
                "one process"
            )
        if group.enabled:
            from camid.device import resolve_device

            group.start(resolve_device(device))
            if not group.is_main:  # rank 0 alone prints and writes files
                out.stdout, out.quiet = io.StringIO(), 2
                export_cameras = write_split = html = None
        options = bias.BiasOptions(
            quick=quick,
            label_level=label_level,
            camera_level=camera_level,
            seed=seed,
            thresholds=bias.Thresholds(gain_warn=gain_warn, gain_fail=gain_fail),
            time_budget=time_budget,
            arch=arch,
            device=device,
            save_model=save_model,
            counterfactual=counterfactual,
        )
        with ExitStack() as stack:
            report = bias.run_bias_check(
                dataset,
                options,
                progress=_progress_hook(out, stack),
                events=_events_hook(out) if not out.machine else None,
                group=group,
            )
        extra = {}
        if export_cameras is not None:
            extra["exported_cameras"] = str(bias.export_cameras(report, export_cameras))
            out.info(f"cameras written to {extra['exported_cameras']}")
        if write_split is not None:
            extra["splits"] = bias.write_splits(report, write_split, seed=seed)
            for k, v in extra["splits"].items():
                out.info(f"{k}: {v['path']} ({v['train']} train, {v['test']} test)")
        if html is not None:
            from camid.audit.report_html import write_html

            extra["html"] = str(write_html(report, html))
            out.info(f"HTML report written to {extra['html']}")
        if out.fmt == "csv":  # one row per check
            out.emit(
                [
                    {"check": c.name, "status": c.status, "summary": c.summary}
                    for c in report.checks
                ],
                columns=["check", "status", "summary"],
            )
        elif out.machine:
            out.emit_object({**report.to_dict(), **extra})
        else:
            render_summary(out, report)
        code = group.broadcast(report.exit_code(fail_on))
        group.close()
        return code
