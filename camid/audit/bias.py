"""bias-check: can a model trained on this dataset cheat by recognising the camera?

`run_bias_check` finds the cameras (manifest column, folder level, EXIF, or pseudo-cameras
inferred from the pixels), measures the camera/label association (stage 0, seconds), and
unless `quick`, trains the task model and looks for the shortcut in its predictions
(stage 1, minutes; camid.audit.shortcut). Every check gets PASS / WARN / FAIL / INFO with
its figures; the overall verdict is one of CLEAN, SIGNAL_UNEXPLOITED, CONFOUNDED, INFLATED
(or INCONCLUSIVE when no cameras could be established).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from camid import __version__
from camid.audit.association import AssociationReport, associate
from camid.data.dataset import load_dataset
from camid.data.manifest import Sample, write_manifest
from camid.engine.shard import ShardGroup
from camid.errors import UsageError

SCHEMA_VERSION = 1
STATUSES = ("PASS", "INFO", "WARN", "FAIL")
_RANK = {"PASS": 0, "INFO": 0, "SKIP": 0, "WARN": 1, "FAIL": 2}
VERDICTS = {
    "CLEAN": "no camera/label association and no sign that a model uses the camera",
    "SIGNAL_UNEXPLOITED": "camera signal present but unexploited: the cameras can be told "
    "apart, yet they do not predict the label and the model does not follow them",
    "CONFOUNDED": "the camera predicts the label in the training data: a model can reach "
    "its accuracy by recognising the camera",
    "INFLATED": "the model follows the camera: accuracy will drop on new cameras",
    "INCONCLUSIVE": "no cameras could be established for the images",
}

Progress = Callable[[str, int, int], None]


@dataclass
class Thresholds:
    """Where a figure turns into WARN or FAIL (all configurable)."""

    gain_warn: float = 0.2  # camera-only baseline, normalised gain
    gain_fail: float = 0.3
    v_warn: float = 0.3  # bias-corrected Cramér's V (with p < alpha)
    alpha: float = 0.05
    min_camera_images: int = 5  # a camera needs this many rows to count as single-label
    camera_accuracy_ratio: float = 0.8  # stage 1: camera accuracy below this x overall
    min_camera_test_images: int = 4  # stage 1: "all one label" needs this many test images
    follow_warn: float = 0.2  # stage 1: share of conflict images predicted as the camera's label
    follow_fail: float = 0.4
    recoverable: float = 0.3  # stage 1: normalised camera recoverability that counts as present

    def validate(self) -> Thresholds:
        """Raise UsageError on impossible values."""
        if not 0 <= self.gain_warn <= self.gain_fail <= 1:
            raise UsageError("gain thresholds must satisfy 0 <= warn <= fail <= 1")
        if not 0 < self.alpha < 1:
            raise UsageError("alpha must be between 0 and 1")
        return self


@dataclass
class BiasOptions:
    """What a bias-check run does (the CLI fills this from its options)."""

    quick: bool = False
    label_level: int = 0
    camera_level: int | None = None
    seed: int = 0
    thresholds: Thresholds = field(default_factory=Thresholds)
    # stage 1
    time_budget: float = 60.0
    epochs: int = 20
    patches_per_image: int | None = 4
    patch: int | None = 32  # training crop: 32 px is 4x cheaper than 64 and keeps the traces
    arch: str = "tracenet"
    device: str = "auto"
    save_model: str | None = None
    home: Path | None = None
    probe: bool = True
    counterfactual: bool = False  # stage 1: also retrain on a camera-balanced resampling
    max_examples: int = 12


@dataclass
class Check:
    """One check's outcome with its figures, in one line."""

    name: str
    status: str
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass
class CameraSource:
    """Where the camera of each image came from."""

    kind: str  # manifest | folder_level | exif | pseudo | none
    description: str
    n_known: int
    n_missing: int
    pseudo: dict | None = None
    weak: bool = False


