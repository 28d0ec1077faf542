"""`camid probe`: which visual features carry the camera? Retrain and test under binary masks,
colour jitter, greyscale and 32 px crops beside an unprobed baseline; attack the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from camid.cli.common import DeviceOpt, FormatOpt, JsonOpt, QuietOpt, SeedOpt, output_from
from camid.cli.train import _Live
from camid.errors import EXIT_INPUT
from camid.report.output import Format, Output

DEFAULT_BUDGET = 60.0


class _ProbeLive(_Live):
    """Training events as `camid train` shows them, plus one line per probe and bars for
    the evaluation and the attack."""

    def __init__(self, out: Output) -> None:
        super().__init__(out)
        self.steps: dict[str, Any] = {}

    def __call__(self, ev: dict[str, Any]) -> None:
        kind = ev["event"]
        if kind == "probe":
            self.out.info(f"[{ev['index']}/{ev['total']}] probe {ev['probe']}")
        elif kind in ("evaluate", "attack"):
            if self.bar is None:
                return
            self.bar.start()
            key = f"{ev.get('probe')}:{kind}"
            if key not in self.steps:
                label = f"{ev.get('probe')}: " + ("testing" if kind == "evaluate" else "attacking")
                self.steps[key] = self.bar.add_task(label, total=ev["total"])
            self.bar.update(self.steps[key], completed=ev["done"])
            if ev["done"] >= ev["total"]:
                self.bar.remove_task(self.steps.pop(key))
        else:
            super().__call__(ev)


def register(app: typer.Typer) -> None:
    """Add `probe` to the root app."""

    @app.command()
    def probe(
        dataset: Annotated[
            str,
            typer.Argument(
                help="Manifest CSV or folder; split=test rows are the test set when present, "
                "else --test-fraction of each class's images is held out."
            ),
        ],
        probes: Annotated[
            str,
            typer.Option(
                "--probes",
                help="Comma-separated: binary, colour, grey, crop32, adversarial (or all).",
            ),
        ] = "all",
        target: Annotated[str, typer.Option(help="Column to learn: camera or label.")] = "camera",
        arch: Annotated[
            str, typer.Option(help="Architecture of every probe model (`camid models archs`).")
        ] = "tracenet",
        patch: Annotated[
            int | None,
            typer.Option(help="Training crop of the baseline and pixel probes (default: arch's)."),
        ] = None,
        time_budget: Annotated[
            float,
            typer.Option(help="Seconds of training per probe (the baseline gets the same)."),
        ] = DEFAULT_BUDGET,
        epochs: Annotated[
            int | None,
            typer.Option(help="Maximum epochs per probe (default: until the budget runs out)."),
        ] = None,
        test_fraction: Annotated[
            float, typer.Option(help="Share of each class held out when there is no split.")
        ] = 0.25,
        epsilon: Annotated[
            int,
            typer.Option(help="Adversarial L-inf bound in 8-bit levels (4 = 4/255)."),
        ] = 4,
        attack_steps: Annotated[int, typer.Option(help="Most gradient-sign steps per image.")] = 20,
        attack_images: Annotated[
            int, typer.Option(help="Test images attacked (classes taken in turn).")
        ] = 16,
        model: Annotated[
            str | None,
            typer.Option(
                "--model", help="Attack this registry model instead of the probe baseline."
            ),
        ] = None,
        out_dir: Annotated[
            Path | None,
            typer.Option(
                "--out", "-o", help="Folder for probes.png and the adversarial figures."
            ),
        ] = None,
        save_models: Annotated[
            bool,
            typer.Option(
                "--save-models",
                help="Keep the probe models in the registry as <prefix>-baseline, ...",
            ),
        ] = False,
        prefix: Annotated[str, typer.Option(help="Registry name prefix with --save-models.")] = (
            "probe"
        ),
        overwrite: Annotated[
            bool, typer.Option(help="Replace saved probe models of the same names.")
        ] = False,
        device: DeviceOpt = "auto",
        seed: SeedOpt = 0,
        fmt: FormatOpt = Format.auto,
        json_: JsonOpt = False,
        quiet: QuietOpt = 0,
    ) -> None:
        """Which visual features carry the camera (seed 000 Tables III-V, Fig. 5)?

        Retrains the same recipe under each probe with the same time budget and reports
        test accuracy beside the unprobed baseline; the adversarial probe attacks the
        baseline (or --model). Models are trained in a temporary home unless
        --save-models. See docs/probes.md."""
        from camid.audit.probes import parse_probes, run_probes
        from camid.cli.common import replace_hint
        from camid.data.dataset import load_dataset
        from camid.engine.train import TrainConfig

        out = output_from(fmt, json_, quiet)
        names = parse_probes(probes)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        ds = load_dataset(dataset)
        for note in ds.notes:
            out.info(note)
        template = TrainConfig(
            name=f"{prefix}-baseline",
            arch=arch,
            target=target,
            patch=patch,
            epochs=epochs,
            time_budget=time_budget,
            seed=seed,
            device=device,
            overwrite=overwrite,
        )
        live = _ProbeLive(out)
        try:
            with replace_hint("--overwrite"):
                report = run_probes(
                    ds.samples,
                    names,
                    template,
                    test_fraction=test_fraction,
                    save_models=save_models,
                    prefix=prefix,
                    attack_model=model,
                    epsilon=epsilon,
                    attack_steps=attack_steps,
                    attack_images=attack_images,
                    out_dir=out_dir,
                    progress=live,
                )
        finally:
            live.close()
        report.dataset = str(dataset)
        for err in report.errors:
            out.error(err)
        if report.plot:
            out.info(f"accuracy chart written to {report.plot}")
        for r in report.results:
            for f in r.figures:
                out.info(f"adversarial figure written to {f}")
        if out.fmt in ("json", "ndjson"):
            out.emit_object(report.to_dict())
        else:
            cols = ["probe", "accuracy", "baseline_accuracy", "change", "n_test",
                    "train_seconds", "success_rate", "mean_steps"]  # fmt: skip
            if out.fmt == "csv":
                cols += ["removes", "paper"]
            out.emit(report.rows(), columns=cols, title=f"probes on {dataset} ({report.target})")
        if report.errors or live.unreadable:  # unreadable test or training images
            raise typer.Exit(EXIT_INPUT)
