"""The paper in one command (seed 000, Tables I-VI, Fig. 5 and Fig. 8).

`run_reproduce` composes the existing tools, it re-implements none of them:

- datasets: `camid.synth.make_bottles_dataset` (Balanced / Partial / Disjoint) and
  `camid.synth.make_camera_dataset` (camera ID), built on the fly, or the user's dataset;
- Table I and Tables III-V, Fig. 5: `camid.audit.probes.run_probes` on the camera target
  (its unprobed baseline is the Table I model);
- Table II: `camid.audit.bias.run_bias_check` (stage 1 trains the label model) per setting;
- Fig. 8: `camid.audit.heatmap.position_accuracy` with the Table I model on the test photos;
- Table VI: `camid.audit.lrcheck.lr_check`.

Each experiment becomes one `Row`: the paper's figure (quoted), camid's figure, whether the
paper's qualitative finding reproduced, and the one-line reason. The report is written as
`report.md`, `report.html` (figures embedded) and `report.json` in the output folder.
"""

from __future__ import annotations

import base64
import html
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from camid.errors import UsageError
from camid.io.atomic import write_text_atomic

DEFAULT_BUDGET_MINUTES = 20.0
TRAINING_SHARE = 0.7
"""Share of the budget given to training; the rest is data generation and evaluation."""
N_TRAININGS = 9  # 3 bias-check settings + baseline + 4 trained probes + lr-check
MIN_TRAIN_SECONDS = 2.0

HIGH = 0.8  # "high" accuracy (Tables I, II Balanced/Partial)
NEAR_CHANCE = 0.15  # |accuracy - chance| that counts as chance (Table II Disjoint)
DESTROYED = 0.3  # normalised accuracy at or below this: the probe destroyed camera ID
KEPT = 0.8  # normalised accuracy at or above this: the probe kept camera ID
STILL_IDENTIFIES = 0.5  # 32 px crops: normalised accuracy at or above this
UNIFORM_SPREAD = 0.15  # Fig. 8: std of the per-cell accuracy at or below this = uniform
FLIPPED = 0.5  # Fig. 5: share of attacked images flipped
MIN_ABOVE = 0.2  # Table VI: the left-half model must beat chance by this much

PAPER_FIGURES = {
    "table1": ("Table I", "camera ID: 0.913-0.999 (ResNet34 0.999)"),
    "balanced": ("Table II", "Balanced: 0.929-0.979 (ResNet34 0.974)"),
    "partial": ("Table II", "Partial: 0.893-0.957 (ResNet34 0.957)"),
    "disjoint": ("Table II", "Disjoint: 0.505-0.573, about chance (0.5)"),
    "binary": ("Table III", "binary masks: near chance ('does not yield usable results')"),
    "colour": ("Table IV", "colour jitter: camera ID 'remains high'"),
    "grey": ("§IV-E", "greyscale: 'roughly identical to Table IV'"),
    "crop32": ("Table V", "32x32 crops: 0.665-0.948"),
    "adversarial": ("Fig. 5", "small structured perturbations flip decisions"),
    "heatmap": ("Fig. 8", "32 px crop accuracy 'independent of the location'"),
    "lr": ("Table VI", "left->right: 0.818-0.999 (ResNet34 0.992)"),
}
EXPERIMENTS = {
    "table1": "camera identification",
    "balanced": "label classification, Balanced",
    "partial": "label classification, Partial",
    "disjoint": "label classification, Disjoint",
    "binary": "camera ID on binary masks",
    "colour": "camera ID under colour jitter",
    "grey": "camera ID on greyscale",
    "crop32": "camera ID from 32x32 crops",
    "adversarial": "targeted adversarial attack",
    "heatmap": "patch accuracy by position",
    "lr": "train left halves, test right halves",
}

Progress = Callable[[dict[str, Any]], None]


@dataclass
class Row:
    """One experiment: the paper's figure beside camid's and whether the finding held."""

    key: str
    experiment: str
    paper: str  # where in the paper (Table I, Fig. 8, ...)
    paper_figure: str  # quoted
    figure: float | None  # camid's figure in [0, 1]; None when the experiment could not run
    measure: str  # what `figure` is
    reproduced: bool | None  # None: not decided (the experiment failed or has no reference)
    why: str


