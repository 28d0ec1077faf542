"""PRNU noise residuals: wavelet denoising, grey, CFA zero-mean and DFT Wiener filtering.

Every step works on batches of float32 torch tensors, so the same code runs on the CPU and on
CUDA. ``ResidualParams(compat=True)`` reproduces the prnu-python reference residual
(sigma 5, PyWavelets' symmetric padding); the default follows Binghamton (sigma 3, the image
mirror-padded to a multiple of ``2**levels`` and a periodic transform).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from camid.prnu import wavelet

GREY_WEIGHTS: tuple[float, float, float] = (0.29893602, 0.58704307, 0.11402090)
"""RGB -> grey weights of the reference (MATLAB's rgb2gray, rounded)."""

WINDOWS: tuple[int, ...] = (3, 5, 7, 9)
"""Window sizes of the adaptive local-variance estimate (the minimum over them is used)."""

DEFAULT_SIGMA = 3.0
COMPAT_SIGMA = 5.0
DEFAULT_LEVELS = 4


@dataclass(frozen=True)
class ResidualParams:
    """Parameters of residual extraction; `sigma=None` means 3 (or 5 in compat mode)."""

    sigma: float | None = None
    levels: int = DEFAULT_LEVELS
    compat: bool = False

    def __post_init__(self) -> None:
        if self.sigma is None:  # resolve the default so equal settings compare equal
            object.__setattr__(self, "sigma", COMPAT_SIGMA if self.compat else DEFAULT_SIGMA)
        object.__setattr__(self, "sigma", float(self.sigma))

    @property
    def noise_sigma(self) -> float:
        """The wavelet-domain noise standard deviation actually used."""
        return float(self.sigma)  # type: ignore[arg-type]

    @property
    def mode(self) -> str:
        """Wavelet boundary mode."""
        return "symmetric" if self.compat else "periodization"

    def to_dict(self) -> dict:
        """Plain dict for metadata and reports (sigma resolved)."""
        d = asdict(self)
        d["sigma"] = self.noise_sigma
        d["wavelet"] = "db4"
        d["wavelet_mode"] = self.mode
        return d

    def validate(self) -> None:
        """Raise ValueError for impossible values."""
        if not self.noise_sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.noise_sigma}")
        if not 1 <= self.levels <= 8:
            raise ValueError(f"levels must be between 1 and 8, got {self.levels}")


# --------------------------------------------------------------------------- local statistics


PLANE_LOOP_PIXELS = 1 << 19
"""On the CPU, planes at least this large are denoised one at a time (cache locality)."""
BLOCK_ELEMENTS = 1 << 17
"""On the CPU, local statistics run on row blocks of about this many values (cache-sized)."""


def _row_window_sum(base: torch.Tensor, k: int, h: int, d: int = 1) -> torch.Tensor:
    """out[i] = base[i] + base[i + d] + ... + base[i + (k - 1) d] along dim -2 for i < h.

    Sums of 2, 4, 8... rows are built by doubling and the window is assembled from them, so a
    9-row window costs 4 additions instead of 8.
    """
    levels = [base]  # levels[b][i] = sum of 2**b rows (spaced d) starting at row i
    while (1 << len(levels)) <= k:
        prev, step = levels[-1], d << (len(levels) - 1)
        levels.append(prev[..., :-step, :] + prev[..., step:, :])
    out: torch.Tensor | None = None
    offset = 0
    for bit in range(len(levels) - 1, -1, -1):
        if k & (1 << bit):
            piece = levels[bit][..., offset : offset + h, :]
            if out is None:  # level 0 is the caller's tensor: never write into it
                out = piece.clone() if bit == 0 else piece
            else:
                out.add_(piece)
            offset += d << bit
    assert out is not None
    return out


