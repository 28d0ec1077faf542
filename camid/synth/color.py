"""Colour and tone: illuminants, auto white balance, colour matrices, tone curves, denoising
and sharpening in the camera's own style.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from camid.synth.spec import CameraSpec, stable_seed

# --- illuminants -------------------------------------------------------------------------

_WL = np.linspace(400e-9, 700e-9, 61)
# smooth stand-ins for the linear-sRGB colour matching functions (peak nm, width nm, weight);
# the red one has a small blue lobe like the real x-bar
_CMF = (((600, 38, 1.0), (445, 18, 0.12)), ((548, 42, 1.0),), ((452, 25, 1.0),))


def _planck(wl: np.ndarray, cct: float) -> np.ndarray:
    c2 = 1.4388e-2
    return 1.0 / (wl**5 * (np.exp(c2 / (wl * cct)) - 1.0))


@functools.cache
def _cmf() -> np.ndarray:
    nm = _WL * 1e9
    rows = []
    for lobes in _CMF:
        rows.append(sum(w * np.exp(-0.5 * ((nm - mu) / sd) ** 2) for mu, sd, w in lobes))
    return np.array(rows)


@functools.cache
def _illuminant_cached(cct: int) -> tuple[float, float, float]:
    rgb = _cmf() @ _planck(_WL, float(cct))
    ref = _cmf() @ _planck(_WL, 6500.0)
    rgb = rgb / ref
    return tuple(float(v) for v in rgb / rgb[1])  # type: ignore[return-value]


def illuminant_rgb(cct: float) -> np.ndarray:
    """Linear scene RGB of a black-body light of temperature `cct` K (6500 K -> grey)."""
    return np.array(_illuminant_cached(int(round(cct / 10.0)) * 10), dtype=np.float32)


# --- camera colour -----------------------------------------------------------------------


def sensor_matrix(camera: CameraSpec) -> np.ndarray:
    """3x3 matrix: scene linear RGB -> camera raw RGB (spectral overlap of the dyes)."""
    return np.asarray(camera.sensor_matrix, dtype=np.float32).reshape(3, 3)


@functools.cache
def _ccm_cached(camera: CameraSpec) -> tuple[float, ...]:
    s = sensor_matrix(camera).astype(np.float64)
    inv = np.linalg.inv(s / s.sum(axis=1, keepdims=True))  # raw (white-balanced) -> scene
    inv = inv / inv.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(stable_seed("ccm", camera.sensor_seed, camera.id))
    err = rng.standard_normal((3, 3)) * camera.ccm_error
    err -= err.mean(axis=1, keepdims=True)  # keep rows summing to one: greys stay grey
    luma = np.array([0.2126, 0.7152, 0.0722])
    sat = camera.saturation * np.eye(3) + (1.0 - camera.saturation) * luma[None, :]
    return tuple((sat @ (inv + err)).ravel().tolist())


def colour_matrix(camera: CameraSpec) -> np.ndarray:
    """The model's colour correction matrix (white-balanced raw -> display RGB), rows sum 1."""
    return np.array(_ccm_cached(camera), dtype=np.float32).reshape(3, 3)


@functools.cache
def _raw_locus(camera: CameraSpec) -> tuple[np.ndarray, np.ndarray]:
    ccts = np.arange(2000, 12001, 50)
    s = sensor_matrix(camera)
    raw = np.array([s @ illuminant_rgb(t) for t in ccts], dtype=np.float64)
    chroma = np.log(raw[:, [0, 2]] / raw[:, [1]])
    return ccts.astype(np.float64), chroma


