"""Association between two categorical variables (e.g. camera x label), pure statistics.

Contingency tables, the chi-squared / Fisher exact independence test, the bias-corrected
Cramér's V (Bergsma 2013), Theil's uncertainty coefficient in both directions, adjusted
standardised residuals per cell, an out-of-fold "group-only" majority baseline with its
normalised gain, and a percentile bootstrap confidence interval. Nothing here knows about
images or files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_EXPECTED = 5.0
"""Below this expected count in any cell the chi-squared approximation is not trusted."""


@dataclass
class Contingency:
    """Counts of (row, column) pairs: `counts[i, j]` = rows[i] with cols[j]."""

    rows: list[str]
    cols: list[str]
    counts: np.ndarray

    @property
    def n(self) -> int:
        """Number of observations."""
        return int(self.counts.sum())

    def to_dict(self) -> dict:
        """JSON-ready {rows, cols, counts}."""
        return {"rows": self.rows, "cols": self.cols, "counts": self.counts.tolist()}


def contingency(row_values: Sequence[str], col_values: Sequence[str]) -> Contingency:
    """Cross-tabulate two equally long sequences of category names (sorted categories)."""
    if len(row_values) != len(col_values):
        raise ValueError("both sequences must have the same length")
    rows = sorted(set(row_values))
    cols = sorted(set(col_values))
    ri = {r: i for i, r in enumerate(rows)}
    ci = {c: j for j, c in enumerate(cols)}
    counts = np.zeros((len(rows), len(cols)), dtype=np.int64)
    if len(row_values):
        np.add.at(
            counts,
            (
                np.fromiter((ri[r] for r in row_values), dtype=np.int64, count=len(row_values)),
                np.fromiter((ci[c] for c in col_values), dtype=np.int64, count=len(col_values)),
            ),
            1,
        )
    return Contingency(rows, cols, counts)


def _trim(table: np.ndarray) -> np.ndarray:
    """Drop all-zero rows and columns (they carry no information and break expected counts)."""
    t = np.asarray(table, dtype=np.int64)
    return t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]


def expected_counts(table: np.ndarray) -> np.ndarray:
    """Expected cell counts under independence (row total x column total / n)."""
    t = np.asarray(table, dtype=float)
    n = t.sum()
    if n == 0:
        return np.zeros_like(t)
    return np.outer(t.sum(axis=1), t.sum(axis=0)) / n


def chi2_statistic(table: np.ndarray) -> float:
    """Pearson's chi-squared statistic (no continuity correction)."""
    t = _trim(table).astype(float)
    if t.size == 0 or min(t.shape) < 2:
        return 0.0
    e = expected_counts(t)
    return float(((t - e) ** 2 / e).sum())


@dataclass
class IndependenceTest:
    """The test of independence that suits the table, with its p-value."""

    method: str  # "chi2", "fisher_exact", "fisher_monte_carlo" or "none"
    chi2: float
    dof: int
    p_value: float | None
    min_expected: float
    note: str = ""


def independence_test(
    table: np.ndarray, *, seed: int = 0, resamples: int = 9999
) -> IndependenceTest:
    """Chi-squared test, or Fisher's exact test when an expected count is below 5.

    Fisher: exact for 2x2 tables; for R x C tables the p-value is a seeded Monte Carlo
    estimate over random tables with the same margins (SciPy >= 1.15 `fisher_exact` with
    `MonteCarloMethod`; `resamples` draws, resolution 1/(resamples+1)). SciPy's own R x C
    default draws unseeded tables, which would make the same data give different p-values.
    """
    t = _trim(table)
    if t.size == 0 or min(t.shape) < 2:
        return IndependenceTest("none", 0.0, 0, None, 0.0, "fewer than 2 categories on an axis")
    e = expected_counts(t)
    chi2 = chi2_statistic(t)
    dof = (t.shape[0] - 1) * (t.shape[1] - 1)
    min_e = float(e.min())
    if min_e >= MIN_EXPECTED:
        return IndependenceTest("chi2", chi2, dof, float(stats.chi2.sf(chi2, dof)), min_e)
    if t.shape == (2, 2):
        p = float(stats.fisher_exact(t).pvalue)
        return IndependenceTest("fisher_exact", chi2, dof, p, min_e, "expected count < 5")
    method = stats.MonteCarloMethod(n_resamples=resamples, rng=np.random.default_rng(seed))
    p = float(stats.fisher_exact(t, method=method).pvalue)
    return IndependenceTest(
        "fisher_monte_carlo",
        chi2,
        dof,
        p,
        min_e,
        f"expected count < 5; Monte Carlo with {resamples} tables",
    )


