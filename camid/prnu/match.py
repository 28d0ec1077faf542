"""Matching residuals against fingerprints: NCC, PCE (correct definition) and p-values.

Conventions (see docs/prnu.md):

* X = W_q * I_q (query residual times its grey intensity, mean removed over the query),
  Y = K - mean(K); the circular cross-correlation c(s) = sum_x X(x) Y(x + s) is computed
  with float32 FFTs.
* peak = c(0) when query and fingerprint are aligned; with ``search_shift`` (query is a crop of
  the full frame) the peak is the maximum over the shifts where the query fits inside K.
* energy = mean of c^2 over all shifts except an 11x11 neighbourhood of the peak, taken with
  wrap-around; PCE = sign(peak) * peak^2 / energy.
* Outcome (an examiner's three words): ``match`` when PCE > 60, ``inconclusive`` when
  25 < PCE <= 60, ``no match`` otherwise (see `outcome_of` and docs/prnu.md).
* NCC = Pearson correlation of W_q and I_q * K at the chosen alignment.
* p-value = false-alarm probability 1 - (1 - Q(sqrt(PCE)))^n for n tested alignments
  (shifts x orientations x scales), Q the standard normal tail.
* Scale search (photos resized after the camera): the fingerprint is resampled to each
  candidate size (`scale_candidates`), the best PCE is kept, and the match and inconclusive
  thresholds are raised for the m scales tested (`corrected_threshold`, Bonferroni).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import log_ndtr, ndtri_exp

from camid.errors import InputError
from camid.prnu.fingerprint import Fingerprint
from camid.prnu.residual import ResidualParams, residual_and_grey

DEFAULT_THRESHOLD = 60.0
"""PCE above which a photo matches: the field's convention (Goljan, Fridrich & Filler 2009).
Under the Gaussian null PCE is about a squared standard normal, so the false-alarm
probability of one test is Q(sqrt(60)) ~ 4e-15."""
INCONCLUSIVE_PCE = 25.0
"""PCE above which a photo short of the match threshold is `inconclusive`, not `no match`:
Q(sqrt(25)) = Q(5) ~ 3e-7 per test - unlikely by chance for one comparison, but not the
field's standard, and a search over many shifts, rotations or fingerprints makes such
values reachable by chance."""
OUTCOMES = ("match", "inconclusive", "no match")


def outcome_of(
    pce: float, threshold: float = DEFAULT_THRESHOLD, inconclusive: float = INCONCLUSIVE_PCE
) -> str:
    """'match' (PCE > threshold), 'inconclusive' (inconclusive < PCE <= threshold) or
    'no match'. With a threshold at or below `inconclusive` there is no inconclusive band."""
    if pce > threshold:
        return "match"
    if pce > min(inconclusive, threshold):
        return "inconclusive"
    return "no match"
EXCLUSION = 11
ROTATION_POLICIES = ("auto", "all", "none")
DEFAULT_SCALES: tuple[float, ...] = (0.5, 0.6, 2 / 3, 0.7, 0.75, 0.8, 0.9)
"""Resize factors tried by the scale search for a photo whose size is not a resized copy of
the fingerprint's (a crop, perhaps of a resized photo), besides 1.0: half size, the common
web/messenger factors 0.6-0.9 and 2/3. A photo whose size is a resized copy of the
fingerprint's is tested only at the factor its size implies."""
SCALE_RANGE = (0.1, 4.0)
"""Allowed resize factors (a factor outside this range is a usage error)."""
RESIZED_CACHE = 16
"""Resampled copies of one fingerprint kept between photos (one per target size)."""


def scales_of(search_scale: bool | Sequence[float] | None) -> tuple[float, ...] | None:
    """The resize factors a `search_scale` setting means: None (off) for False/None, () for
    True (the default rule of `scale_candidates`), else the validated factors given."""
    if search_scale is None or search_scale is False:
        return None
    if search_scale is True:
        return ()
    return check_scales(search_scale)


SURFACE_BUDGET = 256 << 20
"""Bytes of correlation surfaces computed at once in the batched path."""
SPECTRA_BUDGET = 1 << 30
"""Bytes of cached spectra of rotated or cropped fingerprints kept by one FingerprintBank
(the same-size, unrotated spectra are always kept)."""

# (quarter turns counter-clockwise, then transpose?) -> name; applied to the sensor grid,
# the name says how the photo's pixel grid relates to the fingerprint's.
TRANSFORMS: tuple[tuple[int, bool], ...] = tuple((k, t) for t in (False, True) for k in range(4))


def transform_name(turns: int, transpose: bool) -> str:
    """Readable name of a dihedral transform ("rot0", "rot90", ..., "rot90+transpose")."""
    if transpose:
        return "transpose" if turns == 0 else f"rot{90 * turns}+transpose"
    return f"rot{90 * turns}"


def apply_transform(x: torch.Tensor, turns: int, transpose: bool) -> torch.Tensor:
    """Rotate the last two dims by `turns` quarter turns (counter-clockwise), then transpose."""
    y = torch.rot90(x, turns, dims=(-2, -1)) if turns % 4 else x
    return y.transpose(-2, -1) if transpose else y


