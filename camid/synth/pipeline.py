"""The simulated camera: scene radiance in, JPEG file (and its decoded pixels) out.

Stages, in the order light meets them:
optics (vignetting, lens blur) -> spectral sensor response -> auto exposure / auto ISO ->
Bayer CFA sampling with the device's PRNU, dark patterns, shot and read noise, ADC ->
demosaicing -> auto white balance -> colour matrix -> tone curve -> in-camera denoising and
sharpening -> 8-bit quantisation -> JPEG with the model's tables and subsampling + EXIF.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

import numpy as np
from scipy import ndimage

from camid.synth.color import (
    auto_white_balance,
    colour_matrix,
    in_camera_enhance,
    sensor_matrix,
    tone_curve,
)
from camid.synth.demosaic import demosaic
from camid.synth.jpeg import build_exif, decode_jpeg, encode_jpeg
from camid.synth.sensor import expose_sensor, mosaic
from camid.synth.spec import CameraSpec

_EXPOSURE_CAPACITY = 0.6  # light level (scene units) at which base ISO needs no extra gain
_ISO_STEPS = np.array(
    [
        25,
        32,
        40,
        50,
        64,
        80,
        100,
        125,
        160,
        200,
        250,
        320,
        400,
        500,
        640,
        800,
        1000,
        1250,
        1600,
        2000,
        2500,
        3200,
        4000,
        5000,
        6400,
    ]
)


@functools.lru_cache(maxsize=32)
def _vignette(h: int, w: int, strength: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (
        ((h - 1) / 2) ** 2 + ((w - 1) / 2) ** 2 + 1e-6
    )
    # cos^4-like fall-off reaching (1 - strength) in the corners
    return ((1.0 - strength) ** r2).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _metering_weights(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h:4, 0:w:4].astype(np.float32)
    g = np.exp(-(((yy - h / 2) / (0.35 * h)) ** 2 + ((xx - w / 2) / (0.35 * w)) ** 2))
    wts = 0.4 + g  # centre-weighted average metering
    return (wts / wts.sum()).astype(np.float32)


def default_datetime(rng: np.random.Generator) -> str:
    """An EXIF DateTimeOriginal string drawn from `rng` (2021-2024)."""
    start = datetime(2021, 1, 1, 8, 0, 0)
    when = start + timedelta(seconds=int(rng.integers(0, 4 * 365 * 86400)))
    return when.strftime("%Y:%m:%d %H:%M:%S")


def simulate_stages(
    scene: np.ndarray,
    camera: CameraSpec,
    device: int,
    rng: np.random.Generator,
    *,
    exposure_ev: float = 0.0,
    datetime_original: str | None = None,
    orientation: int | None = None,
    keep: bool = False,
) -> dict:
    """Run the whole camera on `scene`; return a dict with 'pixels', 'jpeg', 'iso', and with
    `keep` the intermediate images ('raw', 'demosaiced', 'balanced', 'toned', 'enhanced')."""
    scene = np.asarray(scene, dtype=np.float32)
    if scene.ndim != 3 or scene.shape[2] != 3 or min(scene.shape[:2]) < 8:
        raise ValueError("scene must be an HxWx3 float array of at least 8x8 pixels")
    h, w = scene.shape[:2]
    stages: dict = {}
    # optics
    light = scene * _vignette(h, w, float(camera.vignetting))[..., None]
    if camera.lens_blur > 0:
        light = ndimage.gaussian_filter(light, (camera.lens_blur, camera.lens_blur, 0))
    raw_rgb = light @ sensor_matrix(camera).T
    # auto exposure (centre-weighted, with a small metering error) and auto ISO
    meter = float((raw_rgb[::4, ::4, 1] * _metering_weights(h, w)).sum())
    k = camera.ae_target * 2.0 ** (exposure_ev + rng.normal(0.0, 0.08)) / max(meter, 1e-6)
    bright = float(np.percentile(raw_rgb[::4, ::4].max(axis=2), 99.7))
    if bright * k > 1.6:  # protect highlights a little, as phones do
        k = max(1.6 / bright, 0.5 * k)
    gain = float(np.clip(k / _EXPOSURE_CAPACITY, 1.0, camera.max_gain))
    iso = int(_ISO_STEPS[np.argmin(np.abs(_ISO_STEPS - camera.base_iso * gain))])
    k = min(k, _EXPOSURE_CAPACITY * gain)  # beyond the highest gain the shot is dark
    # sensor
    raw = expose_sensor(mosaic(raw_rgb * k, camera.cfa), camera, device, gain, rng)
    # processing
    rgb = demosaic(raw, camera.cfa, camera.demosaic)
    gains = auto_white_balance(rgb[2::8, 2::8], camera)
    balanced = np.clip(rgb * gains, 0.0, 1.0)
    display_lin = np.clip(balanced @ colour_matrix(camera).T, 0.0, 1.0)
    toned = tone_curve(display_lin, camera)
    e_mid = 0.18 * camera.full_well / gain
    noise = 1.2 * 0.18 * np.sqrt(e_mid + camera.read_noise**2) / e_mid
    enhanced = in_camera_enhance(toned, camera, float(noise))
    pixels = np.clip(np.round(enhanced * 255.0), 0, 255).astype(np.uint8)
    # file
    if orientation is None:
        orientation = 6 if rng.random() < camera.orientation_mismatch else 1
    exif = build_exif(
        camera,
        datetime_original=datetime_original or default_datetime(rng),
        orientation=orientation,
        iso=iso,
        size=(w, h),
    )
    data = encode_jpeg(pixels, camera, exif)
    stages.update(pixels=decode_jpeg(data), jpeg=data, iso=iso, gain=gain)
    if keep:
        stages.update(raw=raw, demosaiced=rgb, balanced=balanced, toned=toned, enhanced=pixels)
    return stages


def simulate(
    scene: np.ndarray,
    camera: CameraSpec,
    device: int,
    rng: np.random.Generator,
    *,
    exposure_ev: float = 0.0,
    datetime_original: str | None = None,
    orientation: int | None = None,
) -> tuple[np.ndarray, bytes]:
    """Photograph `scene` (HxWx3 linear float) with unit `device` of `camera`.

    Returns (pixels, jpeg): the decoded HxWx3 uint8 image as any reader sees it, and the
    JPEG file bytes (with EXIF). Deterministic for a given `rng` state.
    """
    out = simulate_stages(
        scene,
        camera,
        device,
        rng,
        exposure_ev=exposure_ev,
        datetime_original=datetime_original,
        orientation=orientation,
    )
    return out["pixels"], out["jpeg"]
