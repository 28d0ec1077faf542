"""Which decoder a file needs: HEIC/HEIF (pillow-heif) and camera RAW (rawpy) beside Pillow.

Both libraries are imported only when a file of theirs is read, so `camid --version` and
commands on JPEGs never load them. A HEIF file is recognised by its ISO-BMFF `ftyp` brand;
a RAW file by its extension or, for the formats with their own signature (CR3, RAF, ORF,
RW2), by its first bytes. TIFF-based RAWs (DNG, NEF, CR2, ARW, ...) need the extension:
their first IFD is often a small RGB thumbnail that Pillow would happily open instead of
the photo.
"""

from __future__ import annotations

import threading
from pathlib import Path

HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
)
"""ftyp brands of HEVC-coded HEIF images and sequences (mif1/msf1: generic HEIF)."""

HEIF_EXTENSIONS: frozenset[str] = frozenset({".heic", ".heif", ".hif"})

RAW_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".dng", ".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".orf",
        ".rw2", ".raf", ".pef", ".srw", ".3fr", ".iiq", ".erf", ".mrw", ".kdc", ".dcr",
        ".mef", ".mos", ".x3f", ".rwl",
    }
)  # fmt: skip
"""Camera RAW extensions read through LibRaw (rawpy)."""

_RAW_MAGIC = (
    (4, b"ftypcrx "),  # Canon CR3 (ISO-BMFF)
    (0, b"FUJIFILMCCD-RAW"),  # Fujifilm RAF
    (0, b"IIRO"),  # Olympus ORF
    (0, b"IIRS"),
    (0, b"MMOR"),
    (0, b"IIU\x00"),  # Panasonic RW2
)

_HEIF_LOCK = threading.Lock()
_HEIF_READY = False


def is_heif(head: bytes) -> bool:
    """True when the bytes start an ISO-BMFF file whose brands say HEVC-coded HEIF."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return False
    if head[8:12] in HEIF_BRANDS:
        return True
    size = int.from_bytes(head[:4], "big")
    compatible = head[16 : min(size, len(head), 64)]
    return any(compatible[i : i + 4] in HEIF_BRANDS for i in range(0, len(compatible) - 3, 4))


def is_raw(path: str | Path, head: bytes = b"") -> bool:
    """True for a camera RAW file: a RAW extension, or a RAW signature in `head`."""
    if Path(path).suffix.lower() in RAW_EXTENSIONS:
        return True
    return any(head[at : at + len(sig)] == sig for at, sig in _RAW_MAGIC)


def raw_format_name(path: str | Path, head: bytes = b"") -> str:
    """The RAW format's usual name ('DNG', 'NEF', 'CR3', ...), from the extension or magic."""
    suffix = Path(path).suffix.lower()
    if suffix in RAW_EXTENSIONS:
        return suffix[1:].upper()
    names = {b"ftypcrx ": "CR3", b"FUJIFILMCCD-RAW": "RAF", b"IIU\x00": "RW2"}
    for at, sig in _RAW_MAGIC:
        if head[at : at + len(sig)] == sig:
            return names.get(sig, "ORF")
    return "RAW"


def ensure_heif_opener() -> None:
    """Register pillow-heif's HEIF opener with Pillow once (thread-safe, idempotent).

    Pixels are decoded only for the primary image; thumbnails and depth maps are counted.
    """
    global _HEIF_READY
    if _HEIF_READY:
        return
    with _HEIF_LOCK:
        if not _HEIF_READY:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _HEIF_READY = True
