"""Probes: which visual features carry the camera? (seed 000, §IV-C to §IV-F)

Each *trained* probe retrains the same recipe with one kind of information taken away from
every training crop and every test view, under the same time budget as an unprobed
baseline, and reports the test accuracy beside the baseline's:

- ``binary``: local-mean-threshold masks (Table III) keep only the shapes of dark/bright
  structures: colour, texture and every high-frequency trace are gone;
- ``colour``: random hue, saturation, contrast and brightness (Table IV): global colour
  statistics (white balance, colour correction) no longer identify anything;
- ``grey``: greyscale (§IV-E): no colour at all, texture kept;
- ``crop32``: train on random 32 x 32 crops and vote over 32 px views (Table V): lens-level
  and position-level cues cannot fit in the window.

The ``adversarial`` probe retrains nothing: a targeted iterative gradient-sign attack (PGD,
L-inf ball of `epsilon` 8-bit levels) moves a trained model's decision on each test image to
its runner-up class (Fig. 5); it reports the success rate and mean steps, and figures of the
image, the amplified perturbation and the perturbed image.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from camid.data.augment import PIXEL_PROBES
from camid.data.manifest import Sample
from camid.data.patches import split_by_image
from camid.errors import InputError, UsageError

if TYPE_CHECKING:  # these need torch; the probe records do not
    from camid.engine.train import TrainConfig
    from camid.identify.identifier import Identifier

PROBES = ("binary", "colour", "grey", "crop32", "adversarial")
TRAINED_PROBES = ("binary", "colour", "grey", "crop32")
CROP_PROBE_SIZE = 32
DEFAULT_EPSILON = 4
"""Attack budget in 8-bit levels (L-inf): 4 means every pixel value moves by at most 4/255."""
DEFAULT_ATTACK_STEPS = 20
DEFAULT_ATTACK_IMAGES = 16
DEFAULT_FIGURES = 3

REMOVES = {
    "baseline": "nothing (the unprobed recipe)",
    "binary": "colour, texture and high-frequency traces (local-mean threshold masks)",
    "colour": "global colour statistics (random hue, saturation, contrast, brightness)",
    "grey": "all colour (greyscale)",
    "crop32": "lens-level and position-level cues (32x32 crops)",
    "adversarial": "nothing: the smallest L-inf perturbation that flips the decision",
}
PAPER = {
    "baseline": "Table I: camera ID 0.91-0.999",
    "binary": "Table III: camera ID near chance on binary masks",
    "colour": "Table IV: camera ID stays high under colour jitter",
    "grey": "§IV-E: greyscale about as accurate as Table IV",
    "crop32": "Table V: camera ID 0.67-0.95 from 32x32 crops",
    "adversarial": "Fig. 5: small structured perturbations flip decisions",
}

Progress = Callable[[dict[str, Any]], None]


@dataclass
class ProbeResult:
    """One probe's outcome beside the baseline (numbers are test-set image accuracies)."""

    probe: str
    accuracy: float | None
    baseline_accuracy: float | None
    n_test: int
    train_seconds: float | None
    notes: list[str] = field(default_factory=list)
    removes: str = ""
    paper: str = ""
    model: str | None = None
    epsilon: float | None = None  # adversarial: L-inf bound as a fraction of 255
    success_rate: float | None = None  # adversarial: share of attacked images flipped
    mean_steps: float | None = None  # adversarial: mean gradient steps of the successes
    figures: list[str] = field(default_factory=list)

    @property
    def change(self) -> float | None:
        """Accuracy minus the baseline's."""
        if self.accuracy is None or self.baseline_accuracy is None:
            return None
        return self.accuracy - self.baseline_accuracy

    def to_record(self) -> dict[str, Any]:
        """Flat JSON-ready dict (documented in docs/probes.md)."""
        rec = asdict(self)
        rec["change"] = self.change
        return rec