# ----------------------------------------------------------------------------- statistics


def p_value_from_pce(pce: float, n_tests: int = 1) -> tuple[float, float]:
    """(false-alarm probability, its log10) of a PCE under the Gaussian null, n alignments."""
    z = math.copysign(math.sqrt(abs(pce)), pce)
    log_p1 = float(log_ndtr(-z))  # natural log of Q(z)
    n = max(1, int(n_tests))
    if n == 1:
        log_fa = log_p1
    elif log_p1 < -27.0:  # p1 < 1e-12: 1 - (1 - p)^n == n p to double precision
        log_fa = math.log(n) + log_p1
    else:
        p1 = math.exp(log_p1)
        fa = -math.expm1(n * math.log1p(-p1)) if p1 < 1.0 else 1.0
        log_fa = math.log(fa) if fa > 0 else -math.inf
    return math.exp(log_fa), log_fa / math.log(10.0)


def corrected_threshold(threshold: float, n_tests: int) -> float:
    """The PCE threshold with the same false-alarm probability over `n_tests` tests as
    `threshold` has for one (Bonferroni on the Gaussian tail of sqrt(PCE)).

    With Q the standard normal tail: t_n = (Q^-1(Q(sqrt(t)) / n))^2; t for n <= 1 (or t <= 0).
    E.g. 60 -> 64.5 for 10 tests, 69.1 for 100.
    """
    n = int(n_tests)
    if n <= 1 or threshold <= 0:
        return float(threshold)
    log_p = float(log_ndtr(-math.sqrt(threshold))) - math.log(n)
    return float(ndtri_exp(log_p)) ** 2


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """Validated resize factors (finite, within SCALE_RANGE); ValueError otherwise."""
    out = []
    for s in scales:
        f = float(s)
        if not math.isfinite(f) or not SCALE_RANGE[0] <= f <= SCALE_RANGE[1]:
            lo, hi = SCALE_RANGE
            raise ValueError(f"a resize factor must be between {lo:g} and {hi:g}, not {s!r}")
        out.append(f)
    if not out:
        raise ValueError("give at least one resize factor")
    return tuple(out)


def implied_scales(
    photo_shape: tuple[int, int], fp_shape: tuple[int, int]
) -> list[tuple[float, tuple[int, int]]]:
    """(factor, target size) when the photo's size is the fingerprint's resized by one factor.

    Both orientations are tried (a photo stored rotated by 90 degrees); the target size is in
    the fingerprint's orientation and equals the photo's size up to that rotation. The factors
    of height and width must agree to within the rounding of a resize (1.5 pixels).
    """
    hk, wk = fp_shape
    found: list[tuple[float, tuple[int, int]]] = []
    for a, b in ((photo_shape[0], photo_shape[1]), (photo_shape[1], photo_shape[0])):
        sh, sw = a / hk, b / wk
        if abs(sh - sw) * max(hk, wk) <= 1.5 and (a, b) not in [t for _, t in found]:
            f = (sh + sw) / 2
            if SCALE_RANGE[0] <= f <= SCALE_RANGE[1]:
                found.append((f, (a, b)))
    return found


def scale_candidates(
    photo_shape: tuple[int, int], fp_shape: tuple[int, int], scales: Sequence[float] = ()
) -> list[tuple[float, tuple[int, int]]]:
    """The (factor, fingerprint target size) pairs the scale search tests, distinct sizes.

    Default (`scales` empty): a photo whose size is the fingerprint's resized
    (`implied_scales`) is tested at that factor only, any other photo (a crop) at 1.0 and at
    DEFAULT_SCALES. Factors given are tested besides the implied ones and 1.0 (a crop that
    keeps the aspect ratio has an implied factor that is not its resize factor).
    """
    implied = implied_scales(photo_shape, fp_shape)
    if implied and not scales:
        return implied
    hk, wk = fp_shape
    out: list[tuple[float, tuple[int, int]]] = list(implied)
    for f in (1.0, *(scales or DEFAULT_SCALES)):
        target = (max(1, round(f * hk)), max(1, round(f * wk)))
        if target not in [t for _, t in out]:
            out.append((float(f), target))
    return out


