"""The file a camera writes: JPEG with the model's tables and chroma subsampling, plus EXIF."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from camid.io.exif import STD_CHROMA, STD_LUMA
from camid.synth.spec import SUBSAMPLINGS, CameraSpec

# EXIF tag numbers
_MAKE, _MODEL, _ORIENTATION, _SOFTWARE, _DATETIME = 0x010F, 0x0110, 0x0112, 0x0131, 0x0132
_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL, _DATETIME_DIGITIZED, _ISO = 0x9003, 0x9004, 0x8827
_PIXEL_X, _PIXEL_Y = 0xA002, 0xA003


def scaled_table(base: np.ndarray, quality: int, tilt: float = 0.0) -> list[int]:
    """libjpeg quality scaling of a base table; `tilt` coarsens high frequencies further."""
    q = int(np.clip(quality, 1, 100))
    scale = 5000.0 / q if q < 50 else 200.0 - 2.0 * q
    u, v = np.meshgrid(np.arange(8), np.arange(8))
    shaped = base * (1.0 + tilt * (u + v) / 14.0)
    table = np.floor((shaped * scale + 50.0) / 100.0)
    return [int(x) for x in np.clip(table, 1, 255).ravel()]


def quant_tables(camera: CameraSpec) -> list[list[int]]:
    """The model's [luma, chroma] quantisation tables in natural (row-major) order."""
    cq = camera.jpeg_chroma_quality or camera.jpeg_quality
    return [
        scaled_table(STD_LUMA, camera.jpeg_quality, camera.jpeg_table_tilt),
        scaled_table(STD_CHROMA, cq, camera.jpeg_table_tilt),
    ]


def build_exif(
    camera: CameraSpec,
    *,
    datetime_original: str,
    orientation: int | None,
    iso: int | None,
    size: tuple[int, int],
) -> bytes:
    """EXIF block with the model's Make/Model/Software and the capture time."""
    ex = Image.Exif()
    ex[_MAKE] = camera.make
    ex[_MODEL] = camera.model
    ex[_SOFTWARE] = camera.software
    ex[_DATETIME] = datetime_original
    if orientation is not None:
        ex[_ORIENTATION] = int(orientation)
    sub = ex.get_ifd(_EXIF_IFD)
    sub[_DATETIME_ORIGINAL] = datetime_original
    sub[_DATETIME_DIGITIZED] = datetime_original
    if iso is not None:
        sub[_ISO] = int(iso)
    sub[_PIXEL_X] = int(size[0])
    sub[_PIXEL_Y] = int(size[1])
    return ex.tobytes()


def encode_jpeg(pixels: np.ndarray, camera: CameraSpec, exif: bytes | None) -> bytes:
    """Encode HxWx3 uint8 with the model's tables and subsampling (baseline JPEG)."""
    buf = io.BytesIO()
    kwargs: dict = {
        "qtables": quant_tables(camera),
        "subsampling": SUBSAMPLINGS[camera.subsampling],
    }
    if exif:
        kwargs["exif"] = exif
    Image.fromarray(pixels, "RGB").save(buf, "JPEG", **kwargs)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode JPEG bytes to HxWx3 uint8 (no EXIF rotation)."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))