@dataclass
class ProbeReport:
    """Every probe of one run and the setting they share."""

    target: str
    arch: str
    classes: list[str]
    time_budget: float | None
    n_train: int
    n_test: int
    test_selection: str
    chance: float
    results: list[ProbeResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    device: str = ""
    dataset: str | None = None
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `camid probe --json`."""
        out = asdict(self)
        out["results"] = [r.to_record() for r in self.results]
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One table row per probe."""
        return [
            {
                "probe": r.probe,
                "accuracy": r.accuracy,
                "baseline_accuracy": r.baseline_accuracy,
                "change": r.change,
                "n_test": r.n_test,
                "train_seconds": r.train_seconds,
                "success_rate": r.success_rate,
                "mean_steps": r.mean_steps,
                "removes": r.removes,
                "paper": r.paper,
            }
            for r in self.results
        ]


def parse_probes(spec: str | Sequence[str]) -> list[str]:
    """Probe names from 'binary,grey' (or a list), in the order of PROBES; 'all' = every one."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [s.strip().lower() for s in items if s.strip()]
    if names == ["all"]:
        return list(PROBES)
    bad = [n for n in names if n not in PROBES]
    if bad or not names:
        raise UsageError(
            f"unknown probe {', '.join(map(repr, bad)) or '(none given)'}; choose from: "
            f"{', '.join(PROBES)} (or all)"
        )
    return [p for p in PROBES if p in names]


def probe_split(
    samples: Sequence[Sample], target: str, test_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], str]:
    """(training rows, test rows, what was chosen): split=test rows when the dataset marks
    them, else a held-out `test_fraction` of each class's images (by image), the same for
    every probe."""
    from camid.engine.train import target_of

    rows = [s for s in samples if target_of(s, target) is not None]
    marked = [s for s in rows if (s.split or "").lower() == "test"]
    if marked:
        train = [s for s in rows if (s.split or "").lower() != "test"]
        return train, marked, f"{len(marked)} rows with split=test"
    if not 0 < test_fraction < 1:
        raise UsageError("the test fraction must be between 0 and 1")
    keys = [str(Path(s.path).resolve()) for s in rows]
    labels = [str(target_of(s, target)) for s in rows]
    tr, te = split_by_image(keys, labels, test_fraction, seed)
    note = f"{len(te)} images held out by image ({test_fraction:.0%} per class, seed {seed})"
    return [rows[i] for i in tr], [rows[i] for i in te], note


# -- adversarial ------------------------------------------------------------------------------


@dataclass
class AttackResult:
    """A targeted attack on one image. Pixel arrays are kept for figures, not output."""

    original: str  # the model's decision on the image (argmax class)
    target: str
    final: str  # the decision on the perturbed (8-bit) image
    success: bool
    steps: int  # gradient steps taken (0: already the target)
    linf: int  # max |perturbed - original| in 8-bit levels
    epsilon: int
    probability_before: float
    probability_after: float  # of the final decision
    pixels: np.ndarray = field(repr=False)
    perturbed: np.ndarray = field(repr=False)


def attack(
    identifier: Identifier,
    pixels: np.ndarray,
    *,
    target: str | None = None,
    epsilon: int = DEFAULT_EPSILON,
    steps: int = DEFAULT_ATTACK_STEPS,
    step_size: float | None = None,
) -> AttackResult:
    """Targeted iterative gradient-sign attack (PGD) on the identifier's image decision.

    The loss is -log of the target's aggregated view probability (the same views,
    temperature and aggregation as identify); each step moves every pixel by `step_size`
    levels (default epsilon/4) against the gradient's sign, projected onto
    |delta| <= epsilon levels and [0, 255]. The forward pass sees the rounded 8-bit image
    (straight-through), and the result is checked through the identifier's own pipeline on
    the written uint8 pixels. `target` defaults to the runner-up class.
    """
    import torch

    from camid.data.augment import d4_tensor
    from camid.engine.data import extract_views, view_positions
    from camid.models.registry import head_names

    spec = identifier.views
    if spec.probe is not None:
        raise UsageError(
            f"the model sees its views through the {spec.probe!r} probe, which has no "
            "gradient: attack a model trained without a pixel probe"
        )
    if not (isinstance(epsilon, int | np.integer) and 1 <= epsilon <= 255):
        raise UsageError(f"epsilon is a whole number of 8-bit levels in 1-255, got {epsilon}")
    if steps < 0:
        raise UsageError("the number of attack steps cannot be negative")
    h, w = pixels.shape[:2]
    if min(h, w) < spec.size:
        raise UsageError(f"the image ({w}x{h}) is smaller than the model's {spec.size} px views")
    classes = list(identifier.card.classes)
    before, _, _ = identifier.decide(identifier.predictor.forward(extract_views(pixels, spec)))
    if target is None:
        order = np.argsort(-before.probs)
        tgt = int(order[1]) if int(order[0]) == before.top else int(order[0])
    elif target in classes:
        tgt = classes.index(target)
    else:
        raise UsageError(f"{target!r} is not a class of the model")

    predictor = identifier.predictor
    model, device, card = predictor.model, predictor.device, identifier.card
    heads = head_names(model)
    mean = torch.tensor(card.mean, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(card.std, device=device, dtype=torch.float32).view(1, 3, 1, 1)
    pos = view_positions(h, w, spec)
    size, t = spec.size, identifier.temperature
    if any(y + size > h or x + size > w for y, x in pos):
        raise UsageError(f"the image's {spec.region} region is smaller than one {size} px view")
    x0 = torch.from_numpy(np.array(pixels, dtype=np.float32)).to(device).permute(2, 0, 1)

    def target_log_prob(x: torch.Tensor) -> tuple[torch.Tensor, int]:
        views = torch.stack([x[:, y : y + size, c : c + size] for y, c in pos])
        if spec.d4:
            views = torch.cat([d4_tensor(views, k) for k in range(8)])
        inp = (views / 255.0 - mean) / std
        logits = (model.evidence(inp)[:, 0] if heads else model(inp)).float()
        if identifier.aggregation == "geometric":
            logp = torch.log_softmax(logits.mean(0) / t, dim=0)
        else:
            logp = torch.log(torch.softmax(logits / t, dim=1).mean(0).clamp_min(1e-30))
        return logp[tgt], int(logp.argmax())

    alpha = float(step_size) if step_size is not None else max(epsilon / 4.0, 0.25)
    delta = torch.zeros_like(x0, requires_grad=True)
    used = 0
    with torch.enable_grad():
        for used in range(steps + 1):  # noqa: B007 - `used` is the step count afterwards
            xa = (x0 + delta).clamp(0, 255)
            xq = xa + (xa.round() - xa).detach()  # the 8-bit image, gradient passed through
            logp, top = target_log_prob(xq)
            if top == tgt or used == steps:
                break
            (grad,) = torch.autograd.grad(-logp, delta)
            with torch.no_grad():
                delta -= alpha * grad.sign()
                delta.clamp_(-epsilon, epsilon)
                delta.copy_((x0 + delta).clamp(0, 255) - x0)
    adv = (x0 + delta.detach()).clamp(0, 255).round().permute(1, 2, 0).cpu().numpy()
    adv = adv.astype(np.uint8)
    after, _, _ = identifier.decide(predictor.forward(extract_views(adv, spec)))
    linf = int(np.abs(adv.astype(np.int16) - pixels.astype(np.int16)).max())
    return AttackResult(
        original=classes[before.top],
        target=classes[tgt],
        final=classes[after.top],
        success=after.top == tgt,
        steps=used,
        linf=linf,
        epsilon=int(epsilon),
        probability_before=float(before.probs[before.top]),
        probability_after=float(after.probs[after.top]),
        pixels=pixels,
        perturbed=adv,
    )


def _attack_order(samples: Sequence[Sample], truths: Sequence[str], limit: int) -> list[int]:
    """Up to `limit` sample indices, taken class by class in turn (deterministic)."""
    by_class: dict[str, list[int]] = {}
    for i, t in enumerate(truths):
        by_class.setdefault(t, []).append(i)
    order: list[int] = []
    queues = [list(v) for _, v in sorted(by_class.items())]
    while len(order) < limit and any(queues):
        for q in queues:
            if q and len(order) < limit:
                order.append(q.pop(0))
    return order


def attack_set(
    identifier: Identifier,
    samples: Sequence[Sample],
    *,
    epsilon: int = DEFAULT_EPSILON,
    steps: int = DEFAULT_ATTACK_STEPS,
    limit: int = DEFAULT_ATTACK_IMAGES,
    figure_dir: Path | None = None,
    figures: int = DEFAULT_FIGURES,
    progress: Progress | None = None,
) -> tuple[ProbeResult, list[str]]:
    """Attack up to `limit` test images (classes in turn); (the adversarial ProbeResult,
    one-line errors of unreadable images). `baseline_accuracy` is the model's accuracy on
    those images before the attack, `accuracy` after it."""
    from camid.identify.identifier import MIN_SIDE
    from camid.io.image import load_image

    emit = progress or (lambda ev: None)
    card = identifier.card
    truths = [str(s.camera if card.task == "camera" else s.label) for s in samples]
    known = [i for i, t in enumerate(truths) if t in card.classes]
    chosen = [known[i] for i in _attack_order([samples[k] for k in known],
                                              [truths[k] for k in known], limit)]  # fmt: skip
    results: list[tuple[int, AttackResult]] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    for n, i in enumerate(chosen, start=1):
        path = Path(samples[i].path)
        try:
            px = load_image(path, min_side=min(MIN_SIDE, identifier.views.size)).pixels
            if min(px.shape[:2]) < identifier.views.size:
                raise InputError(path, "smaller than the model's views: cannot be attacked")
            results.append((i, attack(identifier, px, epsilon=epsilon, steps=steps)))
        except InputError as exc:
            errors.append(str(exc))
        emit({"event": "attack", "done": n, "total": len(chosen)})
    ok = [r for _, r in results if r.success]
    figs: list[str] = []
    if figure_dir is not None:
        from camid.report.plots import adversarial_figure

        for i, r in [x for x in results if x[1].success][:figures]:
            stem = Path(samples[i].path).stem
            dest = Path(figure_dir) / f"adversarial_{len(figs) + 1}_{stem}.png"
            title = (
                f"{Path(samples[i].path).name}: {r.original} ({r.probability_before:.2f}) -> "
                f"{r.final} ({r.probability_after:.2f}), eps {r.epsilon}/255, {r.steps} steps"
            )
            adversarial_figure(r.pixels, r.perturbed, dest, r.epsilon, title=title)
            figs.append(str(dest))
    n = len(results)
    acc_before = float(np.mean([r.original == truths[i] for i, r in results])) if n else None
    acc_after = float(np.mean([r.final == truths[i] for i, r in results])) if n else None
    notes = [
        f"targeted PGD to the runner-up class, L-inf <= {epsilon}/255, at most {steps} steps "
        f"of {max(epsilon / 4.0, 0.25):g} levels; {n} images attacked"
    ]
    if ok:
        notes.append(f"largest change of a flipped image: {max(r.linf for r in ok)}/255")
    return (
        ProbeResult(
            probe="adversarial",
            accuracy=acc_after,
            baseline_accuracy=acc_before,
            n_test=n,
            train_seconds=None,
            notes=notes + [f"{time.perf_counter() - t0:.0f}s"],
            removes=REMOVES["adversarial"],
            paper=PAPER["adversarial"],
            model=card.name,
            epsilon=epsilon / 255.0,
            success_rate=len(ok) / n if n else None,
            mean_steps=float(np.mean([r.steps for r in ok])) if ok else None,
            figures=figs,
        ),
        errors,
    )


# -- the run ----------------------------------------------------------------------------------


def _probe_config(template: TrainConfig, probe: str, name: str) -> TrainConfig:
    """The template recipe with one probe applied (and its own registry name)."""
    changes: dict[str, Any] = {"name": name, "probe": None}
    if probe in PIXEL_PROBES:
        changes["probe"] = probe
    elif probe == "crop32":
        changes.update(patch=CROP_PROBE_SIZE, large=None)
    return dataclasses.replace(template, **changes)


def run_probes(
    samples: Sequence[Sample],
    probes: Sequence[str],
    template: TrainConfig,
    *,
    test_fraction: float = 0.25,
    home: Path | None = None,
    save_models: bool = False,
    prefix: str = "probe",
    attack_model: str | None = None,
    epsilon: int = DEFAULT_EPSILON,
    attack_steps: int = DEFAULT_ATTACK_STEPS,
    attack_images: int = DEFAULT_ATTACK_IMAGES,
    out_dir: Path | None = None,
    workers: int = 2,
    progress: Progress | None = None,
) -> ProbeReport:
    """Train the baseline and each trained probe with `template` (its time budget, seed,
    architecture, target), evaluate each on the same test images, attack the baseline (or
    `attack_model`) for the adversarial probe; figures go to `out_dir`.

    Models are trained in a temporary camid home and dropped, unless `save_models` (then
    they are stored in `home` as <prefix>-baseline, <prefix>-binary, ...).
    """
    names = parse_probes(list(probes))
    emit = progress or (lambda ev: None)
    train_rows, test_rows, note = probe_split(samples, template.target, test_fraction,
                                              template.seed)  # fmt: skip
    if not test_rows:
        raise UsageError("no test images: give each class at least 2 images")
    if attack_images < 1 or attack_steps < 0:
        raise UsageError("attack at least 1 image with 0 or more steps")
    trained = [p for p in names if p in TRAINED_PROBES]
    need_baseline = bool(trained) or ("adversarial" in names and attack_model is None)
    with tempfile.TemporaryDirectory(prefix="camid-probe-") as tmp:
        model_home = home if save_models else Path(tmp)
        report = ProbeReport(
            target=template.target,
            arch=template.arch,
            classes=[],
            time_budget=template.time_budget,
            n_train=len(train_rows),
            n_test=len(test_rows),
            test_selection=note,
            chance=0.0,
        )
        baseline: ProbeResult | None = None
        plan = (["baseline"] if need_baseline else []) + trained
        steps_total = len(plan) + ("adversarial" in names)
        for k, probe in enumerate(plan, start=1):
            emit({"event": "probe", "probe": probe, "index": k, "total": steps_total})
            res = _train_and_test(
                probe,
                _probe_config(template, probe, f"{prefix}-{probe}"),
                train_rows,
                test_rows,
                model_home,
                workers,
                report,
                lambda ev, p=probe: emit({**ev, "probe": p}),
            )
            if probe == "baseline":
                baseline = res
            res.baseline_accuracy = baseline.accuracy if baseline else None
            res.removes, res.paper = REMOVES[probe], PAPER[probe]
            if save_models:
                res.notes.append(f"model stored as {res.model}")
            report.results.append(res)
        if "adversarial" in names:
            emit({"event": "probe", "probe": "adversarial", "index": steps_total,
                  "total": steps_total})  # fmt: skip
            from camid.identify.identifier import Identifier

            ref = attack_model or f"{prefix}-baseline"
            ident = Identifier.from_model(
                ref, device=template.device, home=None if attack_model else model_home,
                workers=workers,
            )  # fmt: skip
            if not report.classes:
                report.classes = list(ident.card.classes)
            res, errs = attack_set(
                ident,
                test_rows,
                epsilon=epsilon,
                steps=attack_steps,
                limit=attack_images,
                figure_dir=out_dir,
                progress=lambda ev: emit({**ev, "probe": "adversarial"}),
            )
            report.errors += [e for e in errs if e not in report.errors]
            report.results.append(res)
            report.device = report.device or str(ident.predictor.device)
    report.chance = 1.0 / len(report.classes) if report.classes else 0.0
    if out_dir is not None and report.results:
        from camid.report.plots import probe_bars

        dest = Path(out_dir) / "probes.png"
        probe_bars(report.rows(), dest, chance=report.chance, title=_plot_title(report))
        report.plot = str(dest)
    return report


def _plot_title(report: ProbeReport) -> str:
    budget = f", {report.time_budget:g}s per probe" if report.time_budget else ""
    return f"{report.target} ID under probes ({report.arch}{budget}, {report.n_test} test images)"


def _train_and_test(
    probe: str,
    cfg: TrainConfig,
    train_rows: Sequence[Sample],
    test_rows: Sequence[Sample],
    home: Path | None,
    workers: int,
    report: ProbeReport,
    emit: Progress,
) -> ProbeResult:
    """Train one configuration, then its closed-set accuracy on the test rows."""
    from camid.engine.train import train
    from camid.identify.evaluate import evaluate
    from camid.identify.identifier import Identifier

    t0 = time.perf_counter()
    result = train(cfg, train_rows, home=home, progress=emit)
    seconds = time.perf_counter() - t0
    ident = Identifier.from_model(cfg.name, device=cfg.device, home=home, workers=workers)
    ev = evaluate(
        ident,
        test_rows,
        conditions=[None],
        progress=lambda cond, done, total: emit(
            {"event": "evaluate", "done": done, "total": total}
        ),
    )
    report.errors += [e for e in ev.errors if e not in report.errors]
    report.classes = report.classes or list(ident.card.classes)
    report.device = report.device or str(ident.predictor.device)
    cond = ev.conditions[0]
    m = result.card.metrics
    val = m.get("val_accuracy")
    notes = [
        f"{m.get('epochs_run')} epochs (stopped: {result.stopped}), best epoch "
        f"{m.get('best_epoch')}, validation accuracy "
        + (f"{val:.3f}" if isinstance(val, float) else "-")
    ]
    if probe == "crop32":
        views = ident.views
        notes.append(
            f"test: vote over a {views.mode} of up to {views.max_views} {views.size} px views"
        )
    return ProbeResult(
        probe=probe,
        accuracy=cond.accuracy,
        baseline_accuracy=None,
        n_test=cond.n,
        train_seconds=round(seconds, 1),
        notes=notes,
        model=cfg.name,
    )