def cramers_v_corrected(table: np.ndarray) -> float:
    """Cramér's V with Bergsma's bias correction (0 = independent, 1 = one determines other).

    phi2c = max(0, chi2/n - (k-1)(r-1)/(n-1)); r~ = r - (r-1)^2/(n-1), k~ likewise;
    V = sqrt(phi2c / min(k~ - 1, r~ - 1)).
    """
    t = _trim(table)
    n = float(t.sum())
    if t.size == 0 or min(t.shape) < 2 or n < 2:
        return 0.0
    r, k = t.shape
    phi2c = max(0.0, chi2_statistic(t) / n - (k - 1) * (r - 1) / (n - 1))
    r_t = r - (r - 1) ** 2 / (n - 1)
    k_t = k - (k - 1) ** 2 / (n - 1)
    denom = min(k_t - 1, r_t - 1)
    if denom <= 0:
        return 0.0
    return float(min(1.0, np.sqrt(phi2c / denom)))


def entropy(counts: np.ndarray) -> float:
    """Shannon entropy (nats) of a count vector."""
    c = np.asarray(counts, dtype=float).ravel()
    c = c[c > 0]
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(table: np.ndarray) -> float:
    """I(row; column) in nats from the empirical joint distribution."""
    t = np.asarray(table, dtype=float)
    return max(0.0, entropy(t.sum(axis=1)) + entropy(t.sum(axis=0)) - entropy(t))


def theils_u(table: np.ndarray, given: str = "rows") -> float:
    """Theil's U: share of the *other* variable's entropy explained by `given`.

    given="rows": U(col | row) = I / H(col), e.g. how much of the label's uncertainty the
    camera removes when rows are cameras and columns labels. 1 = fully determined.
    """
    t = np.asarray(table, dtype=float)
    target = t.sum(axis=0) if given == "rows" else t.sum(axis=1)
    h = entropy(target)
    if h == 0:
        return 0.0
    return float(min(1.0, mutual_information(t) / h))


def adjusted_residuals(table: np.ndarray) -> np.ndarray:
    """Haberman's adjusted standardised residuals (approx. N(0,1) per cell under independence).

    (O - E) / sqrt(E (1 - row/n) (1 - col/n)); 0 where undefined.
    """
    t = np.asarray(table, dtype=float)
    n = t.sum()
    if n == 0:
        return np.zeros_like(t)
    e = expected_counts(t)
    rp = t.sum(axis=1, keepdims=True) / n
    cp = t.sum(axis=0, keepdims=True) / n
    var = e * (1 - rp) * (1 - cp)
    with np.errstate(divide="ignore", invalid="ignore"):
        res = np.where(var > 0, (t - e) / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
    return res


@dataclass
class GroupBaseline:
    """How well the group alone (e.g. the camera id) predicts the target, out of fold."""

    accuracy: float
    majority_share: float
    gain: float
    folds: int
    n: int


def fold_assignment(
    groups: Sequence[str], targets: Sequence[str], folds: int, seed: int
) -> np.ndarray:
    """Fold index per item, stratified by (group, target): each cell is dealt round-robin
    over the folds after a seeded shuffle, so every fold keeps the table's proportions."""
    rng = np.random.default_rng(seed)
    cells: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(groups, targets, strict=True)):
        cells.setdefault(key, []).append(i)
    out = np.zeros(len(groups), dtype=np.int64)
    offset = 0
    for key in sorted(cells):
        idx = np.asarray(cells[key])[rng.permutation(len(cells[key]))]
        out[idx] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)
    return out


