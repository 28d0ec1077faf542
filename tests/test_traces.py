"""JpegLattice: the quantisation steps of a JPEG's luma table show in its decoded pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from camid.io.exif import STD_LUMA, _scaled_table
from camid.models.traces import DEFAULT_STEPS, JpegLattice, dct_basis


def _scene(rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """Textured RGB content (smooth gradients plus noise), uint8."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = 60 + 120 * (0.5 + 0.5 * np.sin(6 * xx + 3 * yy))[..., None] * np.array([1, 0.8, 0.6])
    return np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)


def _jpeg_roundtrip(px: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "JPEG", quality=quality, subsampling=2)
    return np.array(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _features(px: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(px).permute(2, 0, 1)[None].float() / 255.0 * 2.0 - 1.0
    return JpegLattice()(x).reshape(len(DEFAULT_STEPS), 63).numpy()


def test_dct_basis_is_orthonormal():
    b = dct_basis().reshape(64, 64).double()
    assert torch.allclose(b @ b.T, torch.eye(64, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("quality", [75, 90])
def test_lattice_peaks_at_the_table_step(quality):
    rng = np.random.default_rng(quality)
    feats = _features(_jpeg_roundtrip(_scene(rng), quality))
    table = _scaled_table(STD_LUMA, quality).reshape(-1)[1:]  # AC steps, row-major
    hits, misses = [], []
    for f, step in enumerate(table.astype(int)):
        if step in DEFAULT_STEPS:
            hits.append(feats[DEFAULT_STEPS.index(step), f])
            # a step sharing no factor with the true one: no lattice there
            for other in DEFAULT_STEPS:
                if np.gcd(other, step) == 1 and other > 2:
                    misses.append(feats[DEFAULT_STEPS.index(other), f])
    assert len(hits) >= 5
    assert np.median(hits) > 0.8
    assert np.abs(np.median(misses)) < 0.1


def test_unquantised_pixels_show_no_lattice():
    rng = np.random.default_rng(3)
    feats = _features(_scene(rng))  # never compressed
    assert np.abs(feats).mean() < 0.1


def test_lattice_tells_qualities_apart():
    rng = np.random.default_rng(5)
    scene = _scene(rng)
    a = _features(_jpeg_roundtrip(scene, 90))
    b = _features(_jpeg_roundtrip(scene, 92))
    c = _features(_jpeg_roundtrip(_scene(np.random.default_rng(6)), 90))
    # the same quality on other content is closer than a neighbouring quality on the same
    assert np.abs(a - c).mean() < np.abs(a - b).mean()


@pytest.mark.parametrize("quality", [75, 93])
def test_detect_jpeg_grid_finds_the_grid_of_a_cropped_photo(quality):
    from camid.models.traces import detect_jpeg_grid

    rng = np.random.default_rng(quality)
    photo = _jpeg_roundtrip(_scene(rng, 320), quality)
    assert detect_jpeg_grid(photo) == (0, 0)  # a camera original
    assert detect_jpeg_grid(photo[5:, 3:]) == (3, 5)  # cropped 5 rows, 3 columns
    assert detect_jpeg_grid(photo[1:, 6:]) == (7, 2)


def test_detect_jpeg_grid_leaves_uncompressed_pixels_alone():
    from camid.models.traces import detect_jpeg_grid

    rng = np.random.default_rng(8)
    assert detect_jpeg_grid(_scene(rng, 320)[3:, 5:]) == (0, 0)
    assert detect_jpeg_grid(_scene(rng, 20)) == (0, 0)  # too small to tell
