"""Left-to-right transfer (seed 000 §IV-G, Table VI): are a model's camera traces tied to
positions on the sensor, or do they repeat across the frame?

A classifier is trained with the `camid train` recipe and engine on the *left* halves of
the training photos only (TrainConfig.region), then scored on the *right* halves of the
test photos (a part of every sensor it never saw) and, for reference, on their left halves
(held-out photos, seen sensor area). Processing traces (demosaicing, denoising,
sharpening, JPEG) repeat over the frame, so they transfer; a sensor pattern (PRNU) differs
from pixel to pixel, so it cannot.

The control makes the contrast concrete: PRNU fingerprints per device are built from the
left halves of the training photos and matched (PCE) against the left and the right halves
of the test photos. By construction the left halves match and the right halves do not.
`axis="vertical"` does the same from the top half to the bottom half.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from camid.data.manifest import Sample
from camid.data.patches import region_view
from camid.engine.data import ViewSpec, extract_views, prefetch_map
from camid.engine.predict import Predictor, aggregate, decision_logits
from camid.engine.train import TrainConfig, train
from camid.errors import InputError, UsageError
from camid.io.image import load_image

AXES = {"horizontal": ("left", "right"), "vertical": ("top", "bottom")}
TRANSFER_HIGH = 0.8
TRANSFER_LOW = 0.2

Hook = Callable[[dict[str, Any]], None]


@dataclass
class HalfScores:
    """Accuracy of one method on one half of a set of photos."""

    region: str
    images: int = 0
    correct: int = 0
    patch_correct: int = 0
    patches: int = 0
    per_camera: dict[str, list[int]] = field(default_factory=dict)  # camera -> [ok, n]

    def add(self, camera: str, ok: bool, patch_ok: int = 0, patches: int = 0) -> None:
        """Count one photo (and its views)."""
        self.images += 1
        self.correct += int(ok)
        self.patch_correct += patch_ok
        self.patches += patches
        c = self.per_camera.setdefault(camera, [0, 0])
        c[0] += int(ok)
        c[1] += 1

    @property
    def accuracy(self) -> float | None:
        """Image-level accuracy (None without photos)."""
        return self.correct / self.images if self.images else None

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        out: dict[str, Any] = {
            "region": self.region,
            "images": self.images,
            "accuracy": self.accuracy,
            "per_camera": {
                c: (ok / n if n else None) for c, (ok, n) in sorted(self.per_camera.items())
            },
        }
        if self.patches:
            out["patch_accuracy"] = self.patch_correct / self.patches
        return out


def transfer_ratio(seen: float | None, unseen: float | None, chance: float) -> float | None:
    """(unseen - chance) / (seen - chance): 1 = transfers fully, 0 = chance on the new half."""
    if seen is None or unseen is None or seen - chance <= 1e-9:
        return None
    return float((unseen - chance) / (seen - chance))


def verdict(ratio: float | None) -> str:
    """The paper's reading of a transfer ratio."""
    if ratio is None:
        return "undecided: the model is not above chance on the half it was trained on"
    if ratio >= TRANSFER_HIGH:
        return (
            "traces repeat across the frame: what identifies the camera is not tied to "
            "sensor positions (in-camera processing, as seed 000 concludes)"
        )
    if ratio <= TRANSFER_LOW:
        return (
            "position-bound traces: accuracy falls to chance on the unseen half "
            "(a sensor pattern such as PRNU)"
        )
    return "mixed: part of the evidence transfers, part is tied to positions on the sensor"


@dataclass
class LrResult:
    """Everything lr-check measured (see `to_dict`)."""

    axis: str
    train_region: str
    test_region: str
    classes: list[str]
    cnn: dict[str, HalfScores]
    prnu: dict[str, Any] | None
    model: dict[str, Any]
    notes: list[str]

    def to_dict(self) -> dict:
        """JSON-ready result."""
        chance = 1.0 / len(self.classes)
        seen = self.cnn["test_" + self.train_region].accuracy
        unseen = self.cnn["test_" + self.test_region].accuracy
        ratio = transfer_ratio(seen, unseen, chance)
        out: dict[str, Any] = {
            "axis": self.axis,
            "train_region": self.train_region,
            "test_region": self.test_region,
            "classes": self.classes,
            "chance": chance,
            "cnn": {k: v.to_dict() for k, v in self.cnn.items()},
            "cnn_transfer": ratio,
            "verdict": verdict(ratio),
            "model": self.model,
            "notes": self.notes,
        }
        if self.prnu is not None:
            out["prnu"] = self.prnu
        return out


