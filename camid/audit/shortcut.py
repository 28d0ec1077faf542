"""Stage 1 of bias-check: can the camera be read from the pixels, and does a model use it?

1. Camera-recoverability probe: fixed forensic features of each image (the JPEG
   quantisation lattice of camid.models.traces.JpegLattice, plus noise-residual variance,
   colour-channel residual correlation and lag-1/2 residual autocorrelation, i.e. the
   colour-filter periodicity) of a central 128 px crop and a cross-validated ridge linear
   classifier.
   Recoverability = (balanced accuracy - chance) / (1 - chance), overall and within each
   label class. Chosen over training a camera CNN because it takes seconds, needs no
   second training run, and measures the traces camid already knows camera models by.
2. The task model: the shared training engine (target = label, a time budget, a temporary
   camid home unless the model is to be kept), evaluated on the test rows.
3. The shortcut in its predictions: per camera accuracy and predicted labels (seed 000
   Fig. 3), the test images of cameras tied to one label in training whose true label is
   another ("conflict" images) and how often the prediction follows the camera, a
   permutation test of camera vs prediction within each true label, and the accuracy
   drop on cameras unseen in training with a bootstrap 95% CI.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from camid.audit.association import AssociationReport
from camid.data.manifest import Sample
from camid.errors import InputError
from camid.stats.association import (
    bootstrap_ci,
    conditional_permutation_test,
    fold_assignment,
)

PROBE_SIDE = 128
MAX_PROBE_IMAGES = 2000
TASK_MODEL_NAME = "bias-check-task"
LEARNED_MARGIN = 0.1
"""Validation accuracy must beat chance by this much for the task model to count."""


@dataclass
class ShortcutReport:
    """Stage 1 results (see the module docstring); `to_dict` for JSON."""

    probe: dict[str, Any]
    training: dict[str, Any]
    test_source: str
    n_test: int
    accuracy: float | None
    balanced_accuracy: float | None
    per_class: dict[str, dict[str, Any]]
    per_camera: list[dict[str, Any]]
    prediction_table: dict[str, Any] | None
    follow: dict[str, Any]
    unseen: dict[str, Any]
    examples: list[dict[str, Any]]
    checks: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counterfactual: dict[str, Any] | None = None
    exploited: bool = False
    signal_present: bool = False
    predictions: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        """JSON-ready dict (predictions per test image included)."""
        from camid.report.output import to_jsonable

        return to_jsonable(dataclasses.asdict(self))


# -- the probe ----------------------------------------------------------------------------
def trace_features(pixels: np.ndarray, lattice: Any) -> np.ndarray:
    """Forensic features of one RGB uint8 image (central crop on the 8x8 grid)."""
    import torch

    h, w = pixels.shape[:2]
    side_h, side_w = min(PROBE_SIDE, h // 8 * 8), min(PROBE_SIDE, w // 8 * 8)
    y0 = (h - side_h) // 2 // 8 * 8
    x0 = (w - side_w) // 2 // 8 * 8
    crop = pixels[y0 : y0 + side_h, x0 : x0 + side_w].astype(np.float32)
    x = torch.from_numpy(crop / 255.0).permute(2, 0, 1)[None]
    with torch.inference_mode():
        jpeg = lattice(x)[0].numpy()
    # noise residual: pixel minus the mean of its 4 neighbours, per channel
    c = crop
    res = c[1:-1, 1:-1] - 0.25 * (c[:-2, 1:-1] + c[2:, 1:-1] + c[1:-1, :-2] + c[1:-1, 2:])
    r = res.reshape(-1, 3)
    std = r.std(axis=0) + 1e-6
    corr = np.corrcoef(r.T + 1e-9 * np.random.default_rng(0).standard_normal(r.T.shape))
    g = res[..., 1]
    g = (g - g.mean()) / (g.std() + 1e-6)
    auto = [float((g[:, :-lag] * g[:, lag:]).mean()) for lag in (1, 2)] + [
        float((g[:-lag] * g[lag:]).mean()) for lag in (1, 2)
    ]
    extra = np.concatenate([np.log(std), corr[np.triu_indices(3, 1)], auto])
    return np.concatenate([jpeg, extra]).astype(np.float32)


def linear_probe_cv(
    x: np.ndarray, y: Sequence[str], *, folds: int = 5, seed: int = 0, ridge: float = 1.0
) -> dict[str, Any]:
    """Cross-validated linear probe: balanced accuracy, recoverability (normalised above
    chance) and the out-of-fold confusion matrix.

    The probe is a ridge-regularised least-squares classifier on standardised features
    (one-hot targets, solved in closed form in the n x n dual), so it costs one small
    linear solve per fold however many features there are.
    """
    classes = sorted(set(y))
    yi = np.array([classes.index(v) for v in y])
    counts = np.bincount(yi, minlength=len(classes))
    k = int(min(folds, counts.min())) if len(classes) >= 2 else 0
    if k < 2:
        return {
            "classes": classes,
            "n": len(y),
            "balanced_accuracy": None,
            "recoverability": None,
            "note": "fewer than 2 images per class",
        }
    fold = fold_assignment([str(v) for v in yi], [""] * len(yi), k, seed)
    pred = np.zeros(len(yi), dtype=np.int64)
    onehot = np.eye(len(classes))[yi]
    for f in range(k):
        tr, te = fold != f, fold == f
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        xt = ((x[tr] - mu) / sd).astype(np.float64)
        xe = ((x[te] - mu) / sd).astype(np.float64)
        t = onehot[tr] - onehot[tr].mean(0)
        gram = xt @ xt.T
        lam = ridge * np.trace(gram) / len(gram)
        dual = np.linalg.solve(gram + lam * np.eye(len(gram)), t)
        pred[te] = (xe @ (xt.T @ dual)).argmax(1)
    cm = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(cm, (yi, pred), 1)
    recall = np.diag(cm) / np.maximum(cm.sum(1), 1)
    bacc = float(recall.mean())
    chance = 1.0 / len(classes)
    return {
        "classes": classes,
        "n": len(y),
        "folds": k,
        "balanced_accuracy": bacc,
        "recoverability": (bacc - chance) / (1 - chance),
        "confusion": cm.tolist(),
    }


def camera_probe(
    samples: Sequence[Sample],
    *,
    seed: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    max_images: int = MAX_PROBE_IMAGES,
) -> dict[str, Any]:
    """How well the cameras can be told apart from the pixels, overall and per label."""
    from camid.io.image import load_image
    from camid.models.traces import JpegLattice

    rows = [s for s in samples if s.camera is not None and s.label is not None]
    if len(rows) > max_images:
        rng = np.random.default_rng(seed)
        rows = [rows[int(i)] for i in sorted(rng.choice(len(rows), max_images, replace=False))]
    lattice = JpegLattice(mean=0.0, std=1.0)
    feats, keep, failed = [], [], 0
    for i, s in enumerate(rows):
        try:
            feats.append(trace_features(load_image(s.path).pixels, lattice))
            keep.append(s)
        except InputError:
            failed += 1
        if progress:
            progress("stage 1: camera traces", i + 1, len(rows))
    if len(keep) < 4:
        return {
            "n": len(keep),
            "failed": failed,
            "overall": None,
            "within_label": {},
            "within_label_mean": None,
            "note": "too few readable images for a probe",
        }
    x = np.stack(feats)
    overall = linear_probe_cv(x, [s.camera for s in keep], seed=seed)  # type: ignore[misc]
    within: dict[str, Any] = {}
    for lab in sorted({s.label for s in keep}):  # type: ignore[type-var]
        idx = [i for i, s in enumerate(keep) if s.label == lab]
        cams = [keep[i].camera for i in idx]
        if len(set(cams)) >= 2:
            within[lab] = linear_probe_cv(x[idx], cams, seed=seed)  # type: ignore[arg-type]
    vals = [v["recoverability"] for v in within.values() if v.get("recoverability") is not None]
    return {
        "method": "JPEG lattice + residual statistics, ridge linear probe, 5-fold CV",
        "n": len(keep),
        "failed": failed,
        "overall": overall,
        "within_label": within,
        "within_label_mean": float(np.mean(vals)) if vals else None,
    }


# -- the analysis of predictions ----------------------------------------------------------
def shortcut_labels(a: AssociationReport, min_share: float = 0.5) -> dict[str, str]:
    """Camera -> the label it is tied to in training (significant cell, >= min_share)."""
    out: dict[str, str] = {}
    for cell in a.tied:  # sorted by residual, strongest first
        if cell.label_share_in_camera >= min_share and cell.camera not in out:
            out[cell.camera] = cell.label
    return out


def analyse_predictions(
    test: Sequence[Sample],
    predicted: Sequence[str],
    a: AssociationReport,
    thresholds: Any,
    *,
    seed: int = 0,
    max_examples: int = 12,
    probabilities: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Everything stage 1 reads from the test predictions; plus its checks."""
    from camid.audit.bias import Check

    th = thresholds
    truth = [str(s.label) for s in test]
    cams = [str(s.camera) for s in test]
    pred = [str(p) for p in predicted]
    n = len(test)
    ok = np.array([t == p for t, p in zip(truth, pred, strict=True)], dtype=float)
    labels = sorted(set(truth) | set(pred))
    acc = float(ok.mean()) if n else None
    per_class = {
        lab: {
            "n": int(sum(t == lab for t in truth)),
            "accuracy": float(ok[[t == lab for t in truth]].mean()) if lab in truth else None,
        }
        for lab in sorted(set(truth))
    }
    accs = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    bacc = float(np.mean(accs)) if accs else None
    train_cams = set(a.stats.table.rows) if a.stats is not None else set()
    tied = shortcut_labels(a)
    pred_share = {lab: sum(p == lab for p in pred) / max(n, 1) for lab in labels}
    per_camera = []
    for cam in sorted(set(cams)):
        idx = np.array([c == cam for c in cams])
        cp = [p for p, m in zip(pred, idx, strict=True) if m]
        ct = [t for t, m in zip(truth, idx, strict=True) if m]
        c_acc = float(ok[idx].mean())
        flags = []
        if (
            len(cp) >= th.min_camera_test_images
            and len(set(ct)) >= 2
            and len(set(cp)) == 1
            and pred_share[cp[0]] < 0.9
        ):
            flags.append(f"all predicted {cp[0]}")
        if acc and c_acc < th.camera_accuracy_ratio * acc and (~idx).any():
            table = [
                [int(ok[idx].sum()), int((1 - ok[idx]).sum())],
                [int(ok[~idx].sum()), int((1 - ok[~idx]).sum())],
            ]
            p = float(stats.fisher_exact(table, alternative="less").pvalue)
            if p < th.alpha:
                flags.append(f"accuracy {c_acc:.2f} < {th.camera_accuracy_ratio} x {acc:.2f}")
        per_camera.append(
            {
                "camera": cam,
                "n": int(idx.sum()),
                "accuracy": c_acc,
                "seen_in_training": cam in train_cams,
                "training_label": tied.get(cam),
                "true": {lab: ct.count(lab) for lab in sorted(set(ct))},
                "predicted": {lab: cp.count(lab) for lab in labels if lab in cp},
                "flags": flags,
            }
        )
    ptab = {
        "cameras": [r["camera"] for r in per_camera],
        "labels": labels,
        "counts": [[r["predicted"].get(lab, 0) for lab in labels] for r in per_camera],
    }
    # conflict images: camera tied to one label in training, true label another
    conflict = np.array([c in tied and tied[c] != t for c, t in zip(cams, truth, strict=True)])
    follows = np.array(
        [bool(m) and tied.get(c) == p for c, p, m in zip(cams, pred, conflict, strict=True)]
    )
    stat, p_cond = conditional_permutation_test(cams, pred, truth, seed=seed) if n else (0.0, 1.0)
    # control for the conflict images: same true label, camera not tied to the shortcut label
    ctrl_yes = ctrl_no = 0
    for t_lab, s_lab in {(t, tied[c]) for c, t, m in zip(cams, truth, conflict, strict=True) if m}:
        for c, t, p in zip(cams, truth, pred, strict=True):
            if t == t_lab and tied.get(c) != s_lab:
                ctrl_yes += p == s_lab
                ctrl_no += p != s_lab
    n_fol = int(follows.sum())
    n_con = int(conflict.sum())
    p_follow = (
        float(
            stats.fisher_exact(
                [[n_fol, n_con - n_fol], [ctrl_yes, ctrl_no]], alternative="greater"
            ).pvalue
        )
        if n_con and ctrl_yes + ctrl_no
        else None
    )
    follow: dict[str, Any] = {
        "tied_cameras": tied,
        "n_conflict": n_con,
        "n_follow": n_fol,
        "follow_rate": float(n_fol / n_con) if n_con else None,
        "control_rate": float(ctrl_yes / (ctrl_yes + ctrl_no)) if ctrl_yes + ctrl_no else None,
        "follow_p_value": p_follow,
        "camera_vs_prediction_given_label": {"statistic": stat, "p_value": p_cond},
    }
    if conflict.any() and (~conflict).any():
        strata = conflict.astype(int)

        def drop(ix: np.ndarray) -> float:
            c = conflict[ix]
            if not c.any() or c.all():
                return float("nan")
            return float(ok[ix][~c].mean() - ok[ix][c].mean())

        lo, hi = bootstrap_ci(drop, n, seed=seed, strata=strata)
        follow.update(
            accuracy_consistent=float(ok[~conflict].mean()),
            accuracy_conflict=float(ok[conflict].mean()),
            drop=drop(np.arange(n)),
            drop_ci95=[lo, hi],
        )
    unseen_mask = np.array([c not in train_cams for c in cams])
    unseen: dict[str, Any] = {"cameras": sorted({c for c in cams if c not in train_cams})}
    if unseen_mask.any() and (~unseen_mask).any():

        def udrop(ix: np.ndarray) -> float:
            u = unseen_mask[ix]
            if not u.any() or u.all():
                return float("nan")
            return float(ok[ix][~u].mean() - ok[ix][u].mean())

        lo, hi = bootstrap_ci(udrop, n, seed=seed, strata=unseen_mask.astype(int))
        unseen.update(
            accuracy_seen=float(ok[~unseen_mask].mean()),
            accuracy_unseen=float(ok[unseen_mask].mean()),
            n_unseen=int(unseen_mask.sum()),
            drop=udrop(np.arange(n)),
            drop_ci95=[lo, hi],
        )
    examples = []
    for i in np.flatnonzero(follows)[:max_examples]:
        ex = {"path": str(test[i].path), "camera": cams[i], "label": truth[i], "predicted": pred[i]}
        if probabilities is not None:
            ex["probability"] = float(probabilities[i])
        examples.append(ex)
    # checks
    checks = []
    rate = follow["follow_rate"]
    if rate is None:
        sig = p_cond < th.alpha
        checks.append(
            Check(
                "follows_camera",
                "WARN" if sig else "PASS",
                "no camera is tied to one label in training; prediction vs camera within "
                f"each true label: permutation p = {p_cond:.3g}"
                + (" (predictions depend on the camera)" if sig else ""),
                {"p_value": p_cond},
            )
        )
    else:
        sig = p_follow is not None and p_follow < th.alpha
        status = (
            "FAIL"
            if sig and rate >= th.follow_fail
            else "WARN"
            if sig and rate >= th.follow_warn
            else "PASS"
        )
        d = follow.get("drop")
        ci = follow.get("drop_ci95")
        drop_txt = (
            f"; accuracy {follow['accuracy_consistent']:.2f} where camera and label agree vs "
            f"{follow['accuracy_conflict']:.2f} where they conflict (drop {d:.2f}, 95% CI "
            f"{ci[0]:.2f}..{ci[1]:.2f})"
            if d is not None and ci is not None
            else ""
        )
        checks.append(
            Check(
                "follows_camera",
                status,
                f"{follow['n_follow']} of {follow['n_conflict']} test images whose camera was "
                f"tied to another label in training were predicted as the camera's label "
                f"({rate:.0%}, vs {follow['control_rate'] or 0:.0%} for other cameras' images of "
                f"the same labels; Fisher p = {p_follow if p_follow is not None else 1:.3g})"
                + drop_txt,
                {k: v for k, v in follow.items() if k != "tied_cameras"},
            )
        )
    flagged = [r for r in per_camera if r["flags"]]
    checks.append(
        Check(
            "per_camera_accuracy",
            "WARN" if flagged else "PASS",
            "; ".join(f"{r['camera']}: {', '.join(r['flags'])}" for r in flagged)
            if flagged
            else f"no camera stands out (overall accuracy {acc:.2f})"
            if acc is not None
            else "no test images",
            {"accuracy": acc, "balanced_accuracy": bacc, "flagged": [r["camera"] for r in flagged]},
        )
    )
    if "drop" in unseen:
        lo = unseen["drop_ci95"][0]
        bad = unseen["drop"] >= 0.1 and lo is not None and lo > 0
        checks.append(
            Check(
                "unseen_cameras",
                "WARN" if bad else "PASS",
                f"accuracy {unseen['accuracy_seen']:.2f} on cameras seen in training vs "
                f"{unseen['accuracy_unseen']:.2f} on unseen ({', '.join(unseen['cameras'])}): "
                f"drop {unseen['drop']:.2f}, 95% CI {unseen['drop_ci95'][0]:.2f}.."
                f"{unseen['drop_ci95'][1]:.2f}",
                {k: v for k, v in unseen.items()},
            )
        )
    return {
        "accuracy": acc,
        "balanced_accuracy": bacc,
        "per_class": per_class,
        "per_camera": per_camera,
        "prediction_table": ptab,
        "follow": follow,
        "unseen": unseen,
        "examples": examples,
        "checks": checks,
        "exploited": any(c.name == "follows_camera" and c.status == "FAIL" for c in checks),
    }


