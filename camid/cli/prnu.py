"""`camid prnu residual|fingerprint|match|matrix`: PRNU sensor fingerprints (thin CLI layer).

All computation lives in camid.prnu; this module parses options, loads files through the
shared loader, and hands records to the output layer. See docs/prnu.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from camid import __version__
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
from camid.errors import EXIT_FINDING, EXIT_OK, InputError, UsageError
from camid.report.output import Format

app = typer.Typer(
    help="PRNU sensor fingerprints: residuals, fingerprints, matching.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

SigmaOpt = Annotated[
    float | None,
    typer.Option(
        "--sigma",
        help="Wavelet noise std of the residual (default 3; 5 with --compat; match/matrix: "
        "the fingerprint's).",
    ),
]
CompatOpt = Annotated[
    bool,
    typer.Option(
        "--compat",
        help="Reproduce the prnu-python reference residual (sigma 5, PyWavelets padding).",
    ),
]
FingerprintOpt = Annotated[
    list[Path],
    typer.Option("--fingerprint", "-F", help="A .fp.safetensors file (repeat for several)."),
]
ThresholdOpt = Annotated[
    float,
    typer.Option(
        "--threshold",
        help="'match' when PCE is above this (the field's 60: false-alarm ~4e-15 per test); "
        "'inconclusive' from PCE 25 up to it, 'no match' below.",
    ),
]
RotationsOpt = Annotated[
    str,
    typer.Option(
        "--rotations",
        help="Orientations to try: auto (all 8 when sizes differ), all, none.",
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="CPU threads for torch (default: torch's choice; 1 is often faster on a busy "
        "machine).",
    ),
]
SearchShiftOpt = Annotated[
    bool,
    typer.Option(
        "--search-shift",
        help="The photo may be a crop of the full frame: search every offset (slower).",
    ),
]

SearchScaleOpt = Annotated[
    bool,
    typer.Option(
        "--search-scale",
        help="The photo may have been resized: resample the fingerprint to the factor the "
        "photo's size implies, or (other sizes: crops) to 1.0 and 0.5, 0.6, 2/3, 0.7, 0.75, "
        "0.8, 0.9; the best PCE wins and the threshold is raised for the scales tested.",
    ),
]
ScalesOpt = Annotated[
    str | None,
    typer.Option(
        "--scales",
        help="Comma-separated resize factors for --search-scale instead of the default grid "
        "(implies --search-scale), e.g. 0.5,0.8.",
    ),
]

RESIDUAL_COLUMNS = ["path", "width", "height", "residual_std", "output", "sha256"]
MATCH_COLUMNS = [
    "path", "fingerprint", "outcome", "pce", "p_value", "sha256", "rotation", "ncc",
]  # fmt: skip
FINGERPRINT_COLUMNS = [
    "output", "device_name", "camera", "image_count", "width", "height", "failed",
    "fingerprint_sha256",
]  # fmt: skip
MATRIX_COLUMNS = ["path", "device", "fingerprint", "same_device", "outcome", "pce", "ncc"]


def _params(sigma: float | None, compat: bool):
    from camid.prnu.residual import ResidualParams

    params = ResidualParams(sigma=sigma, compat=compat)
    try:
        params.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return params


def _device(spec: str, threads: int | None = None):
    import torch

    from camid.device import resolve_device

    if threads is not None:
        if threads < 1:
            raise UsageError("--threads must be at least 1")
        torch.set_num_threads(threads)
    return resolve_device(spec)


def _load(path: Path):
    """The photo's pixels for PRNU: a RAW file's colour-filter mosaic, else RGB pixels."""
    from camid.io.image import load_sensor_pixels

    return load_sensor_pixels(path)


def _rotations(value: str) -> str:
    from camid.prnu.match import ROTATION_POLICIES

    v = value.strip().lower()
    if v not in ROTATION_POLICIES:
        choices = ", ".join(ROTATION_POLICIES)
        raise UsageError(f"--rotations must be one of {choices}, not {value!r}")
    return v


def _search_scale(search_scale: bool, scales: str | None) -> bool | tuple[float, ...]:
    """The library's search_scale setting from --search-scale / --scales."""
    if scales is None:
        return search_scale
    from camid.prnu.match import check_scales

    try:
        return check_scales([float(v) for v in scales.split(",") if v.strip()])
    except ValueError as exc:
        raise UsageError(f"--scales: {exc}") from exc