@dataclass
class ReproduceReport:
    """Every row of one reproduction run and the setting it ran in."""

    dataset: str
    synthetic: bool
    budget_minutes: float
    train_seconds_each: float
    device: str
    seed: int
    arch: str
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)  # name -> PNG path
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (documented in docs/reproduce.md)."""
        return asdict(self)

    def table(self) -> list[dict[str, Any]]:
        """One flat record per row (for the CLI table)."""
        return [
            {
                "experiment": r.experiment,
                "paper": f"{r.paper}: {r.paper_figure}",
                "camid": r.figure,
                "reproduced": _yes_no(r.reproduced),
                "why": r.why,
            }
            for r in self.rows
        ]

    @property
    def reproduced(self) -> int:
        """Rows whose finding reproduced."""
        return sum(1 for r in self.rows if r.reproduced)


def _yes_no(v: bool | None) -> str:
    return "yes" if v else ("no" if v is False else "n/a")


def _row(key: str, figure: float | None, measure: str, ok: bool | None, why: str) -> Row:
    paper, quoted = PAPER_FIGURES[key]
    return Row(key, EXPERIMENTS[key], paper, quoted, figure, measure, ok, why)


def _norm(acc: float | None, base: float | None, chance: float) -> float | None:
    """(acc - chance) / (base - chance): 1 = as good as the baseline, 0 = chance."""
    if acc is None or base is None or base - chance <= 1e-9:
        return None
    return (acc - chance) / (base - chance)


def split_budget(budget_minutes: float, trainings: int = N_TRAININGS) -> float:
    """Seconds of training for each of `trainings` runs within `budget_minutes`."""
    if not budget_minutes > 0:
        raise UsageError("the budget must be a positive number of minutes")
    return max(MIN_TRAIN_SECONDS, budget_minutes * 60.0 * TRAINING_SHARE / trainings)


# -- the experiments -------------------------------------------------------------------------


def _bias_rows(
    manifests: dict[str, Path], seconds: float, arch: str, device: str, seed: int, emit: Progress
) -> tuple[list[Row], list[str]]:
    """Table II: the label model's test accuracy per setting (bias-check stage 1)."""
    from camid.audit.bias import BiasOptions, run_bias_check

    rows: list[Row] = []
    notes: list[str] = []
    balanced_high = False  # Disjoint at chance means something only beside a high Balanced
    for setting, csv in manifests.items():
        emit({"event": "step", "step": f"Table II {setting}"})
        opts = BiasOptions(time_budget=seconds, arch=arch, device=device, seed=seed, probe=False)
        try:
            rep = run_bias_check(csv, opts, events=emit)
        except UsageError as exc:
            rows.append(_row(setting, None, "test accuracy", None, f"could not run: {exc}"))
            continue
        sc = rep.shortcut
        acc = sc.accuracy if sc is not None else None
        chance = 1.0 / max(1, len(rep.labels))
        notes.append(f"Table II {setting}: bias-check verdict {rep.verdict}")
        if acc is None:
            why = "stage 1 did not run: " + "; ".join(rep.notes[-1:])
            rows.append(_row(setting, None, "test accuracy", None, why))
        elif setting == "disjoint" and not balanced_high:
            why = (
                f"undecided: {acc:.2f}, but the Balanced model is not high either, so chance "
                "on Disjoint says nothing about cameras"
            )
            rows.append(_row(setting, acc, "test accuracy", None, why))
        elif setting == "disjoint":
            ok = abs(acc - chance) <= NEAR_CHANCE
            why = (
                f"{acc:.2f} vs chance {chance:.2f}: the model "
                + ("learnt the cameras, not the labels" if ok else "did not fall to chance")
                + f" (bias-check verdict {rep.verdict})"
            )
            rows.append(_row(setting, acc, "test accuracy", ok, why))
        else:
            ok = acc >= HIGH
            balanced_high = balanced_high or (setting == "balanced" and ok)
            why = f"{acc:.2f} {'>=' if ok else '<'} {HIGH} on the camera-balanced test set"
            rows.append(_row(setting, acc, "test accuracy", ok, why))
    return rows, notes


