"""EXIF metadata (via exifread) and JPEG quantisation tables with a quality estimate.

This is the metadata side of identification: what the file claims about its camera.
"""

from __future__ import annotations

import io
import logging
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import exifread
import numpy as np
from PIL import UnidentifiedImageError

from camid.errors import InputError
from camid.io.formats import ensure_heif_opener, is_heif, is_raw
from camid.io.image import (
    describe_conversion,
    heif_other_images,
    open_image,
    open_regular,
    quiet_warnings,
    read_file_bytes,
    sha256_bytes,
    verify_png,
)

# Annex K of the JPEG standard (ITU T.81): the example tables that libjpeg scales by quality
# (natural row-major order; also used by camid.synth to write camera-like tables).
STD_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
).reshape(8, 8)  # fmt: skip
STD_CHROMA = np.array(
    [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
     24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99]
    + [99] * 32,
    dtype=np.float64,
).reshape(8, 8)  # fmt: skip

# zig-zag scan position k -> natural (row-major) index
_ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
     12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
     35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
     58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63],
    dtype=np.int64,
)  # fmt: skip

_LOG = logging.getLogger(__name__)
logging.getLogger("exifread").setLevel(logging.CRITICAL)


@dataclass
class ExifInfo:
    """What a file's metadata says about its origin. Missing tags are None."""

    path: str
    sha256: str
    make: str | None = None
    model: str | None = None
    software: str | None = None
    datetime_original: str | None = None
    lens_make: str | None = None
    lens_model: str | None = None
    body_serial: str | None = None
    orientation: int | None = None
    orientation_text: str | None = None
    exif_width: int | None = None
    exif_height: int | None = None
    width: int | None = None
    height: int | None = None
    file_format: str | None = None
    jpeg_quality: float | None = None
    jpeg_quality_exact: bool | None = None
    conversion: str | None = None
    other_images: int = 0
    quant_tables: dict[int, list[list[int]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def camera(self) -> str | None:
        """Normalised 'Make Model' camera name, or None without a Model tag."""
        return camera_name(self.make, self.model)

    def to_record(self, with_tables: bool = True) -> dict:
        """A flat JSON-ready dict (camera included)."""
        rec = asdict(self)
        rec["camera"] = self.camera
        rec["quant_tables"] = {str(k): v for k, v in self.quant_tables.items()}
        if not with_tables:
            rec.pop("quant_tables")
        return rec


def clean_text(value: object) -> str | None:
    """Decode an EXIF text value robustly: strip NULs and padding, drop undecodable bytes."""
    if value is None:
        return None
    text = value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
    text = text.replace("\x00", " ").replace("\ufffd", "").strip()
    text = " ".join(text.split())
    return text or None


def camera_name(make: str | None, model: str | None) -> str | None:
    """Join Make and Model the way people write camera names ('Canon EOS 5D', 'NIKON D700')."""
    make = clean_text(make)
    model = clean_text(model)
    if not model:
        return None
    if not make:
        return model
    first = make.split()[0].lower()
    if model.lower().startswith(make.lower()) or model.lower().startswith(first):
        return model
    return f"{make} {model}"


def _tag(tags: dict, *names: str) -> object | None:
    for n in names:
        if n in tags:
            return tags[n]
    return None


def _int_tag(tag: object | None) -> int | None:
    if tag is None:
        return None
    try:
        values = tag.values  # type: ignore[attr-defined]
        v = values[0] if isinstance(values, list | tuple) else values
        return int(v)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def parse_jpeg_qtables(data: bytes) -> dict[int, np.ndarray]:
    """Quantisation tables (id -> 8x8, natural order) from the DQT segments of a JPEG."""
    tables: dict[int, np.ndarray] = {}
    if data[:2] != b"\xff\xd8":
        return tables
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: tables come before
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        seg = data[pos + 4 : pos + 2 + length]
        if marker == 0xDB:
            i = 0
            while i < len(seg):
                pq, tq = seg[i] >> 4, seg[i] & 0x0F
                i += 1
                size = 128 if pq else 64
                if i + size > len(seg):
                    break
                if pq:
                    vals = np.frombuffer(seg[i : i + size], dtype=">u2").astype(np.int64)
                else:
                    vals = np.frombuffer(seg[i : i + size], dtype=np.uint8).astype(np.int64)
                i += size
                natural = np.zeros(64, dtype=np.int64)
                natural[_ZIGZAG] = vals
                tables[tq] = natural.reshape(8, 8)
        pos += 2 + length
    return tables


def _scaled_table(base: np.ndarray, quality: int) -> np.ndarray:
    scale = 5000.0 / quality if quality < 50 else 200.0 - 2.0 * quality
    return np.clip(np.floor((base * scale + 50.0) / 100.0), 1, 255)


def estimate_jpeg_quality(tables: dict[int, np.ndarray]) -> tuple[float | None, bool]:
    """Nearest IJG quality (1-100) to the file's tables, and whether it matches exactly.

    Cameras often use their own tables; then the figure is the closest libjpeg quality.
    """
    if 0 not in tables:
        return None, False
    best_q, best_err = None, float("inf")
    for q in range(1, 101):
        err = float(np.abs(_scaled_table(STD_LUMA, q) - tables[0]).mean())
        if 1 in tables:
            err += float(np.abs(_scaled_table(STD_CHROMA, q) - tables[1]).mean())
        if err < best_err:
            best_q, best_err = q, err
    return (float(best_q) if best_q is not None else None), best_err == 0.0


SERIAL_TAGS = (
    "EXIF BodySerialNumber",
    "Image Tag 0xC62F",  # DNG CameraSerialNumber
    "MakerNote SerialNumber",
    "MakerNote InternalSerialNumber",
    "MakerNote SerialNumberFormat2",
)
"""Where a body serial number is found (EXIF, DNG, maker notes), first match wins."""


def heif_exif(raw: bytes) -> bytes | None:
    """The TIFF-structured EXIF block of a HEIF file (read by libheif; no pixels decoded).

    exifread's own HEIF parser refuses files that libheif writes, so camid reads the block
    through pillow-heif and hands it to exifread as a TIFF stream. None when absent.
    """
    ensure_heif_opener()
    import pillow_heif

    with quiet_warnings():
        block = pillow_heif.open_heif(io.BytesIO(raw)).info.get("exif")
    if not block:
        return None
    return bytes(block[6:] if block[:6] == b"Exif\x00\x00" else block)


def _metadata_stream(raw: bytes) -> io.BytesIO:
    """What exifread reads: the file itself, or a HEIF file's EXIF block."""
    if is_heif(raw[:64]):
        return io.BytesIO(heif_exif(raw) or b"")
    return io.BytesIO(raw)


def read_exif(path: str | Path, data: bytes | None = None) -> ExifInfo:
    """Read EXIF and JPEG facts of one file. Raises InputError only if the file is unreadable.

    Malformed or oddly encoded metadata becomes warnings on the result, never an exception.
    HEIC/HEIF EXIF is read through pillow-heif; camera RAW files (DNG, NEF, CR2, ...) are
    described from LibRaw's header and their EXIF/maker notes (serial numbers).
    """
    p = Path(path)
    raw = data if data is not None else read_file_bytes(p)
    info = ExifInfo(path=str(p), sha256=sha256_bytes(raw))
    raw_file = is_raw(p, raw[:32])
    try:
        with quiet_warnings():
            tags = exifread.process_file(_metadata_stream(raw), details=raw_file)
    except Exception as exc:  # exifread and libheif raise many types on broken metadata
        tags = {}
        info.warnings.append(f"malformed EXIF ignored ({type(exc).__name__})")
    info.make = clean_text(_tag(tags, "Image Make"))
    info.model = clean_text(_tag(tags, "Image Model"))
    info.software = clean_text(_tag(tags, "Image Software"))
    info.datetime_original = clean_text(_tag(tags, "EXIF DateTimeOriginal", "Image DateTime"))
    info.lens_make = clean_text(_tag(tags, "EXIF LensMake"))
    info.lens_model = clean_text(_tag(tags, "EXIF LensModel"))
    info.body_serial = clean_text(_tag(tags, *SERIAL_TAGS))
    orient = _tag(tags, "Image Orientation")
    info.orientation = _int_tag(orient)
    if info.orientation is not None and not 1 <= info.orientation <= 8:
        info.warnings.append(f"invalid Orientation value {info.orientation}")
        info.orientation = None
    info.orientation_text = clean_text(orient) if info.orientation else None
    info.exif_width = _int_tag(_tag(tags, "EXIF ExifImageWidth"))
    info.exif_height = _int_tag(_tag(tags, "EXIF ExifImageLength"))

    if raw_file:
        _raw_facts(p, raw, info, bool(tags))
        return info
    try:
        with quiet_warnings(), open_image(raw) as img:
            info.width, info.height = img.size
            info.file_format = img.format
            info.conversion = describe_conversion(img, img.format)
            if img.format == "HEIF":
                info.other_images = heif_other_images(img)
                if img.info.get("original_orientation") in (5, 6, 7, 8):  # the stored grid
                    info.width, info.height = img.height, img.width
    except UnidentifiedImageError as exc:
        raise InputError(p, "not an image file (unrecognised format)") from exc
    except Exception:
        info.warnings.append("pixel data header could not be read")
    if info.file_format == "PNG":
        verify_png(p, raw)
    if raw[:2] == b"\xff\xd8":
        if raw.rstrip(b"\x00")[-2:] != b"\xff\xd9":
            info.warnings.append("JPEG has no end-of-image marker (truncated file?)")
        try:
            qt = parse_jpeg_qtables(raw)
        except (struct.error, ValueError):
            qt = {}
            info.warnings.append("malformed JPEG quantisation tables")
        info.quant_tables = {k: v.astype(int).tolist() for k, v in sorted(qt.items())}
        info.jpeg_quality, info.jpeg_quality_exact = estimate_jpeg_quality(qt)
    if not tags:
        info.warnings.append("no EXIF metadata")
    return info


def _raw_facts(p: Path, raw: bytes, info: ExifInfo, has_tags: bool) -> None:
    """Fill a RAW file's size, format and notes from LibRaw's header (InputError if LibRaw
    cannot parse it)."""
    from camid.io.raw import raw_header

    head = raw_header(p, raw)
    info.width, info.height = head.width, head.height
    info.file_format = head.format
    info.other_images = 1
    cfa = f"{head.cfa} " if head.cfa else "non-Bayer "
    info.conversion = (
        f"{head.format}: {cfa}colour-filter mosaic {head.width}x{head.height} (PRNU reads it); "
        "the CNN reads its embedded JPEG preview"
    )
    if info.orientation is None and head.orientation and head.orientation != 1:
        info.orientation = head.orientation
    if not has_tags:
        info.warnings.append("no EXIF metadata")


def quick_camera(source: bytes | str | Path) -> str | None:
    """'Make Model' from a file's EXIF (bytes or a path), None when absent or unreadable.

    Reads only up to the Model tag, so it is cheap enough for every photo of a dataset;
    the one quick camera read of camid (datasets, identify, fingerprints). Non-regular
    files (FIFOs, devices) and malformed metadata give None, never an error.
    """
    try:
        fh = (
            io.BytesIO(source)
            if isinstance(source, bytes | bytearray)
            else open_regular(source)  # a FIFO or device is never read
        )
        if is_heif(fh.read(64)):  # HEIF: its EXIF block, read through pillow-heif
            fh.seek(0)
            with fh:
                fh = _metadata_stream(fh.read())
        fh.seek(0)
        with fh, quiet_warnings():
            tags = exifread.process_file(fh, details=False, stop_tag="Model")
    except Exception:  # malformed metadata is "no EXIF", never an error
        return None
    return camera_name(clean_text(tags.get("Image Make")), clean_text(tags.get("Image Model")))
