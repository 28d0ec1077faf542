"""Stage 0 of bias-check: how strongly the camera and the label are associated in a dataset.

Metadata only (no pixels): the camera x label table of the training rows, the independence
test, effect sizes, the camera-only baseline, which labels are tied to which cameras, and
what the train/test split does with the cameras.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from camid.data.manifest import Sample
from camid.stats.association import (
    Contingency,
    GroupBaseline,
    IndependenceTest,
    adjusted_residuals,
    contingency,
    cramers_v_corrected,
    expected_counts,
    group_majority_baseline,
    independence_test,
    mutual_information,
    theils_u,
)


@dataclass
class TableStats:
    """Every association figure of one camera x label table."""

    rows: int
    table: Contingency
    test: IndependenceTest
    cramers_v: float
    theils_u_label_given_camera: float
    theils_u_camera_given_label: float
    mutual_information_nats: float
    baseline: GroupBaseline


@dataclass
class TiedCell:
    """A camera x label cell far from what independence predicts."""

    camera: str
    label: str
    count: int
    expected: float
    residual: float
    label_share_in_camera: float


@dataclass
class SplitCameras:
    """Which cameras the training and test rows use."""

    has_test: bool
    train: list[str]
    test: list[str]
    shared: list[str]
    only_train: list[str]
    only_test: list[str]


@dataclass
class AssociationReport:
    """Stage 0: the association of camera and label, and the split's camera sets."""

    scope: str  # "train" (rows not split=test) or "all" (no split column)
    n_rows: int
    n_skipped: int
    labels: list[str]
    cameras: list[str]
    stats: TableStats | None
    residual_threshold: float
    tied: list[TiedCell] = field(default_factory=list)
    avoided: list[TiedCell] = field(default_factory=list)
    single_label_cameras: list[dict] = field(default_factory=list)
    split: SplitCameras | None = None
    test_stats: TableStats | None = None
    notes: list[str] = field(default_factory=list)


def table_stats(cameras: Sequence[str], labels: Sequence[str], *, seed: int = 0) -> TableStats:
    """All association figures of paired camera and label values."""
    ct = contingency(cameras, labels)
    t = ct.counts
    return TableStats(
        rows=len(labels),
        table=ct,
        test=independence_test(t, seed=seed),
        cramers_v=cramers_v_corrected(t),
        theils_u_label_given_camera=theils_u(t, given="rows"),
        theils_u_camera_given_label=theils_u(t, given="cols"),
        mutual_information_nats=mutual_information(t),
        baseline=group_majority_baseline(cameras, labels, seed=seed),
    )


def _is_test(s: Sample) -> bool:
    return (s.split or "").lower() == "test"


def associate(
    samples: Sequence[Sample],
    *,
    seed: int = 0,
    alpha: float = 0.05,
    min_camera_images: int = 5,
) -> AssociationReport:
    """Stage 0 on samples whose `camera` and `label` are filled (others are skipped).

    The association is measured on the training rows (every row not marked split=test),
    since that is what a model learns from; the test rows get their own figures.
    Cells count as tied when their adjusted residual exceeds the Bonferroni-corrected
    two-sided normal quantile at `alpha` over all cells.
    """
    usable = [s for s in samples if s.camera is not None and s.label is not None]
    skipped = len(samples) - len(usable)
    has_test = any(_is_test(s) for s in usable)
    train = [s for s in usable if not _is_test(s)] if has_test else usable
    test = [s for s in usable if _is_test(s)]
    labels = sorted({s.label for s in usable})  # type: ignore[type-var]
    cameras = sorted({s.camera for s in usable})  # type: ignore[type-var]
    notes = []
    if skipped:
        notes.append(f"{skipped} rows without a camera or label left out")
    report = AssociationReport(
        scope="train" if has_test else "all",
        n_rows=len(train),
        n_skipped=skipped,
        labels=labels,
        cameras=cameras,
        stats=None,
        residual_threshold=0.0,
        notes=notes,
    )
    if train:
        st = table_stats([s.camera for s in train], [s.label for s in train], seed=seed)  # type: ignore[misc]
        report.stats = st
        t = st.table.counts
        z = float(stats.norm.isf(alpha / (2 * max(1, t.size))))
        report.residual_threshold = z
        res = adjusted_residuals(t)
        exp = expected_counts(t)
        row_tot = t.sum(axis=1)
        for i, cam in enumerate(st.table.rows):
            for j, lab in enumerate(st.table.cols):
                cell = TiedCell(
                    cam,
                    lab,
                    int(t[i, j]),
                    float(exp[i, j]),
                    float(res[i, j]),
                    float(t[i, j] / row_tot[i]) if row_tot[i] else 0.0,
                )
                if res[i, j] >= z:
                    report.tied.append(cell)
                elif res[i, j] <= -z:
                    report.avoided.append(cell)
        report.tied.sort(key=lambda c: -c.residual)
        report.avoided.sort(key=lambda c: c.residual)
        if len(st.table.cols) >= 2:
            for i, cam in enumerate(st.table.rows):
                nz = np.flatnonzero(t[i])
                if len(nz) == 1 and row_tot[i] >= min_camera_images:
                    report.single_label_cameras.append(
                        {"camera": cam, "label": st.table.cols[int(nz[0])], "n": int(row_tot[i])}
                    )
    if has_test:
        tr_c = sorted({s.camera for s in train})  # type: ignore[type-var]
        te_c = sorted({s.camera for s in test})  # type: ignore[type-var]
        report.split = SplitCameras(
            True,
            tr_c,
            te_c,
            sorted(set(tr_c) & set(te_c)),
            sorted(set(tr_c) - set(te_c)),
            sorted(set(te_c) - set(tr_c)),
        )
        report.test_stats = table_stats(
            [s.camera for s in test],  # type: ignore[misc]
            [s.label for s in test],  # type: ignore[misc]
            seed=seed,
        )
    return report