def _probe_rows(report: Any) -> list[Row]:
    """Table I (the unprobed baseline) and Tables III-V, Fig. 5 from a ProbeReport."""
    chance = report.chance
    by = {r.probe: r for r in report.results}
    rows: list[Row] = []
    base = by.get("baseline")
    b = base.accuracy if base else None
    if b is None:
        rows.append(_row("table1", None, "test accuracy", None, "the baseline did not run"))
    else:
        ok = b >= HIGH
        why = f"{b:.2f} {'>=' if ok else '<'} {HIGH} ({len(report.classes)} cameras, chance "
        rows.append(_row("table1", b, "test accuracy", ok, why + f"{chance:.2f})"))
    rules = {
        "binary": (lambda n: n <= DESTROYED, f"<= {DESTROYED}", "destroys", "does not destroy"),
        "colour": (lambda n: n >= KEPT, f">= {KEPT}", "keeps", "does not keep"),
        "grey": (lambda n: n >= KEPT, f">= {KEPT}", "keeps", "does not keep"),
        "crop32": (
            lambda n: n >= STILL_IDENTIFIES,
            f">= {STILL_IDENTIFIES}",
            "still identifies",
            "does not identify",
        ),
    }
    for probe, (test, rule, yes, no) in rules.items():
        r = by.get(probe)
        if r is None:
            continue
        n = _norm(r.accuracy, b, chance)
        if r.accuracy is not None and (b is None or b < HIGH):
            why = (
                f"undecided: {r.accuracy:.2f}, but the baseline ({_fmt(b)}) is not high, so "
                "a probe's effect cannot be read (raise the budget)"
            )
            rows.append(_row(probe, r.accuracy, "test accuracy", None, why))
            continue
        if n is None:
            why = "undecided: the baseline is not above chance" if r.accuracy is not None else ""
            rows.append(_row(probe, r.accuracy, "test accuracy", None, why or "did not run"))
            continue
        ok = bool(test(n))
        why = (
            f"{r.accuracy:.2f} vs baseline {b:.2f} (chance {chance:.2f}): normalised {n:.2f} "
            f"{rule if ok else 'fails ' + rule}; the probe {yes if ok else no} camera ID"
        )
        rows.append(_row(probe, r.accuracy, "test accuracy", ok, why))
    adv = by.get("adversarial")
    if adv is not None:
        s = adv.success_rate
        if s is None:
            rows.append(_row("adversarial", None, "success rate", None, "no image attacked"))
        else:
            eps = round((adv.epsilon or 0) * 255)
            ok = s >= FLIPPED
            why = f"{s:.2f} of {adv.n_test} images flipped to the runner-up within {eps}/255"
            rows.append(_row("adversarial", s, "success rate", ok, why))
    return rows


def _heatmap_row(
    model: str, home: Path, test_rows: list, device: str, out_dir: Path, cells: int
) -> tuple[Row, str | None]:
    """Fig. 8: patch accuracy by position of the Table I model over the test photos."""
    from camid.audit.heatmap import PositionAccuracy, position_accuracy
    from camid.device import resolve_device
    from camid.engine.predict import Predictor
    from camid.models.store import load_model
    from camid.report.maps import grid_figure

    dev = resolve_device(device)
    net, card = load_model(model, dev, home=home)
    predictor = Predictor(net, card, dev, batch_size=256)
    items = [(Path(s.path), str(s.camera)) for s in test_rows if s.camera in card.classes]
    result = None
    for item in position_accuracy(predictor, items, cells=cells):
        if isinstance(item, PositionAccuracy):
            result = item
    if result is None or result.images == 0:
        return _row("heatmap", None, "patch accuracy", None, "no test photo scored"), None
    s = result.summary()
    fig = grid_figure(
        result.accuracy,
        out_dir / "heatmap.png",
        label="patch accuracy",
        title=f"Fig. 8: patch accuracy by position ({result.images} photos, "
        f"{result.window} px views)",
    )
    spread = s["std"] or 0.0
    above = s["patch_accuracy"] >= s["chance"] + MIN_ABOVE
    ok = spread <= UNIFORM_SPREAD and above
    why = (
        f"patch accuracy {s['patch_accuracy']:.2f} (chance {s['chance']:.2f}); per-cell std "
        f"{spread:.2f} {'<=' if spread <= UNIFORM_SPREAD else '>'} {UNIFORM_SPREAD}, "
        f"border {s['border_mean']:.2f} vs centre "
        + (f"{s['centre_mean']:.2f}" if s["centre_mean"] is not None else "-")
    )
    if not above:
        why += "; not above chance, so uniformity says nothing"
    return _row("heatmap", s["patch_accuracy"], "patch accuracy", ok, why), str(fig)


