"""`camid lr-check`: train on left halves, test on right halves (seed 000 Table VI)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from camid.cli.common import DeviceOpt, FormatOpt, JsonOpt, QuietOpt, SeedOpt, output_from
from camid.errors import UsageError
from camid.report.output import Format


def register(app: typer.Typer) -> None:
    """Add `lr-check` to the root app."""

    @app.command("lr-check")
    def lr_check(
        dataset: Annotated[
            str,
            typer.Argument(
                help="Manifest .csv (e.g. `camid synth cameras` cameras.csv) or folder.",
                show_default=False,
            ),
        ],
        axis: Annotated[
            str,
            typer.Option(
                "--axis", help="horizontal: left -> right halves; vertical: top -> bottom."
            ),
        ] = "horizontal",
        arch: Annotated[str, typer.Option("--arch", help="Architecture (as `camid train`).")] = (
            "tracenet"
        ),
        epochs: Annotated[int, typer.Option("--epochs", help="Training epochs at most.")] = 20,
        time_budget: Annotated[
            float | None,
            typer.Option("--time-budget", help="Seconds of training; keeps the best epoch."),
        ] = None,
        patch: Annotated[
            int | None, typer.Option("--patch", help="Training crop (default: the arch's).")
        ] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", help="Crops per step.")] = 32,
        prnu: Annotated[
            bool,
            typer.Option(
                "--prnu/--no-prnu",
                help="The PRNU control: fingerprints from the trained-on halves, matched on "
                "both halves of the test photos (needs a device column).",
            ),
        ] = True,
        save_model: Annotated[
            str | None,
            typer.Option(
                "--save-model",
                help="Keep the half-trained model in the registry under this name "
                "(default: discarded).",
            ),
        ] = None,
        out_dir: Annotated[
            Path,
            typer.Option("--out", "-o", help="Folder for lr-check.json and lr-check.png."),
        ] = Path("lr-check"),
        workers: Annotated[
            int, typer.Option("--workers", help="Decoding threads while scoring.")
        ] = 2,
        device: DeviceOpt = "auto",
        seed: SeedOpt = 0,
        fmt: FormatOpt = Format.auto,
        json_: JsonOpt = False,
        quiet: QuietOpt = 0,
    ) -> None:
        """Are the camera traces a model learns tied to sensor positions? Train on the left
        halves of the training photos (same recipe and engine as `camid train`), score the
        right halves of the test photos (and their left halves), with a PRNU control that
        fails on the unseen half by construction.

        High right-half accuracy = traces repeating across the frame (in-camera processing);
        near chance = position-bound traces (sensor pattern). Exit codes: 0 ok, 2 usage."""
        from camid.audit.lrcheck import AXES, bar_plot
        from camid.audit.lrcheck import lr_check as run
        from camid.data.dataset import load_dataset
        from camid.engine.train import TrainConfig
        from camid.io.atomic import write_text_atomic
        from camid.report.output import dumps

        out = output_from(fmt, json_, quiet)
        if axis not in AXES:
            raise UsageError(f"--axis must be horizontal or vertical, not {axis!r}")
        ds = load_dataset(dataset)
        for note in ds.notes:
            out.info(note)
        cfg = TrainConfig(
            name=save_model or "lr-check",
            arch=arch,
            patch=patch,
            epochs=epochs,
            batch_size=batch_size,
            time_budget=time_budget,
            seed=seed,
            device=device,
        )

        def hook(ev: dict) -> None:
            if ev.get("event") == "epoch":
                acc = ev.get("val_accuracy")
                acc_s = f", val acc {acc:.3f}" if isinstance(acc, float) else ""
                out.info(f"epoch {ev.get('epoch')}{acc_s}")
            elif ev.get("event") == "info":
                out.info(str(ev.get("message")))

        res = run(
            ds.samples,
            cfg,
            axis=axis,
            prnu=prnu,
            keep_model=save_model is not None,
            workers=workers,
            progress=hook,
        ).to_dict()
        for note in res["notes"]:
            out.info(note)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = [
            write_text_atomic(out_dir / "lr-check.json", dumps(res) + "\n"),
            bar_plot(res, out_dir / "lr-check.png"),
        ]
        res["files"] = [str(f) for f in files]
        if out.machine:
            out.emit_object(res)
            return
        seen, unseen = res["train_region"], res["test_region"]
        rows = []
        for cam in ["all", *res["classes"]]:
            row = {"camera": cam}
            for method in ("cnn", "prnu"):
                block = res.get(method)
                if not block:
                    continue
                for r in (seen, unseen):
                    d = block[f"test_{r}"]
                    row[f"{method}_{r}"] = (
                        d["accuracy"] if cam == "all" else d["per_camera"].get(cam)
                    )
            rows.append(row)
        out.emit(rows, title=f"lr-check: trained on {seen} halves (chance {res['chance']:.2f})")
        out.info(f"CNN: {res['verdict']}")
        if res.get("prnu"):
            out.info(f"PRNU control: {res['prnu']['verdict']}")
        out.info(f"wrote {', '.join(res['files'])}")