def split_train_test(
    samples: Sequence[Sample], test_fraction: float = 0.25, seed: int = 0
) -> tuple[list[Sample], list[Sample], list[str]]:
    """(train, test, notes): rows with split=test are the test set; without any, a
    `test_fraction` of each camera's photos is held out by image."""
    rows = [s for s in samples if s.camera]
    notes = []
    if len(rows) < len(samples):
        notes.append(f"{len(samples) - len(rows)} rows without a camera skipped")
    test = [s for s in rows if (s.split or "").lower() == "test"]
    if test:
        train_rows = [s for s in rows if (s.split or "").lower() != "test"]
        notes.append(f"test = the {len(test)} rows with split=test")
        return train_rows, test, notes
    rng = np.random.default_rng(seed)
    by_cam: dict[str, list[Sample]] = defaultdict(list)
    for s in rows:
        by_cam[str(s.camera)].append(s)
    train_rows, test = [], []
    for cam in sorted(by_cam):
        group = sorted(by_cam[cam], key=lambda s: str(s.path))
        rng.shuffle(group)
        n = min(len(group) - 1, max(1, round(test_fraction * len(group))))
        test += group[:n]
        train_rows += group[n:]
    notes.append(f"no split=test rows: {len(test)} photos held out by image ({test_fraction:.0%})")
    return train_rows, test, notes


def _score_cnn(
    predictor: Predictor,
    test: Sequence[Sample],
    regions: Sequence[str],
    base: ViewSpec,
    workers: int,
    emit: Hook,
) -> tuple[dict[str, HalfScores], list[InputError]]:
    """Image and patch accuracy of the model on each region of the test photos."""
    classes = list(predictor.card.classes)
    t = float(predictor.card.calibration.get("temperature", 1.0))
    method = predictor.card.calibration.get("aggregation", "mean")
    scores = {r: HalfScores(r) for r in regions}
    errors: list[InputError] = []
    usable = [s for s in test if s.camera in classes]

    def load(s: Sample) -> np.ndarray:
        return load_image(s.path).pixels

    for k, (s, px) in enumerate(zip(usable, prefetch_map(load, usable, workers), strict=True)):
        if isinstance(px, Exception):
            errors.append(px if isinstance(px, InputError) else InputError(s.path, str(px)))
            continue
        y = classes.index(str(s.camera))
        for r in regions:
            spec = ViewSpec(base.size, base.mode, base.max_views, base.d4, r)
            logits = decision_logits(predictor.forward(extract_views(px, spec)))
            agg = aggregate(logits, t, method)
            scores[r].add(
                str(s.camera), agg.top == y, int((logits.argmax(1) == y).sum()), len(logits)
            )
        emit({"event": "scored", "done": k + 1, "total": len(usable)})
    return scores, errors


def _halves(px: np.ndarray, regions: Sequence[str]) -> list[np.ndarray]:
    """The two halves of a photo cropped to a common size (for PRNU, which needs equal
    shapes): each half is region_view'ed, then cut to the smaller of the two."""
    parts = [region_view(px, r) for r in regions]
    h = min(p.shape[0] for p in parts)
    w = min(p.shape[1] for p in parts)
    return [np.ascontiguousarray(p[:h, :w]) for p in parts]