def _lr_row(samples: list, template: Any, out_dir: Path, emit: Progress) -> tuple[Row, str]:
    """Table VI: accuracy on the right halves of a model trained on the left halves."""
    import dataclasses

    from camid.audit.lrcheck import TRANSFER_HIGH, bar_plot, lr_check

    cfg = dataclasses.replace(template, name="reproduce-lr")
    res = lr_check(samples, cfg, prnu=False, progress=emit).to_dict()
    fig = bar_plot(res, out_dir / "lr-check.png")
    unseen = res["cnn"][f"test_{res['test_region']}"]["accuracy"]
    seen = res["cnn"][f"test_{res['train_region']}"]["accuracy"]
    ratio = res["cnn_transfer"]
    if unseen is None or ratio is None or seen is None or seen - res["chance"] < MIN_ABOVE:
        why = f"undecided: the left-half model ({_fmt(seen)}) is not clearly above chance"
        return _row("lr", unseen, "right-half accuracy", None, why), str(fig)
    ok = ratio >= TRANSFER_HIGH
    why = (
        f"right {unseen:.2f} vs left {seen:.2f} (chance {res['chance']:.2f}): transfer "
        f"{ratio:.2f} {'>=' if ok else '<'} {TRANSFER_HIGH}"
    )
    return _row("lr", unseen, "right-half accuracy", ok, why), str(fig)


# -- the run ---------------------------------------------------------------------------------


def run_reproduce(
    out_dir: str | Path,
    *,
    dataset: str | Path | None = None,
    budget_minutes: float = DEFAULT_BUDGET_MINUTES,
    device: str = "auto",
    seed: int = 0,
    arch: str = "tracenet",
    bottles_per_device: int = 8,
    cameras_per_device: int = 12,
    bottle_size: tuple[int, int] = (256, 256),
    camera_size: tuple[int, int] = (256, 192),
    heatmap_cells: int = 4,
    attack_images: int = 8,
    progress: Progress | None = None,
) -> ReproduceReport:
    """Run the paper's experiments and write report.md, report.html and report.json.

    Without `dataset`, the synthetic bottle benchmark and camera set are written under
    `out_dir/data` (sizes from the *_per_device and *_size arguments). With a dataset
    (manifest CSV or folder with label and camera values) every experiment runs on it:
    Table II becomes one row, the label model's test accuracy from bias-check.
    `budget_minutes` is split evenly over the trainings.
    """
    from camid.audit.probes import PROBES, probe_split, run_probes
    from camid.data.dataset import load_dataset
    from camid.device import resolve_device
    from camid.engine.train import TrainConfig

    emit = progress or (lambda ev: None)
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds = split_budget(budget_minutes)
    report = ReproduceReport(
        dataset=str(dataset) if dataset is not None else "synthetic (camid synth)",
        synthetic=dataset is None,
        budget_minutes=budget_minutes,
        train_seconds_each=round(seconds, 1),
        device=str(resolve_device(device)),
        seed=seed,
        arch=arch,
    )
    if dataset is None:
        from camid.synth import make_bottles_dataset, make_camera_dataset

        emit({"event": "step", "step": "building the synthetic datasets"})
        manifests = make_bottles_dataset(
            out / "data" / "bottles", per_device=bottles_per_device, size=bottle_size,
            seed=seed, overwrite=True,
        )  # fmt: skip
        cameras = make_camera_dataset(
            out / "data" / "cameras", per_device=cameras_per_device, flat_per_device=0,
            size=camera_size, seed=seed, overwrite=True,
        )  # fmt: skip
        bias_sources: dict[str, Path] = dict(manifests)
        camera_source: Path = cameras
    else:
        bias_sources = {"balanced": Path(dataset)}
        camera_source = Path(dataset)
    rows, notes = _bias_rows(bias_sources, seconds, arch, device, seed, emit)
    if dataset is not None:
        for r in rows:  # the user's data has one setting: compare with Balanced
            r.experiment = "label classification on the dataset"
    report.rows += rows
    report.notes += notes

    ds = load_dataset(camera_source)
    report.notes += ds.notes
    samples = [s for s in ds.samples if s.camera]
    if not samples:
        raise UsageError(f"{camera_source}: no image has a camera value")
    template = TrainConfig(
        name="reproduce-baseline", arch=arch, target="camera", time_budget=seconds,
        seed=seed, device=device,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="camid-reproduce-") as tmp:
        home = Path(tmp)
        emit({"event": "step", "step": "Tables I, III-V and Fig. 5 (probes)"})
        probes = run_probes(
            samples, list(PROBES), template, home=home, save_models=True, prefix="reproduce",
            attack_images=attack_images, out_dir=out, progress=emit,
        )  # fmt: skip
        report.rows += _probe_rows(probes)
        report.notes += probes.errors
        report.notes += [  # how far each model trained: a probe row is read against this
            f"probe {r.probe}: {r.notes[0]} in {r.train_seconds:g} s"
            for r in probes.results
            if r.train_seconds is not None and r.notes
        ]
        if probes.plot:
            report.figures["probes"] = probes.plot
        for k, f in enumerate(r for p in probes.results for r in p.figures):
            if k == 0:
                report.figures["adversarial"] = f
        emit({"event": "step", "step": "Fig. 8 (heatmap)"})
        _, test_rows, _ = probe_split(samples, "camera", 0.25, seed)
        row, fig = _heatmap_row("reproduce-baseline", home, test_rows, device, out, heatmap_cells)
        report.rows.append(row)
        if fig:
            report.figures["heatmap"] = fig
    emit({"event": "step", "step": "Table VI (lr-check)"})
    row, fig = _lr_row(samples, template, out, emit)
    report.rows.append(row)
    report.figures["lr-check"] = fig
    order = list(PAPER_FIGURES)
    report.rows.sort(key=lambda r: order.index(r.key))
    report.seconds = round(time.perf_counter() - t0, 1)
    report.files = [str(p) for p in write_report(report, out)]
    return report


