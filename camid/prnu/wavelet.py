"""Batched 2-D Daubechies-4 wavelet transforms in torch (CPU and CUDA).

One level maps (B, H, W) to a band stack (B, 4, h, w) = [approximation, cH, cV, cD] (the
order of PyWavelets' ``dwt2``: cH is high-pass along H, cV along W, cD along both).

Internally (`analysis` / `synthesis`, used by the residual pipeline) a level is kept in an
*interleaved* layout: band (bh, bw) coefficient (o, p) sits at [2o + bh, 2p + bw], i.e. the
low- and high-pass outputs of each axis alternate. In that layout both the analysis and the
synthesis along one axis are the same kind of operator: output block b (16 samples) is a
16 x 22 matrix times the 22 inputs starting at 16 b. Each axis is then one blocked matrix
product (`banded`), separable (16 multiply-adds per sample and axis, a quarter of a 2-D
8x8 kernel), with no padding concatenations or pixel shuffles. On the CPU a level runs in
row strips so that the intermediate of the two axes stays in cache.

Two boundary modes:

* ``"periodization"``: circular extension, ``N/2`` coefficients per level (needs even sizes;
  camid's default residual pads the image to a multiple of ``2**levels`` first, as the
  Binghamton MATLAB code does). The coefficients equal PyWavelets' periodization of the
  signal circularly shifted by 3 samples (the alignment of the symmetric mode).
* ``"symmetric"``: half-sample symmetric extension with ``floor((N + 7) / 2)`` coefficients,
  the PyWavelets default that the prnu-python reference uses (camid's ``compat`` mode).
"""

from __future__ import annotations

from functools import cache

import torch

from camid.prnu import banded, workspace

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


BLOCK = 8
"""Coefficients per band in one block of the blocked matrix products (see `banded`)."""
STEP = 2 * BLOCK  # interleaved samples per block
OVERLAP = FILTER_LEN - 2  # a block reads this many samples beyond its own


