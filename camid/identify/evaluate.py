"""Evaluation: accuracy overall / per class, confusion matrices, on unaltered and manipulated
copies of the test images, plus the open-set "unknown" rates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from camid.data.augment import Manipulation
from camid.data.manifest import Sample
from camid.errors import InputError, UsageError
from camid.identify.policy import alteration_from_manipulation

if TYPE_CHECKING:  # the identifier needs torch; evaluation's types do not
    from camid.identify.identifier import Identifier

DEFAULT_MANIPULATIONS = "jpeg:90,jpeg:70,gamma:0.8,gamma:1.2,resize:0.5,resize:2.0"
"""The manipulated copies `camid evaluate` scores by default (besides the originals)."""


@dataclass
class EvalItem:
    """One test image and the class it truly belongs to (None: not a model class)."""

    path: Path
    truth: str | None


@dataclass
class ConditionReport:
    """Scores of one condition (the originals, or one manipulation of them)."""

    condition: str
    n: int
    accuracy: float | None
    balanced_accuracy: float | None
    unknown_rate: float | None
    accuracy_decided: float | None
    per_class: dict[str, dict[str, Any]]
    confusion: dict[str, Any]
    confusion_open_set: dict[str, Any]
    open_set: dict[str, Any]
    decided_share: float | None = None
    """Share of known-camera photos given a camera (not 'unknown'): 1 - unknown_rate."""
    identified: float | None = None
    """Share of known-camera photos given their true camera: decided_share x
    accuracy_decided (what "identified" means to a reader)."""
    wrong_rate: float | None = None
    """Share of known-camera photos given a wrong camera (decided_share - identified):
    the failure that matters most on altered copies."""
    decided_on: str = "combined"
    """Which head decided: "combined" (all evidence) or the pixel head for copies that
    were re-saved or resized (camid.identify.policy; the manipulation is known here)."""


    def figure_confusion(self) -> dict[str, Any]:
        """The confusion matrix to draw: with the 'unknown' column when any photo was
        called unknown, else the closed-set one."""
        if any(row[-1] for row in self.confusion_open_set["matrix"]):
            return self.confusion_open_set
        return self.confusion


@dataclass
class EvaluationReport:
    """What `evaluate` measured: one ConditionReport per condition, plus provenance."""

    model: str
    model_sha256: str
    task: str
    classes: list[str]
    n_images: int
    conditions: list[ConditionReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dataset: str | None = None
    test_selection: str | None = None
    unknown_threshold: float | None = None
    min_agreement: float | None = None
    plot: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of `camid evaluate --json` (documented in docs/identify.md)."""
        return asdict(self)

    def summary_rows(self, per_class: bool = False) -> list[dict[str, Any]]:
        """One row per condition (and, with `per_class`, one per class under it).

        The decided share and the accuracy on decided photos stand side by side, then the
        share identified (both together) and the closed-set accuracy (argmax, ignoring
        'unknown'), so a high accuracy with most photos 'unknown' is not read as "most
        photos identified"."""
        rows: list[dict[str, Any]] = []
        for c in self.conditions:
            rows.append(
                {
                    "condition": c.condition,
                    "camera": "(all)",
                    "n": c.n,
                    "decided": c.decided_share,
                    "accuracy_decided": c.accuracy_decided,
                    "identified": c.identified,
                    "wrong": c.wrong_rate,
                    "closed_set_accuracy": c.accuracy,
                    "open_set_n": c.open_set["n"],
                    "open_set_unknown_rate": c.open_set["unknown_rate"],
                }
            )
            if per_class:
                rows += [
                    {"condition": c.condition, "camera": cam, "n": pc["n"],
                     "decided": _one_minus(pc["unknown_rate"]),
                     "closed_set_accuracy": pc["accuracy"]}
                    for cam, pc in c.per_class.items()
                ]  # fmt: skip
        return rows

    def per_class_rows(self, index: int = 0) -> list[dict[str, Any]]:
        """Per-class rows of one condition (default: the originals)."""
        if not self.conditions:
            return []
        return [{"camera": cam, **pc} for cam, pc in self.conditions[index].per_class.items()]

    def confusion_rows(self, index: int = 0) -> list[dict[str, Any]]:
        """The closed-set confusion matrix of one condition as table rows."""
        if not self.conditions:
            return []
        conf = self.conditions[index].confusion
        return [
            {"true \\ predicted": t, **dict(zip(conf["predicted"], row, strict=True))}
            for t, row in zip(conf["true"], conf["matrix"], strict=True)
        ]


def _one_minus(value: float | None) -> float | None:
    return None if value is None else 1.0 - value


