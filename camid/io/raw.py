"""Camera RAW files through LibRaw (rawpy): header facts, the colour-filter mosaic, the preview.

* `load_raw_mosaic`: the sensor's own values for PRNU — the visible colour-filter mosaic,
  per-channel black level subtracted, scaled so that the white level is 255, never
  demosaiced (HxW float32, one value per photosite, in the sensor's grid).
* `load_raw_preview`: what the CNN reads — the camera's embedded JPEG preview (the camera's
  own processing and JPEG coding); without one, LibRaw develops the mosaic and the
  record says so (that image carries LibRaw's processing, not the camera's).
* `raw_header`: size, CFA pattern and levels from the header alone, for `camid exif`.

Every reader checks the sensor size against the decompression limit from the header,
before any raw data is unpacked. rawpy is imported only here, when a RAW file is read.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camid.errors import InputError
from camid.io.formats import raw_format_name
from camid.io.image import (
    DEFAULT_MAX_PIXELS,
    LoadedImage,
    check_size,
    decode_image,
    decode_reason,
    quiet_warnings,
    read_file_bytes,
    sha256_bytes,
)

_FLIP_TO_EXIF = {0: 1, 3: 3, 5: 8, 6: 6}
"""LibRaw's `flip` code -> EXIF Orientation."""


@dataclass(frozen=True)
class RawHeader:
    """What a RAW file's header says about its sensor data (nothing decoded)."""

    format: str
    width: int
    height: int
    raw_width: int
    raw_height: int
    cfa: str | None
    orientation: int | None


def _open(p: Path, raw: bytes, max_pixels: int):
    """A rawpy.RawPy with the file opened (header parsed) and its size checked."""
    import rawpy

    r = rawpy.RawPy()
    try:
        with quiet_warnings():
            r.open_buffer(io.BytesIO(raw))
        s = r.sizes
    except rawpy.LibRawError as exc:
        r.close()
        raise InputError(p, f"cannot read RAW file: {_reason(exc)}") from exc
    try:
        check_size(p, int(s.raw_width), int(s.raw_height), max_pixels, 1, "analysis")
    except InputError:
        r.close()
        raise
    return r


def _reason(exc: BaseException) -> str:
    name = type(exc).__name__
    arg = exc.args[0] if exc.args else None
    text = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else decode_reason(exc)
    if name == "LibRawFileUnsupportedError":
        return "not a RAW file LibRaw can read (unsupported or corrupt)"
    if name in ("LibRawIOError", "LibRawDataError"):
        return f"corrupt or truncated raw data ({text})"
    return text


def _cfa(r) -> str | None:
    """The 2x2 colour-filter pattern as letters ('RGGB'), None for non-Bayer sensors."""
    pattern = r.raw_pattern
    if pattern is None or np.shape(pattern) != (2, 2):
        return None
    desc = r.color_desc.decode("ascii", "replace")
    return "".join(desc[int(i)] for i in np.asarray(pattern).ravel())


def raw_header(path: str | Path, data: bytes | None = None) -> RawHeader:
    """Sizes, CFA pattern and orientation of a RAW file from its header (InputError if it
    cannot be parsed)."""
    p = Path(path)
    raw = data if data is not None else read_file_bytes(p)
    r = _open(p, raw, DEFAULT_MAX_PIXELS)
    try:
        s = r.sizes
        return RawHeader(
            format=raw_format_name(p, raw[:32]),
            width=int(s.width),
            height=int(s.height),
            raw_width=int(s.raw_width),
            raw_height=int(s.raw_height),
            cfa=_cfa(r),
            orientation=_FLIP_TO_EXIF.get(int(s.flip)),
        )
    finally:
        r.close()


def load_raw_mosaic(
    path: str | Path,
    data: bytes | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
    purpose: str = "analysis",
) -> LoadedImage:
    """The visible colour-filter mosaic of a RAW file as HxW float32 (0 = black level,
    255 = white level, per-channel black levels), for PRNU. No demosaicing, no white
    balance, no rotation (LibRaw's flip is reported as `exif_orientation`).

    InputError (naming the file) for unreadable, truncated, oversized or non-mosaic files
    (linear DNGs, Foveon).
    """
    import rawpy

    p = Path(path)
    raw = data if data is not None else read_file_bytes(p)
    name = raw_format_name(p, raw[:32])
    r = _open(p, raw, max_pixels)
    try:
        s = r.sizes
        check_size(p, int(s.width), int(s.height), max_pixels, min_side, purpose)
        try:
            with quiet_warnings():
                r.unpack()
        except rawpy.LibRawError as exc:
            raise InputError(p, f"cannot decode RAW data: {_reason(exc)}") from exc
        try:
            values = r.raw_image_visible
            colours = r.raw_colors_visible
            pattern = r.raw_pattern
        except (rawpy.LibRawError, RuntimeError, ValueError, AttributeError):
            values = None  # rawpy has no single-plane mosaic to give (3-colour raw data)
        cfa = _cfa(r) if values is not None else None
        if values is None or values.ndim != 2 or pattern is None:
            raise InputError(p, "RAW file holds no colour-filter mosaic (linear DNG or Foveon?)")
        black = np.asarray(r.black_level_per_channel, dtype=np.float32)[colours]
        white = float(r.white_level)
        span = np.maximum(white - black, 1.0)
        mosaic = np.clip((values.astype(np.float32) - black) * (255.0 / span), 0.0, 255.0)
        orientation = _FLIP_TO_EXIF.get(int(s.flip))
        levels = sorted({int(b) for b in r.black_level_per_channel})
    finally:
        r.close()
    mosaic = np.ascontiguousarray(mosaic, dtype=np.float32)
    mosaic.setflags(write=False)
    pattern = f"{cfa} " if cfa else "non-Bayer "
    note = (
        f"raw {pattern}colour-filter mosaic (LibRaw): black level "
        f"{'/'.join(map(str, levels))} subtracted, white level {white:g} scaled to 255, "
        "no demosaicing"
    )
    return LoadedImage(
        path=p,
        pixels=mosaic,
        sha256=sha256_bytes(raw),
        format=name,
        original_mode="CFA",
        exif_orientation=orientation,
        conversion=note,
        codec=None,
    )


