"""`camid heatmap`: where in a photo (or over a dataset) the camera evidence lies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from camid.cli.common import (
    DeviceOpt,
    ExtOpt,
    FormatOpt,
    InputsArg,
    JsonOpt,
    QuietOpt,
    RecursiveOpt,
    finish_batch,
    gather_inputs,
    output_from,
)
from camid.errors import InputError, UsageError
from camid.report.output import Format

DEFAULT_OUT = Path("heatmaps")


def _stem(path: Path, used: set[str], suffix: str) -> str:
    """A file stem for a photo's outputs, unique within the run."""
    base = f"{path.stem}.{suffix}"
    stem, k = base, 2
    while stem in used:
        stem, k = f"{path.stem}-{k}.{suffix}", k + 1
    used.add(stem)
    return stem


def _round(d: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}


def _prnu_maps(out, paths, failed, fingerprint, out_dir, window, stride, alpha, device):
    """Per-photo PRNU correlation maps and splice masks."""
    import numpy as np

    from camid import __version__
    from camid.device import resolve_device
    from camid.io.image import load_image
    from camid.prnu.localize import splice_map
    from camid.prnu.store import load_fingerprint
    from camid.report.maps import save_map

    fp = load_fingerprint(fingerprint)
    dev = resolve_device(device)
    used: set[str] = set()
    out.info(
        f"fingerprint {fp.label} ({fp.shape[1]}x{fp.shape[0]}, {fp.image_count} images); "
        f"window {window} px, stride {stride} px, false-alarm rate {alpha:g}"
    )
    for path in out.progress(paths, description="PRNU maps"):
        try:
            img = load_image(path)
            try:
                m = splice_map(
                    img.pixels, fp, window=window, stride=stride, alpha=alpha, device=dev
                )
            except ValueError as exc:
                raise InputError(path, str(exc)) from exc
        except InputError as exc:
            out.error(str(exc))
            failed.append(str(path))
            continue
        summary = m.summary()
        top = max(0.01, float(np.quantile(m.expected, 0.99)))
        stem = _stem(path, used, "prnu")
        files = save_map(
            out_dir,
            stem,
            m.correlation,
            m.grid(),
            {
                "kind": "prnu",
                "path": str(path),
                "sha256": img.sha256,
                "fingerprint": str(fingerprint),
                "fingerprint_sha256": fp.sha256,
                "fingerprint_device": fp.label,
                "value": "local normalised correlation of the residual W with I*K",
                "summary": summary,
                "camid_version": __version__,
            },
            photo=img.pixels,
            label="correlation W vs I*K (red: flagged)",
            title=f"{path.name} vs {fp.label}: flagged {summary['flagged_area_fraction']:.1%}",
            vmin=0.0,
            vmax=top,
            contour=m.mask,
            arrays={"expected": m.expected, "mask": m.mask, "p_foreign": m.p_foreign},
        )
        s = _round(summary)
        out.record(
            {
                "path": str(path),
                "kind": "prnu",
                "min": s["min"],
                "max": s["max"],
                "mean": s["mean"],
                "expected_mean": s["expected_mean"],
                "flagged_area_fraction": s["flagged_area_fraction"],
                "reliable_fraction": s["reliable_fraction"],
                "alpha": alpha,
                "grid": {**m.grid().to_dict(), "rows": m.shape[0], "cols": m.shape[1]},
                "files": [str(f) for f in files],
            }
        )


def _load_predictor(model: str, device: str, batch_size: int):
    from camid.device import resolve_device
    from camid.engine.predict import Predictor
    from camid.models.store import load_model

    if batch_size < 1:
        raise UsageError("--batch-size must be positive")
    dev = resolve_device(device)
    net, card = load_model(model, dev)
    return Predictor(net, card, dev, batch_size=batch_size)


