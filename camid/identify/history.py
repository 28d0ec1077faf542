"""What happened to a photo after the camera: re-saved, resampled, cropped off the JPEG grid.

Three forensic findings, each computed from the decoded pixels (and, for JPEG files, the
file's own quantisation table), with NumPy/SciPy and no network (the grid search reuses
`camid.models.traces.detect_jpeg_grid`, imported only for pixels not stored as JPEG):

- **Re-saved (double JPEG).** The luma of a JPEG decodes to block-DCT coefficients that sit on
  multiples of the file's last table step q2. If the photo had been JPEG-coded before with a
  different step q1, its coefficients were first rounded to multiples of q1 and then to
  multiples of q2: the histogram of the last quantisation indices is then modulated with a
  pattern fixed by (q1, q2) — the "double quantisation" effect (Lukáš & Fridrich; Popescu &
  Farid). For each of the 20 lowest AC frequencies camid fits, by likelihood, a smooth
  coefficient density (a generalised Gaussian whose shape is chosen on the histogram)
  quantised once with q2, against the same density quantised first with each candidate q1
  (1..64), then with q2, with rounding noise (std 0.3) between the two. The statistic is
  the sum over frequencies of the best log-likelihood gain per 8x8 block; the first
  quality is the IJG (libjpeg) quality whose scaled standard table explains the
  frequencies best. A first step that divides the last (q2 = 2 q1, or equal) leaves no
  trace at that frequency: a re-save at the same table cannot be seen, and a first step
  of 1 (quality ~98+) leaves none at all. The first compression must be aligned with the
  last (no crop off the grid in between): a non-aligned double JPEG is not detected.
- **Resampled.** Interpolation makes the local second difference of the pixels vary
  periodically with the position of each new pixel between the old ones. The profile of
  mean |second difference| along rows and columns is Fourier-transformed; a peak at a
  frequency that JPEG's 8-pixel blocks do not explain (not k/8) marks resampling, and its
  frequency f gives the factor up to an ambiguity (1/r = 1 - f for the upsampling reading,
  1/r = 1 + f for downsampling). An integer downsampling (x0.5) leaves no periodic trace:
  every new pixel sits at the same place between the old ones.
- **Cropped off the grid.** For pixels that were JPEG-coded but are not stored as that JPEG
  (a PNG of a JPEG, a decoded copy), `detect_jpeg_grid` finds the 8x8 lattice; an offset
  other than (0, 0) means rows or columns were cut off the top or left. A JPEG file's last
  save re-aligns the grid to (0, 0); a crop made before it is not looked for (the first
  save's blocks under a re-save were not found reliably on the synthetic cameras).

Everything runs on a central region of at most `REGION` x `REGION` pixels.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.ndimage import median_filter
from scipy.special import gammainc, ndtr

from camid.io.exif import STD_LUMA, parse_jpeg_qtables

REGION = 1024
"""Side of the central region analysed (pixels, multiple of 8)."""
LUMA = np.array([0.299, 0.587, 0.114])
"""JFIF RGB -> Y weights (as the encoder computes luma)."""
DQ_FREQS = (1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40)
"""Natural-order indices of the 20 lowest AC frequencies (zig-zag order)."""
DQ_MAX_Q1 = 64
DQ_NOISE = 0.3
"""Std (DCT units) of the rounding noise between the first decode and the second encode."""
DQ_THRESHOLD = 0.04
"""Re-saved when the summed best log-likelihood gain per block exceeds this (picked on the
tuning seed of benchmarks/bench_history.py: at most 2% of its camera originals above)."""
DQ_MIN_BLOCKS = 1024
"""Fewer 8x8 blocks than this (a 256x256 region) and a double JPEG cannot be told: the
threshold was picked on 384x288 images (1728 blocks); on fewer blocks chance fits grow."""
QUALITIES = tuple(range(50, 101))
RESAMPLE_THRESHOLD = 4.0
"""Resampled when the strongest peak of the residue spectrum outside JPEG's k/8 stands this
many times above the running median of the spectrum around it (above every negative of the
tuning seed in benchmarks/bench_history.py, whose highest was 3.3)."""
RESAMPLE_MIN_SIDE = 64
RESAMPLE_MIN_FREQ = 0.04
"""Lower frequencies (periods over 25 pixels) belong to the scene, not to interpolation."""
RESAMPLE_JPEG_GAP = 0.008
"""Half-width (cycles/pixel) of the band left out around each JPEG peak k/8."""
JPEG_LATTICE_MIN = 0.2
"""Pixels not stored as JPEG whose lattice strength reaches this still carry JPEG blocks."""


@dataclass(frozen=True)
class Finding:
    """One forensic finding about the photo's history."""

    name: str
    """"resaved" | "resampled" | "cropped"."""
    detected: bool | None
    """None: cannot tell (not a JPEG, too small)."""
    score: float | None
    """The detector's statistic (see docs/identify.md for its scale)."""
    estimate: float | None
    """First JPEG quality (resaved), resampling factor (resampled); None for cropped (the
    offset is in `detail`)."""
    reason: str
    """One plain sentence."""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict:
        """Flat JSON-ready dict."""
        rec: dict[str, Any] = {
            "detected": self.detected,
            "score": None if self.score is None else round(float(self.score), 4),
            "estimate": None if self.estimate is None else round(float(self.estimate), 3),
            "reason": self.reason,
        }
        rec.update(self.detail)
        return rec