def group_majority_baseline(
    groups: Sequence[str], targets: Sequence[str], *, folds: int = 5, seed: int = 0
) -> GroupBaseline:
    """Out-of-fold accuracy of predicting each item's target as its group's majority target.

    Majority votes come from the other folds only (ties: the target most common in those
    folds, then the alphabetically first); an item whose group is absent from the other
    folds gets the other folds' overall majority. gain = (accuracy - m) / (1 - m) with m the
    share of the most frequent target (the accuracy of always guessing it).
    """
    n = len(targets)
    if n == 0:
        return GroupBaseline(0.0, 0.0, 0.0, 0, 0)
    labels = sorted(set(targets))
    li = {c: i for i, c in enumerate(labels)}
    gi = {g: i for i, g in enumerate(sorted(set(groups)))}
    y = np.array([li[t] for t in targets])
    g = np.array([gi[x] for x in groups])
    majority = float(np.bincount(y, minlength=len(labels)).max() / n)
    k = max(2, min(folds, n))
    fold = fold_assignment(groups, targets, k, seed)
    correct = 0
    for f in range(k):
        tr, te = fold != f, fold == f
        if not te.any():
            continue
        counts = np.zeros((len(gi), len(labels)))
        np.add.at(counts, (g[tr], y[tr]), 1)
        overall = counts.sum(axis=0)
        # ties inside a group: prefer the overall-common target, then the first name
        score = counts * (n + 1) ** 2 + overall[None, :] * (n + 1) - np.arange(len(labels))
        pred_group = score.argmax(axis=1)
        fallback = int((overall * (n + 1) - np.arange(len(labels))).argmax())
        seen = counts.sum(axis=1) > 0
        pred = np.where(seen[g[te]], pred_group[g[te]], fallback)
        correct += int((pred == y[te]).sum())
    acc = correct / n
    gain = (acc - majority) / (1 - majority) if majority < 1 else 0.0
    return GroupBaseline(float(acc), majority, float(gain), k, n)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    strata: Sequence[int] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(indices)` over resampled item indices.

    With `strata`, items are resampled within each stratum (keeps group sizes fixed).
    Returns (nan, nan) for n == 0.
    """
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    if strata is None:
        groups = [np.arange(n)]
    else:
        s = np.asarray(strata)
        groups = [np.flatnonzero(s == v) for v in np.unique(s)]
    values = np.empty(resamples)
    for b in range(resamples):
        idx = np.concatenate([grp[rng.integers(0, len(grp), len(grp))] for grp in groups])
        values[b] = statistic(idx)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def conditional_permutation_test(
    groups: Sequence[str],
    outcome: Sequence[str],
    strata: Sequence[str],
    *,
    resamples: int = 1999,
    seed: int = 0,
) -> tuple[float, float]:
    """Is `outcome` independent of `groups` within each stratum? (statistic, p-value)

    Statistic: the sum over strata of Pearson's chi-squared of the groups x outcome table.
    Null distribution: outcomes permuted within each stratum (`resamples` seeded draws);
    p = (1 + #{permuted >= observed}) / (resamples + 1). E.g. camera vs predicted label
    within each true label: does the prediction depend on the camera beyond the truth?
    """
    g = np.unique(np.asarray(groups), return_inverse=True)[1]
    o = np.unique(np.asarray(outcome), return_inverse=True)[1]
    s = np.asarray(strata)
    members = [np.flatnonzero(s == v) for v in np.unique(s)]
    ng, no = int(g.max(initial=-1)) + 1, int(o.max(initial=-1)) + 1

    def stat(out: np.ndarray) -> float:
        total = 0.0
        for idx in members:
            t = np.zeros((ng, no))
            np.add.at(t, (g[idx], out[idx]), 1)
            total += chi2_statistic(t)
        return total

    observed = stat(o)
    if observed == 0 or not members:
        return observed, 1.0
    rng = np.random.default_rng(seed)
    perm = o.copy()
    hits = 0
    for _ in range(resamples):
        for idx in members:
            perm[idx] = o[idx][rng.permutation(len(idx))]
        hits += stat(perm) >= observed - 1e-9
    return observed, (1 + hits) / (resamples + 1)