def _cnn_maps(out, paths, failed, predictor, out_dir, window, stride, camera, truth):
    """Per-photo CNN maps: probability of a camera, predicted camera, correctness."""
    import numpy as np

    from camid import __version__
    from camid.audit.heatmap import camera_map
    from camid.io.image import load_image
    from camid.report.maps import save_map

    card = predictor.card
    for name in (camera, truth):
        if name is not None and name not in card.classes:
            raise UsageError(
                f"{name!r} is not one of the model's cameras: {', '.join(card.classes)}"
            )
    used: set[str] = set()
    for path in out.progress(paths, description="CNN maps"):
        try:
            img = load_image(path)
        except InputError as exc:
            out.error(str(exc))
            failed.append(str(path))
            continue
        cm = camera_map(predictor, img.pixels, window=window, stride=stride)
        idx = cm.camera_index(camera)
        prob = cm.probability(card.classes[idx])
        predicted = card.classes[int(np.argmax(cm.image_probs))]
        stem = _stem(path, used, "cnn")
        arrays = {"predicted": cm.predicted.astype(np.int16)}
        sidecar = {
            "kind": "cnn",
            "path": str(path),
            "sha256": img.sha256,
            "model": card.name,
            "model_sha256": card.weights_sha256,
            "classes": list(card.classes),
            "camera": card.classes[idx],
            "predicted": predicted,
            "value": f"probability of {card.classes[idx]!r} per window",
            "camid_version": __version__,
        }
        rec = {
            "path": str(path),
            "kind": "cnn",
            "camera": card.classes[idx],
            "predicted": predicted,
            "min": float(prob.min()),
            "max": float(prob.max()),
            "mean": float(prob.mean()),
        }
        if truth is not None:
            ok = cm.correct(truth)
            arrays["correct"] = ok
            sidecar["truth"] = truth
            rec["truth"] = truth
            rec["patch_accuracy"] = float(ok.mean())
        files = save_map(
            out_dir,
            stem,
            prob,
            cm.geometry,
            sidecar,
            photo=img.pixels,
            label=f"P({card.classes[idx]})",
            title=f"{path.name}: {card.name} windows of {cm.geometry.window} px",
            arrays=arrays,
        )
        rec = _round(rec)
        rec["grid"] = {**cm.geometry.to_dict(), "rows": prob.shape[0], "cols": prob.shape[1]}
        rec["files"] = [str(f) for f in files]
        out.record(rec)


def _dataset_map(out, source, failed, predictor, out_dir, window, stride, cells, split, truth):
    """Patch accuracy by position accumulated over a dataset (seed 000 Fig. 8)."""
    import numpy as np

    from camid import __version__
    from camid.audit.heatmap import PositionAccuracy, position_accuracy
    from camid.data.dataset import load_dataset
    from camid.report.maps import GridGeometry, grid_figure, save_map

    ds = load_dataset(source)
    for note in ds.notes:
        out.info(note)
    samples = [s for s in ds.samples if split is None or (s.split or "") == split]
    known = set(predictor.card.classes)
    if truth is not None:  # one camera for every photo (a folder of one camera's photos)
        if truth not in known:
            raise UsageError(f"{truth!r} is not one of the model's cameras")
        for s in samples:
            s.camera = truth
    items = [(s.path, s.camera) for s in samples if s.camera in known]
    if len(items) < len(samples):
        out.warn(
            f"{len(samples) - len(items)} images skipped: no camera value, or a camera the "
            "model does not know"
        )
    if not items:
        raise UsageError(f"{source}: no images with a known camera to score")
    result: PositionAccuracy | None = None
    for item in out.progress(
        position_accuracy(predictor, items, window=window, stride=stride, cells=cells),
        total=len(items) + 1,
        description="Accuracy by position",
    ):
        if isinstance(item, PositionAccuracy):
            result = item
        elif isinstance(item[1], InputError):
            out.error(str(item[1]))
            failed.append(str(item[0]))
    assert result is not None
    summary = result.summary()
    acc = result.accuracy
    px_cell = 64  # the bare PNG: a nominal square frame, 64 px per cell
    geo = GridGeometry(cells * px_cell, cells * px_cell, px_cell, px_cell, (0, 0))
    stem = f"{Path(source).stem or 'dataset'}.position"
    files = save_map(
        out_dir,
        stem,
        acc,
        geo,
        {
            "kind": "dataset",
            "source": str(source),
            "split": split,
            "model": predictor.card.name,
            "model_sha256": predictor.card.weights_sha256,
            "value": "patch accuracy of the views whose centre falls in each cell of a "
            f"{cells}x{cells} grid over the frame (normalised coordinates)",
            "grid_note": f"normalised frame drawn as {px_cell} px per cell (grid.image_*)",
            "window": result.window,
            "stride": result.stride,
            "views_per_cell": result.total.astype(int).tolist(),
            "summary": summary,
            "camid_version": __version__,
        },
        label="patch accuracy",
        vmin=0.0,
        vmax=1.0,
        arrays={"views": result.total.astype(np.int64)},
    )
    files.append(
        grid_figure(
            acc,
            Path(out_dir) / f"{stem}.figure.png",
            label="patch accuracy",
            title=f"{predictor.card.name}: patch accuracy by position ({result.images} photos)",
        )
    )
    s = _round({k: v for k, v in summary.items() if k != "per_camera"})
    out.emit_object(
        {
            **s,
            "per_camera": summary["per_camera"],
            "accuracy_grid": [
                [None if np.isnan(v) else round(float(v), 4) for v in r] for r in acc
            ],
            "files": [str(f) for f in files],
        },
        title="patch accuracy by position",
    )


