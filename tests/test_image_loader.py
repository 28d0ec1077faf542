"""The one image loader: modes, orientation, and every kind of bad file."""

from __future__ import annotations

import contextlib
import hashlib

import numpy as np
import pytest
from PIL import Image

from camid.errors import InputError
from camid.io.image import load_image, sha256_file
from tests.conftest import natural_rgb, write_jpeg


def test_rgb_jpeg_loads_in_stored_orientation(tmp_path):
    arr = natural_rgb(60, 100)
    p = write_jpeg(tmp_path / "rot.jpg", arr, quality=95, orientation=6)
    img = load_image(p)
    # orientation 6 ("rotate 90 CW") is reported, never applied: the grid stays 60 x 100
    assert img.pixels.shape == (60, 100, 3)
    assert img.exif_orientation == 6
    assert img.format == "JPEG"
    assert img.sha256 == hashlib.sha256(p.read_bytes()).hexdigest() == sha256_file(p)
    assert np.abs(img.pixels.astype(int) - arr.astype(int)).mean() < 8  # JPEG + 4:2:0 loss
    assert not img.pixels.flags.writeable


def test_gray_option_returns_single_channel(tmp_path):
    p = write_jpeg(tmp_path / "a.jpg")
    img = load_image(p, gray=True)
    assert img.pixels.ndim == 2 and img.pixels.dtype == np.uint8


@pytest.mark.parametrize(
    ("mode", "expect_note"),
    [("L", "replicated"), ("P", "palette"), ("RGBA", "alpha"), ("LA", "alpha")],
)
def test_modes_become_rgb8(tmp_path, mode, expect_note):
    src = Image.fromarray(natural_rgb(30, 40))
    p = tmp_path / f"img_{mode}.png"
    src.convert(mode).save(p)
    img = load_image(p)
    assert img.pixels.shape == (30, 40, 3) and img.pixels.dtype == np.uint8
    assert img.original_mode == mode
    assert expect_note in (img.conversion or "")


def test_cmyk_jpeg(bad_files):
    img = load_image(bad_files["cmyk"])
    assert img.original_mode == "CMYK"
    assert img.pixels.shape == (40, 50, 3)
    assert "CMYK" in img.conversion


def test_16bit_png_scaled_not_clipped(bad_files):
    img = load_image(bad_files["gray16"])
    assert img.original_mode.startswith("I")
    assert img.pixels.shape == (40, 50, 3)
    # a linear 0..65535 ramp must map onto the full 0..255 range, not saturate at 255
    assert img.pixels.min() == 0 and img.pixels.max() == 255
    assert np.unique(img.pixels).size > 200


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("truncated", "truncated"),
        ("empty", "empty file"),
        ("text", "not an image"),
        ("bomb", "decompression bomb"),
        ("dangling", "no such file"),
        ("folder", "directory"),
    ],
)
def test_bad_files_give_one_line_input_error(bad_files, name, reason):
    with pytest.raises(InputError) as err:
        load_image(bad_files[name])
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(str(bad_files[name]))
    assert reason in msg
    assert err.value.exit_code == 3


def test_bomb_limit_is_configurable(tmp_path):
    p = tmp_path / "big.png"
    Image.fromarray(natural_rgb(100, 100)).save(p)
    assert load_image(p).width == 100
    with pytest.raises(InputError, match="limit"):
        load_image(p, max_pixels=5000)


def test_loader_never_modifies_input(bad_files):
    before = {k: p.read_bytes() for k, p in bad_files.items() if p.is_file()}
    for p in bad_files.values():
        with contextlib.suppress(InputError):
            load_image(p)
    after = {k: p.read_bytes() for k, p in bad_files.items() if p.is_file()}
    assert before == after
