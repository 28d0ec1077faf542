"""`camid probe`: pixel probes (binary masks, colour jitter, greyscale), their hook in the
engine (training crops and views), the probe runs and the adversarial attack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from camid.data.augment import (
    BINARY_WINDOW,
    PIXEL_PROBES,
    apply_pixel_probe,
    binarise,
    colour_jitter,
    greyscale,
)
from camid.data.patches import CropRecipe, training_crop
from camid.engine.data import ViewSpec, extract_views
from camid.errors import UsageError
from tests.conftest import natural_rgb


def _direct_binary(px: np.ndarray, window: int) -> np.ndarray:
    """Local-mean threshold written out the slow way: loops over every window."""
    grey = np.rint(px[..., 0] * 0.299 + px[..., 1] * 0.587 + px[..., 2] * 0.114)
    r = window // 2
    padded = np.pad(grey, r, mode="symmetric")
    out = np.zeros(grey.shape, dtype=np.uint8)
    for i in range(grey.shape[0]):
        for j in range(grey.shape[1]):
            if grey[i, j] > padded[i : i + window, j : j + window].mean():
                out[i, j] = 255
    return out


@pytest.mark.parametrize("window", [BINARY_WINDOW, 3])
def test_binary_is_0_255_and_equals_direct_computation(window: int) -> None:
    px = natural_rgb(21, 26, seed=3)
    px[3:9, 4:12] = 10  # a dark block: flat regions compare with their own mean
    out = binarise(px, window=window)
    assert out.dtype == np.uint8 and out.shape == px.shape
    assert set(np.unique(out).tolist()) <= {0, 255}
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    np.testing.assert_array_equal(out[..., 0], _direct_binary(px, window))
    assert 0 < (out == 255).mean() < 1


def test_binary_refuses_even_window() -> None:
    with pytest.raises(UsageError, match="odd"):
        binarise(natural_rgb(8, 8), window=4)


def test_grey_has_equal_channels_and_luma() -> None:
    px = natural_rgb(12, 17, seed=1)
    out = greyscale(px)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
    expect = np.rint(px.astype(float) @ np.array([0.299, 0.587, 0.114]))
    np.testing.assert_array_equal(out[..., 0], expect.astype(np.uint8))


def test_colour_jitter_is_random_repeatable_and_keeps_structure() -> None:
    px = natural_rgb(32, 32, seed=2)
    a = colour_jitter(px, np.random.default_rng(1))
    b = colour_jitter(px, np.random.default_rng(1))
    c = colour_jitter(px, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == px.shape
    # the global colour moves between draws ...
    assert np.abs(a.reshape(-1, 3).mean(0) - c.reshape(-1, 3).mean(0)).max() > 2
    # ... while the spatial structure (grey levels' ordering) stays
    g0, g1 = greyscale(px)[..., 0].ravel(), greyscale(a)[..., 0].ravel()
    assert np.corrcoef(g0.astype(float), g1.astype(float))[0, 1] > 0.9


def test_unknown_pixel_probe_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown pixel probe"):
        apply_pixel_probe("sepia", natural_rgb(8, 8), np.random.default_rng(0))
    assert set(PIXEL_PROBES) == {"binary", "colour", "grey"}


def test_probe_reaches_training_crops_and_views() -> None:
    px = natural_rgb(96, 128, seed=4)
    rng = np.random.default_rng(0)
    crop = training_crop(px, CropRecipe(patch=32, large=64, probe="binary"), rng)
    assert crop.shape == (32, 32, 3) and set(np.unique(crop).tolist()) <= {0, 255}
    views = extract_views(px, ViewSpec(32, "grid", 12, probe="grey"))
    plain = extract_views(px, ViewSpec(32, "grid", 12))
    assert views.shape == plain.shape
    assert (views[..., 0] == views[..., 2]).all()
    np.testing.assert_array_equal(views[0], greyscale(plain[0]))
    # random probes: the same image gives the same views every time
    j1 = extract_views(px, ViewSpec(32, "grid", 12, probe="colour"))
    j2 = extract_views(px, ViewSpec(32, "grid", 12, probe="colour"))
    np.testing.assert_array_equal(j1, j2)
    assert not np.array_equal(j1, plain)


def test_training_under_a_probe_stores_it_and_views_follow(tmp_path: Path) -> None:
    """TrainConfig.probe goes into the card's recipe; identify/evaluate then see the views
    through the same probe (default_view_spec reads it back)."""
    from camid.data.manifest import read_manifest
    from camid.engine.predict import default_view_spec
    from camid.engine.train import TrainConfig, train
    from tests.test_train_fakes import make_fake_cameras

    csv = make_fake_cameras(
        tmp_path / "d", ["Acme Alpha", "Bolt B2"], per_camera=4, test_per_camera=1, size=(64, 64)
    )
    cfg = TrainConfig(
        name="bin", arch="patchnet_hp_tiny", patch=32, patches_per_image=4, epochs=1,
        manipulate=False, val_fraction=0.34, probe="binary",
    )  # fmt: skip
    res = train(cfg, read_manifest(csv), home=tmp_path / "home")
    assert res.card.recipe["probe"] == "binary"
    assert res.card.recipe["views"]["probe"] == "binary"
    spec = default_view_spec(res.card)
    assert spec.probe == "binary"
    views = extract_views(natural_rgb(64, 64), spec)
    assert set(np.unique(views).tolist()) <= {0, 255}
    with pytest.raises(UsageError, match="unknown pixel probe"):
        train(TrainConfig(name="x", probe="sepia"), read_manifest(csv), home=tmp_path / "h2")