def prnu_control(
    train_rows: Sequence[Sample],
    test: Sequence[Sample],
    regions: tuple[str, str],
    device: torch.device | str = "cpu",
    emit: Hook | None = None,
) -> dict[str, Any] | None:
    """Fingerprints per device from the `regions[0]` halves of the training photos, PCE of
    both halves of every test photo against all of them. None without a device column.

    A test half is attributed to the device with the highest PCE; reported: the share of
    test photos whose camera (and device) is right per half, and the share whose own
    device's PCE passes the usual threshold (60), which decides the transfer verdict (the
    device accuracy when fewer than half of the seen halves match).
    """
    from camid.prnu.fingerprint import FingerprintAccumulator
    from camid.prnu.match import DEFAULT_THRESHOLD, FingerprintSet

    emit = emit or (lambda ev: None)
    if not all(s.device for s in [*train_rows, *test]):
        return None
    accs: dict[str, FingerprintAccumulator] = {}
    camera_of: dict[str, str] = {}
    skipped = 0
    for s in train_rows:
        try:
            px = load_image(s.path).pixels
        except InputError:
            skipped += 1
            continue
        half = _halves(px, regions)[0]
        acc = accs.setdefault(str(s.device), FingerprintAccumulator(device=device))
        if acc.shape is not None and acc.shape != half.shape[:2]:
            skipped += 1  # another photo size: cannot join this fingerprint
            continue
        acc.add(half)
        camera_of[str(s.device)] = str(s.camera)
    devices = sorted(accs)
    if len(devices) < 2:
        return None
    fps = [accs[d].finish(d) for d in devices]
    scorer = FingerprintSet(fps, device, rotations="none")
    out: dict[str, Any] = {
        "fingerprints": {d: accs[d].count for d in devices},
        "fingerprint_region": regions[0],
    }
    cams = sorted(set(camera_of.values()))
    out["chance"] = 1.0 / len(cams)
    out["device_chance"] = 1.0 / len(devices)
    scores = {r: HalfScores(r) for r in regions}
    dev_ok = {r: 0 for r in regions}
    match = {r: 0 for r in regions}
    pce_own: dict[str, list[float]] = {r: [] for r in regions}
    for k, s in enumerate(t for t in test if t.device in accs):
        try:
            px = load_image(s.path).pixels
        except InputError:
            skipped += 1
            continue
        halves = _halves(px, regions)
        if halves[0].shape[:2] != fps[0].shape:
            skipped += 1
            continue
        for r, half in zip(regions, halves, strict=True):
            res = scorer.score(half, f"{s.path} ({r} half)")
            pces = np.array([m.pce for m in res])
            best = devices[int(np.argmax(pces))]
            own = float(pces[devices.index(str(s.device))])
            scores[r].add(str(s.camera), camera_of[best] == s.camera)
            dev_ok[r] += int(best == s.device)
            match[r] += int(own > DEFAULT_THRESHOLD)
            pce_own[r].append(own)
        emit({"event": "prnu", "done": k + 1})
    for r in regions:
        d = scores[r].to_dict()
        n = max(1, scores[r].images)
        d["device_accuracy"] = dev_ok[r] / n
        d["own_device_match_rate"] = match[r] / n
        d["own_device_pce_median"] = float(np.median(pce_own[r])) if pce_own[r] else None
        out["test_" + r] = d
    # PRNU decides by a match (PCE above threshold), whose chance level is ~0 (p = 1e-14
    # per test at PCE 60): the transfer is judged on the own-device match rate. When the
    # fingerprints are too weak for that (under half of the seen halves match: few or busy
    # photos), the nearest-device accuracy is used instead (chance = 1 / devices). The
    # camera accuracies can stay above chance on the unseen half when the fingerprints hold
    # non-unique, repeating artefacts of the camera model (they are then not pure PRNU).
    n0, n1 = max(1, scores[regions[0]].images), max(1, scores[regions[1]].images)
    if match[regions[0]] / n0 >= 0.5:
        out["transfer_measure"] = "own_device_match_rate"
        out["transfer"] = transfer_ratio(match[regions[0]] / n0, match[regions[1]] / n1, 0.0)
    else:
        out["transfer_measure"] = "device_accuracy"
        out["transfer"] = transfer_ratio(
            dev_ok[regions[0]] / n0, dev_ok[regions[1]] / n1, out["device_chance"]
        )
    out["verdict"] = verdict(out["transfer"])
    if skipped:
        out["skipped"] = skipped
    return out