@dataclass
class BiasReport:
    """Everything bias-check found; `to_dict` is the documented JSON object."""

    dataset: str
    n_images: int
    labels: list[str]
    cameras: list[str]
    camera_source: CameraSource
    association: AssociationReport | None
    checks: list[Check]
    verdict: str
    status: str
    stage: str  # "0" or "0+1"
    seed: int
    thresholds: Thresholds
    shortcut: Any | None = None  # camid.audit.shortcut.ShortcutReport
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    samples: list[Sample] = field(default_factory=list, repr=False)

    @property
    def verdict_text(self) -> str:
        """The verdict in words."""
        return VERDICTS.get(self.verdict, self.verdict)

    def exit_code(self, fail_on: str = "fail") -> int:
        """1 when the worst status reaches `fail_on` ('warn' or 'fail'), else 0."""
        level = {"warn": 1, "fail": 2}.get(fail_on.lower())
        if level is None:
            raise UsageError("fail-on must be warn or fail")
        return 1 if _RANK.get(self.status, 0) >= level else 0

    def to_dict(self) -> dict:
        """The versioned JSON object (schema in docs/bias-check.md)."""
        from camid.report.output import to_jsonable

        d = {
            "schema_version": SCHEMA_VERSION,
            "camid_version": __version__,
            "dataset": self.dataset,
            "verdict": self.verdict,
            "verdict_text": self.verdict_text,
            "status": self.status,
            "stage": self.stage,
            "seed": self.seed,
            "n_images": self.n_images,
            "labels": self.labels,
            "cameras": self.cameras,
            "camera_source": self.camera_source,
            "checks": self.checks,
            "association": _association_dict(self.association),
            "shortcut": self.shortcut.to_dict() if self.shortcut is not None else None,
            "thresholds": self.thresholds,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }
        return to_jsonable(d)


def _association_dict(a: AssociationReport | None) -> dict | None:
    if a is None:
        return None
    from camid.report.output import to_jsonable

    d = to_jsonable(a)
    for key in ("stats", "test_stats"):
        st = d.get(key)
        if st:
            st["table"] = {
                "cameras": st["table"]["rows"],
                "labels": st["table"]["cols"],
                "counts": st["table"]["counts"],
            }
    return d


# -- cameras ------------------------------------------------------------------------------
def load_with_cameras(
    source: str | Path,
    options: BiasOptions,
    progress: Progress | None = None,
    group: ShardGroup | None = None,
) -> tuple[list[Sample], CameraSource, list[str]]:
    """Load a dataset and give every image a camera, in this order: the manifest's camera
    column, the folder level `camera_level`, EXIF Make+Model, else pseudo-cameras (their
    feature pass split over `group`'s torchrun ranks when given)."""
    ds = load_dataset(
        source,
        label_level=options.label_level,
        camera_level=options.camera_level,
        progress=progress,
    )
    samples, notes = ds.samples, list(ds.notes)
    n_col, n_exif = ds.camera_from.get("column", 0), ds.camera_from.get("exif", 0)
    if ds.source == "manifest" and n_col == len(samples):
        kind, desc = "manifest", "the manifest's camera column"
    elif ds.source == "manifest" and n_col:
        kind = "manifest"
        desc = f"the manifest's camera column ({n_col} rows) and EXIF Make+Model ({n_exif})"
    elif options.camera_level is not None and ds.source == "folder":
        kind, desc = "folder_level", f"folder level {options.camera_level}"
    else:
        kind, desc = "exif", "EXIF Make+Model of each file"
    known = sum(s.camera is not None for s in samples)
    if samples and known >= 0.5 * len(samples):
        return samples, CameraSource(kind, desc, known, len(samples) - known), notes
    # fewer than half of the images have a camera: infer pseudo-cameras for all of them
    if known:
        notes.append(
            f"only {known} of {len(samples)} images have a camera; pseudo-cameras used for all"
        )
    pseudo = _pseudo_cameras(samples, options.seed, progress, group)
    return (*pseudo, notes)  # type: ignore[return-value]