def load_raw_preview(
    p: Path,
    raw: bytes,
    *,
    gray: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
    purpose: str = "analysis",
) -> LoadedImage:
    """The image a RAW file shows a CNN: its embedded JPEG preview (decoded by the shared
    loader), else LibRaw's development of the mosaic; `conversion` says which."""
    import rawpy

    name = raw_format_name(p, raw[:32])
    digest = sha256_bytes(raw)
    r = _open(p, raw, max_pixels)
    try:
        s = r.sizes
        orientation = _FLIP_TO_EXIF.get(int(s.flip))
        try:
            with quiet_warnings():
                thumb = r.extract_thumb()
        except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
            thumb = None
        except rawpy.LibRawError as exc:
            raise InputError(p, f"cannot read the RAW file's preview: {_reason(exc)}") from exc
        if thumb is not None and thumb.format == rawpy.ThumbFormat.JPEG:
            img = decode_image(
                p,
                bytes(thumb.data),
                gray=gray,
                max_pixels=max_pixels,
                min_side=min_side,
                purpose=purpose,
            )
            what = (
                f"embedded JPEG preview {img.width}x{img.height} of the {name} file "
                f"(sensor {s.width}x{s.height}; the camera's own processing)"
            )
            return _as_raw(img, digest, name, what, "JPEG", img.exif_orientation or orientation)
        if thumb is not None:  # an uncompressed RGB preview
            pixels = np.asarray(thumb.data, dtype=np.uint8)
            if pixels.ndim != 3 or pixels.shape[2] != 3:
                thumb = None
            else:
                check_size(p, pixels.shape[1], pixels.shape[0], max_pixels, min_side, purpose)
                what = f"embedded RGB preview {pixels.shape[1]}x{pixels.shape[0]} of the {name}"
                return _pixels_image(p, pixels, digest, name, what, orientation, gray)
        check_size(p, int(s.width), int(s.height), max_pixels, min_side, purpose)
        try:
            with quiet_warnings():
                r.unpack()
                pixels = r.postprocess(output_bps=8, use_camera_wb=True, user_flip=0)
        except rawpy.LibRawError as exc:
            raise InputError(p, f"cannot decode RAW data: {_reason(exc)}") from exc
        what = (
            f"{name} without an embedded preview: developed by LibRaw (demosaiced, camera "
            "white balance) — LibRaw's processing, not the camera's"
        )
        return _pixels_image(p, pixels, digest, name, what, orientation, gray)
    finally:
        r.close()


def _as_raw(
    img: LoadedImage, digest: str, name: str, what: str, codec: str, orientation: int | None
) -> LoadedImage:
    notes = "; ".join(n for n in (what, img.conversion) if n)
    return LoadedImage(
        path=img.path,
        pixels=img.pixels,
        sha256=digest,
        format=name,
        original_mode=img.original_mode,
        exif_orientation=orientation,
        conversion=notes,
        other_images=1,  # the raw mosaic beside the preview
        codec=codec,
    )


def _pixels_image(
    p: Path,
    pixels: np.ndarray,
    digest: str,
    name: str,
    what: str,
    orientation: int | None,
    gray: bool,
) -> LoadedImage:
    px = np.ascontiguousarray(pixels, dtype=np.uint8)
    if gray:
        rgb = px.astype(np.float32)
        px = np.clip(np.round(rgb @ np.float32([0.299, 0.587, 0.114])), 0, 255).astype(np.uint8)
    px.setflags(write=False)
    return LoadedImage(
        path=p,
        pixels=px,
        sha256=digest,
        format=name,
        original_mode="RGB",
        exif_orientation=orientation,
        conversion=what,
        other_images=1,
        codec=None,
    )
