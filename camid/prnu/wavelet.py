"""Batched 2-D Daubechies-4 wavelet transforms in torch (CPU and CUDA).

One level maps (B, H, W) to a band stack (B, 4, h, w) = [approximation, cH, cV, cD] (the
order of PyWavelets' ``dwt2``: cH is high-pass along H, cV along W, cD along both). The
analysis is a single stride-2 convolution with four separable 8x8 kernels; the synthesis is
a polyphase convolution (four 2x2 output phases) followed by a pixel shuffle.

Two boundary modes:

* ``"periodization"``: circular extension, ``N/2`` coefficients per level (needs even sizes;
  camid's default residual pads the image to a multiple of ``2**levels`` first, as the
  Binghamton MATLAB code does). The coefficients equal PyWavelets' periodization of the
  signal circularly shifted by 3 samples (the alignment of the symmetric mode).
* ``"symmetric"``: half-sample symmetric extension with ``floor((N + 7) / 2)`` coefficients,
  the PyWavelets default that the prnu-python reference uses (camid's ``compat`` mode).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache

import torch
import torch.nn.functional as F

# Daubechies-4 (8 taps, 4 vanishing moments) scaling filter, reconstruction order
# (orthonormal: sum = sqrt(2), sum of squares = 1). The analysis low-pass is its reverse.
DB4_REC_LO: tuple[float, ...] = (
    0.2303778133088964,
    0.7148465705529154,
    0.6308807679298587,
    -0.0279837694168599,
    -0.1870348117190931,
    0.0308413818355607,
    0.0328830116668852,
    -0.0105974017850690,
)
# Quadrature mirror: rec_hi[n] = (-1)**n * rec_lo[7 - n].
DB4_REC_HI: tuple[float, ...] = tuple(
    (-1) ** n * DB4_REC_LO[len(DB4_REC_LO) - 1 - n] for n in range(len(DB4_REC_LO))
)
FILTER_LEN = len(DB4_REC_LO)
MODES = ("periodization", "symmetric")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown wavelet mode {mode!r}")


@cache
def _analysis_kernel() -> torch.Tensor:
    """(4, 1, 8, 8) float64: band (bw, bh) -> channel 2*bw + bh; k[m, n] = gH[m] gW[n]."""
    g = (
        torch.tensor(DB4_REC_LO, dtype=torch.float64),
        torch.tensor(DB4_REC_HI, dtype=torch.float64),
    )
    return torch.stack([torch.outer(g[bh], g[bw]) for bw in (0, 1) for bh in (0, 1)]).unsqueeze(1)


@cache
def _synthesis_kernel() -> torch.Tensor:
    """(4 phases, 4 bands, 4, 4) float64 for the polyphase inverse.

    Along one axis output sample 2t + e is sum_j g[2j + e] c[t + 3 - j] (both modes; the
    periodic one reads c circularly), i.e. a 4-tap correlation with tap q = 3 - j.
    """
    g = (DB4_REC_LO, DB4_REC_HI)
    taps = torch.zeros(2, 2, 4, dtype=torch.float64)  # [band, phase, q]
    for band in (0, 1):
        for e in (0, 1):
            for j in range(4):
                taps[band, e, 3 - j] = g[band][2 * j + e]
    k = torch.zeros(4, 4, 4, 4, dtype=torch.float64)
    for ey in (0, 1):
        for ex in (0, 1):
            for bw in (0, 1):
                for bh in (0, 1):
                    k[2 * ey + ex, 2 * bw + bh] = torch.outer(taps[bh, ey], taps[bw, ex])
    return k


@contextlib.contextmanager
def _exact_conv(device: torch.device) -> Iterator[None]:
    """No TF32 for these convolutions on CUDA (the filters need full float32 precision)."""
    if device.type == "cuda":
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    else:
        yield


def _extend(x: torch.Tensor, dim: int, mode: str) -> torch.Tensor:
    """Extend `x` along `dim` so that coefficient o = sum_m g[m] * ext[2o + m]."""
    n = x.shape[dim]
    if mode == "periodization":
        # coefficient o = sum_m g[m] x[(2o - 6 + m) mod n]: the symmetric mode's alignment
        # (PyWavelets' periodization reads x shifted by 3 samples), so that both modes share
        # one synthesis kernel
        if n >= 6:
            return torch.cat([x.narrow(dim, n - 6, 6), x], dim=dim)
        idx = torch.remainder(torch.arange(-6, n, device=x.device), n)
        return x.index_select(dim, idx)
    # half-sample symmetric: coefficient o = sum_m g[m] xsym[2o - 6 + m], o < (n + 7) // 2
    if n >= 7:
        left = x.narrow(dim, 0, 6).flip(dim)
        right = x.narrow(dim, n - 7, 7).flip(dim)
        return torch.cat([left, x, right], dim=dim)
    return x.index_select(dim, _symmetric_index(n, 6, 7, x.device))


def _wrap_after(c: torch.Tensor, dim: int, count: int) -> torch.Tensor:
    """Append the first `count` samples (circularly) along `dim`."""
    n = c.shape[dim]
    if n >= count:
        return torch.cat([c, c.narrow(dim, 0, count)], dim=dim)
    idx = torch.remainder(torch.arange(0, n + count, device=c.device), n)
    return c.index_select(dim, idx)


CONV_TILE_ELEMENTS = 1 << 17
"""On the CPU, convolutions run on row strips of about this many input values (large images
are several times faster in cache-sized strips)."""


def _row_tiles(n_out: int, width: int, device: torch.device) -> list[tuple[int, int]]:
    """[o0, o1) output-row ranges: one range off the CPU, cache-sized strips on it."""
    if device.type != "cpu":
        return [(0, n_out)]
    rows = max(32, CONV_TILE_ELEMENTS // max(1, width))
    return [(o0, min(n_out, o0 + rows)) for o0 in range(0, n_out, rows)]


def dwt2(x: torch.Tensor, mode: str = "periodization") -> torch.Tensor:
    """One 2-D DWT level: (B, H, W) -> (B, 4, h, w) = [approximation, cH, cV, cD]."""
    _check_mode(mode)
    if mode == "periodization" and (x.shape[-1] % 2 or x.shape[-2] % 2):
        raise ValueError("periodization mode needs even height and width")
    p = _extend(_extend(x, -2, mode), -1, mode).unsqueeze(1)
    k = _analysis_kernel().to(dtype=x.dtype, device=x.device)
    n_out = (p.shape[-2] - FILTER_LEN) // 2 + 1
    w_out = (p.shape[-1] - FILTER_LEN) // 2 + 1
    out = x.new_empty((x.shape[0], 4, n_out, w_out))
    with _exact_conv(x.device):
        for o0, o1 in _row_tiles(n_out, p.shape[-1], x.device):
            # output row o reads input rows 2o .. 2o + 7
            out[:, :, o0:o1] = F.conv2d(p[:, :, 2 * o0 : 2 * o1 + FILTER_LEN - 2], k, stride=2)
    return out


def idwt2(bands: torch.Tensor, mode: str = "periodization") -> torch.Tensor:
    """Inverse of `dwt2`: (B, 4, h, w) -> (B, H, W) (H = 2h, or 2h - 6 in symmetric mode)."""
    _check_mode(mode)
    c = bands
    if mode == "periodization":
        c = _wrap_after(_wrap_after(c, -2, 3), -1, 3)
    k = _synthesis_kernel().to(dtype=bands.dtype, device=bands.device)
    n_out, w_out = c.shape[-2] - 3, c.shape[-1] - 3
    out = bands.new_empty((bands.shape[0], 2 * n_out, 2 * w_out))
    with _exact_conv(bands.device):
        for t0, t1 in _row_tiles(n_out, 4 * c.shape[-1], bands.device):
            # phase row t reads coefficient rows t .. t + 3
            phases = F.conv2d(c[:, :, t0 : t1 + 3], k)  # (B, 4 phases, rows, w_out)
            out[:, 2 * t0 : 2 * t1] = F.pixel_shuffle(phases, 2)[:, 0]
    return out


def wavedec2(x: torch.Tensor, levels: int, mode: str = "periodization") -> list[torch.Tensor]:
    """Multi-level DWT: band stacks (B, 4, h, w) of levels 1 (finest) .. L.

    Channel 0 of every stack is that level's approximation; only the last one is needed by
    `waverec2`.
    """
    stacks: list[torch.Tensor] = []
    a = x
    for _ in range(levels):
        stacks.append(dwt2(a, mode))
        a = stacks[-1][:, 0]
    return stacks


def waverec2(
    stacks: list[torch.Tensor], mode: str = "periodization", *, inplace: bool = False
) -> torch.Tensor:
    """Inverse of `wavedec2` from the coarsest approximation and all details.

    Like PyWavelets, an approximation one sample too long for the next finer level is
    trimmed. With `inplace` the finer stacks' channel 0 is overwritten (saves copies).
    """
    rec = idwt2(stacks[-1], mode)
    for s in reversed(stacks[:-1]):
        s = s if inplace else s.clone()
        s[:, 0] = rec[:, : s.shape[-2], : s.shape[-1]]
        rec = idwt2(s, mode)
    return rec


def _symmetric_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a half-sample symmetric extension (x[-1] = x[0]), valid for any n >= 1."""
    idx = torch.arange(-before, n + after, device=device)
    idx = torch.remainder(idx, 2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def symmetric_pad(x: torch.Tensor, dim: int, after: int) -> torch.Tensor:
    """Append `after` half-sample mirrored samples along `dim`."""
    if after == 0:
        return x
    return x.index_select(dim, _symmetric_index(x.shape[dim], 0, after, x.device))


def coeff_len(n: int, mode: str) -> int:
    """Number of coefficients one level produces from n samples."""
    return n // 2 if mode == "periodization" else (n + FILTER_LEN - 1) // 2


def pad_multiple(levels: int) -> int:
    """Image sizes must be multiples of this for `levels` periodization levels."""
    return 1 << levels
