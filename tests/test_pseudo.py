"""Pseudo-cameras: clustering real synthetic camera JPEGs (and copies) by their pixel traces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camid.audit.pseudo import PseudoCameras, adjusted_rand_index, infer_cameras
from camid.synth import make_camera_dataset


@pytest.fixture(scope="module")
def camera_set(tmp_path_factory) -> tuple[list[Path], list[str]]:
    """40 JPEGs from the 5 simulated camera models (2 devices x 4 images each)."""
    root = tmp_path_factory.mktemp("pseudo_cams")
    manifest = make_camera_dataset(
        root, per_device=4, flat_per_device=0, size=(160, 128), workers=1
    )
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [root / r["path"] for r in rows], [r["camera"] for r in rows]


def _copies(
    paths: list[Path], out: Path, scale: float = 1.0, crop: tuple[int, int] = (0, 0)
) -> list[Path]:
    """PNG copies without metadata, optionally cropped (top, left) or resized (bicubic)."""
    out.mkdir(exist_ok=True)
    res = []
    for p in paths:
        with Image.open(p) as im:
            rgb = Image.frombytes("RGB", im.size, im.convert("RGB").tobytes())  # no EXIF
        if crop != (0, 0):
            rgb = rgb.crop((crop[1], crop[0], rgb.size[0], rgb.size[1]))
        if scale != 1.0:
            w, h = rgb.size
            rgb = rgb.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
        dst = out / (p.stem + ".png")
        rgb.save(dst)
        res.append(dst)
    return res


def test_ari_hand_computed():
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 1]) == pytest.approx(1.0)
    assert adjusted_rand_index(["a", "a", "b"], ["x", "x", "y"]) == pytest.approx(1.0)
    # every pair split differently: index 0, expected 2*2/6, mean 2 -> -0.5
    assert adjusted_rand_index([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    # table [[2,1,0],[0,1,2]]: index 2, sums 6 and 3 of 15 pairs -> (2-1.2)/(4.5-1.2) = 8/33
    assert adjusted_rand_index([0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(8 / 33)
    assert adjusted_rand_index([1, 1, 1], [2, 2, 2]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        adjusted_rand_index([0, 1], [0])


def test_cameras_recovered_from_jpegs(camera_set):
    paths, truth = camera_set
    res = infer_cameras(paths, seed=0)
    ari = adjusted_rand_index(truth, res.labels)
    assert not res.weak, res.reason
    assert res.k == 5 and ari >= 0.8, (res.k, ari, res.reason)  # measured: k=5, ARI 1.0
    assert "jpeg_lattice" in res.features
    sizes = [c["size"] for c in res.clusters]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == len(paths)
    assert [c["name"] for c in res.clusters] == [f"cam{i + 1}" for i in range(res.k)]
    assert all(c["cohesion"] > 0 for c in res.clusters)
    assert res.stability >= 0.6
    d = json.loads(json.dumps(res.to_dict()))
    assert d["k"] == 5 and d["labels"] == res.labels and d["weak"] is False


def test_png_copies_without_exif_still_cluster(camera_set, tmp_path):
    paths, truth = camera_set
    pngs = _copies(paths, tmp_path / "png")
    res = infer_cameras(pngs, seed=0)
    assert not res.weak, res.reason
    assert adjusted_rand_index(truth, res.labels) >= 0.8  # measured: 1.0


def test_copies_cropped_off_the_jpeg_grid_still_cluster(camera_set, tmp_path):
    paths, truth = camera_set
    cropped = _copies(paths, tmp_path / "crop", crop=(3, 5))
    res = infer_cameras(cropped, seed=0)
    assert not res.weak, res.reason
    assert adjusted_rand_index(truth, res.labels) >= 0.8  # the grid is found from the pixels


def test_resized_copies_are_weak(camera_set, tmp_path):
    paths, truth = camera_set
    half = _copies(paths, tmp_path / "half", scale=0.5)
    res = infer_cameras(half, seed=0)
    assert res.weak and res.k == 1, res.reason
    assert set(res.labels) == {"cam1"}
    assert "lattice" in res.reason


def test_single_camera_is_one_group(camera_set):
    paths, truth = camera_set
    one = [p for p, t in zip(paths, truth, strict=True) if t == truth[0]]
    res = infer_cameras(one, seed=0)
    assert res.k == 1 and set(res.labels) == {"cam1"}, res.reason
    assert not res.weak  # the traces are there: they just do not split the images


def test_unreadable_and_tiny_inputs(camera_set, tmp_path):
    paths, _ = camera_set
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    res = infer_cameras([*paths[:8], bad], seed=0)
    assert res.labels[-1] is None and "broken.jpg" in next(iter(res.errors))
    assert all(label is not None for label in res.labels[:8])

    rng = np.random.default_rng(0)
    tiny = []
    for i in range(8):
        p = tmp_path / f"tiny{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(p)
        tiny.append(p)
    res = infer_cameras(tiny, seed=0)
    assert res.weak and res.k == 1 and "small" in res.reason


def test_deterministic_and_progress(camera_set):
    paths, _ = camera_set
    seen = []

    def progress(iterable, total, description):
        seen.append((total, description))
        return iterable

    a = infer_cameras(paths[:16], seed=3, progress=progress)
    b = infer_cameras(paths[:16], seed=3)
    assert isinstance(a, PseudoCameras)
    assert a.to_dict() == b.to_dict()
    assert seen == [(16, "camera traces")]
