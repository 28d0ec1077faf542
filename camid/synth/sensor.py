"""The sensor: per-device fixed patterns (PRNU, DSNU, column offsets), CFA sampling, noise.

Fixed patterns are generated tile by tile from the device seed, so the pattern at a pixel
does not depend on the requested frame size: a smaller frame is the top-left crop of a
larger one, as on a real sensor read out in a cropped mode.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from camid.synth.spec import CameraSpec, device_sensor, stable_seed

_TILE = 128
_PAD = 8  # margin so that smoothing near a frame edge does not depend on the frame size


def _tiled_normal(seed: int, kind: str, rows: int, cols: int) -> np.ndarray:
    """Standard normal noise on a virtual infinite sensor, top-left `rows` x `cols`."""
    ty, tx = -(-rows // _TILE), -(-cols // _TILE)
    out = np.empty((ty * _TILE, tx * _TILE), dtype=np.float32)
    for i in range(ty):
        for j in range(tx):
            rng = np.random.default_rng(stable_seed(kind, seed, i, j))
            out[i * _TILE : (i + 1) * _TILE, j * _TILE : (j + 1) * _TILE] = rng.standard_normal(
                (_TILE, _TILE), dtype=np.float32
            )
    return out[:rows, :cols]


@functools.cache
def _lowpass_gain() -> float:
    impulse = np.zeros((33, 33), dtype=np.float64)
    impulse[16, 16] = 1.0
    kern = ndimage.gaussian_filter(impulse, 1.5, truncate=4.0)
    return float(np.sqrt((kern**2).sum()))  # std of the filtered unit white noise


def device_prnu(camera: CameraSpec, device: int, shape: tuple[int, int]) -> np.ndarray:
    """The true multiplicative PRNU pattern K of a device (a fresh, writable copy)."""
    return _device_prnu(camera, int(device), (int(shape[0]), int(shape[1]))).copy()


@functools.lru_cache(maxsize=4)
def _device_prnu(camera: CameraSpec, device: int, shape: tuple[int, int]) -> np.ndarray:
    """The true multiplicative PRNU pattern K (HxW float32, zero mean-ish) of one device.

    Mostly white (pixel-to-pixel sensitivity differences) with a weak low-pass component
    (micro-lens / doping non-uniformity): photo-response = (1 + K) * light.
    """
    h, w = int(shape[0]), int(shape[1])
    sensor = device_sensor(camera, device)
    white = _tiled_normal(sensor.seed, "prnu", h + 2 * _PAD, w + 2 * _PAD)
    low = ndimage.gaussian_filter(white, 1.5, mode="nearest", truncate=4.0) / _lowpass_gain()
    k = 0.92 * white + 0.39 * low  # ~85% of the variance white, the rest smooth
    k = k[_PAD : _PAD + h, _PAD : _PAD + w]
    out = (sensor.prnu_std * k).astype(np.float32)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=4)
def device_dark_pattern(camera: CameraSpec, device: int, shape: tuple[int, int]) -> np.ndarray:
    """Fixed additive offsets in electrons (read-only): per-pixel DSNU plus column offsets."""
    h, w = int(shape[0]), int(shape[1])
    sensor = device_sensor(camera, device)
    dsnu = camera.dark_noise * _tiled_normal(sensor.seed, "dsnu", h, w)
    cols = camera.column_noise * _tiled_normal(sensor.seed, "cols", 1, w)
    out = (dsnu + cols).astype(np.float32)
    out.flags.writeable = False
    return out


def cfa_channel_map(pattern: str, shape: tuple[int, int]) -> np.ndarray:
    """HxW int array: which colour (0 R, 1 G, 2 B) each photosite records."""
    idx = {"R": 0, "G": 1, "B": 2}
    tile = np.array([[idx[pattern[0]], idx[pattern[1]]], [idx[pattern[2]], idx[pattern[3]]]])
    h, w = shape
    return np.tile(tile, (-(-h // 2), -(-w // 2)))[:h, :w]


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an HxWx3 image through a Bayer colour filter array: HxW raw."""
    cmap = cfa_channel_map(pattern, rgb.shape[:2])
    return np.take_along_axis(rgb, cmap[..., None], axis=2)[..., 0]


def expose_sensor(
    raw_light: np.ndarray,
    camera: CameraSpec,
    device: int,
    gain: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Turn CFA-sampled light (1.0 = clipping at base ISO) into normalised raw values.

    Photo-response non-uniformity, shot noise (Poisson, Gaussian approximation), dark-signal
    and column patterns, read noise, analogue gain, clipping and ADC quantisation.
    """
    sensor = device_sensor(camera, device)
    shape = raw_light.shape
    cmap = cfa_channel_map(camera.cfa, shape)
    gains = np.asarray(sensor.gains, dtype=np.float32)[cmap]
    k = _device_prnu(camera, device, shape)
    # electrons collected: the scene was exposed for `1/gain` of the base-ISO exposure
    electrons = np.clip(raw_light, 0, None) * gains * (1.0 + k) * (camera.full_well / gain)
    shot = rng.standard_normal(shape, dtype=np.float32) * np.sqrt(electrons)
    read = rng.standard_normal(shape, dtype=np.float32) * sensor.read_noise
    signal = electrons + shot + read + device_dark_pattern(camera, device, shape)
    levels = float(2**camera.bit_depth - 1)
    black = 16.0 * 2 ** (camera.bit_depth - 8) / 4.0
    dn = np.round(signal * gain / camera.full_well * (levels - black) + black)
    dn = np.clip(dn, 0, levels)
    return ((dn - black) / (levels - black)).astype(np.float32)