def _min_box_mean_block(p: torch.Tensor, sizes: list[int], out: torch.Tensor, d: int) -> None:
    """`min_box_mean` of one zero-padded block `p` (..., h + 2R, w + 2R), written to `out`.

    R = d * rmax is the halo of the largest window (d: dilation).
    """
    pad = d * (sizes[-1] // 2)
    h, w = out.shape[-2:]
    hs: torch.Tensor | None = None  # horizontal running sum, widened in place
    r_done = -1
    for i, k in enumerate(sizes):
        r = k // 2
        for q in range(r_done + 1, r + 1):
            left = p[..., :, pad - d * q : pad - d * q + w]
            if q == 0:
                hs = left.clone()
            else:
                assert hs is not None
                hs.add_(left).add_(p[..., :, pad + d * q : pad + d * q + w])
        r_done = r
        assert hs is not None
        v = _row_window_sum(hs[..., pad - d * r :, :], k, h, d)
        if i == 0:
            torch.mul(v, 1.0 / (k * k), out=out)
        else:
            torch.minimum(out, v.mul_(1.0 / (k * k)), out=out)


def _row_blocks(e: torch.Tensor, pad: int) -> list[tuple[int, int, int]]:
    """(plane, first row, end row) blocks: whole planes off the CPU, cache-sized rows on it."""
    n, h, w = e.shape
    if e.device.type != "cpu" or n * (h + 2 * pad) * (w + 2 * pad) <= 2 * BLOCK_ELEMENTS:
        return [(-1, 0, h)]  # small stacks: all planes in one block (fewer, larger ops)
    rows = max(16, BLOCK_ELEMENTS // (w + 2 * pad))
    return [(i, r0, min(h, r0 + rows)) for i in range(n) for r0 in range(0, h, rows)]


def _padded_block(e: torch.Tensor, i: int, r0: int, r1: int, pad: int, square: bool):
    """Rows r0..r1 of plane i (all planes if i < 0) with a `pad` halo, zero outside, squared."""
    planes = e if i < 0 else e[i : i + 1]
    h, w = e.shape[-2:]
    top, bottom = max(0, r0 - pad), min(h, r1 + pad)
    p = e.new_empty((planes.shape[0], r1 - r0 + 2 * pad, w + 2 * pad))
    first, last = top - (r0 - pad), bottom - (r0 - pad)
    p[:, :first].zero_()
    p[:, last:].zero_()
    p[:, first:last, :pad].zero_()
    p[:, first:last, pad + w :].zero_()
    dst = p[:, first:last, pad : pad + w]
    src = planes[:, top:bottom]
    if square:
        torch.mul(src, src, out=dst)
    else:
        dst.copy_(src)
    return p


def _flat_planes(e: torch.Tensor) -> torch.Tensor:
    return e.reshape(-1, e.shape[-2], e.shape[-1])


def min_box_mean(
    e: torch.Tensor,
    windows: Sequence[int] = WINDOWS,
    *,
    square: bool = False,
    dilation: int = 1,
) -> torch.Tensor:
    """Minimum over odd square windows of the zero-padded local mean of `e` (or of e^2).

    With `dilation` d a window of size k takes every d-th sample (k of them per axis): the
    local means of the d*d interleaved sub-lattices, each zero-padded on its own.
    """
    sizes = _check_windows(windows)
    pad = dilation * (sizes[-1] // 2)
    flat = _flat_planes(e)
    out = torch.empty_like(flat)
    for i, r0, r1 in _row_blocks(flat, pad):
        dst = out[:, r0:r1] if i < 0 else out[i : i + 1, r0:r1]
        p = _padded_block(flat, i, r0, r1, pad, square)
        _min_box_mean_block(p, sizes, dst, dilation)
    return out.reshape(e.shape)


def _check_windows(windows: Sequence[int]) -> list[int]:
    sizes = sorted(int(k) for k in windows)
    if not sizes or any(k % 2 == 0 or k < 1 for k in sizes):
        raise ValueError(f"window sizes must be odd and positive, got {sizes}")
    return sizes


def wiener_shrink_(x: torch.Tensor, noise_var: float, *, dilation: int = 1) -> torch.Tensor:
    """In place x * s2 / (var + s2), var = max(0, min_w mean_w(x^2) - s2): x * s2 / max(m, s2).

    Runs block by block so the local statistics and the update stay in the CPU caches; `x`
    may be any (..., H, W) view whose last dim is contiguous. With `dilation` 2 it shrinks
    the 4 interleaved sub-lattices (the bands of `wavelet.analysis`) each on its own.
    """
    sizes = list(WINDOWS)
    pad = dilation * (sizes[-1] // 2)
    if x.dim() != 3:
        m = min_box_mean(x, square=True, dilation=dilation).clamp_(min=noise_var)
        return x.mul_(noise_var).div_(m)
    pending: tuple[torch.Tensor, torch.Tensor] | None = None
    for i, r0, r1 in _row_blocks(x, pad):
        dst = x[:, r0:r1] if i < 0 else x[i : i + 1, r0:r1]
        m = torch.empty(dst.shape, dtype=x.dtype, device=x.device)
        _min_box_mean_block(_padded_block(x, i, r0, r1, pad, True), sizes, m, dilation)
        # the previous block is updated only now: this block's halo had to read its old values
        if pending is not None:
            _apply_gain(*pending, noise_var)
        pending = (dst, m)
    if pending is not None:
        _apply_gain(*pending, noise_var)
    return x


def _apply_gain(x: torch.Tensor, m: torch.Tensor, noise_var: float) -> None:
    """x *= s2 / max(m, s2), with one pass over x (which may be a strided view)."""
    x.div_(m.clamp_(min=noise_var).mul_(1.0 / noise_var))


def adaptive_wiener_gain(x: torch.Tensor, noise_var: float) -> torch.Tensor:
    """Gain sigma^2 / (var + sigma^2) with var = max(0, min_w mean_w(x^2) - sigma^2)."""
    m = min_box_mean(x, square=True).clamp_(min=noise_var)
    return torch.reciprocal(m).mul_(noise_var)


# --------------------------------------------------------------------------- pipeline stages


def _wavelet_noise_planes(x: torch.Tensor, params: ResidualParams) -> torch.Tensor:
    """`wavelet_noise` of a (N, H, W) stack, all planes at once.

    Every level stays in the interleaved layout of `wavelet.analysis`; the Wiener shrinkage
    reads and updates the detail bands in place as strided views.
    """
    h, w = x.shape[-2:]
    mode = params.mode
    if mode == "periodization":
        m = wavelet.pad_multiple(params.levels)
        x = wavelet.symmetric_pad(wavelet.symmetric_pad(x, -2, (-h) % m), -1, (-w) % m)
    noise_var = params.noise_sigma**2
    levels = []
    a = x
    for j in range(params.levels):
        c, nh, nw = wavelet.analysis(a, mode, scratch=f"level{j}")
        levels.append((c, nh, nw))
        a = wavelet.band(c, 0, nh, nw)
    del x, a
    for c, nh, nw in levels:
        for i in (1, 2, 3):
            wiener_shrink_(wavelet.band(c, i, nh, nw), noise_var)
    rec = None
    for c, nh, nw in reversed(levels):
        lo = wavelet.band(c, 0, nh, nw)
        if rec is None:
            lo.zero_()
        else:
            lo.copy_(rec[:, :nh, :nw])
        rec = wavelet.synthesis(c, nh, nw, mode, scratch="rec")
    assert rec is not None
    return rec[:, :h, :w]  # a workspace buffer: copy it before the next call


def wavelet_noise(planes: torch.Tensor, params: ResidualParams) -> torch.Tensor:
    """Wavelet-domain noise part of each (N, H, W) float plane (approximation band zeroed)."""
    params.validate()
    h, w = planes.shape[-2:]
    if min(h, w) < 2:
        raise ValueError(f"image of {w}x{h} pixels is too small for a PRNU residual")
    if planes.device.type != "cpu":
        return _wavelet_noise_planes(planes, params)
    if planes.shape[0] == 1 or h * w < PLANE_LOOP_PIXELS:
        return _wavelet_noise_planes(planes, params).clone()
    # On the CPU one plane at a time keeps the working set closer to the caches.
    out = torch.empty_like(planes)
    for i in range(len(planes)):
        out[i : i + 1] = _wavelet_noise_planes(planes[i : i + 1], params)
    return out


def to_grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, H, W) with the reference's RGB weights; (B, 1, H, W) is squeezed."""
    if x.shape[1] == 1:
        return x[:, 0]
    if x.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")
    r, g, b = GREY_WEIGHTS
    return torch.mul(x[:, 0], r).add_(x[:, 1], alpha=g).add_(x[:, 2], alpha=b)


def zero_mean_cfa(w: torch.Tensor) -> torch.Tensor:
    """On each of the 4 CFA sub-lattices remove the mean, then row means, then column means.

    Done in one pass per lattice: x - rowmean - colmean + mean is the same result.
    """
    h, wd = w.shape[-2:]
    if h % 2 == 0 and wd % 2 == 0:  # all four lattices at once: (..., H/2, 2, W/2, 2)
        x = w.reshape(*w.shape[:-2], h // 2, 2, wd // 2, 2)
        rows = x.mean(dim=-2, keepdim=True)  # per lattice row
        cols = x.mean(dim=-4, keepdim=True)  # per lattice column
        cols = cols - rows.mean(dim=-4, keepdim=True)
        return (x - rows).sub_(cols).reshape(w.shape)
    out = torch.empty_like(w)
    for i in (0, 1):
        for j in (0, 1):
            sub = w[..., i::2, j::2]
            if sub.numel() == 0:
                continue
            rows = sub.mean(dim=-1, keepdim=True)
            cols = sub.mean(dim=-2, keepdim=True)
            cols = cols - rows.mean(dim=-2, keepdim=True)
            torch.sub(sub, rows, out=out[..., i::2, j::2]).sub_(cols)
    return out


def _mirror_columns(half: torch.Tensor, width: int, stop: int) -> torch.Tensor:
    """Columns wh..stop-1 of the full |DFT| plane from its rfft half: M(u, v) = M(-u, W - v)."""
    h = half.shape[-2]
    wh = half.shape[-1]
    neg_u = torch.remainder(-torch.arange(h, device=half.device), h)
    cols = width - torch.arange(wh, stop, device=half.device)
    return half.index_select(-2, neg_u).index_select(-1, cols)


def _gain(m: torch.Tensor, noise_var: torch.Tensor) -> torch.Tensor:
    """s2 / (max(0, m - s2) + s2) == s2 / max(m, s2), per plane."""
    return noise_var / torch.maximum(m, noise_var)


def _dft_gain_full(energy: torch.Tensor, width: int, noise_var: torch.Tensor) -> torch.Tensor:
    """Symmetrised Wiener gain on the rfft half from energy = |DFT|^2 / (H W), whole plane."""
    h, wh = energy.shape[-2:]
    full = energy
    if width > wh:
        full = torch.cat([energy, _mirror_columns(energy, width, width)], dim=-1)
    gain = _gain(min_box_mean(full, square=False), noise_var)
    neg_u = torch.remainder(-torch.arange(h, device=energy.device), h)
    neg_v = torch.remainder(-torch.arange(wh, device=energy.device), width)
    mirrored = gain.index_select(-2, neg_u).index_select(-1, neg_v)
    return (gain[..., :wh] + mirrored).mul_(0.5)


def _dft_gain_half(energy: torch.Tensor, width: int, noise_var: torch.Tensor) -> torch.Tensor:
    """`_dft_gain_full` from the half plane plus thin border strips (same values, ~half the work).

    With M the full |DFT|^2 plane (M(-k) = M(k)) and zero-padded windows, the gain at -k equals
    the gain at k except where a window touches the plane's first row/column: there it is the
    window on Mt(a, b) = M(a + 1 mod H, b + 1) at (u - 1 mod H, v - 1), computed on strips.
    """
    r = max(WINDOWS) // 2
    h, wh = energy.shape[-2:]
    ext = torch.cat([energy, _mirror_columns(energy, width, wh + r)], dim=-1)  # (.., H, wh + r)
    gain = _gain(min_box_mean(ext, square=False)[..., :wh], noise_var)
    neg = gain.clone()
    neg_u = torch.remainder(-torch.arange(h, device=energy.device), h)
    neg[..., :, 0] = gain[..., :, 0].index_select(-1, neg_u)  # -(u, 0) = (-u, 0)
    mt = torch.cat([ext[..., 1:, 1:], ext[..., :1, 1:]], dim=-2)  # (.., H, wh + r - 1)
    top = _gain(min_box_mean(mt[..., : 2 * r, :], square=False)[..., :r, : wh - 1], noise_var)
    bottom = _gain(
        min_box_mean(mt[..., h - 2 * r - 1 :, :], square=False)[..., r:, : wh - 1], noise_var
    )  # rows a = H-r-1 .. H-1
    left = _gain(min_box_mean(mt[..., :, : 2 * r], square=False)[..., :, :r], noise_var)
    neg[..., :, 1 : r + 1] = torch.roll(left, 1, dims=-2)  # row u <- a = u - 1 (mod H)
    neg[..., 1 : r + 1, 1:] = top
    neg[..., h - r :, 1:] = bottom[..., :r, :]
    neg[..., 0, 1:] = bottom[..., r, :]
    return gain.add_(neg).mul_(0.5)


def wiener_dft(w: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
    """Adaptive Wiener filter of |DFT| (noise sigma = each plane's std unless given).

    Same as filtering the magnitude of the full 2-D DFT with zero-padded windows, keeping the
    phase and taking the real part of the inverse, done with real FFTs on the half plane.
    """
    h, wd = w.shape[-2:]
    if sigma is None:
        sigma = w.flatten(-2).std(dim=-1, correction=1)
    sig = torch.as_tensor(sigma, dtype=w.dtype, device=w.device)
    noise_var = (sig * sig).reshape(sig.shape + (1, 1))
    spec = torch.fft.rfft2(w)
    re_im = torch.view_as_real(spec)
    # |DFT|^2 (no square root as in abs()); the 1/(H W) normalisation moves to the noise
    # variance: s2 / max(m, s2) is unchanged when m and s2 are scaled alike
    energy = torch.mul(re_im[..., 0], re_im[..., 0]).addcmul_(re_im[..., 1], re_im[..., 1])
    noise_var = noise_var * float(h * wd)
    r = max(WINDOWS) // 2
    if h > 4 * r + 2 and wd > 4 * r + 2:
        gain = _dft_gain_half(energy, wd, noise_var)
    else:
        gain = _dft_gain_full(energy, wd, noise_var)
    re_im.mul_(gain.unsqueeze(-1))
    return torch.fft.irfft2(spec, s=(h, wd))


# --------------------------------------------------------------------------- public entry points


def as_batch(images: np.ndarray | torch.Tensor | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 (H,W), (H,W,C), (B,H,W,C) array/tensor or list of equal-size arrays -> (B,C,H,W)."""
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("no images given")
        shapes = {tuple(np.shape(im)) for im in images}
        if len(shapes) != 1:
            raise ValueError(f"a batch needs images of one size, got {sorted(shapes)}")
        images = np.stack([np.asarray(im) for im in images])
        if images.ndim == 3:
            images = images[..., None]
    if isinstance(images, torch.Tensor):
        t = images
    else:
        arr = np.asarray(images)
        if not arr.flags.writeable:
            arr = arr.copy()
        t = torch.from_numpy(arr)
    if t.ndim == 2:
        t = t[None, :, :, None]
    elif t.ndim == 3:
        t = t[None] if t.shape[-1] in (1, 3) else t[..., None]
    if t.ndim != 4 or t.shape[-1] not in (1, 3):
        raise ValueError(f"expected HxW, HxWx3 or BxHxWx3 pixels, got shape {tuple(t.shape)}")
    return t.permute(0, 3, 1, 2)


def channel_noise(
    images: np.ndarray | torch.Tensor | Sequence[np.ndarray],
    params: ResidualParams | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel wavelet noise (B, C, H, W) and the float pixels (B, C, H, W) on `device`."""
    return channel_noise_bchw(as_batch(images), params, device)


def channel_noise_bchw(
    batch: torch.Tensor, params: ResidualParams | None = None, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """`channel_noise` of pixels already shaped (B, C, H, W)."""
    params = params or ResidualParams()
    x = batch.to(device=device, dtype=torch.float32)
    b, c, h, w = x.shape
    noise = wavelet_noise(x.reshape(b * c, h, w), params).reshape(b, c, h, w)
    return noise, x


def grey_noise(x: torch.Tensor, params: ResidualParams | None = None) -> torch.Tensor:
    """`to_grey` of the wavelet noise of float pixels (B, C, H, W): (B, H, W).

    Same values as ``to_grey(channel noise)``, but on the CPU the large planes are denoised one
    at a time and summed straight into the grey plane (no (B, C, H, W) noise tensor).
    """
    params = params or ResidualParams()
    b, c, h, w = x.shape
    if c == 1 or x.device.type != "cpu" or h * w < PLANE_LOOP_PIXELS:
        return to_grey(wavelet_noise(x.reshape(b * c, h, w), params).reshape(b, c, h, w))
    params.validate()
    if c != 3:
        raise ValueError(f"expected 1 or 3 channels, got {c}")
    out = x.new_empty((b, h, w))
    for i in range(b):
        for j, weight in enumerate(GREY_WEIGHTS):
            rec = _wavelet_noise_planes(x[i, j : j + 1], params)[0]  # a workspace view
            if j == 0:
                torch.mul(rec, weight, out=out[i])
            else:
                out[i].add_(rec, alpha=weight)
    return out


def extract_residuals(
    images: np.ndarray | torch.Tensor | Sequence[np.ndarray],
    params: ResidualParams | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Noise residuals (B, H, W) float32 of a batch of equal-size uint8 images."""
    x = as_batch(images).to(device=device, dtype=torch.float32)
    return wiener_dft(zero_mean_cfa(grey_noise(x, params)))


def extract_residual(
    image: np.ndarray | torch.Tensor,
    params: ResidualParams | None = None,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Noise residual of one uint8 image (H, W[, 3]) as a float32 NumPy array."""
    return extract_residuals(image, params, device)[0].cpu().numpy()


def residual_and_grey(
    image: np.ndarray | torch.Tensor,
    params: ResidualParams | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual (H, W) and grey intensity (H, W) of one uint8 image, both on `device`."""
    x = as_batch(image).to(device=device, dtype=torch.float32)
    return wiener_dft(zero_mean_cfa(grey_noise(x, params)))[0], to_grey(x)[0]