def resample(k: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A fingerprint (H, W) resampled to `size` (bilinear, antialiased when shrinking; pixel
    centres mapped as PIL and OpenCV do)."""
    if tuple(k.shape) == tuple(size):
        return k
    y = torch.nn.functional.interpolate(
        k[None, None], size=size, mode="bilinear", align_corners=False, antialias=True
    )
    return y[0, 0]


def _neighbourhood(n: int, centre: int, size: int, device: torch.device) -> torch.Tensor:
    """Indices of a `size`-wide window around `centre` on a circle of length n (no repeats)."""
    half = size // 2
    idx = torch.remainder(torch.arange(centre - half, centre + half + 1, device=device), n)
    return torch.unique(idx)


def pce_from_surface(
    c: torch.Tensor,
    peak_at: tuple[int, int] | None = None,
    search: tuple[int, int] | None = None,
    exclusion: int = EXCLUSION,
) -> tuple[float, float, tuple[int, int]]:
    """(pce, peak, (dy, dx)) of one correlation surface (H, W).

    The peak is c at `peak_at` (default zero shift) or, with `search=(max_dy, max_dx)`, the
    maximum over shifts 0..max_dy x 0..max_dx. The energy excludes an `exclusion`-square
    neighbourhood of the peak with wrap-around.
    """
    h, w = c.shape[-2:]
    if search is not None:
        region = c[: search[0] + 1, : search[1] + 1]
        flat = int(torch.argmax(region))
        dy, dx = divmod(flat, region.shape[-1])
    else:
        dy, dx = peak_at or (0, 0)
    peak = float(c[dy, dx])
    rows = _neighbourhood(h, dy, exclusion, c.device)
    cols = _neighbourhood(w, dx, exclusion, c.device)
    near = c.index_select(0, rows).index_select(1, cols)
    count = h * w - near.numel()
    if count <= 0:
        raise ValueError(f"{w}x{h} is too small for a PCE with a {exclusion}-pixel exclusion")
    c64 = c.double()
    energy = (float((c64 * c64).sum()) - float((near.double() ** 2).sum())) / count
    if energy <= 0:
        return 0.0, peak, (dy, dx)
    return math.copysign(peak * peak / energy, peak), peak, (dy, dx)


def _zero_shift_pce(c: torch.Tensor, exclusion: int = EXCLUSION) -> torch.Tensor:
    """PCE at zero shift for a batch of surfaces (G, H, W), float64 on the same device."""
    h, w = c.shape[-2:]
    rows = _neighbourhood(h, 0, exclusion, c.device)
    cols = _neighbourhood(w, 0, exclusion, c.device)
    total = torch.sum(c * c, dim=(-2, -1), dtype=torch.float64)
    near = c.index_select(-2, rows).index_select(-1, cols).double()
    count = h * w - rows.numel() * cols.numel()
    if count <= 0:
        raise ValueError(f"{w}x{h} is too small for a PCE with a {exclusion}-pixel exclusion")
    energy = (total - (near * near).sum(dim=(-2, -1))) / count
    peak = c[..., 0, 0].double()
    pce = torch.sign(peak) * peak * peak / energy.clamp_min(1e-300)
    return torch.where(energy > 0, pce, torch.zeros_like(pce))


def ncc(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two equal-size tensors (float64 reduction)."""
    a = a.double().flatten()
    b = b.double().flatten()
    a = a - a.mean()
    b = b - b.mean()
    den = float(torch.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum()) / den if den > 0 else 0.0


def _batched_ncc(
    w: torch.Tensor, i: torch.Tensor, ks: torch.Tensor, ks_sq: torch.Tensor | None = None
) -> torch.Tensor:
    """corr(W, I * K_g) for a stack ks (G, H, W) without forming the G products.

    With W0 = W - mean(W): num = (W0 I) . K_g, and
    |I K_g - mean|^2 = (I^2) . (K_g^2) - ((I . K_g)^2) / N, as matrix-vector products.
    """
    n = w.numel()
    kf = ks.flatten(1)
    ksq = (kf * kf) if ks_sq is None else ks_sq.flatten(1)
    w0 = w.flatten() - w.mean()
    i_f = i.flatten()
    num = (kf @ (w0 * i_f)).double()
    s1 = (kf @ i_f).double()
    s2 = (ksq @ (i_f * i_f)).double()
    var_sig = (s2 - s1 * s1 / n).clamp_min(0.0)
    den = torch.sqrt(var_sig * torch.sum(w0 * w0, dtype=torch.float64))
    return torch.where(den > 0, num / den.clamp_min(1e-300), torch.zeros_like(num))


# ----------------------------------------------------------------------------- results


@dataclass
class MatchResult:
    """The comparison of one photo with one fingerprint."""

    fingerprint: str
    pce: float
    ncc: float
    p_value: float
    log10_p_value: float
    decision: bool
    rotation: str = "rot0"
    shift: tuple[int, int] | None = None
    crop_note: str | None = None
    n_tests: int = 1
    compared_size: tuple[int, int] = (0, 0)
    threshold: float = DEFAULT_THRESHOLD
    extra: dict = field(default_factory=dict)
    inconclusive_above: float = INCONCLUSIVE_PCE
    scale: float | None = None
    """With a scale search: the resize factor of the best PCE (None: no search)."""
    n_scales: int = 1
    single_test_threshold: float | None = None
    """With a scale search: the threshold before the correction for the scales tested."""

    @property
    def outcome(self) -> str:
        """'match', 'inconclusive' or 'no match' (`decision` is True only for 'match')."""
        return outcome_of(self.pce, self.threshold, self.inconclusive_above)

    def to_record(self) -> dict:
        """Flat, JSON-ready fields (snake_case, numbers stay numbers)."""
        rec = {
            "fingerprint": self.fingerprint,
            "pce": round(self.pce, 3),
            "ncc": round(self.ncc, 6),
            "p_value": self.p_value,
            "log10_p_value": round(self.log10_p_value, 3),
            "outcome": self.outcome,
            "decision": "match" if self.decision else "no match",
            "threshold": self.threshold,
            "inconclusive_above": min(self.inconclusive_above, self.threshold),
            "rotation": self.rotation,
            "shift": list(self.shift) if self.shift is not None else None,
            "crop_note": self.crop_note,
            "compared_size": f"{self.compared_size[1]}x{self.compared_size[0]}",
            "n_tests": self.n_tests,
        }
        if self.scale is not None:  # only with a scale search: records are unchanged without
            rec["scale"] = round(self.scale, 4)
            rec["n_scales"] = self.n_scales
            rec["single_test_threshold"] = self.single_test_threshold
        return rec


def _centre_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    y0 = (x.shape[-2] - h) // 2
    x0 = (x.shape[-1] - w) // 2
    return x[..., y0 : y0 + h, x0 : x0 + w]


def _surface(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """c(s) = sum_x X(x) Y(x + s), circular, via real FFTs; x, y already mean-removed."""
    s = (y.shape[-2], y.shape[-1])
    fx = torch.fft.rfft2(x, s=s)
    fy = torch.fft.rfft2(y)
    return torch.fft.irfft2(torch.conj(fx) * fy, s=s)


@dataclass(frozen=True)
class _Plan:
    """How a photo of one size meets one orientation of a fingerprint."""

    kind: str
    """'same' (equal sizes), 'shift' (offsets searched) or 'crop' (both centre-cropped)."""
    size: tuple[int, int]
    """The compared size (h, w)."""
    fft: tuple[int, int]
    """The size of the correlation surface: the fingerprint side (after a crop)."""
    note: str | None
    n: int


def _plan(photo: tuple[int, int], fp: tuple[int, int], search_shift: bool) -> _Plan:
    """The comparison of a photo of size `photo` with a fingerprint of size `fp` (h, w)."""
    h, wd = photo
    hk, wk = fp
    if (h, wd) == (hk, wk):
        return _Plan("same", (h, wd), (hk, wk), None, 1)
    if search_shift and h <= hk and wd <= wk:
        return _Plan("shift", (h, wd), (hk, wk), None, (hk - h + 1) * (wk - wd + 1))
    ch, cw = min(h, hk), min(wd, wk)
    parts = []
    if (h, wd) != (ch, cw):
        parts.append(f"photo {wd}x{h}")
    if (hk, wk) != (ch, cw):
        parts.append(f"fingerprint {wk}x{hk}")
    note = f"sizes differ: centre-cropped {' and '.join(parts)} to {cw}x{ch}"
    if search_shift:
        note += " (shift search needs a photo no larger than the fingerprint)"
    return _Plan("crop", (ch, cw), (ch, cw), note, 1)


def _query_side(
    w: torch.Tensor, i: torch.Tensor, plan: _Plan
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(X = W I with its mean removed, W, I) as compared under `plan`."""
    if plan.kind == "crop":
        w, i = _centre_crop(w, *plan.size), _centre_crop(i, *plan.size)
    x = w * i
    x = x - x.mean()  # with a shift search: zero padding after the mean is removed
    return x, w, i


def _fp_side(k: torch.Tensor, plan: _Plan) -> torch.Tensor:
    """The part of one orientation of K that is compared under `plan` (a view)."""
    return _centre_crop(k, *plan.size) if plan.kind == "crop" else k


def _peak(
    c: torch.Tensor, plan: _Plan, exclusion: int
) -> tuple[float, tuple[int, int] | None, str | None]:
    """(pce, shift, note) of a correlation surface compared under `plan`."""
    if plan.kind != "shift":
        pce, _, _ = pce_from_surface(c, exclusion=exclusion)
        return pce, None, plan.note
    (h, wd), (hk, wk) = plan.size, plan.fft
    pce, _, (dy, dx) = pce_from_surface(c, search=(hk - h, wk - wd), exclusion=exclusion)
    note = f"photo {wd}x{h} searched inside the fingerprint's {wk}x{hk}: offset x={dx} y={dy}"
    return pce, (dy, dx), note


def _ncc_at(
    w: torch.Tensor, i: torch.Tensor, k: torch.Tensor, plan: _Plan, shift: tuple[int, int] | None
) -> float:
    """NCC of the photo (w, i) and one orientation k of K, compared under `plan` at `shift`."""
    if plan.kind == "crop":
        w, i = _centre_crop(w, *plan.size), _centre_crop(i, *plan.size)
    k = _fp_side(k, plan)
    if shift is not None:
        dy, dx = shift
        k = k[dy : dy + plan.size[0], dx : dx + plan.size[1]]
    return ncc(w, i * k)


def _score_one_orientation(
    w: torch.Tensor, i: torch.Tensor, k: torch.Tensor, search_shift: bool, exclusion: int
) -> tuple[float, float, tuple[int, int] | None, str | None, int, tuple[int, int]]:
    """(pce, ncc, shift, note, n_tests, compared size) for one orientation of K."""
    plan = _plan(_hw(w), _hw(k), search_shift)
    x, _, _ = _query_side(w, i, plan)
    kq = _fp_side(k, plan)
    c = _surface(x, kq - kq.mean())
    pce, shift, note = _peak(c, plan, exclusion)
    return pce, _ncc_at(w, i, k, plan, shift), shift, note, plan.n, plan.size


def _hw(x: torch.Tensor) -> tuple[int, int]:
    return int(x.shape[-2]), int(x.shape[-1])


def transformed_shape(shape: tuple[int, int], turns: int, transpose: bool) -> tuple[int, int]:
    """The (h, w) of a plane of `shape` after `apply_transform(., turns, transpose)`."""
    h, w = int(shape[0]), int(shape[1])
    return (w, h) if (turns % 2 == 1) != transpose else (h, w)


def candidate_transforms(
    photo_shape: tuple[int, int], fp_shape: tuple[int, int], rotations: str
) -> list[tuple[int, bool]]:
    """Orientations to try: `none` identity, `all` the 8, `auto` identity if sizes agree else 8."""
    if rotations not in ROTATION_POLICIES:
        raise ValueError(f"rotations must be one of {ROTATION_POLICIES}, got {rotations!r}")
    if rotations == "none" or (rotations == "auto" and tuple(photo_shape) == tuple(fp_shape)):
        return [(0, False)]
    return list(TRANSFORMS)


def match_residual(
    residual: torch.Tensor,
    grey: torch.Tensor,
    k: torch.Tensor,
    *,
    name: str = "fingerprint",
    rotations: str = "auto",
    search_shift: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
    exclusion: int = EXCLUSION,
) -> MatchResult:
    """Compare one query residual (H, W) and its grey pixels with a fingerprint K."""
    k = k.to(device=residual.device, dtype=torch.float32)
    scored = []
    for turns, tr in candidate_transforms(tuple(residual.shape), tuple(k.shape), rotations):
        kt = apply_transform(k, turns, tr)
        scored.append(
            ((turns, tr), _score_one_orientation(residual, grey, kt, search_shift, exclusion))
        )
    return _best_of(name, scored, threshold)


def _best_of(name: str, scored: list, threshold: float) -> MatchResult:
    """The MatchResult of the orientation with the highest PCE (the first on ties); `scored`
    holds ((turns, transpose), (pce, ncc, shift, note, n, size)) in the order tried."""
    best = None
    n_total = 0
    for (turns, tr), (pce, rho, shift, note, n, size) in scored:
        n_total += n
        if best is None or pce > best[0]:
            best = (pce, rho, shift, note, size, transform_name(turns, tr))
    assert best is not None
    pce, rho, shift, note, size, rot = best
    p, log10p = p_value_from_pce(pce, n_total)
    return MatchResult(
        fingerprint=name,
        pce=pce,
        ncc=rho,
        p_value=p,
        log10_p_value=log10p,
        decision=pce > threshold,
        rotation=rot,
        shift=shift,
        crop_note=note,
        n_tests=n_total,
        compared_size=size,
        threshold=threshold,
    )


def match_residual_scaled(
    residual: torch.Tensor,
    grey: torch.Tensor,
    k: torch.Tensor,
    scales: Sequence[float] = (),
    *,
    name: str = "fingerprint",
    rotations: str = "auto",
    search_shift: bool = False,
    threshold: float = DEFAULT_THRESHOLD,
    exclusion: int = EXCLUSION,
    resized: dict | None = None,
) -> MatchResult:
    """`match_residual` over the resize factors of `scale_candidates` (`scales` empty: the
    default rule): the best PCE wins.

    The fingerprint is resampled to each candidate size (`resample`; `resized`, a dict keyed
    by size, caches them across calls). `n_tests` counts every alignment of every scale; the
    match and inconclusive thresholds are corrected for the m scales (`corrected_threshold`).
    """
    k = k.to(device=residual.device, dtype=torch.float32)
    scales = check_scales(scales) if scales else ()
    cands = scale_candidates(tuple(residual.shape), tuple(k.shape), scales)
    per_scale = []
    for factor, size in cands:
        if resized is not None and size in resized:
            kr = resized[size]
        else:
            kr = resample(k, size)
            if resized is not None:
                resized[size] = kr
        r = match_residual(
            residual,
            grey,
            kr,
            name=name,
            rotations=rotations,
            search_shift=search_shift,
            threshold=threshold,
            exclusion=exclusion,
        )
        per_scale.append((factor, r))
    return _best_scale(per_scale, threshold)


def _best_scale(per_scale: list[tuple[float, MatchResult]], threshold: float) -> MatchResult:
    """The result of the scale with the highest PCE (the first on ties), its thresholds
    corrected for the scales tested and its p-value for every alignment of every scale."""
    best: tuple[float, MatchResult] | None = None
    n_total = 0
    for factor, r in per_scale:
        n_total += r.n_tests
        if best is None or r.pce > best[1].pce:
            best = (factor, r)
    assert best is not None
    factor, r = best
    m = len(per_scale)
    r.scale = factor
    r.n_scales = m
    r.single_test_threshold = threshold
    r.threshold = corrected_threshold(threshold, m)
    r.inconclusive_above = corrected_threshold(INCONCLUSIVE_PCE, m)
    r.decision = r.pce > r.threshold
    r.n_tests = n_total
    r.p_value, r.log10_p_value = p_value_from_pce(r.pce, n_total)
    if factor != 1.0:
        r.crop_note = f"fingerprint resampled x{factor:.4g}" + (
            f"; {r.crop_note}" if r.crop_note else ""
        )
    return r

class FingerprintBank:
    """Fingerprints held on a device, scored against one photo at a time.

    Fingerprints with the photo's exact size are scored together: one FFT of the photo,
    cached FFTs of the fingerprints, one batched inverse FFT (the many-to-many path). Other
    photos (rotated, cropped, `rotations="all"`) are scored the same way per orientation and
    compared size, from cached spectra of the rotated or cropped fingerprints. Memory depends
    on the fingerprints and the budgets, never on the number of photos scored.
    """

    def __init__(
        self,
        fingerprints: Sequence[Fingerprint],
        device: torch.device | str = "cpu",
        *,
        rotations: str = "auto",
        search_shift: bool = False,
        threshold: float = DEFAULT_THRESHOLD,
        exclusion: int = EXCLUSION,
        search_scale: bool | Sequence[float] = False,
    ) -> None:
        if rotations not in ROTATION_POLICIES:
            raise ValueError(f"rotations must be one of {ROTATION_POLICIES}, got {rotations!r}")
        self.scales = scales_of(search_scale)
        self._resized: dict[int, dict] = {}
        self.fingerprints = list(fingerprints)
        self.device = torch.device(device)
        self.rotations = rotations
        self.search_shift = search_shift
        self.threshold = threshold
        self.exclusion = exclusion
        self.ks = [
            torch.from_numpy(np.asarray(fp.k, np.float32)).to(self.device)
            for fp in self.fingerprints
        ]
        self.groups: dict[tuple[int, int], list[int]] = {}
        for idx, k in enumerate(self.ks):
            self.groups.setdefault((int(k.shape[0]), int(k.shape[1])), []).append(idx)
        self._spectra: dict[tuple[int, int], torch.Tensor] = {}
        self._stacks: dict[tuple[int, int], torch.Tensor] = {}
        self._oriented: dict[tuple, torch.Tensor] = {}
        self.spectra_budget = SPECTRA_BUDGET

    def _group_stack(self, shape: tuple[int, int]) -> torch.Tensor:
        if shape not in self._stacks:
            stack = torch.stack([self.ks[i] for i in self.groups[shape]])
            for j, idx in enumerate(self.groups[shape]):  # share memory with the stack
                self.ks[idx] = stack[j]
            self._stacks[shape] = stack
        return self._stacks[shape]

    def _group_spectra(self, shape: tuple[int, int]) -> torch.Tensor:
        if shape not in self._spectra:
            stack = self._group_stack(shape)
            stack = stack - stack.mean(dim=(-2, -1), keepdim=True)
            self._spectra[shape] = torch.fft.rfft2(stack)
        return self._spectra[shape]

    def score(
        self,
        residual: torch.Tensor,
        grey: torch.Tensor,
        search_scale: bool | Sequence[float] | None = None,
    ) -> list[MatchResult]:
        """One MatchResult per fingerprint (in the bank's order) for a residual and its grey.

        `search_scale` overrides the bank's scale search for this photo (None: the bank's).
        """
        residual = residual.to(self.device, torch.float32)
        grey = grey.to(self.device, torch.float32)
        scales = self.scales if search_scale is None else scales_of(search_scale)
        if scales is not None:
            return self._score_scaled(residual, grey, scales)
        shape = (int(residual.shape[0]), int(residual.shape[1]))
        results: list[MatchResult | None] = [None] * len(self.ks)
        if shape in self.groups and self.rotations != "all":
            idxs = self.groups[shape]
            pces, nccs = self._batched_zero_shift(residual, grey, shape)
            for j, idx in enumerate(idxs):
                pce = float(pces[j])
                p, log10p = p_value_from_pce(pce, 1)
                results[idx] = MatchResult(
                    fingerprint=self.fingerprints[idx].label,
                    pce=pce,
                    ncc=float(nccs[j]),
                    p_value=p,
                    log10_p_value=log10p,
                    decision=pce > self.threshold,
                    compared_size=shape,
                    threshold=self.threshold,
                )
        rest = [idx for idx, res in enumerate(results) if res is None]
        if rest:
            items = [(idx, self.ks[idx], self.fingerprints[idx].label) for idx in rest]
            for idx, res in zip(rest, self._score_transformed(residual, grey, items), strict=True):
                results[idx] = res
        return [r for r in results if r is not None]

    def _score_transformed(
        self, residual: torch.Tensor, grey: torch.Tensor, items: list[tuple[Any, torch.Tensor, str]]
    ) -> list[MatchResult]:
        """`match_residual` for each (key, K, name) item (same numbers, bit for bit), with
        the work shared: every (item, orientation) pair compared the same way is in one
        group, the photo's FFT is taken once per group, the items' spectra come from a
        cache keyed by `key`, size and orientation (computed once per run while they fit in
        `spectra_budget`), and the surfaces of a group come from one batched inverse FFT."""
        shape = _hw(residual)
        ks = {key: k for key, k, _ in items}
        tried: dict[Any, list[tuple[int, bool]]] = {}
        groups: dict[_Plan, list[tuple[Any, int, bool]]] = {}
        for key, k, _ in items:
            tried[key] = candidate_transforms(shape, _hw(k), self.rotations)
            for turns, tr in tried[key]:
                plan = _plan(shape, transformed_shape(_hw(k), turns, tr), self.search_shift)
                groups.setdefault(plan, []).append((key, turns, tr))
        scored: dict[tuple[Any, int, bool], tuple] = {}
        for plan, members in groups.items():
            x, _, _ = _query_side(residual, grey, plan)
            fx = torch.conj(torch.fft.rfft2(x, s=plan.fft))
            per = max(1, SURFACE_BUDGET // (plan.fft[0] * plan.fft[1] * 4 * 3))
            for s0 in range(0, len(members), per):
                chunk = tuple(members[s0 : s0 + per])
                spectra = self._oriented_spectra(plan, chunk, ks)
                c = torch.fft.irfft2(fx[None] * spectra, s=plan.fft)
                for j, (key, turns, tr) in enumerate(chunk):
                    scored[(key, turns, tr)] = (*_peak(c[j], plan, self.exclusion), plan)
        out = []
        for key, k, name in items:
            best = None
            n_total = 0
            for turns, tr in tried[key]:
                pce, shift, note, plan = scored[(key, turns, tr)]
                n_total += plan.n
                if best is None or pce > best[0]:
                    best = (pce, shift, note, plan, turns, tr)
            assert best is not None
            pce, shift, note, plan, turns, tr = best  # NCC only for the orientation reported
            rho = _ncc_at(residual, grey, apply_transform(k, turns, tr), plan, shift)
            p, log10p = p_value_from_pce(pce, n_total)
            out.append(
                MatchResult(
                    fingerprint=name,
                    pce=pce,
                    ncc=rho,
                    p_value=p,
                    log10_p_value=log10p,
                    decision=pce > self.threshold,
                    rotation=transform_name(turns, tr),
                    shift=shift,
                    crop_note=note,
                    n_tests=n_total,
                    compared_size=plan.size,
                    threshold=self.threshold,
                )
            )
        return out

    def _oriented_spectra(
        self, plan: _Plan, chunk: tuple[tuple[Any, int, bool], ...], ks: dict[Any, torch.Tensor]
    ) -> torch.Tensor:
        """Stacked spectra of the fingerprint sides of (key, turns, transpose) under `plan`
        (K = ks[key]), cached (least recently used out first) within `spectra_budget` bytes."""
        key = (plan.kind, plan.size, plan.fft, chunk)
        stack = self._oriented.pop(key, None)
        if stack is None:
            parts = []
            for item, turns, tr in chunk:
                kq = _fp_side(apply_transform(ks[item], turns, tr), plan)
                parts.append(torch.fft.rfft2(kq - kq.mean()))
            stack = torch.stack(parts)
        self._oriented[key] = stack  # most recently used last
        nbytes = sum(t.numel() * t.element_size() for t in self._oriented.values())
        while nbytes > self.spectra_budget and len(self._oriented) > 1:
            old = self._oriented.pop(next(iter(self._oriented)))
            nbytes -= old.numel() * old.element_size()
        if nbytes > self.spectra_budget:  # one stack alone is too big: recompute next time
            self._oriented.clear()
        return stack

    def _score_scaled(
        self, residual: torch.Tensor, grey: torch.Tensor, scales: Sequence[float]
    ) -> list[MatchResult]:
        """`match_residual_scaled` for every fingerprint (same numbers), batched: each
        (fingerprint, scale) is one item of `_score_transformed`, the resampled copies are
        cached per fingerprint (at most RESIZED_CACHE sizes) and so are their spectra."""
        shape = _hw(residual)
        items, owners = [], []
        for idx, k in enumerate(self.ks):
            cache = self._resized.setdefault(idx, {})
            cands = scale_candidates(shape, _hw(k), scales)
            if len(cache) + len(cands) > RESIZED_CACHE:  # many photo sizes: bounded memory
                cache.clear()
            for factor, size in cands:
                if size not in cache:
                    cache[size] = resample(k, size)
                items.append(((idx, size), cache[size], self.fingerprints[idx].label))
                owners.append((idx, factor))
        per_fp: list[list[tuple[float, MatchResult]]] = [[] for _ in self.ks]
        for (idx, factor), r in zip(
            owners, self._score_transformed(residual, grey, items), strict=True
        ):
            per_fp[idx].append((factor, r))
        return [_best_scale(per_scale, self.threshold) for per_scale in per_fp]

    def _batched_zero_shift(
        self, residual: torch.Tensor, grey: torch.Tensor, shape: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = residual * grey
        x = x - x.mean()
        fx = torch.conj(torch.fft.rfft2(x))
        spectra = self._group_spectra(shape)
        idxs = self.groups[shape]
        per = max(1, SURFACE_BUDGET // (shape[0] * shape[1] * 4 * 3))
        pces, nccs = [], []
        for s in range(0, len(idxs), per):
            c = torch.fft.irfft2(fx[None] * spectra[s : s + per], s=shape)
            pces.append(_zero_shift_pce(c, self.exclusion).cpu())
            ks = self._group_stack(shape)[s : s + per]
            nccs.append(_batched_ncc(residual, grey, ks).cpu())
        return torch.cat(pces), torch.cat(nccs)


def query_params(
    fingerprints: Sequence[Fingerprint],
    sigma: float | None = None,
    compat: bool | None = None,
) -> tuple[list[ResidualParams], list[str]]:
    """Residual settings for the photos scored against each fingerprint, and notes.

    Each fingerprint's own settings unless `sigma` / `compat` override them; a note names
    every fingerprint whose queries then use other settings than it was made with.
    """
    chosen: list[ResidualParams] = []
    notes: list[str] = []
    for fp in fingerprints:
        if sigma is None and not compat:
            chosen.append(fp.params)
            continue
        p = ResidualParams(
            sigma=sigma if sigma is not None else fp.params.sigma,
            levels=fp.params.levels,
            compat=bool(compat) or fp.params.compat,
        )
        p.validate()
        if p != fp.params:
            notes.append(
                f"{fp.label}: fingerprint made with {fp.params.to_dict()}, queries use "
                f"sigma={p.noise_sigma} compat={p.compat}"
            )
        chosen.append(p)
    return chosen, notes


class FingerprintSet:
    """Fingerprints scored against photos: the one PRNU scoring door of camid.

    One noise residual per photo and distinct residual setting (fingerprints made with the
    same settings share it), each group scored by a `FingerprintBank`. Used by
    `camid prnu match`, `camid prnu matrix` and `camid identify --fingerprint`.
    """

    def __init__(
        self,
        fingerprints: Sequence[Fingerprint],
        device: torch.device | str = "cpu",
        *,
        params: Sequence[ResidualParams] | None = None,
        rotations: str = "auto",
        search_shift: bool = False,
        threshold: float = DEFAULT_THRESHOLD,
        search_scale: bool | Sequence[float] = False,
    ) -> None:
        self.fingerprints = list(fingerprints)
        self.search_scale = scales_of(search_scale)
        if not self.fingerprints:
            raise ValueError("a fingerprint set needs at least one fingerprint")
        chosen = list(params) if params is not None else [fp.params for fp in self.fingerprints]
        if len(chosen) != len(self.fingerprints):
            raise ValueError("one residual setting per fingerprint")
        self.device = torch.device(device)
        self.threshold = threshold
        self.groups: dict[ResidualParams, list[int]] = {}
        for idx, p in enumerate(chosen):
            self.groups.setdefault(p, []).append(idx)
        self.banks = {
            p: FingerprintBank(
                [self.fingerprints[i] for i in idxs],
                self.device,
                rotations=rotations,
                search_shift=search_shift,
                threshold=threshold,
                search_scale=search_scale,
            )
            for p, idxs in self.groups.items()
        }

    def __len__(self) -> int:
        return len(self.fingerprints)

    def score(
        self,
        pixels: np.ndarray,
        path: str | Path = "image",
        search_scale: bool | Sequence[float] | None = None,
    ) -> list[MatchResult]:
        """One MatchResult per fingerprint (in order) for a photo's uint8 pixels.

        `search_scale` turns the scale search on (True: the default rule, or the factors given,
        e.g. an estimate of the photo's resampling) or off (False) for this photo only; None
        keeps the set's setting. Raises InputError naming `path` when the photo is too small
        for a residual or a PCE.
        """
        results: list[MatchResult | None] = [None] * len(self.fingerprints)
        try:
            for p, idxs in self.groups.items():
                w, g = residual_and_grey(pixels, p, self.device)
                scored = self.banks[p].score(w, g, search_scale)
                for i, r in zip(idxs, scored, strict=True):
                    results[i] = r
        except ValueError as exc:
            raise InputError(path, f"cannot compute a PRNU residual ({exc})") from exc
        return [r for r in results if r is not None]

    def best(self, results: Sequence[MatchResult]) -> tuple[Fingerprint, MatchResult]:
        """The fingerprint with the highest PCE and its result."""
        i = max(range(len(results)), key=lambda j: results[j].pce)
        return self.fingerprints[i], results[i]
