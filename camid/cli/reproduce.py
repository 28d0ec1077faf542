"""`camid reproduce`: seed 000's Tables I-VI (camera bias) in one command, on synthetic data
built on the fly or on the user's dataset; one Markdown + HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from camid.cli.common import DeviceOpt, FormatOpt, JsonOpt, QuietOpt, SeedOpt, output_from
from camid.report.output import Format

DEFAULT_BUDGET_MINUTES = 20.0  # kept equal to camid.audit.reproduce's (no torch import here)


def register(app: typer.Typer) -> None:
    """Add `reproduce` to the root app."""

    @app.command()
    def reproduce(
        dataset: Annotated[
            str | None,
            typer.Argument(
                help="Manifest CSV or folder with label and camera values (default: the "
                "synthetic bottle benchmark and camera set, built in OUT/data)."
            ),
        ] = None,
        out_dir: Annotated[
            Path,
            typer.Option("--out", "-o", help="Folder for report.md, report.html and figures."),
        ] = Path("reproduce"),
        budget: Annotated[
            float,
            typer.Option(
                "--budget", help="Minutes of training in all, split evenly over the 9 trainings."
            ),
        ] = DEFAULT_BUDGET_MINUTES,
        arch: Annotated[
            str, typer.Option(help="Architecture of the camera models (`camid models archs`).")
        ] = "tracenet",
        bottle_size: Annotated[
            str | None,
            typer.Option(
                "--bottle-size",
                help="Synthetic bottle photos, WxH or N (default 256x256).",
                show_default=False,
            ),
        ] = None,
        camera_size: Annotated[
            str | None,
            typer.Option(
                "--camera-size",
                help="Synthetic camera-set photos, WxH or N (default 256x192).",
                show_default=False,
            ),
        ] = None,
        bottles_per_device: Annotated[
            int,
            typer.Option("--bottles-per-device", help="Synthetic bottles per device and label."),
        ] = 8,
        cameras_per_device: Annotated[
            int,
            typer.Option("--cameras-per-device", help="Synthetic camera-set photos per device."),
        ] = 12,
        device: DeviceOpt = "auto",
        seed: SeedOpt = 0,
        fmt: FormatOpt = Format.auto,
        json_: JsonOpt = False,
        quiet: QuietOpt = 0,
    ) -> None:
        """Reproduce seed 000 (camera bias): camera ID (Table I), Balanced / Partial /
        Disjoint (Table II), binary / colour / grey / 32 px probes (Tables III-V), an
        adversarial attack (Fig. 5), accuracy by position (Fig. 8) and left-to-right
        transfer (Table VI). Writes the paper's figures beside camid's, and whether each
        finding reproduced, to OUT/report.md and OUT/report.html. See docs/reproduce.md."""
        from camid.audit.reproduce import run_reproduce
        from camid.cli.synth import parse_size

        out = output_from(fmt, json_, quiet)
        sizes = {
            "bottle_size": parse_size(bottle_size, (256, 256)),
            "camera_size": parse_size(camera_size, (256, 192)),
        }

        def hook(ev: dict[str, Any]) -> None:
            if ev.get("event") == "step":
                out.info(f"{ev['step']} ...")
            elif ev.get("event") == "probe":
                out.info(f"  probe {ev['probe']} [{ev['index']}/{ev['total']}]")

        report = run_reproduce(
            out_dir, dataset=dataset, budget_minutes=budget, device=device, seed=seed,
            arch=arch, bottles_per_device=bottles_per_device,
            cameras_per_device=cameras_per_device, progress=hook, **sizes,
        )  # fmt: skip
        for note in report.notes:
            out.info(note)
        if out.machine:
            out.emit_object(report.to_dict())
        else:
            out.emit(report.table(), title=f"{report.reproduced} of {len(report.rows)} "
                     "findings reproduced")  # fmt: skip
        out.info(f"wrote {', '.join(report.files)}")