@cache
def _matrices(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Analysis and synthesis block matrices (STEP, STEP + OVERLAP) on the interleaved layout.

    Analysis: C[2o + e] = sum_m g_e[m] ext[2o + m] (band e = 0 low-pass, 1 high-pass).
    Synthesis: out[2t + e] = sum_j sum_band g_band[2j + e] C[2(t + 3 - j) + band], i.e. the
    4-tap polyphase filters of both bands read C[2t .. 2t + 7].
    """
    g = (DB4_REC_LO, DB4_REC_HI)
    fwd = torch.zeros(STEP, STEP + OVERLAP, dtype=torch.float64)
    inv = torch.zeros(STEP, STEP + OVERLAP, dtype=torch.float64)
    for i in range(BLOCK):
        for e in (0, 1):
            fwd[2 * i + e, 2 * i : 2 * i + FILTER_LEN] = torch.tensor(g[e], dtype=torch.float64)
            for j in range(FILTER_LEN // 2):
                for b in (0, 1):
                    inv[2 * i + e, 2 * (i + 3 - j) + b] = g[b][2 * j + e]
    return fwd.to(dtype=dtype, device=device), inv.to(dtype=dtype, device=device)


def _blocks(nc: int) -> int:
    """Buffer length along one axis for `nc` coefficients per band (one spare block)."""
    return STEP * ((nc + BLOCK - 1) // BLOCK + 1)


def _ext_index(n: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source index of every extended sample (6 before; 7 after in symmetric mode)."""
    if mode == "periodization":
        return torch.remainder(torch.arange(-6, n, device=device), n)
    return _symmetric_index(n, 6, 7, device)


def _fill_extended(p: torch.Tensor, x: torch.Tensor, mode: str) -> None:
    """Write the boundary extension of x (N, h, w) into the top-left of p, zeros elsewhere."""
    h, w = x.shape[-2:]
    after = 0 if mode == "periodization" else 7
    eh, ew = h + 6 + after, w + 6 + after
    p[:, eh:].zero_()
    p[:, :eh, ew:].zero_()
    if min(h, w) < 7:
        idx_h, idx_w = _ext_index(h, mode, x.device), _ext_index(w, mode, x.device)
        p[:, :eh, :ew] = x.index_select(-2, idx_h).index_select(-1, idx_w)
        return
    p[:, 6 : 6 + h, 6 : 6 + w] = x
    mid = p[:, :, 6 : 6 + w]
    if mode == "periodization":
        mid[:, :6] = mid[:, h : h + 6]
        p[:, :eh, :6] = p[:, :eh, w : w + 6]
        return
    mid[:, :6] = mid[:, 6:12].flip(-2)
    mid[:, 6 + h : eh] = mid[:, h - 1 : h + 6].flip(-2)
    p[:, :eh, :6] = p[:, :eh, 6:12].flip(-1)
    p[:, :eh, 6 + w : ew] = p[:, :eh, w - 1 : w + 6].flip(-1)


def analysis(
    x: torch.Tensor, mode: str, scratch: str | None = None
) -> tuple[torch.Tensor, int, int]:
    """One DWT level on the interleaved layout: (N, h, w) -> (C, nh, nw).

    C (N, Hb, Wb) holds band (bh, bw) coefficient (o, p) at C[:, 2o + bh, 2p + bw] for o < nh,
    p < nw (bh = 1: high-pass along H); the rest of C is finite filler. With `scratch` C is
    the `workspace` buffer of that name (valid until its next use).
    """
    _check_mode(mode)
    h, w = x.shape[-2:]
    if mode == "periodization" and (h % 2 or w % 2):
        raise ValueError("periodization mode needs even height and width")
    nh, nw = coeff_len(h, mode), coeff_len(w, mode)
    shape = (x.shape[0], _blocks(nh), _blocks(nw))
    p = workspace.buffer("dwt-ext", shape, x) if scratch else x.new_empty(shape)
    _fill_extended(p, x, mode)
    fwd, _ = _matrices(x.dtype, x.device)
    with banded.exact_matmul(x.device):
        if not strips_on(x.device):
            return banded.cols_apply(banded.rows_apply(p, fwd, STEP), fwd, STEP), nh, nw
        c = workspace.buffer(scratch, shape, x) if scratch else torch.empty_like(p)
        c[:, -STEP:].zero_()  # the spare block row (read as filler by `synthesis`)
        for i, b0, b1 in _strips(p):
            z = p.new_empty(((b1 - b0), STEP, p.shape[-1]))
            banded.rows_into(p[i, b0 * STEP :], fwd, STEP, z)
            banded.cols_into(z.view(-1, p.shape[-1]), fwd, STEP, c[i, b0 * STEP : b1 * STEP])
        return c, nh, nw


def synthesis(
    c: torch.Tensor, nh: int, nw: int, mode: str, scratch: str | None = None
) -> torch.Tensor:
    """Inverse of `analysis` (C is modified in periodization mode): (N, Hb, Wb).

    The valid output is the top-left (2 nh - 6, 2 nw - 6), or (2 nh, 2 nw) when periodic.
    With `scratch` it is the `workspace` buffer of that name.
    """
    _check_mode(mode)
    if mode == "periodization":  # coefficients wrap around: C[2n + j] = C[j mod 2n]
        _wrap(c, -1, 2 * nw)
        _wrap(c, -2, 2 * nh)
    _, inv = _matrices(c.dtype, c.device)
    with banded.exact_matmul(c.device):
        if not strips_on(c.device):
            return banded.rows_apply(banded.cols_apply(c, inv, STEP), inv, STEP)
        out = workspace.buffer(scratch, c.shape, c) if scratch else torch.empty_like(c)
        out[:, -STEP:].zero_()  # junk block row
        width = c.shape[-1]
        for i, b0, b1 in _strips(c):
            y = c.new_empty(((b1 - b0 + 1) * STEP, width))  # one more block: the overlap
            banded.cols_into(c[i, b0 * STEP : (b1 + 1) * STEP], inv, STEP, y)
            dst = out[i, b0 * STEP : b1 * STEP].view(b1 - b0, STEP, width)
            banded.rows_into(y, inv, STEP, dst)
        return out


STRIP_ELEMENTS = 1 << 17
"""On the CPU, levels are transformed in row strips of about this many values (in cache)."""


def strips_on(device: torch.device) -> bool:
    """Row strips on the CPU; elsewhere (CUDA) each product runs once over all planes."""
    return device.type == "cpu"


def _strips(c: torch.Tensor) -> list[tuple[int, int, int]]:
    """(plane, first block, end block) strips over all blocks but the spare last one."""
    n, rows, width = c.shape
    blocks = rows // STEP - 1
    per = max(1, STRIP_ELEMENTS // (STEP * width))
    return [(i, b0, min(blocks, b0 + per)) for i in range(n) for b0 in range(0, blocks, per)]


def _wrap(c: torch.Tensor, dim: int, n: int) -> None:
    """c[n + j] = c[j mod n] for j < OVERLAP along dim."""
    if n >= OVERLAP:
        c.narrow(dim, n, OVERLAP).copy_(c.narrow(dim, 0, OVERLAP))
    else:
        idx = torch.remainder(torch.arange(OVERLAP, device=c.device), n)
        c.narrow(dim, n, OVERLAP).copy_(c.narrow(dim, 0, n).index_select(dim, idx))


def band(c: torch.Tensor, index: int, nh: int, nw: int) -> torch.Tensor:
    """View of band `index` (0 approximation, 1 cH, 2 cV, 3 cD) of an interleaved level."""
    bw, bh = divmod(index, 2)
    return c[:, bh : 2 * nh : 2, bw : 2 * nw : 2]


def dwt2(x: torch.Tensor, mode: str = "periodization") -> torch.Tensor:
    """One 2-D DWT level: (B, H, W) -> (B, 4, h, w) = [approximation, cH, cV, cD]."""
    c, nh, nw = analysis(x, mode)
    return torch.stack([band(c, i, nh, nw) for i in range(4)], dim=1)


def idwt2(bands: torch.Tensor, mode: str = "periodization") -> torch.Tensor:
    """Inverse of `dwt2`: (B, 4, h, w) -> (B, H, W) (H = 2h, or 2h - 6 in symmetric mode)."""
    _check_mode(mode)
    nh, nw = bands.shape[-2:]
    c = bands.new_zeros((bands.shape[0], _blocks(nh), _blocks(nw)))
    for i in range(4):
        band(c, i, nh, nw).copy_(bands[:, i])
    out = synthesis(c, nh, nw, mode)
    cut = 0 if mode == "periodization" else FILTER_LEN - 2
    return out[:, : 2 * nh - cut, : 2 * nw - cut]


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