@dataclass(frozen=True)
class History:
    """The three findings for one photo."""

    resaved: Finding
    resampled: Finding
    cropped: Finding

    @property
    def findings(self) -> tuple[Finding, Finding, Finding]:
        """(resaved, resampled, cropped)."""
        return self.resaved, self.resampled, self.cropped

    @property
    def manipulated(self) -> bool:
        """Whether any finding was detected."""
        return any(f.detected for f in self.findings)

    def summary(self) -> str:
        """One phrase: "re-saved (first quality ~75) and resized (x~1.5)", or "as the camera
        wrote it (no re-save, resampling or off-grid crop found)"; findings that could not
        be tested are named ("... found; cannot tell: resaved")."""
        parts = []
        if self.resaved.detected:
            q = self.resaved.estimate
            parts.append(f"re-saved (first quality ~{q:.0f})" if q is not None else "re-saved")
        if self.resampled.detected:
            r = self.resampled.estimate
            parts.append(f"resized (x~{r:.2g})" if r is not None else "resized")
        if self.cropped.detected:
            off = self.cropped.detail.get("grid_offset")
            parts.append(f"cropped off the 8x8 grid (offset {tuple(off)})" if off else "cropped")
        if parts:
            return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        untested = [f.name for f in self.findings if f.detected is None]
        if untested:
            return "no re-save, resampling or off-grid crop found; cannot tell: " + ", ".join(
                untested
            )
        return "as the camera wrote it (no re-save, resampling or off-grid crop found)"

    def short(self) -> str:
        """A table cell: "re-saved ~Q75, resized x1.5, off-grid (5,3)", "as shot" (all three
        tested, none found) or "none found" (some could not be tested)."""
        parts = []
        if self.resaved.detected:
            q = self.resaved.estimate
            parts.append(f"re-saved ~Q{q:.0f}" if q is not None else "re-saved")
        if self.resampled.detected:
            r = self.resampled.estimate
            parts.append(f"resized x{r:.2g}" if r is not None else "resized")
        if self.cropped.detected:
            off = self.cropped.detail.get("grid_offset")
            parts.append(f"off-grid ({off[0]},{off[1]})" if off else "off-grid")
        if parts:
            return ", ".join(parts)
        return "none found" if any(f.detected is None for f in self.findings) else "as shot"

    def to_record(self) -> dict:
        """JSON-ready {"manipulated", "resaved", "resampled", "cropped"}."""
        rec: dict[str, Any] = {"manipulated": self.manipulated}
        for f in self.findings:
            rec[f.name] = f.to_record()
        return rec


