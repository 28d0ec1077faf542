"""Where in a photo is the sensor fingerprint? A PRNU correlation map for splice localisation.

For every window (default 128 px, stride 16) the Pearson correlation rho between the photo's
noise residual W and the expected PRNU signal S = I * K (grey intensity times the
fingerprint) is computed from integral images (O(pixels), whatever the window).

A genuine region does not give one fixed correlation: dark, saturated or strongly textured
windows carry less PRNU (or more scene noise). So each window also gets an *expected*
correlation rho_hat predicted from its content: a linear model of rho on the window's mean
intensity, its square, the log energy of the residual and the share of clipped pixels,
fitted on the windows of the same photo (least squares, then refitted without the windows
far below the fit, so a pasted region does not pull the prediction down). The spread of the
genuine windows around the fit, sigma_1, is the genuine-region (H1) model N(rho_hat, sigma_1^2).

The no-fingerprint (H0) model is N(0, sigma_0^2) with sigma_0^2 = 1 / n_eff: it is measured
on the photo itself by correlating W with a circularly shifted fingerprint (the same
spectrum and content, no alignment), which accounts for the residual not being white.

Decision at false-alarm rate alpha: a window is flagged when rho < rho_hat - z_(1-alpha)
sigma_1, i.e. a genuine region would fall that low with probability alpha; windows where
even that threshold is not above the H0 median (rho_hat too small to tell genuine from
foreign: dark, flat-saturated or tiny-signal regions) are marked unreliable and never
flagged. The map, the prediction, the mask and a 0-1 posterior P(foreign | rho) (equal
priors, the two Gaussians) are returned on the window grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import ndtri
from scipy.stats import norm

from camid.prnu.fingerprint import Fingerprint
from camid.prnu.residual import residual_and_grey
from camid.report.maps import GridGeometry, grid_to_pixels

DEFAULT_WINDOW = 128
DEFAULT_STRIDE = 16
DEFAULT_ALPHA = 0.01
CLIP_LEVEL = 250.0


@dataclass
class SpliceMap:
    """A PRNU correlation map on a window grid and what it says about each window.

    Arrays are (rows, cols) over the window grid: window (i, j) covers pixels
    [y0 + i*stride, y0 + i*stride + window) x [x0 + j*stride, ...).
    """

    correlation: np.ndarray  # observed rho per window
    expected: np.ndarray  # predicted rho of a genuine window (rho_hat)
    threshold: np.ndarray  # rho below this is flagged (rho_hat - z sigma_1)
    mask: np.ndarray  # bool: flagged as not carrying this fingerprint
    reliable: np.ndarray  # bool: genuine and foreign can be told apart here
    p_foreign: np.ndarray  # posterior P(foreign | rho), equal priors
    window: int
    stride: int
    origin: tuple[int, int]  # (y0, x0) of the first window
    height: int
    width: int
    alpha: float
    sigma0: float  # std of rho without the fingerprint (H0)
    sigma1: float  # std of rho around the prediction in genuine windows (H1)
    n_eff: float  # 1 / sigma0^2: effective independent samples per window
    coefficients: dict[str, float] = field(default_factory=dict)
    global_ncc: float = 0.0

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of the window grid."""
        return int(self.correlation.shape[0]), int(self.correlation.shape[1])

    def geometry(self) -> dict:
        """The window grid in pixels (JSON-ready)."""
        return {
            "kind": "prnu",
            "image_height": self.height,
            "image_width": self.width,
            "window": self.window,
            "stride": self.stride,
            "origin": list(self.origin),
            "rows": self.shape[0],
            "cols": self.shape[1],
            "cell": "window (i, j) covers rows origin_y + i*stride .. +window, "
            "cols origin_x + j*stride .. +window",
        }

    def summary(self) -> dict:
        """Statistics of the map (JSON-ready)."""
        rel = self.reliable
        return {
            "min": float(self.correlation.min()),
            "max": float(self.correlation.max()),
            "mean": float(self.correlation.mean()),
            "expected_mean": float(self.expected.mean()),
            "global_ncc": self.global_ncc,
            "alpha": self.alpha,
            "sigma0": self.sigma0,
            "sigma1": self.sigma1,
            "n_eff": self.n_eff,
            "reliable_fraction": float(rel.mean()),
            "flagged_fraction": float(self.mask.mean()),
            "flagged_windows": int(self.mask.sum()),
            "flagged_area_fraction": float(self.pixel_mask().mean()),
            "predictor": self.coefficients,
        }

    def grid(self) -> GridGeometry:
        """The window grid as a GridGeometry (for drawing)."""
        return GridGeometry(self.height, self.width, self.window, self.stride, self.origin)

    def pixel_mask(self) -> np.ndarray:
        """(height, width) bool: pixels in the stride x stride cell at the centre of a
        flagged window (the windows overlap, so each pixel gets the verdict of the window
        centred nearest to it; the margins no centre reaches are False)."""
        return np.nan_to_num(grid_to_pixels(self.mask, self.grid()), nan=0.0) > 0.5

    def pixel_map(self, values: np.ndarray) -> np.ndarray:
        """Any (rows, cols) window-grid array on the pixel grid (NaN in the margins)."""
        return grid_to_pixels(values, self.grid())


