"""`camid demo`: the main job on the built-in synthetic benchmark, as a guided tour.

It runs the same commands a user would type — each shown as `$ camid ...` on stderr with
its normal output — and ends with one summary of the figures on stdout.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from camid.cli.common import DeviceOpt, FormatOpt, JsonOpt, QuietOpt, SeedOpt, output_from
from camid.data.manifest import read_manifest, write_manifest
from camid.errors import EXIT_INTERNAL, CamidError
from camid.report.output import Format, Output


class DemoStepError(CamidError):
    """A step of the demo failed; the message names the command."""

    exit_code = EXIT_INTERNAL


def _run(out: Output, args: list[str], capture: bool = False, shown: str | None = None) -> str:
    """Run one camid command, echoing it (or `shown`); return its stdout when `capture`."""
    from camid.cli import main

    out.info(f"\n$ camid {shown or shlex.join(args)}")
    buf = io.StringIO()
    target = buf if capture else sys.stderr
    with contextlib.redirect_stdout(target):
        rc = main(args)
    if rc not in (0, 1):
        raise DemoStepError(f"step failed with exit code {rc}: camid {shlex.join(args)}")
    return buf.getvalue()


def run_demo(
    out: Output,
    work: Path,
    *,
    seed: int,
    train_seconds: float,
    device: str,
    held_out: str,
    per_device: int | None = None,
    size: str | None = None,
    bottle_per_device: int = 8,
) -> list[dict]:
    """The tour: synth -> PRNU fingerprints -> matrix -> train -> evaluate -> identify ->
    heatmap -> lr-check -> bias-check on the bottle benchmark."""
    t0 = time.monotonic()
    summary: list[dict] = []
    work.mkdir(parents=True, exist_ok=True)
    cams_dir = work / "cameras"
    q = ["-q"] if out.quiet else []

    out.info("camid demo: a synthetic camera benchmark with known cameras and devices")
    synth_args = ["synth", "cameras", str(cams_dir), "--seed", str(seed), "--force"]
    if per_device is not None:
        synth_args += ["--per-device", str(per_device)]
    if size is not None:
        synth_args += ["--size", size]
    _run(out, [*synth_args, "-f", "table", *q])
    natural = read_manifest(cams_dir / "cameras.csv")
    flats = read_manifest(cams_dir / "flatfield.csv")
    devices = sorted({s.device for s in flats if s.device})
    cameras = sorted({s.camera for s in natural if s.camera})
    summary.append({
        "step": "synth", "result": f"{len(natural)} photos + {len(flats)} flat fields",
        "detail": f"{len(cameras)} camera models, {len(devices)} devices",
    })  # fmt: skip

    # 1. PRNU: one fingerprint per device from its flat fields, then photos x fingerprints
    fp_dir = work / "fingerprints"
    fp_args: list[str] = []
    for dev in devices:
        files = [str(s.path) for s in flats if s.device == dev]
        fp = fp_dir / f"{dev}.fp.safetensors"
        shown = f"prnu fingerprint {cams_dir}/flat/{dev}_flat_*.jpg -o {fp} --device-name {dev}"
        _run(out, ["prnu", "fingerprint", *files, "-o", str(fp), "--device-name", dev,
                   "--device", device, "--json", "-qq"], capture=True, shown=shown)  # fmt: skip
        fp_args += ["-F", str(fp)]
    n_flats = min((sum(s.device == d for s in flats) for d in devices), default=0)
    if n_flats < 10:
        out.warn(
            f"each fingerprint is made from {n_flats} flat frames (the synthetic default); "
            "real fingerprints from 20+ flat frames are far stronger"
        )
    text = _run(out, ["prnu", "matrix", *fp_args, "--manifest", str(cams_dir / "cameras.csv"),
                      "--summary", "--json", "--device", device], capture=True)  # fmt: skip
    prnu = json.loads(text)[0]
    line = (f"AUC {prnu['auc']:.3f}, EER {prnu['eer']:.3f}, top-1 {prnu['top1']:.3f} "
            f"({prnu['photos']} photos x {prnu['fingerprints']} fingerprints)")  # fmt: skip
    out.info(f"PRNU: {line}")
    summary.append(
        {
            "step": "prnu matrix",
            "result": line,
            "detail": "device-level: tells apart two devices of the same model",
        }
    )

    # 2. CNN camera-model identification, trained without one camera (open-set check)
    known = [s for s in natural if s.camera != held_out]
    if len(known) == len(natural):
        raise DemoStepError(f"held-out camera {held_out!r} is not in the synthetic set")
    known_csv = work / "known_cameras.csv"
    write_manifest(known, known_csv)
    name = f"demo-cams-{seed}"
    _run(
        out,
        [
            "train",
            str(known_csv),
            "--name",
            name,
            "--time-budget",
            str(train_seconds),
            "--seed",
            str(seed),
            "--device",
            device,
            "--overwrite",
            "-f",
            "table",
            *q,
        ],
    )
    text = _run(out, ["evaluate", name, str(known_csv), "--device", device, "--json",
                      "--plot", str(work / "confusion.png")], capture=True)  # fmt: skip
    report = json.loads(text)
    conds = {c["condition"]: c for c in report["conditions"]}
    clean = conds.get("unaltered") or next(iter(conds.values()))
    line = f"accuracy {clean['accuracy']:.3f} on {clean['n']} held-out photos"
    extra = ", ".join(  # altered copies: what identify would say (a wrong camera is worse)
        f"{k} {_share(v.get('identified'))} identified, {_share(v.get('wrong_rate'))} wrong"
        for k, v in conds.items()
        if v is not clean
    )
    out.info(f"Camera-model ID: {line}" + (f" (manipulated: {extra})" if extra else ""))
    summary.append(
        {
            "step": "evaluate",
            "result": line,
            "detail": f"manipulated copies: {extra}" if extra else "",
        }
    )

    # 3. identify: photos of the held-out camera should come out "unknown"
    test_rows = [s for s in natural if s.split == "test"]
    unseen = [str(s.path) for s in test_rows if s.camera == held_out]
    seen = [str(s.path) for s in test_rows if s.camera != held_out][::6]
    shown = (
        f"identify <{len(seen)} test photos of known cameras> <{len(unseen)} photos of "
        f"{held_out}> --model {name} {' '.join(fp_args[:4])}"
    )
    text = _run(out, ["identify", *seen, *unseen, "--model", name, "--device", device,
                      "--json", *fp_args[:4]], capture=True, shown=shown)  # fmt: skip
    results = json.loads(text)
    unseen_set = set(unseen)
    n_unknown = sum(r["decision"] == "unknown" for r in results if r["path"] in unseen_set)
    n_known_ok = sum(
        r["decision"] != "unknown" and r["camera"] == r["exif_camera"]
        for r in results if r["path"] not in unseen_set
    )  # fmt: skip
    line = (
        f"{n_known_ok}/{len(seen)} known-camera photos right, "
        f"{n_unknown}/{len(unseen)} photos of the unseen {held_out} called unknown"
    )
    out.info(f"identify: {line}")
    summary.append(
        {
            "step": "identify",
            "result": line,
            "detail": "EXIF cross-check and PRNU evidence in each record",
        }
    )

    # 4. where the evidence lies: a CNN map of one test photo, the left -> right check
    photo = next(iter(seen), None)
    maps_dir = work / "heatmaps"
    if photo is not None:
        text = _run(out, ["heatmap", photo, "--model", name, "-o", str(maps_dir), "--device",
                          device, "--json"], capture=True)  # fmt: skip
        hm = json.loads(text)[0]
        summary.append(
            {
                "step": "heatmap",
                "result": f"{Path(photo).name}: probability of {hm.get('camera')} per window, "
                f"mean {hm.get('mean', 0):.2f}",
                "detail": f"maps in {maps_dir}",
            }
        )
    lr_dir = work / "lr-check"
    text = _run(out, ["lr-check", str(cams_dir / "cameras.csv"), "--time-budget",
                      str(max(10.0, train_seconds / 3)), "-o", str(lr_dir), "--device", device,
                      "--seed", str(seed), "--json"], capture=True)  # fmt: skip
    lr = json.loads(text)
    lr_line = (
        f"CNN trained on left halves: right halves {_pct(lr, 'right')} vs left {_pct(lr, 'left')}"
        f" (chance {lr['chance']:.2f})"
    )
    prnu_lr = lr.get("prnu") or {}
    if prnu_lr.get("test_right"):
        lr_line += (
            f"; PRNU from left halves matches right halves "
            f"{prnu_lr['test_right'].get('own_device_match_rate', 0):.2f} of the time"
        )
    summary.append({"step": "lr-check", "result": lr_line, "detail": f"plot in {lr_dir}"})

    # 5. the flagship: camera/label leakage in the bottle benchmark (seed 000)
    bottles = work / "bottles"
    _run(out, ["synth", "bottles", str(bottles), "--seed", str(seed), "--per-device",
               str(bottle_per_device), "--force", "-f", "table", *q])  # fmt: skip
    verdicts = []
    for setting in ("disjoint", "balanced"):
        html = work / f"bias-check-{setting}.html"
        text = _run(out, ["bias-check", str(bottles / f"{setting}.csv"), "--quick", "--html",
                          str(html), "--json"], capture=True)  # fmt: skip
        rep = json.loads(text)
        verdicts.append(f"{setting}: {rep['verdict']} ({rep['status']})")
    summary.append(
        {
            "step": "bias-check",
            "result": "; ".join(verdicts),
            "detail": f"reports: {work}/bias-check-disjoint.html, bias-check-balanced.html",
        }
    )
    summary.append(
        {
            "step": "total",
            "result": f"{time.monotonic() - t0:.0f} s",
            "detail": f"outputs in {work}: fingerprints/, confusion.png, heatmaps/, lr-check/, "
            "bias-check-*.html",
        }
    )
    return summary


def _share(value: float | None) -> str:
    """A share as 0.00 (n/a when missing)."""
    return "n/a" if value is None else f"{value:.2f}"


def _pct(lr: dict, half: str) -> str:
    """Accuracy of the CNN on one half of the test photos, as text."""
    acc = (lr.get("cnn") or {}).get(f"test_{half}", {}).get("accuracy")
    return "n/a" if acc is None else f"{acc:.2f}"


def register(app: typer.Typer) -> None:
    """Add `demo` to the root app."""

    @app.command()
    def demo(
        work: Annotated[
            Path, typer.Argument(help="Working folder for the generated data and results.")
        ] = Path("camid-demo"),
        train_seconds: Annotated[
            float, typer.Option(help="Training time budget in seconds.")
        ] = 90.0,
        held_out: Annotated[
            str,
            typer.Option(help="Synthetic camera left out of training (open-set check)."),
        ] = "Veyra V27 Pro",
        per_device: Annotated[
            int | None, typer.Option(help="Synthetic photos per device (default: synth's).")
        ] = None,
        size: Annotated[
            str | None, typer.Option(help="Synthetic image size WxH (default: synth's).")
        ] = None,
        bottles_per_device: Annotated[
            int,
            typer.Option(help="Bottle photos per device and label for the bias-check step."),
        ] = 8,
        seed: SeedOpt = 0,
        device: DeviceOpt = "auto",
        fmt: FormatOpt = Format.auto,
        json_: JsonOpt = False,
        quiet: QuietOpt = 0,
    ) -> None:
        """Run camid end to end on the built-in synthetic camera benchmark (a few minutes
        on a CPU): synthetic photos, PRNU fingerprints and PCE matrix, a camera-ID model,
        evaluation, and identification with an unseen camera."""
        out = output_from(fmt, json_, quiet)
        rows = run_demo(out, work, seed=seed, train_seconds=train_seconds, device=device,
                        held_out=held_out, per_device=per_device, size=size,
                        bottle_per_device=bottles_per_device)  # fmt: skip
        out.emit(rows, columns=["step", "result", "detail"], title="camid demo")
