"""Verification statistics over PCE scores: ROC, AUC, EER, TPR at a fixed FPR, top-1."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _check(scores: Sequence[float], labels: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, y


def roc_curve(
    scores: Sequence[float], labels: Sequence[bool]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): a score >= threshold is called positive; starts at (0, 0)."""
    s, y = _check(scores, labels)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        raise ValueError("ROC needs at least one positive and one negative pair")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    fpr = np.r_[0.0, fp / neg]
    tpr = np.r_[0.0, tp / pos]
    thresholds = np.r_[np.inf, s[last]]
    return fpr, tpr, thresholds


def auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve (trapezoids; ties count one half)."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def eer(scores: Sequence[float], labels: Sequence[bool]) -> tuple[float, float]:
    """(equal error rate, threshold there): where FPR = FNR, linearly interpolated on the ROC."""
    fpr, tpr, thr = roc_curve(scores, labels)
    fnr = 1.0 - tpr
    d = fpr - fnr  # rises from -1 to +1 along the curve
    i = int(np.argmax(d >= 0))
    if d[i] == 0 or i == 0:
        return float(fpr[i]), float(thr[i])
    t = -d[i - 1] / (d[i] - d[i - 1])
    rate = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    lo = thr[i - 1] if np.isfinite(thr[i - 1]) else thr[i]
    return float(rate), float(lo + t * (thr[i] - lo))


def tpr_at_fpr(scores: Sequence[float], labels: Sequence[bool], max_fpr: float = 0.01) -> float:
    """Highest TPR reachable with FPR <= max_fpr (no interpolation)."""
    fpr, tpr, _ = roc_curve(scores, labels)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max())


def top1_accuracy(
    matrix: np.ndarray, fp_labels: Sequence[str], photo_labels: Sequence[str | None]
) -> tuple[float | None, int]:
    """Closed-set top-1 over photos whose device has a fingerprint: (accuracy, photos used)."""
    m = np.asarray(matrix, dtype=np.float64)
    known = set(fp_labels)
    hits = used = 0
    for j, lab in enumerate(photo_labels):
        if lab is None or lab not in known:
            continue
        used += 1
        hits += int(fp_labels[int(np.argmax(m[:, j]))] == lab)
    return (hits / used if used else None), used


@dataclass
class MatrixSummary:
    """Figures of a fingerprints x photos score matrix with ground truth."""

    pairs: int
    positives: int
    negatives: int
    auc: float | None
    eer: float | None
    eer_threshold: float | None
    tpr_at_fpr: float | None
    fpr_target: float
    tpr_at_threshold: float | None
    fpr_at_threshold: float | None
    threshold: float
    top1: float | None
    top1_photos: int

    def to_record(self) -> dict:
        """Flat dict for output."""
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in vars(self).items()}


def summarize(
    matrix: np.ndarray,
    fp_labels: Sequence[str],
    photo_labels: Sequence[str | None],
    threshold: float = 60.0,
    fpr_target: float = 0.01,
) -> MatrixSummary:
    """AUC, EER, TPR@FPR, rates at the decision threshold and top-1 from a labelled matrix."""
    m = np.asarray(matrix, dtype=np.float64)
    scores, labels = [], []
    for j, lab in enumerate(photo_labels):
        if lab is None:
            continue
        for i, fl in enumerate(fp_labels):
            scores.append(m[i, j])
            labels.append(fl == lab)
    s, y = np.asarray(scores), np.asarray(labels, dtype=bool)
    pos, neg = int(y.sum()), int((~y).sum())
    a = e = et = tp = None
    if pos and neg:
        a = auc(s, y)
        e, et = eer(s, y)
        tp = tpr_at_fpr(s, y, fpr_target)
    top, used = top1_accuracy(m, fp_labels, photo_labels)
    return MatrixSummary(
        pairs=int(s.size),
        positives=pos,
        negatives=neg,
        auc=a,
        eer=e,
        eer_threshold=et,
        tpr_at_fpr=tp,
        fpr_target=fpr_target,
        tpr_at_threshold=float((s[y] > threshold).mean()) if pos else None,
        fpr_at_threshold=float((s[~y] > threshold).mean()) if neg else None,
        threshold=threshold,
        top1=top,
        top1_photos=used,
    )
