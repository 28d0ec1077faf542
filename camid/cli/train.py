"""`camid train`: train a camera (or label) classifier and store it in the model registry."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from camid.cli.common import (
    DeviceOpt,
    FailedListOpt,
    FormatOpt,
    JsonOpt,
    QuietOpt,
    SeedOpt,
    output_from,
    replace_hint,
)
from camid.data.patches import REGIONS
from camid.errors import EXIT_INPUT
from camid.io.atomic import write_text_atomic
from camid.report.output import Format, Output


class _Live:
    """Renders training events on stderr: a rich bar per epoch plus one line per epoch."""

    def __init__(self, out: Output) -> None:
        self.out = out
        self.bar = out.progress_bar() if out.show_progress else None
        self.task = None
        self.last_line = 0.0
        self.unreadable: list[str] = []

    def __call__(self, ev: dict[str, Any]) -> None:
        kind = ev["event"]
        if kind == "info":
            self.out.info(ev["message"])
        elif kind == "warning":
            self.out.warn(ev["message"])
        elif kind == "unreadable":
            self.unreadable.append(ev["path"])
            self.out.error(ev["message"])
        elif kind == "start":
            self.out.info(
                f"training on {ev['train_images']} images ({len(ev['classes'])} classes), "
                f"validating on {ev['val_images']}; device {ev['device']}"
                + (f" x {ev['world_size']} processes" if ev["world_size"] > 1 else "")
            )
            if self.bar is not None:
                self.bar.start()
        elif kind == "batch":
            of = f"/{ev['epochs']}" if ev["epochs"] else ""
            desc = (
                f"epoch {ev['epoch']}{of} loss {ev['loss']:.3f} "
                f"acc {ev['accuracy']:.3f} {ev['images_per_s']:.1f} img/s "
                f"({ev['patches_per_s']:.0f} crops/s) ETA {ev['eta_s']:.0f}s"
            )
            if self.bar is not None:
                if self.task is None:
                    self.task = self.bar.add_task(desc, total=ev["steps"])
                self.bar.update(
                    self.task, completed=ev["step"], total=ev["steps"], description=desc
                )
            elif time.monotonic() - self.last_line > 30:
                self.last_line = time.monotonic()
                self.out.info(f"  step {ev['step']}/{ev['steps']} {desc}")
        elif kind == "epoch":
            if self.bar is not None and self.task is not None:
                self.bar.remove_task(self.task)
                self.task = None
            val = (
                f" | val loss {ev['val_loss']:.3f} patch acc {ev['val_patch_accuracy']:.3f} "
                f"image acc {ev['val_accuracy']:.3f}"
                if "val_loss" in ev
                else ""
            )
            self.out.info(
                f"epoch {ev['epoch']}: loss {ev['train_loss']:.3f} acc "
                f"{ev['train_accuracy']:.3f}{val} | lr {ev['lr']:.2g} | "
                f"{ev['seconds']:.0f}s, {ev['train_patches_per_s']:.0f} crops/s | best epoch "
                f"{ev['best_epoch']}"
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def register(app: typer.Typer) -> None:
    """Add `train` to the root app."""

    @app.command()
    def train(
        dataset: Annotated[
            str,
            typer.Argument(
                help="Manifest CSV (path,label,camera,device,split) or folder root/<label>/...; "
                "rows with split=test are never used for training."
            ),
        ],
        name: Annotated[str, typer.Option("--name", "-n", help="Registry name of the model.")],
        recipe: Annotated[
            str | None,
            typer.Option(
                help="A named recipe (cpu-default, cpu-robust, seed002-gpu; see "
                "docs/identify.md): fills every setting not given explicitly."
            ),
        ] = None,
        arch: Annotated[
            str,
            typer.Option(
                help="Architecture (`camid models archs`): tracenet (default: pixel and "
                "JPEG traces) or patchnet_phase on CPU, densenet161 etc. on a GPU."
            ),
        ] = "tracenet",
        target: Annotated[str, typer.Option(help="Column to learn: camera or label.")] = "camera",
        patch: Annotated[
            int | None,
            typer.Option(
                help="Training crop size in pixels (default: the architecture's input size, "
                "64 for patch nets, 480 for densenet161)."
            ),
        ] = None,
        patches_per_image: Annotated[
            int | None,
            typer.Option(
                help="Crops drawn per image per epoch (default 16 patch nets, 1 big nets)."
            ),
        ] = None,
        epochs: Annotated[
            int | None,
            typer.Option(
                help="Maximum epochs (default 20; with --time-budget alone: until the budget "
                "runs out or validation stops improving, see --patience)."
            ),
        ] = None,
        batch_size: Annotated[int, typer.Option(help="Crops per step per process.")] = 32,
        lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
        time_budget: Annotated[
            float | None,
            typer.Option(help="Stop after about this many seconds of training (best model kept)."),
        ] = None,
        patience: Annotated[
            int | None,
            typer.Option(
                help="Stop after this many epochs without a better validation score "
                "(default 8 with --time-budget and no --epochs, else off; 0: off)."
            ),
        ] = None,
        d4: Annotated[
            bool,
            typer.Option(
                "--d4/--no-d4",
                help="Random rotations by 90 degrees and flips (off: they change the colour-filter "
                "layout, a cue between camera models).",
            ),
        ] = False,
        manipulate: Annotated[
            bool,
            typer.Option(
                "--manipulate/--no-manipulate",
                help="With p=0.5: JPEG 70-90, gamma 0.8-1.2 or resize x0.5/0.8/1.5/2.0.",
            ),
        ] = True,
        augment: Annotated[
            str,
            typer.Option(
                help="Training manipulations: seed002 (one of the above) or robust (chains of "
                "re-saves incl. double JPEG 60-95, continuous resizes x0.5-1.6, gamma)."
            ),
        ] = "seed002",
        balanced: Annotated[
            bool, typer.Option("--balanced/--no-balanced", help="Class-balanced sampling.")
        ] = True,
        val_fraction: Annotated[
            float,
            typer.Option(help="Share of each class's images held out for validation (by image)."),
        ] = 0.15,
        region: Annotated[
            str, typer.Option(help=f"Part of the frame crops come from: {', '.join(REGIONS)}.")
        ] = "full",
        pretrained: Annotated[
            bool,
            typer.Option(
                "--pretrained/--no-pretrained",
                help="ImageNet initialisation from the local torchvision weights file.",
            ),
        ] = False,
        resume: Annotated[
            bool,
            typer.Option(
                "--resume",
                help="Continue an interrupted run of the same --name from its checkpoint.",
            ),
        ] = False,
        overwrite: Annotated[
            bool, typer.Option(help="Replace a registry model of the same name.")
        ] = False,
        workers: Annotated[
            int | None,
            typer.Option(help="Data-loader processes (default: 0 on CPU, several on a GPU)."),
        ] = None,
        device: DeviceOpt = "auto",
        seed: SeedOpt = 0,
        failed_list: FailedListOpt = None,
        fmt: FormatOpt = Format.auto,
        json_: JsonOpt = False,
        quiet: QuietOpt = 0,
    ) -> None:
        """Train a camera-model classifier (seed-002 recipe) and add it to the registry.

        Unreadable images are reported one line each and skipped when the rest still has
        every class and validation images (exit code 3 then, the model is stored).
        Works the same under `torchrun --nproc_per_node N -m camid train ...` (DDP)."""
        from camid.data.dataset import load_dataset
        from camid.engine.dist import env_dist
        from camid.engine.train import TrainConfig
        from camid.engine.train import train as run_train

        rank0 = env_dist().is_main
        out = output_from(fmt, json_, quiet if rank0 else 2)
        ds = load_dataset(dataset)
        for note in ds.notes:
            out.info(note)
        from camid.engine.recipes import apply_recipe

        cfg = TrainConfig(
            name=name,
            arch=arch,
            target=target,
            patch=patch,
            patches_per_image=patches_per_image,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            time_budget=time_budget,
            patience=patience,
            d4=d4,
            manipulate=manipulate,
            augment=augment,
            balanced=balanced,
            val_fraction=val_fraction,
            region=region,
            seed=seed,
            workers=workers,
            device=device,
            pretrained=pretrained,
            overwrite=overwrite,
        )
        cfg = apply_recipe(cfg, recipe)
        live = _Live(out)
        try:
            with replace_hint("--overwrite"):
                result = run_train(cfg, ds.samples, resume=resume, progress=live)
        finally:
            live.close()
            if rank0 and failed_list is not None:
                write_text_atomic(failed_list, "".join(f"{p}\n" for p in live.unreadable))
        if not rank0:
            return
        m = result.card.metrics
        cal = result.card.calibration
        out.info(
            f"stored {result.model_path} (stopped: {result.stopped}); curve: "
            f"{result.curve_path}; resume state: {result.checkpoint_path}"
        )
        out.emit_object(
            {
                "name": result.card.name,
                "arch": result.card.arch,
                "task": result.card.task,
                "classes": result.card.classes,
                "path": str(result.model_path),
                "curve": str(result.curve_path),
                "best_epoch": m.get("best_epoch"),
                "epochs_run": m.get("epochs_run"),
                "val_accuracy": m.get("val_accuracy"),
                "val_patch_accuracy": m.get("val_patch_accuracy"),
                "val_loss": m.get("val_loss"),
                "temperature": cal.get("temperature"),
                "seconds": m.get("seconds"),
                "stopped": result.stopped,
                "weights_sha256": result.card.weights_sha256,
            },
            title=f"trained {result.card.name}",
        )
        if result.unreadable:
            out.warn(f"{len(result.unreadable)} unreadable image(s) were left out of training")
            raise typer.Exit(EXIT_INPUT)