def lr_check(
    samples: Sequence[Sample],
    config: TrainConfig,
    *,
    axis: str = "horizontal",
    prnu: bool = True,
    home: Path | None = None,
    keep_model: bool = False,
    workers: int = 2,
    progress: Hook | None = None,
) -> LrResult:
    """Train on one half of the training photos, score both halves of the test photos.

    `config` is the `camid train` recipe (its region is replaced); the model goes to a
    temporary home and is discarded unless `keep_model` (then to `home`, the registry).
    """
    if axis not in AXES:
        raise UsageError(f"unknown axis {axis!r}; choose horizontal or vertical")
    seen, unseen = AXES[axis]
    emit = progress or (lambda ev: None)
    train_rows, test, notes = split_train_test(samples, seed=config.seed)
    if not test:
        raise UsageError("lr-check needs test photos (split=test, or enough photos per camera)")
    cfg = dataclasses.replace(config, region=seen, target="camera")
    with tempfile.TemporaryDirectory(prefix="camid-lrcheck-") as tmp:
        where = home if keep_model else Path(tmp)
        result = train(cfg, train_rows, home=where, progress=progress)
        from camid.models.store import load_model

        dev = torch.device(result.card.recipe.get("device", "cpu"))
        net, card = load_model(result.model_path or cfg.name, dev, home=where)
    from camid.engine.predict import default_view_spec

    predictor = Predictor(net, card, dev, batch_size=max(64, cfg.batch_size))
    base = default_view_spec(card, region="full")
    scores, errors = _score_cnn(predictor, test, [seen, unseen], base, workers, emit)
    for e in errors:
        notes.append(str(e))
    unknown = [s for s in test if s.camera not in card.classes]
    if unknown:
        notes.append(f"{len(unknown)} test photos of cameras absent from training skipped")
    cnn = {f"test_{r}": v for r, v in scores.items()}
    control = prnu_control(train_rows, test, (seen, unseen), dev, emit) if prnu else None
    if prnu and control is None:
        notes.append("PRNU control skipped: it needs a device column and at least 2 devices")
    m = card.metrics
    model = {
        "name": card.name,
        "arch": card.arch,
        "stored": str(result.model_path) if keep_model else None,
        "weights_sha256": card.weights_sha256,
        "train_region": seen,
        "val_accuracy": m.get("val_accuracy"),
        "epochs_run": m.get("epochs_run"),
        "seconds": m.get("seconds"),
        "stopped": result.stopped,
        "train_images": len(train_rows),
        "test_images": len(test),
    }
    return LrResult(axis, seen, unseen, list(card.classes), cnn, control, model, notes)


def bar_plot(result: dict, path: Path) -> Path:
    """Grouped bars per camera: CNN and PRNU accuracy on the seen and the unseen half,
    with chance marked. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from camid.report.plots import _save

    seen, unseen = result["train_region"], result["test_region"]
    cams = list(result["classes"])
    groups = [("all", None), *[(c, c) for c in cams]]
    series = [
        (f"CNN {seen} (held-out photos)", result["cnn"][f"test_{seen}"], "#4c72b0"),
        (f"CNN {unseen} (unseen half)", result["cnn"][f"test_{unseen}"], "#55a868"),
    ]
    if result.get("prnu"):
        series += [
            (f"PRNU {seen}", result["prnu"][f"test_{seen}"], "#c44e52"),
            (f"PRNU {unseen}", result["prnu"][f"test_{unseen}"], "#dd8452"),
        ]
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(groups) + 5), 4))
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    for k, (label, d, colour) in enumerate(series):
        vals = [
            (d.get("accuracy") if cam is None else d["per_camera"].get(cam)) or 0.0
            for _, cam in groups
        ]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, vals, width, label=label, color=colour)
    ax.axhline(result["chance"], color="grey", ls="--", lw=1, label="chance (cameras)")
    ax.set_xticks(x, [g for g, _ in groups], rotation=20, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("image-level accuracy")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path, f"lr-check: trained on {seen} halves, tested on {unseen} halves")
