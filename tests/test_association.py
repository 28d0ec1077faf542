"""camid.stats.association against independent scipy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from camid.stats.association import (
    adjusted_residuals,
    bootstrap_ci,
    contingency,
    cramers_v_corrected,
    group_majority_baseline,
    independence_test,
    mutual_information,
    theils_u,
)

TABLES = [
    np.array([[30, 10], [12, 28]]),
    np.array([[20, 0, 3], [2, 25, 4], [5, 5, 30], [10, 9, 11]]),
    np.array([[50, 50], [50, 50], [49, 51]]),
]


def bergsma(t: np.ndarray) -> float:
    """Bias-corrected Cramér's V written out from Bergsma (2013)."""
    chi2 = stats.chi2_contingency(t, correction=False)[0]
    n = t.sum()
    r, k = t.shape
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    rt = r - (r - 1) ** 2 / (n - 1)
    kt = k - (k - 1) ** 2 / (n - 1)
    return math.sqrt(phi2 / min(kt - 1, rt - 1))


@pytest.mark.parametrize("t", TABLES)
def test_chi2_and_cramers_v_match_scipy(t):
    res = independence_test(t)
    chi2, p, dof, expected = stats.chi2_contingency(t, correction=False)
    assert res.method == "chi2"
    assert res.chi2 == pytest.approx(chi2)
    assert res.p_value == pytest.approx(p)
    assert res.dof == dof
    assert res.min_expected == pytest.approx(expected.min())
    assert cramers_v_corrected(t) == pytest.approx(bergsma(t))


@pytest.mark.parametrize("t", TABLES)
def test_theils_u_and_mi_match_scipy_entropy(t):
    pj = t / t.sum()
    h_row = stats.entropy(pj.sum(axis=1))
    h_col = stats.entropy(pj.sum(axis=0))
    mi = h_row + h_col - stats.entropy(pj.ravel())
    assert mutual_information(t) == pytest.approx(mi)
    assert theils_u(t, given="rows") == pytest.approx(mi / h_col)
    assert theils_u(t, given="cols") == pytest.approx(mi / h_row)


def test_fisher_when_expected_small():
    t = np.array([[4, 0], [0, 4]])
    res = independence_test(t)
    assert res.method == "fisher_exact"
    assert res.p_value == pytest.approx(stats.fisher_exact(t).pvalue)
    rc = np.array([[3, 0, 1], [0, 4, 0], [1, 0, 3]])
    res = independence_test(rc, seed=3, resamples=1999)
    assert res.method == "fisher_monte_carlo"
    method = stats.MonteCarloMethod(n_resamples=1999, rng=np.random.default_rng(3))
    assert res.p_value == pytest.approx(stats.fisher_exact(rc, method=method).pvalue)
    assert 0.002 < res.p_value < 0.02  # about 0.008 (scipy's unseeded default: 0.006-0.01)
    big = np.array([[200, 1, 0], [0, 150, 0], [3, 0, 4]])
    res = independence_test(big, resamples=999, seed=1)
    assert res.method == "fisher_monte_carlo"
    assert res.p_value == pytest.approx(1 / 1000)
    assert independence_test(big, resamples=999, seed=1).p_value == res.p_value


def test_perfect_and_null_association():
    perfect = np.array([[40, 0], [0, 40]])
    assert cramers_v_corrected(perfect) == pytest.approx(1.0)
    assert theils_u(perfect) == pytest.approx(1.0)
    null = np.array([[25, 25], [25, 25]])
    assert cramers_v_corrected(null) == 0.0
    assert theils_u(null) == 0.0
    assert independence_test(null).p_value == pytest.approx(1.0)


def test_adjusted_residuals_formula_and_sign():
    t = TABLES[1]
    e = stats.contingency.expected_freq(t)
    n = t.sum()
    rp = t.sum(1, keepdims=True) / n
    cp = t.sum(0, keepdims=True) / n
    want = (t - e) / np.sqrt(e * (1 - rp) * (1 - cp))
    np.testing.assert_allclose(adjusted_residuals(t), want)
    assert adjusted_residuals(t)[1, 1] > 3  # row 1 is tied to column 1


def test_contingency_counts():
    ct = contingency(["a", "b", "a", "a"], ["x", "y", "y", "x"])
    assert ct.rows == ["a", "b"] and ct.cols == ["x", "y"]
    assert ct.counts.tolist() == [[2, 1], [0, 1]]


def test_group_baseline_disjoint_and_balanced():
    cams = ["A"] * 20 + ["B"] * 20 + ["C"] * 20
    disjoint = ["l1"] * 20 + ["l2"] * 20 + ["l3"] * 20
    b = group_majority_baseline(cams, disjoint)
    assert b.accuracy == 1.0 and b.majority_share == pytest.approx(1 / 3)
    assert b.gain == pytest.approx(1.0)
    balanced = (["l1", "l2"] * 10) * 3
    b = group_majority_baseline(cams, balanced)
    assert b.gain == pytest.approx(0.0, abs=1e-9)
    # the majority share is the share of the commonest label, not its index (cleanlab's bug)
    skew = ["z"] * 45 + ["a"] * 15
    b = group_majority_baseline(cams, skew)
    assert b.majority_share == pytest.approx(0.75)


def test_group_baseline_unseen_group_falls_back_to_majority():
    cams = ["A"] * 10 + ["B"]
    labs = ["x"] * 7 + ["y"] * 3 + ["y"]
    b = group_majority_baseline(cams, labs, folds=5, seed=0)
    # B is never in the other folds: predicted as the majority 'x' -> wrong
    assert b.accuracy == pytest.approx(7 / 11)


def test_bootstrap_ci_covers_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 1.0, 200)
    lo, hi = bootstrap_ci(lambda idx: float(x[idx].mean()), len(x), resamples=500, seed=0)
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * x.std() / math.sqrt(200), rel=0.25)
    assert bootstrap_ci(lambda idx: 0.0, 0) != bootstrap_ci(lambda idx: 0.0, 0)  # nan pair
