"""`camid identify`: which camera model took each photo (with "unknown" and an EXIF check)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from camid.cli.common import (
    DeviceOpt,
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
from camid.errors import EXIT_FINDING, InputError
from camid.report.output import Format

TABLE_COLUMNS = [
    "path", "camera", "probability", "exif_check", "reason", "history", "exif_camera",
    "agreement",
]  # fmt: skip
"""What the table shows, most useful first (camera says 'unknown' when the decision is;
a narrow terminal leaves out the last columns; JSON and CSV carry every field)."""

THRESHOLD_SOURCES = {
    "model": "the model's calibrated value",
    "given": "--unknown-threshold",
    "default": "default: the model has no calibrated value",
}

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Registry name or .safetensors file of a model.")
]


UnknownOpt = Annotated[
    float | None,
    typer.Option(
        "--unknown-threshold",
        help="Call the camera 'unknown' when the calibrated max-probability is below this "
        "(default: the model card's calibrated threshold, shown by `camid models show` as "
        "calibration.unknown_threshold; 0.5 only for a card without one).",
    ),
]
AgreementOpt = Annotated[
    float | None,
    typer.Option(
        "--min-agreement",
        help="Also 'unknown' when fewer than this share of views vote for the top camera "
        "(default: the model's, 0 = off).",
    ),
]
TraceCheckOpt = Annotated[
    bool,
    typer.Option(
        "--trace-check/--no-trace-check",
        help="For models with several kinds of evidence (tracenet: pixel and JPEG traces): "
        "'unknown' when one kind contradicts the decision (thresholds from validation).",
    ),
]
ViewsOpt = Annotated[
    int | None,
    typer.Option("--max-views", help="Patch-grid views per image for patch models (default 64)."),
]
TtaOpt = Annotated[
    bool | None,
    typer.Option(
        "--d4/--no-d4",
        help="Test-time D4 (8 rotations/flips per view); default on for big "
        "nets (5 crops x D4), off for patch nets.",
        show_default=False,
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Views per forward pass.")]
WorkersOpt = Annotated[
    int,
    typer.Option("--workers", help="Decoding threads that run ahead of the network (0 = inline)."),
]


def register(app: typer.Typer) -> None:
    """Add `identify` to the root app."""

    @app.command()
    def identify(
        inputs: InputsArg,
        model: ModelOpt,
        top_k: Annotated[int, typer.Option("--top-k", "-k", help="Camera models listed.")] = 3,
        unknown_threshold: UnknownOpt = None,
        min_agreement: AgreementOpt = None,
        trace_check: TraceCheckOpt = True,
        find_grid: Annotated[
            bool,
            typer.Option(
                "--find-grid",
                help="Search each photo's 8x8 JPEG grid before taking views (photos cropped "
                "after the camera; up to ~0.2 s more per photo). Reported as jpeg_grid.",
            ),
        ] = False,
        fingerprint: Annotated[
            list[Path] | None,
            typer.Option(
                "--fingerprint",
                "-F",
                help="PRNU fingerprint file(s) (`camid prnu`): the best match is reported, and "
                "a match (PCE > 60) with a recorded camera model decides the camera "
                "(repeatable; slow: one noise residual per photo).",
            ),
        ] = None,
        search_scale: Annotated[
            bool,
            typer.Option(
                "--search-scale",
                help="With -F: the photo may have been resized; search resize factors for the "
                "PRNU match (threshold raised for the factors tested; see docs/prnu.md).",
            ),
        ] = False,
        fail_on_mismatch: Annotated[
            bool,
            typer.Option(
                "--fail-on-mismatch",
                help="Exit 1 when any photo's EXIF camera contradicts the image content, or "
                "the CNN contradicts a PRNU match.",
            ),
        ] = False,
        max_views: ViewsOpt = None,
        d4: TtaOpt = None,
        batch_size: BatchOpt = 128,
        workers: WorkersOpt = 2,
        recursive: RecursiveOpt = False,
        ext: ExtOpt = None,
        failed_list: FailedListOpt = None,
        device: DeviceOpt = "auto",
        fmt: FormatOpt = Format.auto,
        json_: JsonOpt = False,
        quiet: QuietOpt = 0,
    ) -> None:
        """Top-k camera models of photos with calibrated probabilities, 'unknown' when the
        evidence is weak, and an EXIF cross-check (consistent / mismatch / no-exif /
        unknown-camera / inconclusive).

        Exit codes: 0 ok, 1 an EXIF mismatch with --fail-on-mismatch, 3 unreadable inputs."""
        from camid.identify import Identifier
        from camid.identify.evidence import PrnuProvider

        out = output_from(fmt, json_, quiet)
        paths, failed = gather_inputs(out, inputs, recursive, ext)
        ident = Identifier.from_model(
            model,
            device=device,
            unknown_threshold=unknown_threshold,
            min_agreement=min_agreement,
            trace_check=trace_check,
            max_views=max_views,
            d4=d4,
            batch_size=batch_size,
            workers=workers,
            top_k=top_k,
            find_grid=find_grid,
        )
        providers = []
        if fingerprint:
            from camid.prnu.store import load_fingerprint

            fps = [load_fingerprint(f) for f in fingerprint]
            providers.append(
                PrnuProvider(fps, ident.predictor.device, search_scale=search_scale)
            )
            if not any(fp.camera for fp in fps):
                out.warn(
                    "no fingerprint records its camera model: a PRNU match names the device "
                    "only (`camid prnu fingerprint --camera MODEL` records it)"
                )
        rule = ident.rule
        source = THRESHOLD_SOURCES.get(rule.threshold_source, rule.threshold_source)
        unknown_below = f"unknown below p = {rule.threshold:g} ({source})"
        out.info(
            f"model {ident.card.name} ({ident.card.arch}, {len(ident.card.classes)} cameras), "
            f"T={ident.temperature:.3g}, {unknown_below}"
        )
        mismatches = 0
        for res in out.progress(
            ident.identify(paths, providers), total=len(paths), description="Identifying"
        ):
            if isinstance(res, InputError):
                out.error(str(res))
                failed.append(res.path)
                continue
            rec = res.to_record()
            if not out.machine:
                rec["top"] = ", ".join(f"{t['camera']} {t['probability']:.2f}" for t in res.top)
                if res.prnu:
                    rec["prnu"] = f"{res.prnu['best_fingerprint']}: PCE {res.prnu['pce']:.1f}"
                if res.history is not None:  # the table's short form; JSON keeps it all
                    rec["history"] = res.history.short()
                heads = [e for e in res.evidence if e.kind == "head"]
                if heads:
                    rec["traces"] = "; ".join(
                        f"{e.name}: {e.camera} {e.strength:.2f}" for e in heads
                    )
            if res.contradiction:
                mismatches += 1
                out.warn(f"{res.path}: {res.contradiction}")
            if res.exif_check == "mismatch":
                mismatches += 1
                out.warn(f"{res.path}: {res.exif_note}")
            out.record(rec)
        columns = list(TABLE_COLUMNS)
        if fingerprint:  # with PRNU evidence, who decided and the best match come first
            columns[3:3] = ["decided_by", "prnu"]
        columns += ["traces"] if ident.predictor.heads else []
        out.finish(
            columns=None if out.machine else columns,
            title=f"camera identification by {ident.card.name}: {unknown_below}",
        )
        code = finish_batch(out, failed, failed_list, paths)
        if code == 0 and fail_on_mismatch and mismatches:
            code = EXIT_FINDING
        raise typer.Exit(code)