# -- rendering --------------------------------------------------------------------------------


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _setting(report: ReproduceReport) -> str:
    return (
        f"dataset: {report.dataset}; {report.arch} on {report.device}; budget "
        f"{report.budget_minutes:g} min ({report.train_seconds_each:g} s per training); seed "
        f"{report.seed}; {report.seconds:.0f} s in all"
    )


def render_markdown(report: ReproduceReport) -> str:
    """The report as Markdown (figures linked by name: they lie beside the report)."""
    lines = [
        "# camid reproduce: seed 000 (camera bias) Tables I-VI",
        "",
        _setting(report),
        "",
        f"{report.reproduced} of {len(report.rows)} findings reproduced.",
        "",
        "| experiment | paper | paper's figure | camid | measure | reproduced | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        cells = [r.experiment, r.paper, r.paper_figure, _fmt(r.figure), r.measure,
                 _yes_no(r.reproduced), r.why]  # fmt: skip
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    if report.figures:
        lines += ["", "## Figures", ""]
        for name, path in report.figures.items():
            lines.append(f"![{name}]({Path(path).name})")
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    return "\n".join(lines) + "\n"


def render_html(report: ReproduceReport) -> str:
    """The report as one self-contained HTML page (PNG figures embedded in base64)."""
    e = html.escape
    colour = {"yes": "#d4edda", "no": "#f8d7da", "n/a": "#eee"}
    head = (
        "<!doctype html><html><head><meta charset='utf-8'><title>camid reproduce</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top}img{max-width:100%}</style></head><body>"
    )
    parts = [
        head,
        "<h1>camid reproduce: seed 000 (camera bias) Tables I-VI</h1>",
        f"<p>{e(_setting(report))}</p>",
        f"<p><b>{report.reproduced} of {len(report.rows)} findings reproduced.</b></p>",
        "<table><tr><th>experiment</th><th>paper</th><th>paper's figure</th><th>camid</th>"
        "<th>measure</th><th>reproduced</th><th>why</th></tr>",
    ]
    for r in report.rows:
        yn = _yes_no(r.reproduced)
        parts.append(
            f"<tr><td>{e(r.experiment)}</td><td>{e(r.paper)}</td><td>{e(r.paper_figure)}</td>"
            f"<td>{_fmt(r.figure)}</td><td>{e(r.measure)}</td>"
            f"<td style='background:{colour[yn]}'>{yn}</td><td>{e(r.why)}</td></tr>"
        )
    parts.append("</table>")
    for name, path in report.figures.items():
        p = Path(path)
        if p.is_file():
            b64 = base64.b64encode(p.read_bytes()).decode("ascii")
            parts.append(
                f"<h2>{e(name)}</h2><img alt='{e(name)}' src='data:image/png;base64,{b64}'>"
            )
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in report.notes))
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: ReproduceReport, out_dir: Path) -> list[Path]:
    """Write report.md, report.html and report.json into `out_dir` (atomically)."""
    from camid.report.output import dumps

    out_dir = Path(out_dir)
    files = [
        write_text_atomic(out_dir / "report.md", render_markdown(report)),
        write_text_atomic(out_dir / "report.html", render_html(report)),
    ]
    report.files = [str(f) for f in files] + [str(out_dir / "report.json")]
    files.append(write_text_atomic(out_dir / "report.json", dumps(report.to_dict()) + "\n"))
    return files