def register(app: typer.Typer) -> None:
    """Add `heatmap` to the root app."""

    @app.command()
    def heatmap(
        inputs: InputsArg,
        model: Annotated[
            str | None,
            typer.Option("--model", "-m", help="Registry name or .safetensors file: CNN maps."),
        ] = None,
        fingerprint: Annotated[
            Path | None,
            typer.Option(
                "--fingerprint",
                "-F",
                help="PRNU fingerprint file (`camid prnu fingerprint`): a splice map (local "
                "correlation, expected correlation, mask at --alpha).",
            ),
        ] = None,
        camera: Annotated[
            str | None,
            typer.Option("--camera", help="Map this camera's probability (default: predicted)."),
        ] = None,
        truth: Annotated[
            str | None,
            typer.Option(
                "--truth",
                help="The photos' true camera: also map correctness (dataset mode: overrides "
                "the manifest / EXIF camera of every photo).",
            ),
        ] = None,
        window: Annotated[
            int | None,
            typer.Option(
                "--window", help="Window in px (default: the model's view size; PRNU 128)."
            ),
        ] = None,
        stride: Annotated[
            int | None,
            typer.Option(
                "--stride",
                help="Step in px (default: the window for CNN maps, a multiple of 8; PRNU 16).",
            ),
        ] = None,
        alpha: Annotated[
            float,
            typer.Option(
                "--alpha", help="PRNU mask false-alarm rate per window (genuine flagged)."
            ),
        ] = 0.01,
        cells: Annotated[
            int, typer.Option("--cells", help="Dataset mode: cells per side of the frame grid.")
        ] = 8,
        split: Annotated[
            str | None,
            typer.Option("--split", help="Dataset mode: only rows of this split (e.g. test)."),
        ] = None,
        per_image: Annotated[
            bool,
            typer.Option(
                "--per-image",
                help="Treat a folder as photos (one map each) instead of a dataset.",
            ),
        ] = False,
        out_dir: Annotated[
            Path,
            typer.Option("--out", "-o", help="Folder for the .npy/.json/.png files."),
        ] = DEFAULT_OUT,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Views per pass.")] = 256,
        recursive: RecursiveOpt = False,
        ext: ExtOpt = None,
        device: DeviceOpt = "auto",
        fmt: FormatOpt = Format.auto,
        json_: JsonOpt = False,
        quiet: QuietOpt = 0,
    ) -> None:
        """Maps of where the camera evidence lies: per photo with a model (probability of a
        camera per window) or a PRNU fingerprint (splice map); per dataset (a .csv
        manifest or a folder) the patch accuracy by position over all photos.

        Writes <stem>.npy (raw grid), <stem>.json (geometry), <stem>.png (bare map) and
        <stem>.overlay.png into --out. Exit codes: 0 ok, 2 usage, 3 unreadable inputs."""
        out = output_from(fmt, json_, quiet)
        if (model is None) == (fingerprint is None):
            raise UsageError("give either --model (CNN maps) or --fingerprint (PRNU map)")
        dataset = (
            model is not None
            and len(inputs) == 1
            and (inputs[0].lower().endswith(".csv") or (Path(inputs[0]).is_dir() and not per_image))
        )
        failed: list[str] = []
        if dataset:
            predictor = _load_predictor(model, device, batch_size)
            _dataset_map(
                out, inputs[0], failed, predictor, out_dir, window, stride, cells, split, truth
            )
            raise typer.Exit(finish_batch(out, failed))
        paths, failed = gather_inputs(out, inputs, recursive or per_image, ext)
        if fingerprint is not None:
            if not 0 < alpha < 0.5:
                raise UsageError("--alpha must be between 0 and 0.5")
            _prnu_maps(
                out, paths, failed, fingerprint, out_dir, window or 128, stride or 16, alpha, device
            )
        else:
            predictor = _load_predictor(model, device, batch_size)
            _cnn_maps(out, paths, failed, predictor, out_dir, window, stride, camera, truth)
        out.finish(
            columns=None
            if out.machine
            else [
                "path",
                "kind",
                "camera",
                "predicted",
                "min",
                "max",
                "mean",
                "flagged_area_fraction",
            ],
            title="heatmaps",
        )
        raise typer.Exit(finish_batch(out, failed, None, paths))