def _too_small(path: Path, exc: ValueError) -> InputError:
    return InputError(path, f"cannot compute a PRNU residual ({exc})")


# ----------------------------------------------------------------------------- residual


@app.command()
def residual(
    inputs: InputsArg,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir", "-o", help="Write each residual as NAME.SHA8.residual.safetensors."
        ),
    ] = None,
    sigma: SigmaOpt = None,
    compat: CompatOpt = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    recursive: RecursiveOpt = False,
    ext: ExtOpt = None,
    failed_list: FailedListOpt = None,
    fmt: FormatOpt = Format.auto,
    json_: JsonOpt = False,
    quiet: QuietOpt = 0,
) -> None:
    """Noise residuals of photos (db4 wavelet denoising, grey, CFA zero-mean, DFT Wiener)."""
    from camid.prnu.store import save_residual

    out = output_from(fmt, json_, quiet)
    params = _params(sigma, compat)
    dev = _device(device, threads)
    paths, failed = gather_inputs(out, inputs, recursive, ext)
    for p in out.progress(paths, description="Extracting residuals"):
        try:
            img = _load(p)
            try:
                res = _residual_np(img.pixels, params, dev)
            except ValueError as exc:
                raise _too_small(p, exc) from exc
        except InputError as exc:
            out.error(str(exc))
            failed.append(str(p))
            continue
        target = None
        if output_dir is not None:
            target = output_dir / f"{p.stem}.{img.sha256[:8]}.residual.safetensors"
            save_residual(res, target, source=str(p), source_sha256=img.sha256, params=params)
        out.record(
            {
                "path": str(p),
                "sha256": img.sha256,
                "width": img.width,
                "height": img.height,
                "residual_std": round(float(res.std()), 6),
                "format": img.format,
                "conversion": img.conversion,
                "output": str(target) if target else None,
                "params": params.to_dict(),
                "camid_version": __version__,
            }
        )
    out.finish(columns=None if out.machine else RESIDUAL_COLUMNS, title="PRNU residuals")
    raise typer.Exit(finish_batch(out, failed, failed_list, paths))


def _residual_np(pixels, params, dev):
    from camid.prnu.residual import extract_residual

    return extract_residual(pixels, params, dev)


# ----------------------------------------------------------------------------- fingerprint