def _pseudo_cameras(
    samples: list[Sample],
    seed: int,
    progress: Progress | None = None,
    group: ShardGroup | None = None,
) -> tuple[list[Sample], CameraSource]:
    from camid.audit.pseudo import infer_cameras

    def wrap(items, total, description):  # the pseudo module's (iterable, total, text) form
        for k, item in enumerate(items, start=1):
            yield item
            if progress is not None:
                progress(f"pseudo-cameras: {description}", k, total)

    pc = infer_cameras([s.path for s in samples], seed=seed, progress=wrap, group=group)
    for s, cam in zip(samples, pc.labels, strict=True):
        s.camera = cam if not pc.weak else None
    info = pc.to_dict()
    known = sum(s.camera is not None for s in samples)
    desc = (
        f"pseudo-cameras inferred from the pixels ({pc.k} groups, stability {pc.stability:.2f})"
        if not pc.weak
        else f"pseudo-camera inference found the traces too weak: {pc.reason}"
    )
    return samples, CameraSource("pseudo", desc, known, len(samples) - known, info, pc.weak)


# -- checks -------------------------------------------------------------------------------
def stage0_checks(a: AssociationReport, th: Thresholds) -> list[Check]:
    """PASS/WARN/FAIL/INFO checks from the association report."""
    checks: list[Check] = []
    st = a.stats
    if st is None or len(a.labels) < 2 or len(a.cameras) < 1:
        checks.append(
            Check(
                "association",
                "INFO",
                f"nothing to associate: {len(a.labels)} label(s), {len(a.cameras)} camera(s) "
                f"in {a.n_rows} rows",
            )
        )
        return checks
    b = st.baseline
    status = "FAIL" if b.gain >= th.gain_fail else "WARN" if b.gain >= th.gain_warn else "PASS"
    checks.append(
        Check(
            "camera_only_baseline",
            status,
            f"predicting the label from the camera alone: accuracy {b.accuracy:.3f} vs "
            f"{b.majority_share:.3f} for the commonest label, gain {b.gain:.2f} "
            f"(WARN >= {th.gain_warn}, FAIL >= {th.gain_fail})",
            {
                "accuracy": b.accuracy,
                "majority_share": b.majority_share,
                "gain": b.gain,
                "folds": b.folds,
                "n": b.n,
            },
        )
    )
    p = st.test.p_value
    significant = p is not None and p < th.alpha
    status = "WARN" if significant and st.cramers_v >= th.v_warn else "PASS"
    p_txt = "n/a" if p is None else f"{p:.3g}"
    checks.append(
        Check(
            "association",
            status,
            f"camera x label: {st.test.method} p = {p_txt}, Cramér's V (corrected) "
            f"{st.cramers_v:.2f}, Theil's U(label|camera) {st.theils_u_label_given_camera:.2f}",
            {
                "method": st.test.method,
                "chi2": st.test.chi2,
                "dof": st.test.dof,
                "p_value": p,
                "cramers_v": st.cramers_v,
                "theils_u_label_given_camera": st.theils_u_label_given_camera,
                "theils_u_camera_given_label": st.theils_u_camera_given_label,
                "tied_cells": len(a.tied),
            },
        )
    )
    if a.single_label_cameras:
        names = ", ".join(
            f"{c['camera']} -> {c['label']} ({c['n']})" for c in a.single_label_cameras
        )
        checks.append(
            Check(
                "single_label_cameras",
                "WARN",
                f"{len(a.single_label_cameras)} camera(s) seen with one label only: {names}",
                {"cameras": a.single_label_cameras},
            )
        )
    else:
        checks.append(
            Check("single_label_cameras", "PASS", "every camera is seen with several labels")
        )
    sp = a.split
    if sp is None:
        checks.append(Check("test_split", "INFO", "no split=test rows: figures use every row"))
    else:
        ts = a.test_stats
        parts = [f"{len(sp.shared)} camera(s) in both splits"]
        if sp.only_test:
            parts.append(
                f"only in test: {', '.join(sp.only_test)} (the test measures unseen cameras)"
            )
        if sp.only_train:
            parts.append(f"only in training: {', '.join(sp.only_train)}")
        status = "INFO"
        if ts is not None and ts.baseline.gain >= th.gain_warn:
            status = "WARN"
            parts.append(
                f"the test split is itself confounded (gain {ts.baseline.gain:.2f}): its "
                "accuracy cannot reveal a camera shortcut"
            )
        checks.append(
            Check(
                "test_split",
                status,
                "; ".join(parts),
                {
                    "train_cameras": sp.train,
                    "test_cameras": sp.test,
                    "only_test": sp.only_test,
                    "only_train": sp.only_train,
                    "test_gain": ts.baseline.gain if ts is not None else None,
                },
            )
        )
    return checks