# -- the stage ----------------------------------------------------------------------------
def camera_balanced(samples: Sequence[Sample], seed: int = 0) -> list[Sample]:
    """The training rows resampled so no camera predicts the label: for each camera with
    several labels, the same number of images of each (the smallest count); cameras with
    one label are left out. Test rows are kept as they are."""
    rng = np.random.default_rng(seed)
    out = [s for s in samples if (s.split or "").lower() == "test"]
    by_cam: dict[str, dict[str, list[Sample]]] = {}
    for s in samples:
        if (s.split or "").lower() != "test" and s.camera is not None and s.label is not None:
            by_cam.setdefault(s.camera, {}).setdefault(s.label, []).append(s)
    for cam in sorted(by_cam):
        labs = by_cam[cam]
        if len(labs) < 2:
            continue
        m = min(len(v) for v in labs.values())
        for lab in sorted(labs):
            rows = labs[lab]
            out.extend(rows[int(i)] for i in sorted(rng.choice(len(rows), m, replace=False)))
    return out


def _counterfactual(
    data: list[Sample],
    test: list[Sample],
    predicted: list[str | None],
    opts: Any,
    progress: Callable[[str, int, int], None] | None,
    events: Callable[[dict], None] | None,
) -> dict[str, Any]:
    """Retrain on a camera-balanced resampling; compare accuracy on the same test images."""
    from camid.audit.bias import Check

    balanced = camera_balanced(data, opts.seed)
    n_train = sum((s.split or "").lower() != "test" for s in data)
    n_bal = sum((s.split or "").lower() != "test" for s in balanced)
    labels = {s.label for s in balanced if (s.split or "").lower() != "test"}
    if len(labels) < 2:
        return {
            "done": False,
            "reason": "no camera holds two labels: the training data "
            "cannot be camera-balanced (collect every label with every camera)",
        }
    if n_bal == n_train:
        return {"done": False, "reason": "the training rows are already camera-balanced"}
    training, pred_b, _probs, _hist = _train_and_predict(
        balanced, test, opts, progress, events, counterfactual=True
    )
    idx = [i for i, (p, q) in enumerate(zip(predicted, pred_b, strict=True)) if p and q]
    truth = np.array([test[i].label for i in idx])
    ok_a = np.array([predicted[i] for i in idx]) == truth
    ok_b = np.array([pred_b[i] for i in idx]) == truth

    def gain(ix: np.ndarray) -> float:
        return float(ok_b[ix].mean() - ok_a[ix].mean())

    lo, hi = bootstrap_ci(gain, len(idx), seed=opts.seed)
    g = gain(np.arange(len(idx))) if idx else float("nan")
    better = bool(idx) and g >= 0.05 and lo > 0
    out = {
        "done": True,
        "train_images": n_bal,
        "dropped": n_train - n_bal,
        "accuracy_original": float(ok_a.mean()) if idx else None,
        "accuracy_balanced": float(ok_b.mean()) if idx else None,
        "gain": g,
        "gain_ci95": [lo, hi],
        "training": training,
    }
    out["check"] = Check(
        "counterfactual",
        "WARN" if better else "INFO",
        f"retrained on a camera-balanced resampling ({n_bal} of {n_train} training images): "
        f"test accuracy {out['accuracy_balanced']:.2f} vs {out['accuracy_original']:.2f} "
        f"(difference {g:+.2f}, paired bootstrap 95% CI {lo:+.2f}..{hi:+.2f})"
        + ("; the camera leak costs accuracy on a camera-balanced test" if better else ""),
        {k: v for k, v in out.items() if k != "training"},
    )
    return out


