"""The one image loader of camid: read-only, bomb-safe, explicit about modes.

Pixel data stays in stored (sensor) orientation: the EXIF Orientation tag is reported,
never applied, because PRNU and CNN camera traces live in the sensor's pixel grid. HEIC/HEIF
files are decoded by pillow-heif (libheif applies the file's rotation; camid undoes it) and
camera RAW files by rawpy (camid/io/raw.py); both are imported only when such a file is read
(camid/io/formats.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import stat
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from camid.errors import InputError
from camid.io.formats import ensure_heif_opener, is_heif, is_raw
from camid.io.inputs import file_kind

DEFAULT_MAX_PIXELS = 120_000_000
"""Refuse images larger than this many pixels (a 120 MP photo is already larger than any
phone's); the header is checked before any pixel is decoded."""

ImageFile.LOAD_TRUNCATED_IMAGES = False

# Pillow warns above Image.MAX_IMAGE_PIXELS (89.5 MP by default) and refuses above twice that.
# camid checks the header against its own limit, so Pillow's warning threshold is raised to
# camid's default (never lowered, never disabled): 100 MP camera files open quietly, and
# Pillow's own refusal still stands above 240 MP for every caller in the process.
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < DEFAULT_MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS

ANIMATED_FORMATS = frozenset({"GIF", "PNG", "WEBP"})
"""Formats whose extra frames are an animation (camid analyses the first frame only)."""

_WARNINGS_LOCK = threading.RLock()


@dataclass(frozen=True)
class LoadedImage:
    """Pixels of one image file with the facts needed to cite it.

    `pixels` are HxWx3 (or HxW grey) uint8, except for a RAW file's colour-filter mosaic
    (`camid.io.raw.load_raw_mosaic`: HxW float32). `codec` names the lossy coding whose
    traces the pixels carry ("JPEG", "HEVC"; None: lossless or raw); `other_images` counts
    the images of the container beside the one analysed (HEIF, RAW previews).
    """

    path: Path
    pixels: np.ndarray
    sha256: str
    format: str | None
    original_mode: str
    exif_orientation: int | None
    conversion: str | None = None
    other_images: int = 0
    codec: str | None = None

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


@contextmanager
def quiet_warnings() -> Iterator[list[str]]:
    """Collect the Python warnings raised inside the block (one line each) instead of
    letting them reach stderr; the list is filled when the block ends.

    Decoders warn about what they tolerate ("Corrupt EXIF data", bomb thresholds); camid
    decides itself what is an error and what is a note. A lock keeps concurrent decoding
    threads from undoing each other's warning filters.
    """
    notes: list[str] = []
    with _WARNINGS_LOCK, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield notes
        finally:
            notes.extend(" ".join(str(w.message).split()) for w in caught)


def _open_regular(p: Path, what: str) -> int:
    """Open read-only without blocking and return the descriptor of a regular file.

    O_NONBLOCK makes opening a FIFO return at once (no writer needed); fstat then refuses
    anything that is not a regular file, so a pipe or /dev/zero is never read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(p, flags)
    except FileNotFoundError as exc:
        raise InputError(p, "no such file") from exc
    except PermissionError as exc:
        raise InputError(p, "permission denied") from exc
    except IsADirectoryError as exc:
        raise _directory_error(p, what) from exc
    except OSError as exc:
        raise InputError(p, f"cannot read file ({exc.strerror or exc})") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _directory_error(p, what)
        if not stat.S_ISREG(mode):
            raise InputError(p, f"not a regular file: {file_kind(mode)}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _directory_error(p: Path, what: str) -> InputError:
    hint = " (use -r to read folders)" if what == "an image" else ""
    return InputError(p, f"is a directory, not {what} file{hint}")


def open_regular(path: str | Path, what: str = "an image") -> BinaryIO:
    """Open a regular file read-only (binary); InputError for anything else, never a hang."""
    p = Path(path)
    return os.fdopen(_open_regular(p, what), "rb")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a regular file, read in chunks, opened read-only.

    Raises InputError for missing files and for anything that is not a regular file.
    """
    h = hashlib.sha256()
    with open_regular(path, "a") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_file_bytes(path: str | Path, what: str = "an image") -> bytes:
    """Read a whole input file read-only, turning OS errors into one-line InputErrors.

    Only regular files are read: a FIFO, device or socket is refused before any byte is
    read (never a hang, never an endless read). `what` names the kind of file in the
    messages ("an image", "a fingerprint", ...).
    """
    p = Path(path)
    try:
        with open_regular(p, what) as fh:
            data = fh.read()
    except OSError as exc:
        raise InputError(p, f"cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise InputError(p, "empty file (0 bytes)")
    return data


_GREY16 = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _mode_note(mode: str, rawmode: str = "") -> str | None:
    """What the loader does to pixels of a Pillow mode (None: they are used as they are)."""
    if mode == "RGB":
        return "16-bit RGB reduced to 8-bit (top byte)" if "16" in rawmode else None
    if mode in _GREY16:
        return f"16-bit {mode} scaled to 8-bit grey"
    if mode == "F":
        return "float image clipped to 8-bit grey"
    if mode in ("L", "1"):
        return f"{mode} replicated to 3 channels"
    if mode == "LA":
        return "LA: alpha dropped"
    if mode in ("P", "PA"):
        return "palette expanded to RGB" + (" (alpha dropped)" if mode == "PA" else "")
    if mode in ("RGBA", "RGBX", "RGBa"):
        return f"{mode}: alpha dropped"
    if mode == "CMYK":
        return "CMYK converted to RGB (naive)"
    if mode in ("YCbCr", "LAB", "HSV"):
        return f"{mode} converted to RGB"
    return None


def _rawmode(img: Image.Image) -> str:
    """The decoder's raw mode (e.g. 'RGB;16B' for a 16-bit RGB PNG); call before load()."""
    try:
        args = img.tile[0][3]
    except (IndexError, TypeError, AttributeError):
        return ""
    if isinstance(args, tuple):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def describe_conversion(img: Image.Image, fmt: str | None = None) -> str | None:
    """What `load_image` will do to the pixels of an opened (not yet loaded) image, from
    its header alone: mode conversions and "first frame of N" (None: nothing)."""
    if fmt == "HEIF":
        return _heif_note(img)
    return _join_notes(
        _frames_note(_frame_count(img, fmt), fmt), _mode_note(img.mode, _rawmode(img))
    )


def open_image(raw: bytes) -> Image.Image:
    """Pillow's lazy open of a file's bytes (header read, no pixels decoded); HEIF files get
    pillow-heif's opener registered first."""
    if is_heif(raw[:64]):
        ensure_heif_opener()
    return Image.open(io.BytesIO(raw))


def codec_of(fmt: str | None) -> str | None:
    """The lossy coding whose traces a format's pixels carry (None: lossless or unknown)."""
    return {"JPEG": "JPEG", "MPO": "JPEG", "HEIF": "HEVC", "WEBP": None}.get(fmt or "")


def heif_other_images(img: Image.Image) -> int:
    """Images of a HEIF container beside the primary one (top-level images, thumbnails,
    depth maps)."""
    n = int(getattr(img, "n_frames", 1) or 1) - 1
    return n + len(img.info.get("thumbnails") or ()) + len(img.info.get("depth_images") or ())


def heif_error(raw: bytes) -> str:
    """Why libheif refuses a file that says it is a HEIF (Pillow only says 'unidentified')."""
    import pillow_heif

    try:
        with quiet_warnings():
            pillow_heif.open_heif(io.BytesIO(raw))
    except Exception as exc:  # libheif reports through ValueError / RuntimeError
        text = decode_reason(exc).removeprefix("Invalid input: ")
        if "end of file" in text.lower() or "insufficient input" in text.lower():
            return f"truncated file ({text})"
        return text
    return "Pillow could not open it"


def _heif_note(img: Image.Image) -> str | None:
    bits = int(img.info.get("bit_depth") or 8)
    turn = img.info.get("original_orientation")
    others = heif_other_images(img)
    return _join_notes(
        f"primary image of a HEIF with {others} other image(s)" if others else None,
        f"{bits}-bit HEIF reduced to 8-bit" if bits > 8 else None,
        f"HEIF rotation (orientation {turn}) undone: pixels in the coded orientation"
        if turn in _UNDO
        else None,
        _mode_note(img.mode),
    )


_UNDO = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}
"""The transposition that takes an image shown with EXIF orientation N back to its stored
grid (libheif always applies a HEIF's rotation/mirror when decoding)."""


def _frames_note(frames: int, fmt: str | None) -> str | None:
    if frames <= 1:
        return None
    return f"first {'page' if fmt == 'TIFF' else 'frame'} of {frames}"


def _join_notes(*notes: str | None) -> str | None:
    kept = [n for n in notes if n]
    return "; ".join(kept) if kept else None


def _to_rgb8(img: Image.Image, path: Path) -> tuple[np.ndarray, str | None]:
    """Convert any supported PIL mode to HxWx3 uint8; returns a note on what the data
    itself required (e.g. NaN values), beyond what `_mode_note` says of the mode."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8), None
    if mode in _GREY16:
        arr = np.asarray(img)
        if mode == "I":
            peak = int(arr.max()) if arr.size else 0
            arr = arr.astype(np.float64)
            scale = 257.0 if peak > 255 else 1.0
            grey8 = np.clip(np.round(arr / scale), 0, 255).astype(np.uint8)
        else:
            grey8 = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2), None
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(arr)
        bad = int(arr.size - np.count_nonzero(finite))
        arr = np.where(finite, arr, 0.0)
        scale = 255.0 if arr.size and float(arr.max()) <= 1.0 else 1.0
        grey8 = np.clip(np.round(arr * scale), 0, 255).astype(np.uint8)
        extra = f"{bad} NaN/infinite value(s) set to 0" if bad else None
        return np.repeat(grey8[:, :, None], 3, axis=2), extra
    if mode in ("L", "1"):
        grey = np.asarray(img.convert("L"), dtype=np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), None
    if mode == "LA":
        grey = np.asarray(img.getchannel("L"), dtype=np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2), None
    if _mode_note(mode) is not None:  # palette, alpha, CMYK, YCbCr, LAB, HSV
        return np.asarray(img.convert("RGB"), dtype=np.uint8), None
    raise InputError(path, f"unsupported image mode {mode!r}")


def load_image(
    path: str | Path,
    *,
    gray: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
    purpose: str = "analysis",
    data: bytes | None = None,
) -> LoadedImage:
    """Decode an image file read-only into uint8 RGB (or grey) in stored orientation.

    Raises InputError with a one-line reason for missing, empty, non-regular, non-image,
    truncated or corrupt (any decoder error; PNG chunk checksums are verified), oversized
    (decompression bomb, judged from the header) or unsupported files, and for images whose
    shorter side is below `min_side` (too small for `purpose`, also judged from the header).
    Decoder warnings never reach stderr; what was done to the pixels is in `conversion`.
    """
    p = Path(path)
    raw = data if data is not None else read_file_bytes(p)
    if is_raw(p, raw[:32]):
        from camid.io.raw import load_raw_preview

        return load_raw_preview(
            p, raw, gray=gray, max_pixels=max_pixels, min_side=min_side, purpose=purpose
        )
    return decode_image(
        p, raw, gray=gray, max_pixels=max_pixels, min_side=min_side, purpose=purpose
    )


def load_sensor_pixels(
    path: str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
) -> LoadedImage:
    """Pixels as close to the sensor as the file holds, for PRNU: a camera RAW file's
    colour-filter mosaic (HxW float32, see `camid.io.raw.load_raw_mosaic`), a 10/12-bit
    HEIF at full precision (HxWx3 float32 on the 0-255 scale), else what `load_image`
    gives (uint8 RGB in stored orientation)."""
    p = Path(path)
    raw = data if data is not None else read_file_bytes(p)
    if is_raw(p, raw[:32]):
        from camid.io.raw import load_raw_mosaic

        return load_raw_mosaic(p, raw, max_pixels=max_pixels)
    img = decode_image(p, raw, max_pixels=max_pixels)
    if img.format == "HEIF" and img.conversion and "-bit HEIF reduced to 8-bit" in img.conversion:
        return _heif_full_precision(img, raw)
    return img


def _heif_full_precision(img: LoadedImage, raw: bytes) -> LoadedImage:
    """The primary image of a high-bit-depth HEIF again, kept as float32 on the 0-255 scale
    (no rounding to 8 bits), in the same stored orientation as `img` (already size-checked
    and decoded once, so the file is known to be sound)."""
    import pillow_heif

    try:
        with quiet_warnings():
            heif = pillow_heif.open_heif(io.BytesIO(raw), convert_hdr_to_8bit=False)
            values = np.asarray(heif)[..., :3].astype(np.float32) / 257.0  # 16-bit scale
    except (ValueError, RuntimeError, OSError) as exc:
        raise InputError(img.path, f"cannot decode image: {decode_reason(exc)}") from exc
    turn = img.exif_orientation  # for a HEIF: the rotation libheif applied (see decode_image)
    if turn in _UNDO and img.conversion and "rotation" in img.conversion:
        values = np.stack(
            [
                np.asarray(Image.fromarray(values[..., c], "F").transpose(_UNDO[turn]))
                for c in range(values.shape[2])
            ],
            axis=2,
        )
    if values.shape[:2] != img.pixels.shape[:2]:
        return img  # libheif disagreed with itself: keep the 8-bit decode
    values = np.ascontiguousarray(values)
    values.setflags(write=False)
    note = img.conversion.replace("HEIF reduced to 8-bit", "HEIF kept at full precision (float)")
    return dataclasses.replace(img, pixels=values, conversion=note)


def decode_image(
    p: Path,
    raw: bytes,
    *,
    gray: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
    purpose: str = "analysis",
) -> LoadedImage:
    """`load_image` of bytes that Pillow (with pillow-heif) decodes; RAW files excluded."""
    digest = sha256_bytes(raw)
    try:
        with quiet_warnings():
            img = open_image(raw)
            width, height = img.size
            fmt = img.format
            check_size(p, width, height, max_pixels, min_side, purpose)
            if fmt == "PNG":
                verify_png(p, raw)
            planned = describe_conversion(img, fmt)
        img.load()  # outside the lock: decoding threads run in parallel
        with quiet_warnings():
            orientation = _orientation(img)  # after load(): never decodes, never swallows
            others = 0
            if fmt == "HEIF":
                others = heif_other_images(img)
                turn = img.info.get("original_orientation")
                if turn in _UNDO:
                    img = img.transpose(_UNDO[turn])
                    orientation = int(turn)
            pixels, extra = _to_rgb8(img, p)
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(p, f"refused as a possible decompression bomb ({exc})") from exc
    except UnidentifiedImageError as exc:
        if is_heif(raw[:64]):
            raise InputError(p, f"cannot decode HEIF: {heif_error(raw)}") from exc
        raise InputError(p, "not an image file (unrecognised format)") from exc
    except (
        OSError,
        SyntaxError,
        ValueError,
        EOFError,
        RuntimeError,  # pillow-heif's libheif errors
        struct.error,
        zlib.error,
    ) as exc:
        raise InputError(p, f"cannot decode image: {decode_reason(exc)}") from exc
    note = _join_notes(planned, extra)
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
        other_images=others,
        codec=codec_of(fmt),
    )


def check_size(
    p: Path, width: int, height: int, max_pixels: int, min_side: int, purpose: str
) -> None:
    """Refuse from the header: zero-sized, bombs above `max_pixels`, sides below `min_side`."""
    if width * height > max_pixels:
        raise InputError(
            p,
            f"image is {width}x{height} = {width * height / 1e6:.0f} MP, above the "
            f"{max_pixels / 1e6:.0f} MP limit (possible decompression bomb)",
        )
    if width == 0 or height == 0:
        raise InputError(p, "image has zero width or height")
    if min(width, height) < min_side:
        raise InputError(
            p,
            f"image is {width}x{height}, too small for {purpose} "
            f"(needs at least {min_side}x{min_side})",
        )


_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _png_expected_bytes(width: int, height: int, depth: int, colour: int, interlace: int) -> int:
    """Bytes of filtered scanlines a PNG's IDAT stream must inflate to (filter bytes included)."""
    bits = depth * _PNG_CHANNELS.get(colour, 1)

    def size(w: int, h: int) -> int:
        return 0 if w <= 0 or h <= 0 else h * (1 + (w * bits + 7) // 8)

    if not interlace:
        return size(width, height)
    return sum(
        size((width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy) for x0, y0, dx, dy in _ADAM7
    )


def verify_png(p: Path, raw: bytes) -> None:
    """Refuse a PNG that fails its chunk checksums, ends early, or whose image data
    inflates to fewer bytes than its rows need (InputError naming the file).

    Pillow checks CRCs only in verify(), which needs its own freshly opened image, and pads
    a zlib stream that ends before the last row with zeros; both are checked here.
    """
    try:
        with quiet_warnings():
            Image.open(io.BytesIO(raw)).verify()
    except Exception as exc:  # Pillow raises SyntaxError, OSError, struct.error ...
        raise InputError(p, f"corrupt PNG: {decode_reason(exc)}") from exc
    _check_png_data_length(p, raw)


def _check_png_data_length(p: Path, raw: bytes) -> None:
    """Refuse a PNG whose image data inflates to fewer bytes than its rows need.

    Pillow fills the missing rows with zeros without a word; the stream is inflated once
    more here in 1 MiB pieces (never held whole), after verify() checked every CRC.
    """
    pos, ihdr, inflater, produced = 8, None, zlib.decompressobj(), 0
    while pos + 8 <= len(raw):
        length, kind = struct.unpack(">I4s", raw[pos : pos + 8])
        data = raw[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", data[:13])
        elif kind == b"IDAT" and not inflater.eof:
            produced += len(inflater.decompress(data, 1 << 20))
            while inflater.unconsumed_tail and not inflater.eof:
                produced += len(inflater.decompress(inflater.unconsumed_tail, 1 << 20))
        elif kind == b"IEND":
            break
    if ihdr is None:
        return
    width, height, depth, colour, _, _, interlace = ihdr
    expected = _png_expected_bytes(width, height, depth, colour, interlace)
    if produced < expected:
        raise InputError(
            p,
            f"corrupt PNG: image data ends early ({produced} of {expected} bytes; "
            "the missing rows would be zeros)",
        )


def _frame_count(img: Image.Image, fmt: str | None) -> int:
    """Frames of an animation or pages of a TIFF (1 for everything else, MPO included:
    a camera JPEG's extra MPF pictures are previews, not part of the photo)."""
    if fmt not in ANIMATED_FORMATS and fmt != "TIFF":
        return 1
    n = int(getattr(img, "n_frames", 1) or 1)
    if n > 1:
        img.seek(0)
    return n


def decode_reason(exc: BaseException) -> str:
    """One line saying why a decoder gave up."""
    msg = " ".join(str(exc).split()) or type(exc).__name__
    low = msg.lower()
    if "truncated" in low:
        return "truncated image data (file is incomplete)"
    if "checksum" in low or "crc" in low:
        return f"checksum mismatch ({msg})"
    return msg


def _orientation(img: Image.Image) -> int | None:
    """EXIF Orientation (1-8) if present and sane, else None. Call after `img.load()`:
    for PNG, getexif() loads the pixels itself and would hide a decoding error."""
    try:
        value = img.getexif().get(0x0112)
    except Exception:  # malformed EXIF is "no orientation", the pixels are already decoded
        return None
    try:
        value = int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return value if value is not None and 1 <= value <= 8 else None