@app.command()
def fingerprint(
    inputs: InputsArg,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Fingerprint file (default NAME.fp.safetensors)."),
    ] = None,
    device_name: Annotated[
        str | None,
        typer.Option("--device-name", "-n", help="Name of the camera device (stored in the file)."),
    ] = None,
    camera: Annotated[
        str | None,
        typer.Option(
            "--camera",
            help="Camera model of the device, stored in the file so that a PRNU match can name "
            "the model in `camid identify -F` (default: the images' EXIF Make+Model).",
        ),
    ] = None,
    sigma: SigmaOpt = None,
    compat: CompatOpt = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Images denoised together (GPU: 4-16).")
    ] = 1,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    recursive: RecursiveOpt = False,
    ext: ExtOpt = None,
    failed_list: FailedListOpt = None,
    fmt: FormatOpt = Format.auto,
    json_: JsonOpt = False,
    quiet: QuietOpt = 0,
) -> None:
    """Estimate a device's sensor fingerprint from its photos (flat, bright scenes are best)."""
    from camid.prnu.fingerprint import FingerprintAccumulator
    from camid.prnu.store import SUFFIX, save_fingerprint

    out = output_from(fmt, json_, quiet)
    if output is None and not device_name:
        raise UsageError("give --output FILE or --device-name NAME (or both)")
    if output is None:
        output = Path(f"{device_name}{SUFFIX}")
    if not device_name:
        device_name = output.name.removesuffix(SUFFIX).removesuffix(".safetensors")
    if batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    params = _params(sigma, compat)
    acc = FingerprintAccumulator(params, _device(device, threads))
    paths, failed = gather_inputs(out, inputs, recursive, ext)
    pending: list = []
    used: list[Path] = []

    def flush() -> None:
        if pending:
            acc.add(
                [im.pixels for im in pending],
                [{"name": im.path.name, "sha256": im.sha256} for im in pending],
            )
            pending.clear()

    for p in out.progress(paths, description=f"Fingerprint of {device_name}"):
        try:
            img = _load(p)
            shape = pending[0].pixels.shape if pending else None
            if shape is not None and img.pixels.shape[:2] != shape[:2]:
                raise InputError(
                    p,
                    f"size {img.width}x{img.height} differs from the first image's"
                    f" {shape[1]}x{shape[0]}",
                )
            if shape is not None and img.pixels.ndim != len(shape):
                raise InputError(p, _MIXED)
            try:
                acc.check_shape(img.pixels.shape)
            except ValueError as exc:
                reason = _MIXED if "colour channel" in str(exc) else str(exc)
                raise InputError(p, reason) from exc
            pending.append(img)
            used.append(p)
            if len(pending) >= batch_size:
                try:
                    flush()
                except ValueError as exc:
                    pending.clear()
                    raise _too_small(p, exc) from exc
        except InputError as exc:
            out.error(str(exc))
            failed.append(str(p))
    try:
        flush()
    except ValueError as exc:
        out.error(str(_too_small(paths[-1], exc)))
        failed.append(str(paths[-1]))
    if acc.count == 0:
        out.error("no usable images: no fingerprint written")
        raise typer.Exit(finish_batch(out, failed, failed_list, paths) or 3)
    if acc.count < 10:
        out.warn(f"only {acc.count} image(s): fingerprints from 20+ flat images are far stronger")
    if camera is None:
        camera = _exif_camera_of(used)
        if camera:
            out.info(f"camera model from the images' EXIF: {camera}")
    fp = acc.finish(device_name, (camera or "").strip() or None)
    save_fingerprint(fp, output)
    out.info(f"wrote {output} ({fp.image_count} images, {fp.shape[1]}x{fp.shape[0]})")
    out.emit(
        [
            {
                "output": str(output),
                "device_name": fp.device_name,
                "camera": fp.camera,
                "image_count": fp.image_count,
                "width": fp.shape[1],
                "height": fp.shape[0],
                "fingerprint_sha256": fp.sha256,
                "failed": len(set(failed)),
                "params": params.to_dict(),
                "camid_version": fp.camid_version,
            }
        ],
        columns=None if out.machine else FINGERPRINT_COLUMNS,
        title="PRNU fingerprint",
    )
    raise typer.Exit(finish_batch(out, failed, failed_list, paths))


_MIXED = (
    "a RAW mosaic and developed photos cannot share one fingerprint (make one from each "
    "kind; they match each other)"
)


def _exif_camera_of(paths: list[Path]) -> str | None:
    """The most common EXIF camera of a device's images (None when none has one)."""
    from collections import Counter

    from camid.io.exif import quick_camera

    names = Counter(c for c in (quick_camera(p) for p in paths) if c)
    return names.most_common(1)[0][0] if names else None


# ----------------------------------------------------------------------------- match / matrix


def _load_fingerprints(files: list[Path]):
    from camid.prnu.store import load_fingerprint

    if not files:
        raise UsageError("give at least one --fingerprint FILE")
    fps = [load_fingerprint(f) for f in files]
    labels = [fp.label for fp in fps]
    if len(set(labels)) != len(labels):  # keep rows distinguishable
        for fp, f in zip(fps, files, strict=True):
            fp.device_name = f"{fp.label} ({f.name})"
    return fps


def _fingerprint_set(
    fps, sigma, compat, device, threads, rotations, search_shift, threshold, out, scale=False
):
    """The library's FingerprintSet from CLI options (residual overrides noted on stderr)."""
    from camid.prnu.match import FingerprintSet, query_params

    try:
        params, notes = query_params(fps, sigma, compat)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    for note in notes:
        out.warn(note)
    return FingerprintSet(
        fps,
        _device(device, threads),
        params=params,
        rotations=rotations,
        search_shift=search_shift,
        threshold=threshold,
        search_scale=scale,
    )


def _fp_fields(fp) -> dict:
    return {
        "fingerprint": fp.label,
        "fingerprint_camera": fp.camera,
        "fingerprint_file": str(fp.path) if fp.path else None,
        "fingerprint_sha256": fp.sha256,
    }