def worst(checks: Sequence[Check]) -> str:
    """The most severe status among checks (INFO counts as PASS)."""
    rank = max((_RANK.get(c.status, 0) for c in checks), default=0)
    return {0: "PASS", 1: "WARN", 2: "FAIL"}[rank]


def decide_verdict(checks: Sequence[Check], source: CameraSource, shortcut: Any | None) -> str:
    """The overall verdict from the checks (see VERDICTS)."""
    by = {c.name: c for c in checks}
    if source.kind in ("none",) or (source.kind == "pseudo" and source.weak):
        return "INCONCLUSIVE"
    if shortcut is not None and getattr(shortcut, "exploited", False):
        return "INFLATED"
    conf = [by.get(n) for n in ("camera_only_baseline", "association", "single_label_cameras")]
    if any(c is not None and _RANK[c.status] >= 1 for c in conf):
        return "CONFOUNDED"
    present = source.kind == "pseudo" or (
        shortcut is not None and getattr(shortcut, "signal_present", False)
    )
    return "SIGNAL_UNEXPLOITED" if present else "CLEAN"


# -- the run ------------------------------------------------------------------------------
def run_bias_check(
    source: str | Path,
    options: BiasOptions | None = None,
    *,
    progress: Progress | None = None,
    events: Callable[[dict], None] | None = None,
    group: ShardGroup | None = None,
) -> BiasReport:
    """Audit a dataset (folder or manifest CSV) for camera/label leakage.

    `progress(stage, done, total)` reports long loops; `events` receives the training
    engine's event dicts during stage 1. With a `group` of torchrun ranks (every rank
    calls this), the pseudo-camera feature pass is split over the ranks.
    """
    opts = options or BiasOptions()
    th = opts.thresholds.validate()
    t0 = time.perf_counter()
    samples, cam_src, notes = load_with_cameras(source, opts, progress, group)
    if not samples:
        raise UsageError(f"{source}: the dataset has no images")
    a = associate(samples, seed=opts.seed, alpha=th.alpha, min_camera_images=th.min_camera_images)
    notes.extend(a.notes)
    checks: list[Check] = []
    if cam_src.kind == "none" or cam_src.weak:
        checks.append(Check("cameras", "WARN", f"cameras unknown: {cam_src.description}"))
    else:
        checks.append(
            Check(
                "cameras",
                "INFO",
                f"{len(a.cameras)} camera(s) from {cam_src.description}"
                + (f"; {cam_src.n_missing} image(s) without one" if cam_src.n_missing else ""),
            )
        )
        checks.extend(stage0_checks(a, th))
    shortcut = None
    stage = "0"
    train_labels = {
        s.label
        for s in samples
        if s.label is not None and s.camera is not None and (s.split or "").lower() != "test"
    }
    if not opts.quick and len(train_labels) < 2:
        notes.append("stage 1 skipped: the training rows hold fewer than 2 labels")
    elif not opts.quick and cam_src.kind != "none" and not cam_src.weak:
        from camid.audit.shortcut import run_shortcut_stage

        shortcut = run_shortcut_stage(samples, a, opts, progress=progress, events=events)
        checks.extend(shortcut.checks)
        notes.extend(shortcut.notes)
        stage = "0+1"
    verdict = decide_verdict(checks, cam_src, shortcut)
    return BiasReport(
        dataset=str(source),
        n_images=len(samples),
        labels=a.labels,
        cameras=a.cameras,
        camera_source=cam_src,
        association=a,
        checks=checks,
        verdict=verdict,
        status=worst(checks),
        stage=stage,
        seed=opts.seed,
        thresholds=th,
        shortcut=shortcut,
        notes=notes,
        seconds=time.perf_counter() - t0,
        samples=samples,
    )


