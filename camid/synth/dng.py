"""A minimal DNG writer: an uncompressed 16-bit Bayer mosaic with the tags LibRaw needs.

Written from the DNG 1.4 specification's tag list (TIFF 6.0 layout, little-endian): IFD 0
holds the raw colour-filter image (PhotometricInterpretation CFA), a SubIFD holds an optional
JPEG preview (NewSubFileType 1), as cameras write them. camid uses it to make RAW test files
and synthetic RAW frames; it is not a general TIFF writer.
"""

from __future__ import annotations

import struct

import numpy as np

# TIFF field types
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _UNDEFINED, _SRATIONAL = 1, 2, 3, 4, 5, 7, 10
_SIZES = {_BYTE: 1, _ASCII: 1, _SHORT: 2, _LONG: 4, _RATIONAL: 8, _UNDEFINED: 1, _SRATIONAL: 8}
_CFA_CODES = {"R": 0, "G": 1, "B": 2}


def _pack(kind: int, values) -> bytes:
    if kind == _ASCII:
        return values.encode("ascii", "replace") + b"\x00"
    if kind in (_BYTE, _UNDEFINED):
        return bytes(values)
    if kind == _SHORT:
        return struct.pack(f"<{len(values)}H", *values)
    if kind == _LONG:
        return struct.pack(f"<{len(values)}I", *values)
    fmt = "<ii" if kind == _SRATIONAL else "<II"
    out = b""
    for v in values:
        num, den = v if isinstance(v, tuple) else (int(round(v * 10000)), 10000)
        out += struct.pack(fmt, num, den)
    return out


def _count(kind: int, values) -> int:
    if kind == _ASCII:
        return len(values.encode("ascii", "replace")) + 1
    return len(values)


class _Tiff:
    """Collects IFDs and data blocks, then lays them out with resolved offsets."""

    def __init__(self) -> None:
        self.body = bytearray(b"II*\x00\x00\x00\x00\x00")

    def add_data(self, data: bytes) -> int:
        if len(self.body) % 2:
            self.body += b"\x00"
        at = len(self.body)
        self.body += data
        return at

    def add_ifd(self, entries: list[tuple[int, int, object]]) -> int:
        """Write one IFD (tags sorted) with its out-of-line values; return its offset."""
        entries = sorted(entries, key=lambda e: e[0])
        values = [(tag, kind, _count(kind, v), _pack(kind, v)) for tag, kind, v in entries]
        extra = {i: self.add_data(b) for i, (_, _, _, b) in enumerate(values) if len(b) > 4}
        if len(self.body) % 2:
            self.body += b"\x00"
        at = len(self.body)
        out = struct.pack("<H", len(values))
        for i, (tag, kind, count, b) in enumerate(values):
            field = struct.pack("<I", extra[i]) if i in extra else b.ljust(4, b"\x00")
            out += struct.pack("<HHI", tag, kind, count) + field
        self.body += out + b"\x00\x00\x00\x00"
        return at

    def finish(self, first_ifd: int) -> bytes:
        self.body[4:8] = struct.pack("<I", first_ifd)
        return bytes(self.body)


def write_dng(
    mosaic: np.ndarray,
    *,
    cfa: str = "RGGB",
    black_level: int = 0,
    white_level: int = 65535,
    make: str = "camid",
    model: str = "Synthetic RAW",
    serial: str | None = None,
    datetime_original: str | None = None,
    orientation: int = 1,
    preview_jpeg: bytes | None = None,
    preview_size: tuple[int, int] | None = None,
) -> bytes:
    """DNG bytes of an HxW uint16 Bayer mosaic (`cfa` like "RGGB", top-left 2x2 first).

    `preview_jpeg` (with its (width, height)) is stored as the embedded preview, the image a
    camera puts beside its raw data.
    """
    raw = np.ascontiguousarray(mosaic, dtype="<u2")
    if raw.ndim != 2 or min(raw.shape) < 2:
        raise ValueError("the mosaic must be an HxW array of at least 2x2")
    if len(cfa) != 4 or any(c not in _CFA_CODES for c in cfa.upper()):
        raise ValueError(f"CFA pattern must be 4 letters of R, G, B, got {cfa!r}")
    h, w = raw.shape
    tiff = _Tiff()
    strip = tiff.add_data(raw.tobytes())
    text = [(0x010F, _ASCII, make), (0x0110, _ASCII, model)]
    when = [(0x0132, _ASCII, datetime_original)] if datetime_original else []
    entries: list[tuple[int, int, object]] = [
        (0x00FE, _LONG, [0]),  # NewSubFileType: main image
        (0x0100, _LONG, [w]),
        (0x0101, _LONG, [h]),
        (0x0102, _SHORT, [16]),
        (0x0103, _SHORT, [1]),  # uncompressed
        (0x0106, _SHORT, [32803]),  # CFA
        (0x0111, _LONG, [strip]),
        (0x0112, _SHORT, [int(orientation)]),
        (0x0115, _SHORT, [1]),
        (0x0116, _LONG, [h]),
        (0x0117, _LONG, [raw.nbytes]),
        (0x011C, _SHORT, [1]),
        (0x828D, _SHORT, [2, 2]),  # CFARepeatPatternDim
        (0x828E, _BYTE, [_CFA_CODES[c] for c in cfa.upper()]),  # CFAPattern
        (0xC612, _BYTE, [1, 4, 0, 0]),  # DNGVersion
        (0xC614, _ASCII, f"{make} {model}"),  # UniqueCameraModel
        (0xC61A, _LONG, [int(black_level)]),  # BlackLevel
        (0xC61D, _LONG, [int(white_level)]),  # WhiteLevel
        (0xC621, _SRATIONAL, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]),  # ColorMatrix1
        (0xC628, _RATIONAL, [1.0, 1.0, 1.0]),  # AsShotNeutral
        (0xC65A, _SHORT, [21]),  # CalibrationIlluminant1: D65
        *text,
        *when,
    ]
    if serial:
        entries.append((0xC62F, _ASCII, serial))  # CameraSerialNumber
    if preview_jpeg is not None:
        pw, ph = preview_size or (0, 0)
        jpeg_at = tiff.add_data(preview_jpeg)
        sub = tiff.add_ifd(
            [
                (0x00FE, _LONG, [1]),  # reduced-resolution preview
                (0x0100, _LONG, [pw]),
                (0x0101, _LONG, [ph]),
                (0x0102, _SHORT, [8, 8, 8]),
                (0x0103, _SHORT, [7]),  # JPEG
                (0x0106, _SHORT, [6]),  # YCbCr
                (0x0111, _LONG, [jpeg_at]),
                (0x0115, _SHORT, [3]),
                (0x0116, _LONG, [ph]),
                (0x0117, _LONG, [len(preview_jpeg)]),
            ]
        )
        entries.append((0x014A, _LONG, [sub]))  # SubIFDs
    first = tiff.add_ifd(entries)
    return tiff.finish(first)