def build_test_split(samples: Sequence[Sample], fraction: float, seed: int) -> list[Sample]:
    """Copies of the samples with split=test on `fraction` of every camera x label cell."""
    rng = np.random.default_rng(seed)
    out = [dataclasses.replace(s) for s in samples]
    cells: dict[tuple, list[int]] = {}
    for i, s in enumerate(out):
        if s.camera is not None and s.label is not None:
            cells.setdefault((s.camera, s.label), []).append(i)
    for key in sorted(cells):
        members = cells[key]
        k = int(round(fraction * len(members)))
        for j in rng.permutation(len(members))[:k]:
            out[members[int(j)]].split = "test"
    return out


def run_shortcut_stage(
    samples: Sequence[Sample],
    a: AssociationReport,
    opts: Any,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    events: Callable[[dict], None] | None = None,
) -> ShortcutReport:
    """Stage 1: probe, train the task model, evaluate it on the test rows, analyse."""
    from camid.audit.bias import Check

    notes: list[str] = []
    rows = [s for s in samples if s.camera is not None and s.label is not None]
    probe = camera_probe(rows, seed=opts.seed, progress=progress) if opts.probe else {}
    if any((s.split or "").lower() == "test" for s in rows):
        data = list(rows)
        test_source = "the dataset's split=test rows"
    else:
        data = build_test_split(rows, 0.2, opts.seed)
        test_source = "built by bias-check: 20% of every camera x label cell"
        notes.append(f"no split=test rows: the test split was {test_source[15:]}")
    test = [s for s in data if (s.split or "").lower() == "test"]
    training, predicted, probs, history = _train_and_predict(data, test, opts, progress, events)
    ok_idx = [i for i, p in enumerate(predicted) if p is not None]
    if len(ok_idx) < len(test):
        notes.append(f"{len(test) - len(ok_idx)} test image(s) could not be read")
    test_ok = [test[i] for i in ok_idx]
    res = analyse_predictions(
        test_ok,
        [predicted[i] for i in ok_idx],
        a,
        opts.thresholds,  # type: ignore[misc]
        seed=opts.seed,
        max_examples=opts.max_examples,
        probabilities=[probs[i] for i in ok_idx],
    )
    checks: list[Check] = []
    cf_check = None
    if getattr(opts, "counterfactual", False):
        cf = _counterfactual(data, test, predicted, opts, progress, events)
        res["counterfactual"] = cf
        cf_check = cf.pop("check", None)
    rec = None
    if probe.get("overall"):
        rec = probe.get("within_label_mean")
        if rec is None:
            rec = probe["overall"].get("recoverability")
        o = probe["overall"]
        checks.append(
            Check(
                "camera_recoverability",
                "INFO",
                f"cameras recognisable from the pixels: balanced accuracy "
                f"{o['balanced_accuracy']:.2f} over {len(o['classes'])} cameras "
                f"(recoverability {o['recoverability']:.2f}"
                + (
                    f"; within a label {probe['within_label_mean']:.2f}"
                    if probe.get("within_label_mean") is not None
                    else ""
                )
                + ")",
                {
                    "recoverability": o["recoverability"],
                    "within_label_mean": probe.get("within_label_mean"),
                },
            )
        )
    stage_checks = res.pop("checks")
    val = training.get("val_accuracy")
    counts = np.unique(
        [s.label for s in data if (s.split or "").lower() != "test"], return_counts=True
    )[1]
    chance = float(max(1.0 / len(counts), counts.max() / counts.sum())) if len(counts) else 0.0
    learned = val is not None and val >= chance + LEARNED_MARGIN
    checks.append(
        Check(
            "task_model",
            "INFO",
            f"{training['arch']} label classifier: validation accuracy "
            f"{val if val is not None else float('nan'):.2f} (chance {chance:.2f}) after "
            f"{training.get('epochs_run')} epoch(s), {training['seconds']:.0f} s"
            + (
                ""
                if learned
                else "; it did not learn the label in the time budget, so its "
                "test predictions are no evidence either way (give stage 1 more time)"
            ),
            {"val_accuracy": val, "chance": chance, "learned": learned},
        )
    )
    if not learned:
        for c in stage_checks:
            if c.status == "PASS":
                c.status = "INFO"
                c.summary = "uninformative (the task model is at chance): " + c.summary
    checks.extend(stage_checks)
    if cf_check is not None:
        checks.append(cf_check)
    preds = [
        {"path": str(s.path), "camera": s.camera, "label": s.label, "predicted": p}
        for s, p in zip(test, predicted, strict=True)
    ]
    training["history"] = history
    return ShortcutReport(
        probe=probe,
        training=training,
        test_source=test_source,
        n_test=len(test_ok),
        checks=checks,
        notes=notes,
        signal_present=rec is not None and rec >= opts.thresholds.recoverable,
        predictions=preds,
        **res,
    )


