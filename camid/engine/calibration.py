"""Temperature scaling (Guo et al. 2017): one scalar T > 0 fitted on validation logits."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

T_MIN, T_MAX = 0.05, 20.0
SMOOTHING = 0.01
"""The fit targets 1 - 0.01 on the true class (the rest spread evenly): on a perfectly
separated validation set plain NLL would drive T to 0 and every later answer to 100 %."""


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of labels under softmax(logits / T)."""
    if len(labels) == 0:
        return float("nan")
    lp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)
    return float(-lp[np.arange(len(labels)), np.asarray(labels)].mean())


def _smoothed_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    lp = log_softmax(logits / temperature, axis=1)
    k = logits.shape[1]
    true = lp[np.arange(len(labels)), labels]
    rest = (lp.sum(axis=1) - true) / max(1, k - 1)
    return float(-((1 - SMOOTHING) * true + SMOOTHING * rest).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Fit T on validation logits over log T in [log 0.05, log 20].

    The objective is the NLL against slightly smoothed targets (see SMOOTHING); T = 1 is
    kept when the fitted T does not lower the plain validation NLL, so calibration never
    makes the fitting set's NLL worse. Returns {temperature, nll_before, nll_after, n}.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    before = nll(logits, labels, 1.0)
    if len(labels) < 2 or not math.isfinite(before):
        return {"temperature": 1.0, "nll_before": before, "nll_after": before, "n": len(labels)}
    res = minimize_scalar(
        lambda lt: _smoothed_nll(logits, labels, math.exp(lt)),
        bounds=(math.log(T_MIN), math.log(T_MAX)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    t = float(math.exp(res.x))
    after = nll(logits, labels, t)
    if not after <= before:
        t, after = 1.0, before
    return {"temperature": t, "nll_before": before, "nll_after": after, "n": int(len(labels))}


def open_set_threshold(val_max_probs: np.ndarray, lo: float = 0.5, hi: float = 0.95) -> float:
    """Default 'unknown' cut: 0.95 x the 5th percentile of the validation images' calibrated
    max-probabilities, clipped to [0.5, 0.95] (about 95 % of known images pass)."""
    if len(val_max_probs) == 0:
        return lo
    return float(np.clip(0.95 * np.quantile(val_max_probs, 0.05), lo, hi))