@app.command()
def match(
    inputs: InputsArg,
    fingerprints: FingerprintOpt = None,  # type: ignore[assignment]
    threshold: ThresholdOpt = 60.0,
    rotations: RotationsOpt = "auto",
    search_shift: SearchShiftOpt = False,
    search_scale: SearchScaleOpt = False,
    scales: ScalesOpt = None,
    no_match_ok: Annotated[
        bool,
        typer.Option(
            "--no-match-ok",
            help="Exit 0 even when a photo matches none of the fingerprints (default: exit 1).",
        ),
    ] = False,
    sigma: SigmaOpt = None,
    compat: CompatOpt = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    recursive: RecursiveOpt = False,
    ext: ExtOpt = None,
    failed_list: FailedListOpt = None,
    fmt: FormatOpt = Format.auto,
    json_: JsonOpt = False,
    quiet: QuietOpt = 0,
) -> None:
    """Did these photos come from the device of a fingerprint? One row per photo x fingerprint,
    each with an outcome: match (PCE > 60), inconclusive (25 < PCE <= 60) or no match.

    Exit 0 when every photo matched some fingerprint, 1 when at least one photo's best
    outcome is inconclusive or no match (unless --no-match-ok), 3 when some inputs could
    not be read.
    """
    from camid.prnu.match import INCONCLUSIVE_PCE

    out = output_from(fmt, json_, quiet)
    rotations = _rotations(rotations)
    scale = _search_scale(search_scale, scales)
    fps = _load_fingerprints(list(fingerprints or []))
    scorer = _fingerprint_set(
        fps, sigma, compat, device, threads, rotations, search_shift, threshold, out, scale
    )
    paths, failed = gather_inputs(out, inputs, recursive, ext)
    unmatched = inconclusive = 0
    for p in out.progress(paths, description="Matching"):
        try:
            img = _load(p)
            results = scorer.score(img.pixels, p)
        except InputError as exc:
            out.error(str(exc))
            failed.append(str(p))
            continue
        best = {r.outcome for r in results}
        if "match" not in best:
            unmatched += 1
            inconclusive += "inconclusive" in best
        for fp, r in zip(fps, results, strict=True):
            if r.crop_note:
                out.info(f"{p}: {fp.label}: {r.crop_note}")
            rec = {"path": str(p), "sha256": img.sha256, "format": img.format}
            rec.update(r.to_record())
            rec.update(_fp_fields(fp))
            rec["camid_version"] = __version__
            out.record(rec)
    out.finish(columns=None if out.machine else MATCH_COLUMNS, title="PRNU match")
    code = finish_batch(out, failed, failed_list, paths)
    if code == EXIT_OK and unmatched and not no_match_ok:
        low = min(INCONCLUSIVE_PCE, threshold)
        out.info(
            f"{unmatched} photo(s) matched no fingerprint (PCE <= {threshold:g}): "
            f"{inconclusive} inconclusive ({low:g} < PCE <= {threshold:g}), "
            f"{unmatched - inconclusive} no match (PCE <= {low:g})"
            + ("; bounds raised per photo for the scales tested" if scale is not False else "")
        )
        code = EXIT_FINDING
    raise typer.Exit(code)