def _train_and_predict(
    data: list[Sample],
    test: list[Sample],
    opts: Any,
    progress: Callable[[str, int, int], None] | None,
    events: Callable[[dict], None] | None,
    counterfactual: bool = False,
) -> tuple[dict, list[str | None], list[float], list[dict]]:
    """Train the label classifier on the non-test rows; predict every test image."""
    from camid.engine.train import TrainConfig, train
    from camid.identify import Identifier

    def hook(ev: dict) -> None:
        if progress and ev.get("event") == "batch":
            progress(f"stage 1: training, epoch {ev['epoch']}", ev["step"], ev["steps"])
        if events:
            events(ev)

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="camid-bias-") as tmp:
        keep = opts.save_model is not None and not counterfactual
        home = opts.home if keep else Path(tmp)
        cfg = TrainConfig(
            name=opts.save_model if keep else TASK_MODEL_NAME,
            arch=opts.arch,
            target="label",
            epochs=opts.epochs,
            time_budget=opts.time_budget,
            seed=opts.seed,
            device=opts.device,
            patches_per_image=opts.patches_per_image,
            patch=opts.patch,
        )
        result = train(cfg, data, home=home, progress=hook)
        ident = Identifier.from_model(result.model_path, device=opts.device, workers=1)
        card = ident.card
        predicted: list[str | None] = [None] * len(test)
        probs = [float("nan")] * len(test)
        done = 0
        for i, _path, _meta, out in ident.logits_stream([s.path for s in test]):
            done += 1
            if progress:
                progress("stage 1: predicting test images", done, len(test))
            if isinstance(out, Exception):
                continue
            agg, _known, _reason = ident.decide(out)
            predicted[i] = card.classes[agg.top]
            probs[i] = float(agg.probs[agg.top])
    m = result.card.metrics
    training = {
        "arch": opts.arch,
        "model": opts.save_model if keep else None,
        "model_path": str(result.model_path) if keep else None,
        "train_images": m.get("train_images"),
        "val_images": m.get("val_images"),
        "val_accuracy": m.get("val_accuracy"),
        "epochs_run": m.get("epochs_run"),
        "stopped": result.stopped,
        "seconds": time.perf_counter() - t0,
    }
    return training, predicted, probs, list(result.history)
