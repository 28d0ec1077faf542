"""`camid synth`: write synthetic benchmark datasets shot by simulated cameras."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from camid.cli.common import FormatOpt, JsonOpt, QuietOpt, SeedOpt, output_from, replace_hint
from camid.errors import UsageError
from camid.report.output import Format, Output

app = typer.Typer(
    help="Synthetic camera benchmark: simulated camera models and devices with known "
    "ground truth (bottle batch codes, camera identification).",
    no_args_is_help=True,
)

SpecOpt = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        help="Camera spec file (.toml or .json); default: built-in A..E.",
        show_default=False,
    ),
]
SizeOpt = Annotated[
    str | None,
    typer.Option(
        "--size",
        help="Image size WxH (e.g. 384x288, 4000x3000) or one number for square images.",
        show_default=False,
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", help="Rendering processes (default: up to 2).", show_default=False),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing manifests.")]


def parse_size(text: str | None, default: tuple[int, int]) -> tuple[int, int]:
    """'WxH' or 'N' -> (width, height); raise UsageError on anything else."""
    if text is None:
        return default
    parts = text.lower().replace(" ", "").split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) < 32 or max(nums) > 12000:
        raise UsageError(f"--size {text!r}: expected WxH or N, 32..12000 pixels per side")
    return nums[0], nums[1]


def _spec(path: Path | None):
    from camid.synth.spec import default_spec, load_spec

    return load_spec(path) if path is not None else default_spec()


def _progress(out: Output, description: str):
    def wrap(it: Iterable, total: int) -> Iterable:
        return out.progress(it, total=total, description=description)

    return wrap


def _summary_rows(manifests: dict[str, Path]) -> list[dict]:
    from camid.data.manifest import read_manifest

    rows = []
    for name, path in manifests.items():
        samples = read_manifest(path)
        rows.append(
            {
                "manifest": str(path),
                "setting": name,
                "images": len(samples),
                "train": sum(s.split == "train" for s in samples),
                "test": sum(s.split == "test" for s in samples),
                "cameras": len({s.camera for s in samples}),
                "devices": len({s.device for s in samples}),
                "labels": len({s.label for s in samples}),
            }
        )
    return rows


@app.command()
def bottles(
    out_dir: Annotated[Path, typer.Argument(help="Output folder (created if missing).")],
    per_device: Annotated[
        int, typer.Option("--per-device", help="Images per device and label.")
    ] = 20,
    size: SizeOpt = None,
    seed: SeedOpt = 0,
    spec: SpecOpt = None,
    test_fraction: Annotated[
        float, typer.Option("--test-fraction", help="Test share of each camera x label cell.")
    ] = 0.1,
    workers: WorkersOpt = None,
    force: ForceOpt = False,
    fmt: FormatOpt = Format.auto,
    json_: JsonOpt = False,
    quiet: QuietOpt = 0,
) -> None:
    """The bottle batch-code task with Balanced / Partial / Disjoint manifests.

    Two printers (labels maker1, maker2) differ only in dot geometry. All three manifests
    share one camera- and label-balanced test split.
    """
    from camid.synth.datasets import DEFAULT_BOTTLE_SIZE, make_bottles_dataset

    out = output_from(fmt, json_, quiet)
    wh = parse_size(size, DEFAULT_BOTTLE_SIZE)
    t0 = time.perf_counter()
    with replace_hint("--force"):
        manifests = make_bottles_dataset(
            out_dir,
            spec=_spec(spec),
            per_device=per_device,
            size=wh,
            seed=seed,
            test_fraction=test_fraction,
            workers=workers,
            overwrite=force,
            progress=_progress(out, "bottles"),
        )
    rows = _summary_rows(manifests)
    out.info(f"wrote {rows[0]['images']} images to {out_dir} in {time.perf_counter() - t0:.1f} s")
    out.emit(
        rows,
        columns=["setting", "manifest", "images", "train", "test", "cameras", "devices", "labels"],
        title="camid synth bottles",
    )


@app.command()
def cameras(
    out_dir: Annotated[Path, typer.Argument(help="Output folder (created if missing).")],
    per_device: Annotated[
        int, typer.Option("--per-device", help="Natural images per device.")
    ] = 24,
    flat: Annotated[
        int, typer.Option("--flat", help="Flat-field frames per device (PRNU references).")
    ] = 6,
    size: SizeOpt = None,
    seed: SeedOpt = 0,
    spec: SpecOpt = None,
    test_fraction: Annotated[
        float, typer.Option("--test-fraction", help="Test share of each device's images.")
    ] = 0.25,
    workers: WorkersOpt = None,
    force: ForceOpt = False,
    file_format: Annotated[
        str,
        typer.Option(
            "--file-format",
            help="File type of the natural images: jpeg, heic (HEVC, as phones write) or dng "
            "(raw mosaic with the camera JPEG as preview).",
        ),
    ] = "jpeg",
    flat_format: Annotated[
        str | None,
        typer.Option(
            "--flat-format",
            help="File type of the flat fields (default: --file-format's).",
            show_default=False,
        ),
    ] = None,
    fmt: FormatOpt = Format.auto,
    json_: JsonOpt = False,
    quiet: QuietOpt = 0,
) -> None:
    """A camera-identification set: natural images (cameras.csv) and flat fields
    (flatfield.csv) from every device of every camera model."""
    from camid.synth.datasets import DEFAULT_CAMERA_SIZE, make_camera_dataset

    out = output_from(fmt, json_, quiet)
    wh = parse_size(size, DEFAULT_CAMERA_SIZE)
    t0 = time.perf_counter()
    with replace_hint("--force"):
        manifest = make_camera_dataset(
            out_dir,
            spec=_spec(spec),
            per_device=per_device,
            flat_per_device=flat,
            size=wh,
            seed=seed,
            test_fraction=test_fraction,
            workers=workers,
            overwrite=force,
            progress=_progress(out, "cameras"),
            file_format=file_format.strip().lower(),
            flat_format=flat_format.strip().lower() if flat_format else None,
        )
    rows = _summary_rows({"cameras": manifest, "flatfield": manifest.parent / "flatfield.csv"})
    n = sum(r["images"] for r in rows)
    out.info(f"wrote {n} images to {out_dir} in {time.perf_counter() - t0:.1f} s")
    out.emit(
        rows,
        columns=["setting", "manifest", "images", "train", "test", "cameras", "devices", "labels"],
        title="camid synth cameras",
    )


@app.command()
def preview(
    out_png: Annotated[Path, typer.Argument(help="PNG file to write.")],
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="cameras (one row per model), bottles (one row per "
            "printer) or stages (one scene through the pipeline).",
        ),
    ] = "cameras",
    size: SizeOpt = None,
    seed: SeedOpt = 0,
    spec: SpecOpt = None,
    quiet: QuietOpt = 0,
) -> None:
    """A PNG contact sheet: the camera models, the two printers, or the pipeline stages."""
    from camid.synth.preview import write_preview

    if kind not in ("cameras", "bottles", "stages"):
        raise UsageError(f"--kind {kind!r}: expected cameras, bottles or stages")
    out = output_from(Format.table, False, quiet)
    wh = parse_size(size, (384, 384) if kind == "bottles" else (256, 192))
    path = write_preview(out_png, kind, spec=_spec(spec), seed=seed, size=wh)
    out.info(f"wrote {path}")


@app.command("spec")
def spec_cmd(
    spec: SpecOpt = None,
) -> None:
    """Print a camera spec as TOML (the built-in one, or --spec after validation)."""
    from camid.synth.spec import spec_to_toml

    typer.echo(spec_to_toml(_spec(spec)), nl=False)


def register(root: typer.Typer) -> None:
    """Add the `synth` command group to the root app."""
    root.add_typer(app, name="synth", help="Synthetic camera benchmark datasets.")
