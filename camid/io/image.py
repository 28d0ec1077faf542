"""The one image loader of camid: read-only, bomb-safe, explicit about modes.

Pixel data stays in stored (sensor) orientation: the EXIF Orientation tag is reported,
never applied, because PRNU and CNN camera traces live in the sensor's pixel grid.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from camid.errors import InputError

DEFAULT_MAX_PIXELS = 120_000_000
"""Refuse images larger than this many pixels (a 120 MP photo is already larger than any
phone's); the header is checked before any pixel is decoded."""

ImageFile.LOAD_TRUNCATED_IMAGES = False


@dataclass(frozen=True)
class LoadedImage:
    """Pixels of one image file with the facts needed to cite it."""

    path: Path
    pixels: np.ndarray
    sha256: str
    format: str | None
    original_mode: str
    exif_orientation: int | None
    conversion: str | None = None

    @property
    def height(self) -> int:
        """Rows of the stored pixel grid."""
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Columns of the stored pixel grid."""
        return int(self.pixels.shape[1])


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of a bytes object."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks, opened read-only."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_file_bytes(path: str | Path, what: str = "an image") -> bytes:
    """Read a whole input file read-only, turning OS errors into one-line InputErrors.

    `what` names the kind of file in the messages ("an image", "a fingerprint", ...).
    """
    p = Path(path)
    try:
        if p.is_dir():
            hint = " (use -r to read folders)" if what == "an image" else ""
            raise InputError(p, f"is a directory, not {what} file{hint}")
        with open(p, "rb") as fh:
            data = fh.read()
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise InputError(p, "no such file") from exc
    except PermissionError as exc:
        raise InputError(p, "permission denied") from exc
    except OSError as exc:
        raise InputError(p, f"cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise InputError(p, "empty file (0 bytes)")
    return data


def _to_rgb8(img: Image.Image, path: Path) -> tuple[np.ndarray, str | None]:
    """Convert any supported PIL mode to HxWx3 uint8, saying what was done."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8), None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img)
        if mode == "I":
            peak = int(arr.max()) if arr.size else 0
            arr = arr.astype(np.float64)
            scale = 257.0 if peak > 255 else 1.0
            grey8 = np.clip(np.round(arr / scale), 0, 255).astype(np.uint8)
        else:
            grey8 = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2), f"16-bit {mode} scaled to 8-bit grey"
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
        grey8 = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2), "float image clipped to 8-bit grey"
    if mode in ("L", "1"):
        grey = np.asarray(img.convert("L"), dtype=np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), f"{mode} replicated to 3 channels"
    if mode == "LA":
        grey = np.asarray(img.getchannel("L"), dtype=np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), "LA: alpha dropped"
    if mode in ("P", "PA"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8), "palette expanded to RGB"
    if mode in ("RGBA", "RGBX", "RGBa"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8), f"{mode}: alpha dropped"
    if mode == "CMYK":
        return np.asarray(img.convert("RGB"), dtype=np.uint8), "CMYK converted to RGB (naive)"
    if mode in ("YCbCr", "LAB", "HSV"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8), f"{mode} converted to RGB"
    raise InputError(path, f"unsupported image mode {mode!r}")


def load_image(
    path: str | Path,
    *,
    gray: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
) -> LoadedImage:
    """Decode an image file read-only into uint8 RGB (or grey) in stored orientation.

    Raises InputError with a one-line reason for missing, empty, non-image, truncated,
    oversized (decompression bomb) or unsupported files.
    """
    p = Path(path)
    raw = data if data is not None else read_file_bytes(p)
    digest = sha256_bytes(raw)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            width, height = img.size
            if width * height > max_pixels:
                raise InputError(
                    p,
                    f"image is {width}x{height} = {width * height / 1e6:.0f} MP, above the "
                    f"{max_pixels / 1e6:.0f} MP limit (possible decompression bomb)",
                )
            if width == 0 or height == 0:
                raise InputError(p, "image has zero width or height")
            fmt = img.format
            orientation = _orientation(img)
            img.load()
            pixels, note = _to_rgb8(img, p)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(p, f"refused as a possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise InputError(p, "not an image file (unrecognised format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc).strip() or type(exc).__name__
        if "truncated" in msg.lower():
            msg = "truncated image data (file is incomplete)"
        raise InputError(p, f"cannot decode image: {msg}") from exc
    if gray:
        rgb = pixels.astype(np.float32)
        grey = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        pixels = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    pixels = np.ascontiguousarray(pixels)
    pixels.setflags(write=False)
    return LoadedImage(
        path=p,
        pixels=pixels,
        sha256=digest,
        format=fmt,
        original_mode=img.mode,
        exif_orientation=orientation,
        conversion=note,
    )


def _orientation(img: Image.Image) -> int | None:
    """EXIF Orientation (1-8) if present and sane, else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = img.getexif().get(0x0112)
    except Exception:  # malformed EXIF must not stop pixel decoding
        return None
    try:
        value = int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and 1 <= value <= 8 else None
