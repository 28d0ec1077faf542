"""Independent NumPy/SciPy/PyWavelets rendering of the PRNU residual, and synthetic cameras.

This module is the test oracle and the benchmark baseline (benchmarks/bench_prnu.py imports
it). It is written straight from the algorithm's description (docs/prnu.md, sigma 5 and
PyWavelets' default symmetric padding for the reference behaviour), deliberately plain:
float64 filtering, one channel at a time, no batching. It also holds a small stand-in for
synthetic cameras (scenes times (1 + K) plus noise, then JPEG) so the PRNU tests do not
depend on camid.synth. The tests at the bottom check the oracle itself.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage


def _pywt():
    """PyWavelets, needed by the oracle only (camid itself does not use it)."""
    return pytest.importorskip("pywt")


GREY = np.array([0.29893602, 0.58704307, 0.11402090])


# ----------------------------------------------------------------------------- oracle residual


def oracle_local_wiener(coef: np.ndarray, noise_var: float) -> np.ndarray:
    """Noise part of wavelet/Fourier coefficients: c * s2 / (min-window variance + s2)."""
    energy = coef.astype(np.float64) ** 2
    means = [ndimage.uniform_filter(energy, size=k, mode="constant") for k in (3, 5, 7, 9)]
    var = np.maximum(np.min(np.stack(means), axis=0) - noise_var, 0.0)
    return coef * noise_var / (var + noise_var)


def oracle_wavelet_noise(channel: np.ndarray, sigma: float = 5.0, levels: int = 4) -> np.ndarray:
    """db4 wavelet denoising residual of one channel (PyWavelets' symmetric padding)."""
    pywt = _pywt()
    coeffs = pywt.wavedec2(channel.astype(np.float64), "db4", mode="symmetric", level=levels)
    coeffs[0] = np.zeros_like(coeffs[0])
    noise_var = sigma**2
    for i in range(1, len(coeffs)):
        coeffs[i] = tuple(oracle_local_wiener(c, noise_var) for c in coeffs[i])
    rec = pywt.waverec2(coeffs, "db4", mode="symmetric")
    return rec[: channel.shape[0], : channel.shape[1]]


def oracle_zero_mean(w: np.ndarray) -> np.ndarray:
    """Mean, row-mean and column-mean removal on each of the 4 CFA sub-lattices."""
    out = w.copy()
    for i in (0, 1):
        for j in (0, 1):
            sub = out[i::2, j::2]
            sub = sub - sub.mean()
            sub = sub - sub.mean(axis=1, keepdims=True)
            sub = sub - sub.mean(axis=0, keepdims=True)
            out[i::2, j::2] = sub
    return out


def oracle_wiener_dft(w: np.ndarray, sigma: float) -> np.ndarray:
    """Adaptive Wiener filtering of the DFT magnitude (zero-padded windows), phase kept."""
    h, wd = w.shape
    spec = np.fft.fft2(w)
    mag = np.abs(spec / np.sqrt(h * wd))
    filt = oracle_local_wiener(mag, sigma**2)
    zero = mag == 0
    mag[zero] = 1.0
    filt[zero] = 0.0
    return np.real(np.fft.ifft2(spec * filt / mag))


def oracle_residual(image: np.ndarray, sigma: float = 5.0, levels: int = 4) -> np.ndarray:
    """Reference PRNU residual of a uint8 image (H, W) or (H, W, 3), float64."""
    x = image.astype(np.float32)
    if x.ndim == 2:
        x = x[..., None]
    noise = np.stack(
        [oracle_wavelet_noise(x[..., c], sigma, levels) for c in range(x.shape[-1])], axis=-1
    )
    grey = noise[..., 0] if noise.shape[-1] == 1 else noise @ GREY
    zm = oracle_zero_mean(grey)
    return oracle_wiener_dft(zm, zm.std(ddof=1))


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two arrays."""
    a = np.asarray(a, np.float64).ravel() - np.mean(a)
    b = np.asarray(b, np.float64).ravel() - np.mean(b)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


# ----------------------------------------------------------------------------- synthetic cameras


@dataclass
class SynthCamera:
    """A stand-in camera: a fixed multiplicative PRNU pattern K of one sensor size."""

    name: str
    k: np.ndarray  # (H, W, 3) float

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the sensor."""
        return self.k.shape[0], self.k.shape[1]


def make_camera(
    name: str, shape: tuple[int, int], seed: int, strength: float = 0.005, model_seed: int = -1
) -> SynthCamera:
    """A camera with white Gaussian per-device PRNU, plus per-model artefacts if model_seed >= 0.

    Devices of one model share linear row/column patterns, CFA-lattice gains and smooth
    shading (non-unique artefacts that the residual's zero-mean and Wiener steps must remove).
    """
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((*shape, 3)) * strength
    k += 0.6 * rng.standard_normal(shape)[..., None] * strength  # correlated across channels
    if model_seed >= 0:
        mr = np.random.default_rng(model_seed)
        h, w = shape
        yy, xx = np.mgrid[0:h, 0:w] / max(shape)
        k += 0.05 * (np.sin(6 * yy + mr.uniform(0, 6)) * np.cos(5 * xx))[..., None]
        k += 2 * strength * mr.standard_normal((h, 1, 1))  # row pattern
        k += 2 * strength * mr.standard_normal((1, w, 1))  # column pattern
        lattice = mr.standard_normal((2, 2, 3)) * 2 * strength
        k += np.tile(lattice, (h // 2 + 1, w // 2 + 1, 1))[:h, :w]
    return SynthCamera(name, k)


def scene(shape: tuple[int, int], seed: int, flat: bool = False) -> np.ndarray:
    """A smooth random scene (float, 0..255); `flat` gives a bright, nearly uniform one."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    if flat:
        base = 170 + 40 * yy + 15 * xx
        return np.repeat(base[..., None], 3, axis=2) * rng.uniform(0.9, 1.05, size=3)
    img = np.zeros((h, w, 3))
    for _ in range(6):
        fy, fx = rng.uniform(1, 12, size=2)
        ph = rng.uniform(0, 2 * np.pi, size=3)
        img += np.sin(2 * np.pi * (fy * yy + fx * xx)[..., None] + ph) * rng.uniform(10, 30)
    # a few hard-edged rectangles for texture
    for _ in range(4):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0 : y0 + h // 4, x0 : x0 + w // 4] += rng.uniform(-40, 40, size=3)
    return np.clip(img + 128, 5, 250)


def shoot(
    cam: SynthCamera,
    seed: int,
    flat: bool = False,
    quality: int | None = 90,
    noise: float = 2.0,
) -> np.ndarray:
    """One photo: I = clip(I0 * (1 + K) + noise) in uint8, JPEG-compressed when `quality`."""
    rng = np.random.default_rng(seed + 7919)
    i0 = scene(cam.shape, seed, flat=flat)
    img = i0 * (1.0 + cam.k) + rng.standard_normal(i0.shape) * noise
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    if quality is None:
        return img
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


# ----------------------------------------------------------------------------- oracle self-checks


def test_oracle_wavelet_noise_removes_smooth_content():
    """A ramp leaves little wavelet noise inside the frame; white noise keeps much of its own."""
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float64)
    ramp = 2.0 * yy + xx
    assert np.abs(oracle_wavelet_noise(ramp, 5.0)[24:-24, 24:-24]).max() < 0.5
    rng = np.random.default_rng(1)
    white = rng.standard_normal((128, 128)) * 20
    res = oracle_wavelet_noise(white, 5.0)
    assert ncc(res, white) > 0.3


def test_oracle_zero_mean_kills_lattice_means():
    """Every CFA sub-lattice ends with zero row and column means."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((20, 30)) + np.arange(30)[None, :] * 0.5 + 3
    out = oracle_zero_mean(w)
    for i in (0, 1):
        for j in (0, 1):
            sub = out[i::2, j::2]
            assert np.allclose(sub.mean(axis=0), 0, atol=1e-12)
            assert np.allclose(sub.mean(axis=1), 0, atol=1e-12)


def test_synthetic_photo_is_uint8_rgb():
    """The stand-in camera gives uint8 RGB frames of the sensor size."""
    cam = make_camera("a", (48, 64), seed=0)
    img = shoot(cam, seed=1)
    assert img.dtype == np.uint8 and img.shape == (48, 64, 3)
