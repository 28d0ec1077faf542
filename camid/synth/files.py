"""The other files a camera writes: HEIC (phones) and DNG (raw sensor data + JPEG preview).

`simulate_file` shoots a scene once and writes the file format asked for; the same shot (same
random state) gives the same sensor data whatever the format, so a DNG and a JPEG of one
seed are one exposure saved two ways.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from camid.synth.dng import write_dng
from camid.synth.pipeline import simulate_stages
from camid.synth.spec import CameraSpec

FILE_FORMATS = ("jpeg", "heic", "dng")
EXTENSIONS = {"jpeg": ".jpg", "heic": ".heic", "dng": ".dng"}
HEIC_QUALITY = 90


def encode_heic(pixels: np.ndarray, exif: bytes | None, quality: int = HEIC_QUALITY) -> bytes:
    """HxWx3 uint8 -> HEIC bytes (HEVC via pillow-heif/libheif) with the EXIF block."""
    from camid.io.formats import ensure_heif_opener

    ensure_heif_opener()
    buf = io.BytesIO()
    kwargs: dict = {"quality": int(quality)}
    if exif:
        kwargs["exif"] = exif
    Image.fromarray(np.asarray(pixels, dtype=np.uint8), "RGB").save(buf, "HEIF", **kwargs)
    return buf.getvalue()


def raw_levels(camera: CameraSpec) -> tuple[int, int]:
    """(black level, white level) in DN of the simulated ADC (as in `expose_sensor`)."""
    levels = 2**camera.bit_depth - 1
    black = int(round(16.0 * 2 ** (camera.bit_depth - 8) / 4.0))
    return black, levels


def raw_to_dn(raw: np.ndarray, camera: CameraSpec) -> np.ndarray:
    """The normalised raw stage of the pipeline back to the ADC's integer values (uint16)."""
    black, white = raw_levels(camera)
    dn = np.round(np.asarray(raw, dtype=np.float64) * (white - black) + black)
    return np.clip(dn, 0, white).astype(np.uint16)


def simulate_file(
    scene: np.ndarray,
    camera: CameraSpec,
    device: int,
    rng: np.random.Generator,
    *,
    file_format: str = "jpeg",
    exposure_ev: float = 0.0,
    datetime_original: str | None = None,
    serial: str | None = None,
) -> bytes:
    """Photograph `scene` with unit `device` of `camera` and return the file's bytes:
    the camera JPEG, a HEIC of the same processed pixels (EXIF kept), or a DNG of the
    sensor's mosaic with the camera JPEG embedded as its preview."""
    if file_format not in FILE_FORMATS:
        raise ValueError(f"file format must be one of {', '.join(FILE_FORMATS)}")
    st = simulate_stages(
        scene,
        camera,
        device,
        rng,
        exposure_ev=exposure_ev,
        datetime_original=datetime_original,
        keep=file_format != "jpeg",
    )
    if file_format == "jpeg":
        return st["jpeg"]
    with Image.open(io.BytesIO(st["jpeg"])) as im:
        exif = im.info.get("exif")
    if file_format == "heic":
        return encode_heic(st["enhanced"], exif)
    black, white = raw_levels(camera)
    h, w = st["raw"].shape
    return write_dng(
        raw_to_dn(st["raw"], camera),
        cfa=camera.cfa,
        black_level=black,
        white_level=white,
        make=camera.make,
        model=camera.model,
        serial=serial,
        datetime_original=datetime_original,
        preview_jpeg=st["jpeg"],
        preview_size=(w, h),
    )