def auto_white_balance(rgb: np.ndarray, camera: CameraSpec) -> np.ndarray:
    """Per-channel gains from the image itself (mix of grey world and white patch), with the
    estimate projected onto the black-body locus as camera AWB firmware does."""
    ccts, locus = _raw_locus(camera)
    flat = rgb.reshape(-1, 3).astype(np.float64)
    ok = (flat.max(axis=1) < 0.97) & (flat.min(axis=1) > 0.01)
    flat = flat[ok]
    # white-point zone: only pixels whose chromaticity lies near the black-body locus can be
    # grey surfaces under some light; strongly coloured pixels are ignored
    est = None
    if len(flat) > 50:
        chroma = np.log(flat[:, [0, 2]] / flat[:, [1]])
        dist = np.sqrt(((chroma[:, None, :] - locus[None, ::4, :]) ** 2).sum(-1).min(axis=1))
        grey_px = flat[dist < 0.12]
        if len(grey_px) >= max(50, 0.02 * len(flat)):
            grey = grey_px.mean(axis=0)
            white = np.percentile(grey_px, 98, axis=0)
            est = (1 - camera.awb_white_patch) * grey / max(grey[1], 1e-9)
            est = est + camera.awb_white_patch * white / max(white[1], 1e-9)
    if est is None:  # no grey evidence: fall back to the firmware's default (about D50)
        mired = 1e6 / 5000.0 + camera.awb_warmth
    else:
        c = np.log(np.maximum(est[[0, 2]], 1e-6) / max(est[1], 1e-6))
        idx = int(np.argmin(((locus - c) ** 2).sum(axis=1)))
        mired = 1e6 / ccts[idx] + camera.awb_warmth  # preference: a little warmer/cooler
    cct = float(np.clip(1e6 / mired, 2000, 12000))
    raw_white = sensor_matrix(camera) @ illuminant_rgb(cct)
    gains = raw_white[1] / raw_white
    return (gains**camera.awb_strength).astype(np.float32)


# --- tone --------------------------------------------------------------------------------


@functools.cache
def _tone_lut(camera: CameraSpec) -> np.ndarray:
    x = np.linspace(0.0, 1.0, _LUT_SIZE, dtype=np.float64)
    if camera.tone == "srgb":
        y = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)
    else:
        gamma = 2.2 if camera.tone == "gamma2.2" else 2.4
        y = np.power(x, 1 / gamma)
    c = camera.contrast
    lut = ((1 - c) * y + c * y * y * (3 - 2 * y)).astype(np.float32)
    lut.flags.writeable = False
    return lut


_LUT_SIZE = 1 << 16


def tone_curve(x: np.ndarray, camera: CameraSpec) -> np.ndarray:
    """Linear [0,1] -> display [0,1]: the model's transfer function plus an S-curve
    (a 65536-entry look-up table, as camera ISPs use)."""
    idx = np.clip(x * (_LUT_SIZE - 1) + 0.5, 0, _LUT_SIZE - 1).astype(np.int32)
    return _tone_lut(camera)[idx]


# --- YCbCr, denoising, sharpening ---------------------------------------------------------

_TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
    dtype=np.float32,
)
_FROM_YCC = np.linalg.inv(_TO_YCC).astype(np.float32)


def rgb_to_ycc(rgb: np.ndarray) -> np.ndarray:
    """Full-range BT.601 (JFIF) RGB -> YCbCr, chroma centred on 0."""
    return rgb @ _TO_YCC.T


def ycc_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_ycc`."""
    return ycc @ _FROM_YCC.T


def in_camera_enhance(rgb: np.ndarray, camera: CameraSpec, noise_level: float) -> np.ndarray:
    """The model's noise reduction (chroma blur, edge-aware luma smoothing) and sharpening.

    `noise_level` is the expected luma noise std (display units) used to tell edges from
    noise, as adaptive camera denoisers do.
    """
    ycc = rgb_to_ycc(rgb)
    y = ycc[..., 0]
    if camera.denoise_chroma > 0:
        for ch in (1, 2):
            ycc[..., ch] = ndimage.gaussian_filter(ycc[..., ch], camera.denoise_chroma)
    if camera.denoise_luma > 0:
        smooth = ndimage.gaussian_filter(y, 1.0)
        gy = ndimage.sobel(smooth, axis=0)
        gx = ndimage.sobel(smooth, axis=1)
        edge = np.hypot(gx, gy) / 8.0
        tau = 2.5 * max(noise_level, 1.5 / 255.0)
        w = camera.denoise_luma * np.exp(-((edge / tau) ** 2))
        y = y + w * (smooth - y)
    if camera.sharpen_amount > 0:
        blur = ndimage.gaussian_filter(y, camera.sharpen_radius)
        detail = y - blur
        # firmware typically ignores the smallest details (coring) to avoid boosting noise
        core = 0.6 * max(noise_level, 1.0 / 255.0)
        detail = np.sign(detail) * np.maximum(np.abs(detail) - core, 0.0)
        y = y + camera.sharpen_amount * detail
    ycc[..., 0] = y
    return ycc_to_rgb(ycc)