@app.command()
def matrix(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Photos, folders or '-' (default: the manifest's photos).", show_default=False
        ),
    ] = None,
    fingerprints: FingerprintOpt = None,  # type: ignore[assignment]
    manifest: Annotated[
        Path | None,
        typer.Option("--manifest", help="CSV with path and device columns (ground truth)."),
    ] = None,
    threshold: ThresholdOpt = 60.0,
    fpr: Annotated[float, typer.Option("--fpr", help="Report the TPR at this FPR.")] = 0.01,
    summary_only: Annotated[
        bool, typer.Option("--summary", help="Print only the summary (AUC, EER, top-1) as data.")
    ] = False,
    scores_csv: Annotated[
        Path | None, typer.Option("--scores-csv", help="Also write the PCE matrix to this CSV.")
    ] = None,
    rotations: RotationsOpt = "auto",
    search_shift: SearchShiftOpt = False,
    search_scale: SearchScaleOpt = False,
    scales: ScalesOpt = None,
    sigma: SigmaOpt = None,
    compat: CompatOpt = False,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    recursive: RecursiveOpt = False,
    ext: ExtOpt = None,
    failed_list: FailedListOpt = None,
    fmt: FormatOpt = Format.auto,
    json_: JsonOpt = False,
    quiet: QuietOpt = 0,
) -> None:
    """Fingerprints x photos PCE matrix; with --manifest also AUC, EER, TPR@FPR and top-1."""
    import numpy as np

    from camid.stats.verification import summarize

    out = output_from(fmt, json_, quiet)
    rotations = _rotations(rotations)
    if not 0 < fpr < 1:
        raise UsageError("--fpr must be between 0 and 1")
    scale = _search_scale(search_scale, scales)
    fps = _load_fingerprints(list(fingerprints or []))
    truth: dict[Path, str | None] = {}
    items = list(inputs or [])
    if manifest is not None:
        from camid.data.manifest import read_manifest

        samples = read_manifest(manifest)
        truth = {s.path.resolve(): s.device for s in samples}
        if not items:
            items = [str(s.path) for s in samples]
        if not any(truth.values()):
            out.warn(f"{manifest}: no 'device' values: no ground truth for the statistics")
    if not items:
        raise UsageError("give photos or a --manifest")
    scorer = _fingerprint_set(
        fps, sigma, compat, device, threads, rotations, search_shift, threshold, out, scale
    )
    paths, failed = gather_inputs(out, items, recursive, ext)
    # photos stream through: per photo only its PCEs (and a CSV row) are kept, the records go
    # to the output layer (printed at once with ndjson) and are not kept with --summary
    columns, photo_labels, csv_rows = [], [], []
    for p in out.progress(paths, description="Scoring"):
        try:
            img = _load(p)
            results = scorer.score(img.pixels, p)
        except InputError as exc:
            out.error(str(exc))
            failed.append(str(p))
            continue
        label = truth.get(p.resolve())
        columns.append([r.pce for r in results])
        photo_labels.append(label)
        if scores_csv is not None:
            csv_rows.append((str(p), img.sha256, label, [r.to_record()["pce"] for r in results]))
        if summary_only:
            continue
        for fp, r in zip(fps, results, strict=True):
            out.record(
                {
                    "path": str(p),
                    "sha256": img.sha256,
                    "device": label,
                    "same_device": (label == fp.label) if label is not None else None,
                    **r.to_record(),
                    **_fp_fields(fp),
                    "camid_version": __version__,
                }
            )
    scores = np.asarray(columns, dtype=np.float64).T.reshape(len(fps), len(columns))
    fp_labels = [fp.label for fp in fps]
    summary = summarize(scores, fp_labels, photo_labels, threshold, fpr).to_record()
    summary.update({"fingerprints": len(fps), "photos": len(columns), "camid_version": __version__})
    if scores_csv is not None:
        _write_scores(scores_csv, fp_labels, csv_rows)
    if summary_only and out.fmt == "table":
        out.emit_object(summary, title="PRNU matrix summary")
    elif summary_only:
        out.emit([summary], title="PRNU matrix summary")
    else:
        out.finish(columns=None if out.machine else MATRIX_COLUMNS, title="PRNU matrix")
        out.info(_summary_line(summary))
    raise typer.Exit(finish_batch(out, failed, failed_list, paths))


def _summary_line(s: dict) -> str:
    def f(v, spec=".4f"):
        return "n/a" if v is None else format(v, spec)

    head = f"{s['fingerprints']} fingerprints x {s['photos']} photos; "
    if not s["pairs"]:
        return head + "no ground truth (give --manifest with a 'device' column for AUC/EER)"
    return (
        head
        + f"{s['positives']} same-device / {s['negatives']} different-device pairs with ground "
        f"truth; AUC {f(s['auc'])}, EER {f(s['eer'])}, TPR@FPR={s['fpr_target']:g} "
        f"{f(s['tpr_at_fpr'])}, at PCE>{s['threshold']:g}: TPR {f(s['tpr_at_threshold'])} "
        f"FPR {f(s['fpr_at_threshold'])}; top-1 {f(s['top1'])} over {s['top1_photos']} photos"
    )


def _write_scores(path: Path, fp_labels: list[str], rows: list[tuple]) -> None:
    """The PCE matrix as CSV: one row (path, sha256, device, PCE per fingerprint) per photo."""
    import csv
    import io

    from camid.io.atomic import write_text_atomic
    from camid.report.output import printable, spreadsheet_safe

    def text(value: object) -> str:  # labels and paths come from evidence: plain, inert
        return spreadsheet_safe(printable(str(value)))

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", "sha256", "device", *map(text, fp_labels)])
    for p, sha, label, pces in rows:
        w.writerow([text(p), sha, text(label or ""), *pces])
    write_text_atomic(path, buf.getvalue())


def register(root: typer.Typer) -> None:
    """Add the `prnu` command group to the root app."""
    root.add_typer(
        app, name="prnu", help="PRNU sensor fingerprints: residuals, fingerprints, matching."
    )