def _integral(x: np.ndarray) -> np.ndarray:
    """Zero-padded 2-D cumulative sum (float64)."""
    out = np.zeros((x.shape[0] + 1, x.shape[1] + 1), dtype=np.float64)
    np.cumsum(np.cumsum(x, axis=0, dtype=np.float64), axis=1, out=out[1:, 1:])
    return out


def _window_sums(table: np.ndarray, ys: np.ndarray, xs: np.ndarray, n: int) -> np.ndarray:
    """Sums of x over the n x n windows with top-left corners ys x xs, from its integral."""
    y0, x0 = ys[:, None], xs[None, :]
    return table[y0 + n, x0 + n] - table[y0, x0 + n] - table[y0 + n, x0] + table[y0, x0]


def window_positions(size: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of windows along one axis, centred so the margins are balanced."""
    if size < window:
        return np.zeros(0, dtype=np.int64)
    count = (size - window) // stride + 1
    start = (size - window - (count - 1) * stride) // 2
    return start + stride * np.arange(count, dtype=np.int64)


def local_correlation(
    a: np.ndarray, b: np.ndarray, window: int, stride: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rho, var_a, var_b, ys, xs): Pearson correlation of a and b and their variances in
    every window of the grid (window corners ys x xs)."""
    ys = window_positions(a.shape[0], window, stride)
    xs = window_positions(a.shape[1], window, stride)
    n = float(window * window)
    sa, sb = _window_sums(_integral(a), ys, xs, window), _window_sums(_integral(b), ys, xs, window)
    saa = _window_sums(_integral(a * a), ys, xs, window)
    sbb = _window_sums(_integral(b * b), ys, xs, window)
    sab = _window_sums(_integral(a * b), ys, xs, window)
    cov = sab - sa * sb / n
    va, vb = np.clip(saa - sa * sa / n, 0, None) / n, np.clip(sbb - sb * sb / n, 0, None) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(va * vb > 0, cov / n / np.sqrt(va * vb), 0.0)
    return rho, va, vb, ys, xs


FEATURES = ("intercept", "signal_ratio", "signal_ratio_sq", "intensity", "intensity_sq", "clipped")


def _features(
    grey: np.ndarray, var_w: np.ndarray, var_s: np.ndarray, ys: np.ndarray, xs: np.ndarray, n: int
) -> np.ndarray:
    """Per-window predictors of the genuine correlation (columns named by FEATURES).

    signal_ratio = sqrt(var(I K) / var(W)): the share of the residual the fingerprint can
    explain (if W = a I K + noise, rho = a r); intensity = mean grey / 255; clipped = share
    of pixels at or above CLIP_LEVEL (no PRNU survives clipping).
    """
    area = float(n * n)
    mu = _window_sums(_integral(grey), ys, xs, n) / area / 255.0
    clip = _window_sums(_integral((grey >= CLIP_LEVEL).astype(np.float64)), ys, xs, n) / area
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(var_w > 0, np.sqrt(var_s / np.where(var_w > 0, var_w, 1.0)), 0.0)
    feats = [np.ones_like(mu), r, r * r, mu, mu * mu, clip]
    return np.stack([f.ravel() for f in feats], axis=1)


def robust_std(x: np.ndarray) -> float:
    """1.4826 x median absolute deviation (a Gaussian's std, insensitive to outliers)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def upper_std(res: np.ndarray) -> float:
    """Gaussian std from the upper half of residuals around 0 (median of the positive ones
    / 0.6745): a foreign region only pulls residuals down, so the upper side stays clean."""
    pos = res[res > 0]
    return float(np.median(pos) / 0.6745) if pos.size else 0.0


def fit_expected(
    rho: np.ndarray, feats: np.ndarray, rounds: int = 10, cut: float = 1.5
) -> tuple[np.ndarray, np.ndarray, float]:
    """(coefficients, genuine-window mask, sigma_1) of the one-sided robust predictor.

    A foreign region only pulls rho *down*, and in a spliced photo it touches many
    overlapping windows, so a plain fit is dragged down with it. Here the fit is repeated on
    the windows at most `cut` sigma below it; the least-squares fit of such a sample sits
    sigma * phi(cut) / Phi(cut) above the genuine mean (a normal truncated below), which is
    subtracted from the intercept (the first feature must be the constant). sigma is taken
    from the residuals above the fit only (see `upper_std`), which the truncation does not
    touch.
    """
    y = rho.ravel()
    keep = np.ones_like(y, dtype=bool)
    coef = np.zeros(feats.shape[1])
    sigma = 0.0
    shift = float(norm.pdf(cut) / norm.cdf(cut))
    for i in range(max(1, rounds)):
        if keep.sum() <= 2 * feats.shape[1]:
            break
        coef, *_ = np.linalg.lstsq(feats[keep], y[keep], rcond=None)
        if i > 0:  # the first fit used every window: no truncation to correct
            coef[0] -= shift * sigma
        res = y - feats @ coef
        sigma = max(upper_std(res[keep]), 1e-9)
        new_keep = res > -cut * sigma
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return coef, keep.reshape(rho.shape), sigma


def _shifted(k: np.ndarray) -> np.ndarray:
    """The fingerprint circularly shifted far from alignment (an H0 reference)."""
    h, w = k.shape
    return np.roll(k, (h // 2 + 17, w // 3 + 29), axis=(0, 1))


def splice_map(
    pixels: np.ndarray,
    fingerprint: Fingerprint,
    *,
    window: int = DEFAULT_WINDOW,
    stride: int = DEFAULT_STRIDE,
    alpha: float = DEFAULT_ALPHA,
    device: torch.device | str = "cpu",
) -> SpliceMap:
    """The PRNU correlation map of a photo (H, W, 3 uint8) against a fingerprint.

    The photo must be in the fingerprint's sensor orientation and size (ValueError if not).
    See the module docstring for the method.
    """
    if not 0 < alpha < 0.5:
        raise ValueError("the false-alarm rate must be between 0 and 0.5")
    if window < 8 or stride < 1:
        raise ValueError("the window must be at least 8 px and the stride at least 1 px")
    h, w = int(pixels.shape[0]), int(pixels.shape[1])
    if (h, w) != fingerprint.shape:
        fh, fw = fingerprint.shape
        hint = " (rotated by 90 degrees?)" if (w, h) == (fh, fw) else ""
        raise ValueError(f"size {w}x{h} differs from the fingerprint's {fw}x{fh}{hint}")
    if window > min(h, w):
        raise ValueError(f"a {window}-px window does not fit in a {w}x{h} photo")
    resid_t, grey_t = residual_and_grey(pixels, fingerprint.params, device)
    resid = resid_t.double().cpu().numpy()
    grey = grey_t.double().cpu().numpy()
    k = np.asarray(fingerprint.k, dtype=np.float64)
    rho, var_w, var_s, ys, xs = local_correlation(resid, grey * k, window, stride)
    rho0 = local_correlation(resid, grey * _shifted(k), window, stride)[0]
    sigma0 = max(robust_std(rho0), 1e-9)
    feats = _features(grey, var_w, var_s, ys, xs, window)
    coef, _genuine, sigma1 = fit_expected(rho, feats)
    sigma1 = max(sigma1, sigma0)  # sampling noise alone gives a genuine window sigma_0
    expected = (feats @ coef).reshape(rho.shape)
    z = float(ndtri(1.0 - alpha))
    threshold = expected - z * sigma1
    reliable = threshold > 0.0  # the genuine 1-alpha bound clears the foreign median
    mask = reliable & (rho < threshold)
    # posterior of "foreign" with equal priors: N(0, s0^2) vs N(expected, s1^2)
    l0 = -0.5 * (rho / sigma0) ** 2 - np.log(sigma0)
    l1 = -0.5 * ((rho - expected) / sigma1) ** 2 - np.log(sigma1)
    p_foreign = 1.0 / (1.0 + np.exp(np.clip(l1 - l0, -50, 50)))
    full_ncc = float(np.corrcoef(resid.ravel(), (grey * k).ravel())[0, 1])
    return SpliceMap(
        correlation=rho.astype(np.float32),
        expected=expected.astype(np.float32),
        threshold=threshold.astype(np.float32),
        mask=mask,
        reliable=reliable,
        p_foreign=p_foreign.astype(np.float32),
        window=int(window),
        stride=int(stride),
        origin=(int(ys[0]), int(xs[0])),
        height=h,
        width=w,
        alpha=float(alpha),
        sigma0=sigma0,
        sigma1=float(sigma1),
        n_eff=float(1.0 / sigma0**2),
        coefficients={n: float(c) for n, c in zip(FEATURES, coef, strict=True)},
        global_ncc=full_ncc,
    )
