"""Demosaicing: reconstruct full RGB from a Bayer mosaic, three methods of different families.

- ``bilinear``: normalised-convolution averaging of each channel's own samples (cheap
  firmware; leaves zipper artefacts and colour fringes at edges).
- ``mhc``: Malvar-He-Cutler (2004) gradient-corrected linear interpolation with 5x5 kernels.
- ``gradient``: Hamilton-Adams-style directional green interpolation (along the smaller
  gradient, with a second-order correction) followed by colour-difference interpolation.

Each leaves its own inter-channel correlation pattern on the 2x2 lattice, one of the
classic camera-model traces.
"""

from __future__ import annotations

import numpy as np

from camid.synth.sensor import cfa_channel_map

_BILINEAR = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 4.0

# Malvar-He-Cutler kernels (coefficients / 8)
_MHC_G_AT_RB = (
    np.array(
        [[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]],
        dtype=np.float32,
    )
    / 8.0
)
_MHC_ROW = (
    np.array(  # colour at a green site whose horizontal neighbours carry that colour
        [
            [0, 0, 0.5, 0, 0],
            [0, -1, 0, -1, 0],
            [-1, 4, 5, 4, -1],
            [0, -1, 0, -1, 0],
            [0, 0, 0.5, 0, 0],
        ],
        dtype=np.float32,
    )
    / 8.0
)
_MHC_COL = _MHC_ROW.T.copy()
_MHC_DIAG = (
    np.array(  # R at B sites and B at R sites
        [
            [0, 0, -1.5, 0, 0],
            [0, 2, 0, 2, 0],
            [-1.5, 0, 6, 0, -1.5],
            [0, 2, 0, 2, 0],
            [0, 0, -1.5, 0, 0],
        ],
        dtype=np.float32,
    )
    / 8.0
)


def _conv(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Correlate with a small sparse kernel; 'mirror' borders (d c b | a b c d) keep the CFA
    parity. Sums shifted views, which beats a dense 5x5 correlation for these kernels."""
    r = k.shape[0] // 2
    p = np.pad(x, r, mode="reflect")
    h, w = x.shape
    out = np.zeros((h, w), dtype=np.float32)
    for dy, dx in zip(*np.nonzero(k), strict=True):
        out += np.float32(k[dy, dx]) * p[dy : dy + h, dx : dx + w]
    return out


def _masks(pattern: str, shape: tuple[int, int]) -> list[np.ndarray]:
    cmap = cfa_channel_map(pattern, shape)
    return [cmap == c for c in range(3)]


def _bilinear_channel(raw: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.float32)
    est = _conv(raw * m, _BILINEAR) / np.maximum(_conv(m, _BILINEAR), 1e-6)
    return np.where(mask, raw, est)


def demosaic_bilinear(raw: np.ndarray, pattern: str) -> np.ndarray:
    """Bilinear demosaicing of an HxW mosaic into HxWx3."""
    masks = _masks(pattern, raw.shape)
    return np.stack([_bilinear_channel(raw, m) for m in masks], axis=-1)


def _neighbour_is(pattern: str, shape: tuple[int, int], colour: int, axis: int) -> np.ndarray:
    """Mask of sites whose neighbours along `axis` (1 = horizontal) record `colour`."""
    cmap = cfa_channel_map(pattern, shape)
    shifted = np.roll(cmap, -1, axis=axis)  # parity is all that matters: wrap is harmless
    return shifted == colour


def demosaic_mhc(raw: np.ndarray, pattern: str) -> np.ndarray:
    """Malvar-He-Cutler gradient-corrected bilinear demosaicing."""
    shape = raw.shape
    mr, mg, mb = _masks(pattern, shape)
    g_est = _conv(raw, _MHC_G_AT_RB)
    row = _conv(raw, _MHC_ROW)
    col = _conv(raw, _MHC_COL)
    diag = _conv(raw, _MHC_DIAG)
    out = np.empty((*shape, 3), dtype=np.float32)
    out[..., 1] = np.where(mg, raw, g_est)
    for ch, own, other in ((0, mr, mb), (2, mb, mr)):
        horiz = mg & _neighbour_is(pattern, shape, ch, axis=1)
        vert = mg & ~horiz
        val = np.where(own, raw, 0.0)
        val = np.where(horiz, row, val)
        val = np.where(vert, col, val)
        val = np.where(other, diag, val)
        out[..., ch] = val
    return out


def demosaic_gradient(raw: np.ndarray, pattern: str) -> np.ndarray:
    """Directional (Hamilton-Adams-style) green, then colour-difference interpolation."""
    shape = raw.shape
    mr, mg, mb = _masks(pattern, shape)
    p = np.pad(raw, 2, mode="reflect")  # 'reflect' = mirror without edge repeat: keeps parity
    c = p[2:-2, 2:-2]
    left, right = p[2:-2, 1:-3], p[2:-2, 3:-1]
    left2, right2 = p[2:-2, :-4], p[2:-2, 4:]
    up, down = p[1:-3, 2:-2], p[3:-1, 2:-2]
    up2, down2 = p[:-4, 2:-2], p[4:, 2:-2]
    lap_h = 2 * c - left2 - right2
    lap_v = 2 * c - up2 - down2
    gh = (left + right) / 2 + lap_h / 4
    gv = (up + down) / 2 + lap_v / 4
    dh = np.abs(left - right) + np.abs(lap_h)
    dv = np.abs(up - down) + np.abs(lap_v)
    g_dir = np.where(dh < dv, gh, np.where(dv < dh, gv, (gh + gv) / 2))
    green = np.where(mg, raw, g_dir).astype(np.float32)
    out = np.empty((*shape, 3), dtype=np.float32)
    out[..., 1] = green
    for ch, mask in ((0, mr), (2, mb)):
        diff = _bilinear_channel(raw - green, mask)
        out[..., ch] = np.where(mask, raw, green + diff)
    return out


METHODS = {"bilinear": demosaic_bilinear, "mhc": demosaic_mhc, "gradient": demosaic_gradient}


def demosaic(raw: np.ndarray, pattern: str, method: str) -> np.ndarray:
    """Demosaic an HxW float mosaic with the named method; returns HxWx3 float32."""
    return METHODS[method](raw.astype(np.float32, copy=False), pattern).astype(np.float32)