def analyse_history(
    pixels: np.ndarray, data: bytes | None = None, codec: str | None = None
) -> History:
    """The history findings for decoded `pixels` (HxWx3 or HxW uint8, stored orientation).

    `data` is the file's bytes (the last quantisation table is read from a JPEG's DQT);
    `codec` is the loader's `img.codec` ("JPEG" when the pixels are a JPEG's decode).
    """
    luma = _central_luma(pixels, REGION)
    table = None
    if data is not None and codec == "JPEG":
        tables = parse_jpeg_qtables(data)
        table = tables.get(0)
    grid = None
    if codec != "JPEG" and min(luma.shape) >= 64:
        grid = jpeg_grid(pixels, luma)
    blocks = codec == "JPEG" or (grid is not None and grid[1] >= JPEG_LATTICE_MIN)
    return History(
        resaved=_resaved(luma, table, codec),
        resampled=_resampled(luma, blocks),
        cropped=_cropped(grid, codec == "JPEG", min(luma.shape)),
    )


def _central_luma(pixels: np.ndarray, side: int) -> np.ndarray:
    """Float64 luma of a central region (at most side x side) starting on the 8x8 grid."""
    h, w = pixels.shape[:2]
    y0 = max(0, (h - side) // 2) // 8 * 8
    x0 = max(0, (w - side) // 2) // 8 * 8
    px = pixels[y0 : y0 + side, x0 : x0 + side]
    if px.ndim == 3:
        return px[..., :3].astype(np.float64) @ LUMA
    return px.astype(np.float64)


# -- re-saved (double JPEG) --------------------------------------------------------------


@functools.cache
def _dct_matrix() -> np.ndarray:
    """8x8 orthonormal DCT-II matrix (rows: frequencies)."""
    k = np.arange(8)
    c = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / 16.0)
    c[0] *= math.sqrt(1 / 8)
    c[1:] *= math.sqrt(2 / 8)
    return c


def block_dct(luma: np.ndarray) -> np.ndarray:
    """(blocks, 64) DCT coefficients (natural order) of the 8x8 blocks of `luma` (grid at 0)."""
    h, w = luma.shape[0] // 8 * 8, luma.shape[1] // 8 * 8
    blocks = luma[:h, :w].reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3) - 128.0
    c = _dct_matrix()
    return np.einsum("ui,nmij,vj->nmuv", c, blocks, c, optimize=True).reshape(-1, 64)


def ijg_table(quality: int) -> np.ndarray:
    """The libjpeg luma table (natural order, 64) for an IJG quality 1..100."""
    q = int(np.clip(quality, 1, 100))
    scale = 5000.0 / q if q < 50 else 200.0 - 2.0 * q
    return np.clip(np.floor((STD_LUMA.ravel() * scale + 50.0) / 100.0), 1, 255)


GG_SHAPES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.25, 1.6, 2.0)
"""Generalised-Gaussian shapes tried for the coefficient density (1: Laplacian)."""


def _gg_cdf(x: np.ndarray, mean_abs: float, beta: float) -> np.ndarray:
    """CDF of a zero-mean generalised Gaussian with E|x| = mean_abs and shape beta."""
    alpha = mean_abs * math.gamma(1.0 / beta) / math.gamma(2.0 / beta)
    return 0.5 + 0.5 * np.sign(x) * gammainc(1.0 / beta, (np.abs(x) / alpha) ** beta)