# -- outputs ------------------------------------------------------------------------------
def export_cameras(report: BiasReport, path: str | Path) -> Path:
    """Write every image with its (possibly inferred) camera as a manifest."""
    return write_manifest(report.samples, path)


def write_splits(
    report: BiasReport, out_dir: str | Path, *, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, Any]:
    """Write two split manifests that remove the camera leak; return what was written.

    camera_balanced.csv: split=test is `test_fraction` of every camera x label cell; the
    training rows are subsampled so that every camera has the same number of images of
    each of its labels (cameras with one label only go to test) - no camera predicts the
    label in training. camera_disjoint.csv: whole cameras are held out for test (grouped
    split, about `test_fraction` of the images, every label kept in training), so the
    test accuracy is the accuracy on new cameras.
    """
    if not 0 < test_fraction < 1:
        raise UsageError("the test fraction must be between 0 and 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [s for s in report.samples if s.camera is not None and s.label is not None]
    rng = np.random.default_rng(seed)
    cells: dict[tuple[str, str], list[Sample]] = {}
    for s in sorted(rows, key=lambda s: str(s.path)):
        cells.setdefault((s.camera, s.label), []).append(s)  # type: ignore[arg-type]
    balanced: list[dict] = []
    dropped = 0
    by_cam: dict[str, dict[str, list[Sample]]] = {}
    for (cam, lab), members in sorted(cells.items()):
        order = rng.permutation(len(members))
        n_test = int(round(test_fraction * len(members)))
        for k, i in enumerate(order):
            s = members[int(i)]
            if k < n_test:
                balanced.append({**s.to_record(), "split": "test"})
            else:
                by_cam.setdefault(cam, {}).setdefault(lab, []).append(s)
    for _cam, labs in sorted(by_cam.items()):
        if len(labs) < 2:
            for members in labs.values():
                balanced.extend({**s.to_record(), "split": "test"} for s in members)
            continue
        m = min(len(v) for v in labs.values())
        for members in labs.values():
            balanced.extend({**s.to_record(), "split": "train"} for s in members[:m])
            dropped += len(members) - m
    # grouped: hold out whole cameras, never the last camera of a label
    cams = sorted({s.camera for s in rows})  # type: ignore[type-var]
    target = test_fraction * len(rows)
    held: list[str] = []
    count = 0
    for cam in [cams[int(i)] for i in rng.permutation(len(cams))]:
        if count >= target or len(held) >= len(cams) - 1:
            break
        keep = [s for s in rows if s.camera not in (*held, cam)]
        if {s.label for s in keep} != {s.label for s in rows}:
            continue
        held.append(cam)
        count += sum(s.camera == cam for s in rows)
    disjoint = [{**s.to_record(), "split": "test" if s.camera in held else "train"} for s in rows]
    p1 = write_manifest(balanced, out / "camera_balanced.csv")
    p2 = write_manifest(disjoint, out / "camera_disjoint.csv")
    return {
        "camera_balanced": {
            "path": str(p1),
            "train": sum(r["split"] == "train" for r in balanced),
            "test": sum(r["split"] == "test" for r in balanced),
            "dropped": dropped,
        },
        "camera_disjoint": {
            "path": str(p2),
            "train": sum(r["split"] == "train" for r in disjoint),
            "test": sum(r["split"] == "test" for r in disjoint),
            "test_cameras": sorted(held),
        },
    }