def test_items(samples: Sequence[Sample], task: str) -> tuple[list[Sample], str]:
    """split=test rows when the dataset has splits, else every row; with a note."""
    has_split = any(s.split for s in samples)
    if has_split:
        chosen = [s for s in samples if (s.split or "").lower() == "test"]
        if not chosen:
            raise UsageError(
                "the dataset has a split column but no rows with split=test; evaluating on "
                "training rows would overstate accuracy (mark held-out rows split=test)"
            )
        return chosen, f"{len(chosen)} rows with split=test"
    return list(samples), f"all {len(samples)} rows (the dataset has no split column)"


def evaluate(
    identifier: Identifier,
    samples: Sequence[Sample],
    *,
    conditions: Sequence[Manipulation | None],
    progress: Callable[[str, int, int], None] | None = None,
) -> EvaluationReport:
    """Run `identifier` over samples under each condition.

    Accuracy is closed-set (argmax) over images whose true class is a model class; the
    open-set decision gives `unknown_rate` for those and, separately, for images of
    classes the model does not know (`open_set`).
    """
    card = identifier.card
    classes = list(card.classes)
    index = {c: i for i, c in enumerate(classes)}
    truths = [s.camera if card.task == "camera" else s.label for s in samples]
    paths = [s.path for s in samples]
    report = EvaluationReport(
        model=card.name,
        model_sha256=card.weights_sha256,
        task=card.task,
        classes=classes,
        n_images=len(samples),
        unknown_threshold=identifier.rule.threshold,
        min_agreement=identifier.rule.min_agreement,
    )
    failed: set[str] = set()
    for cond in conditions:
        name = "original" if cond is None else cond.name
        k = len(classes)
        matrix = np.zeros((k, k + 1), dtype=np.int64)  # last column: "unknown"
        closed = np.zeros((k, k), dtype=np.int64)
        outside: dict[str, dict[str, int]] = {}
        done = 0
        alteration = alteration_from_manipulation(cond)
        for i, path, _meta, out in identifier.logits_stream(paths, cond):
            done += 1
            if progress:
                progress(name, done, len(paths))
            if isinstance(out, Exception):
                if str(path) not in failed:
                    failed.add(str(path))
                    msg = str(out) if isinstance(out, InputError) else f"{path}: {out}"
                    report.errors.append(msg)
                continue
            agg, known, _reason = identifier.decide(out, alteration=alteration)
            truth = truths[i]
            if truth in index:
                t = index[truth]
                closed[t, agg.top] += 1
                matrix[t, agg.top if known else k] += 1
            else:
                key = truth or "(none)"
                rec = outside.setdefault(key, {"n": 0, "unknown": 0})
                rec["n"] += 1
                rec["unknown"] += int(not known)
                rec.setdefault("nearest", {})
                rec["nearest"][classes[agg.top]] = rec["nearest"].get(classes[agg.top], 0) + 1
        rep = _summarise(name, classes, closed, matrix, outside)
        if alteration is not None and alteration.altered:
            rep.decided_on = identifier.pixel_rule.head
        report.conditions.append(rep)
    return report


def _summarise(
    name: str,
    classes: list[str],
    closed: np.ndarray,
    matrix: np.ndarray,
    outside: dict[str, dict[str, Any]],
) -> ConditionReport:
    n = int(closed.sum())
    per_class = {}
    for i, c in enumerate(classes):
        row_n = int(closed[i].sum())
        per_class[c] = {
            "n": row_n,
            "accuracy": float(closed[i, i] / row_n) if row_n else None,
            "unknown_rate": float(matrix[i, -1] / row_n) if row_n else None,
        }
    accs = [v["accuracy"] for v in per_class.values() if v["accuracy"] is not None]
    n_out = sum(v["n"] for v in outside.values())
    return ConditionReport(
        condition=name,
        n=n,
        accuracy=float(np.trace(closed) / n) if n else None,
        balanced_accuracy=float(np.mean(accs)) if accs else None,
        unknown_rate=float(matrix[:, -1].sum() / n) if n else None,
        accuracy_decided=(
            float(np.trace(matrix[:, :-1]) / matrix[:, :-1].sum())
            if matrix[:, :-1].sum()
            else None
        ),
        decided_share=float(matrix[:, :-1].sum() / n) if n else None,
        identified=float(np.trace(matrix[:, :-1]) / n) if n else None,
        wrong_rate=(
            float((matrix[:, :-1].sum() - np.trace(matrix[:, :-1])) / n) if n else None
        ),
        per_class=per_class,
        confusion={"true": classes, "predicted": classes, "matrix": closed.tolist()},
        confusion_open_set={
            "true": classes,
            "predicted": [*classes, "unknown"],
            "matrix": matrix.tolist(),
        },
        open_set={
            "n": n_out,
            "unknown_rate": (
                float(sum(v["unknown"] for v in outside.values()) / n_out) if n_out else None
            ),
            "per_class": outside,
        },
    )