def dq_gains(coef: np.ndarray, q2: int, noise: float = DQ_NOISE) -> np.ndarray:
    """Log-likelihood gain (nats per block) of "first quantised with step q1, then with q2"
    over "quantised once with q2", for q1 = 1..DQ_MAX_Q1 (index q1 - 1), at one frequency.

    The coefficient density is a generalised Gaussian whose shape is fitted to the
    histogram of the last indices round(coef / q2) under the single-quantisation model
    (within a window of +-K indices); the double models use the same density.
    """
    q2 = max(1, int(q2))
    k_max = int(np.clip(math.ceil(48.0 / q2), 3, 40))
    k2 = np.rint(coef / q2).astype(np.int64)
    inside = np.abs(k2) <= k_max
    n = int(inside.sum())
    out = np.zeros(DQ_MAX_Q1)
    if n < 16:
        return out
    hist = np.bincount(k2[inside] + k_max, minlength=2 * k_max + 1).astype(np.float64)
    mean_abs = max(float(np.mean(np.abs(coef[inside]))), 0.25)
    edges = (np.arange(-k_max, k_max + 2) - 0.5) * q2  # last-quantisation cell edges
    nb = len(hist)
    eps = 0.5 / n

    def loglik(p: np.ndarray) -> np.ndarray:  # (..., bins) -> (...)
        p = np.maximum(p, 0.0) / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300)
        return np.log((1 - nb * eps) * p + eps) @ hist

    fits = [(float(loglik(np.diff(_gg_cdf(edges, mean_abs, b)))), b) for b in GG_SHAPES]
    single, beta = max(fits)
    # every candidate q1's first-quantisation cells k1 * q1, stacked: (rows,) with owners
    lim = (k_max + 1) * q2 + 4 * noise
    q1s = [q1 for q1 in range(1, DQ_MAX_Q1 + 1) if q2 % q1]  # divisors: no trace (gain 0)
    if not q1s:
        return out
    spans = [int(lim // q1) + 1 for q1 in q1s]
    k1 = np.concatenate([np.arange(-j, j + 1) for j in spans]).astype(np.float64)
    step = np.repeat(np.asarray(q1s, dtype=np.float64), [2 * j + 1 for j in spans])
    mass = _gg_cdf((k1 + 0.5) * step, mean_abs, beta) - _gg_cdf((k1 - 0.5) * step, mean_abs, beta)
    cells = np.diff(ndtr((edges[None, :] - (k1 * step)[:, None]) / noise), axis=1)
    starts = np.cumsum([0] + [2 * j + 1 for j in spans[:-1]])
    p = np.add.reduceat(mass[:, None] * cells, starts, axis=0)  # (len(q1s), bins)
    out[np.asarray(q1s) - 1] = (loglik(p) - single) / n
    return out


def _resaved(luma: np.ndarray, table: np.ndarray | None, codec: str | None) -> Finding:
    name = "resaved"
    if codec != "JPEG" or table is None:
        what = "not a JPEG file" if codec != "JPEG" else "no quantisation table in the file"
        return Finding(name, None, None, None, f"cannot tell: {what}")
    coef = block_dct(luma)
    if coef.shape[0] < DQ_MIN_BLOCKS:
        return Finding(
            name,
            None,
            None,
            None,
            "cannot tell: image too small (fewer than 1024 8x8 blocks, 256x256)",
        )
    q2 = np.asarray(table, dtype=np.int64).ravel()
    gains = np.stack([dq_gains(coef[:, f], int(q2[f])) for f in DQ_FREQS])  # (F, 64)
    best = gains.max(axis=1)
    score = float(np.maximum(best, 0.0).sum())
    # the IJG quality whose table explains the frequencies best
    fit = []
    for q in QUALITIES:
        steps = ijg_table(q)[list(DQ_FREQS)].astype(np.int64)
        fit.append(sum(gains[i, s - 1] if s <= DQ_MAX_Q1 else 0.0 for i, s in enumerate(steps)))
    q_best = QUALITIES[int(np.argmax(fit))]
    fit_best = float(max(fit))
    last_q = _nearest_quality(q2)
    detected = score > DQ_THRESHOLD
    # how much of the evidence a standard first table explains (1: all of it)
    explained = fit_best / score if score > 0 else 0.0
    detail = {
        "last_quality": last_q,
        "first_quality_fit": q_best,
        "standard_fit": round(explained, 3),
    }
    estimate = float(q_best) if detected and fit_best > 0 else None
    if detected:
        first = f"~Q{q_best}" if estimate is not None else "a table camid cannot name"
        reason = f"double JPEG: the last table (~Q{last_q}) over a first one ({first})"
    else:
        reason = f"single JPEG: the coefficients fit one quantisation (table ~Q{last_q})"
    return Finding(name, detected, score, estimate, reason, detail)


def _nearest_quality(table: np.ndarray) -> int:
    """The IJG quality whose luma table is nearest to `table` (mean absolute step error)."""
    t = np.asarray(table, dtype=np.float64).ravel()
    errs = [float(np.abs(ijg_table(q) - t).mean()) for q in range(1, 101)]
    return int(np.argmin(errs)) + 1


# -- resampled ---------------------------------------------------------------------------


def residue_spectrum(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in cycles/pixel, peak ratio) of the periodicity of |second difference|
    along rows and columns: both profiles' spectra added, then divided by their running
    median (21 bins) so a peak reads as "so many times the spectrum around it"."""
    n = min(luma.shape)
    y = luma[:n, :n]
    d_col = np.abs(y[:, :-2] - 2 * y[:, 1:-1] + y[:, 2:]).mean(axis=0)  # profile along x
    d_row = np.abs(y[:-2, :] - 2 * y[1:-1, :] + y[2:, :]).mean(axis=1)  # profile along y
    win = np.hanning(n - 2)
    spec = np.zeros((n - 2) // 2 + 1)
    for prof in (d_col, d_row):
        spec += np.abs(np.fft.rfft((prof - prof.mean()) * win))
    base = median_filter(spec, size=21, mode="nearest")
    return np.fft.rfftfreq(n - 2), spec / np.maximum(base, 1e-12)


def _resampled(luma: np.ndarray, blocks: bool) -> Finding:
    name = "resampled"
    if min(luma.shape) < RESAMPLE_MIN_SIDE:
        return Finding(name, None, None, None, "cannot tell: image too small")
    freqs, ratio = residue_spectrum(luma)
    cand = freqs >= RESAMPLE_MIN_FREQ
    if blocks:  # the 8x8 blocks of a JPEG coding peak at k/8 cycles/pixel
        for k in range(1, 5):
            cand &= np.abs(freqs - k / 8) > RESAMPLE_JPEG_GAP
    i = int(np.argmax(np.where(cand, ratio, -np.inf)))
    score, f = float(ratio[i]), float(freqs[i])
    detected = score > RESAMPLE_THRESHOLD
    detail: dict[str, Any] = {"peak_frequency": round(f, 4)}
    if not detected:
        reason = "no periodic interpolation trace (an exact halving such as x0.5 leaves none)"
        return Finding(name, False, score, None, reason, detail)
    up, down = 1.0 / (1.0 - f), 1.0 / (1.0 + f)
    detail["alternatives"] = [round(down, 3), round(1.0 / (2.0 - f), 3)]
    reason = (
        f"periodic interpolation trace at {f:.3f} cycles/pixel: resized x~{up:.2f} "
        f"(or x~{down:.2f} if it was made smaller)"
    )
    return Finding(name, True, score, up, reason, detail)


# -- cropped off the grid ---------------------------------------------------------------


def jpeg_grid(pixels: np.ndarray, luma: np.ndarray) -> tuple[tuple[int, int], float]:
    """Where the 8x8 grid of an earlier JPEG coding starts in pixels not stored as that
    JPEG (`detect_jpeg_grid`), and its lattice strength there (0..1; < GRID_MIN: none)."""
    from camid.models.traces import detect_jpeg_grid, lattice_strength

    dy, dx = detect_jpeg_grid(pixels)
    return (dy, dx), lattice_strength(luma[dy : dy + 256, dx : dx + 256])


def _cropped(grid: tuple[tuple[int, int], float] | None, jpeg_file: bool, side: int) -> Finding:
    name = "cropped"
    if jpeg_file:  # its own last save starts the grid at (0, 0)
        reason = (
            "the file's own JPEG grid starts at (0, 0); a crop made before its last save "
            "is not looked for"
        )
        return Finding(name, False, None, None, reason, {"grid_offset": [0, 0]})
    if grid is None or side < 64:
        return Finding(name, None, None, None, "cannot tell: image too small")
    (dy, dx), strength = grid
    if strength < JPEG_LATTICE_MIN:
        return Finding(name, None, strength, None, "cannot tell: the pixels show no JPEG grid")
    if (dy, dx) != (0, 0):
        reason = f"the JPEG 8x8 grid starts at offset ({dy}, {dx}): cut off the top/left"
        return Finding(name, True, strength, None, reason, {"grid_offset": [dy, dx]})
    reason = "the JPEG grid of the pixels starts at (0, 0)"
    return Finding(name, False, strength, None, reason, {"grid_offset": [0, 0]})


__all__ = ["Finding", "History", "analyse_history", "block_dct", "ijg_table"]
