"""Shared fixtures: an isolated camid home, real image files of every awkward kind."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own $CAMID_HOME and $TORCH_HOME."""
    home = tmp_path_factory.mktemp("camid_home")
    monkeypatch.setenv("CAMID_HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(home / "torch"))
    monkeypatch.delenv("CAMID_DEBUG", raising=False)
    return home


def natural_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-plus-texture RGB uint8 test image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 120 + 60 * np.sin(x / 17.0) * np.cos(y / 23.0)
    img = np.stack([base, base * 0.9 + 10, base * 0.8 + 20], axis=2)
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_exif(
    make: str | bytes | None = "Acme",
    model: str | bytes | None = "Snap 100",
    orientation: int | None = None,
    software: str | None = "fw 1.0",
) -> bytes:
    """EXIF bytes via Pillow with the given tags."""
    ex = Image.Exif()
    if make is not None:
        ex[0x010F] = make
    if model is not None:
        ex[0x0110] = model
    if software is not None:
        ex[0x0131] = software
    if orientation is not None:
        ex[0x0112] = orientation
    return ex.tobytes()


def write_jpeg(path: Path, arr: np.ndarray | None = None, quality: int = 90, **exif_kw) -> Path:
    """Write a JPEG (with EXIF unless exif_kw has exif=None)."""
    arr = natural_rgb(96, 128) if arr is None else arr
    exif = exif_kw.pop("exif", "default")
    kw = {}
    if exif == "default":
        kw["exif"] = make_exif(**exif_kw)
    elif exif is not None:
        kw["exif"] = exif
    Image.fromarray(arr).save(path, "JPEG", quality=quality, **kw)
    return path


def png_bomb_bytes(width: int = 60000, height: int = 60000) -> bytes:
    """A tiny PNG whose header claims a huge 1-bit image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class PayloadMarker:
    """Pickling this object makes unpickling run `open(marker, 'w')` (a code-execution test)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def evil_pickle(path: Path, marker: Path) -> Path:
    """A torch-style pickle that creates `marker` if anyone unpickles it."""
    import pickle

    path.write_bytes(pickle.dumps({"weight": PayloadMarker(marker)}, protocol=2))
    return path


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    """A folder of awkward inputs, each one real bytes on disk."""
    d = tmp_path / "bad"
    d.mkdir()
    good = write_jpeg(d / "good.jpg")
    data = good.read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is not an image\n")
    (d / "bomb.png").write_bytes(png_bomb_bytes())
    os.symlink(d / "missing-target.jpg", d / "dangling.jpg")
    (d / "folder.jpg").mkdir()
    buf = io.BytesIO()
    Image.fromarray(natural_rgb(40, 50)).convert("CMYK").save(buf, "JPEG", quality=92)
    (d / "cmyk.jpg").write_bytes(buf.getvalue())
    arr16 = (np.linspace(0, 65535, 40 * 50).reshape(40, 50)).astype(np.uint16)
    Image.fromarray(arr16).save(d / "gray16.png")
    return {p.stem: p for p in d.iterdir()}
