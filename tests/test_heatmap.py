"""CNN heatmaps: sliding views on the JPEG grid, per-photo maps, accuracy by position."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from camid.audit.heatmap import PositionAccuracy, camera_map, position_accuracy
from camid.cli import main
from camid.data.manifest import read_manifest
from camid.engine.data import sliding_positions, sliding_views
from camid.engine.predict import Predictor
from camid.models.store import load_model
from camid.report.maps import GridGeometry, grid_to_pixels
from tests.test_train_fakes import KNOWN, OUTSIDER, fake_photo, save_jpeg, shared_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(camid home with the shared tiny model 'fk3', its manifest)."""
    return shared_model(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def _home(trained, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMID_HOME", str(trained[0]))


@pytest.fixture(scope="module")
def predictor(trained) -> Predictor:
    model, card = load_model("fk3", "cpu", home=trained[0])
    return Predictor(model, card, torch.device("cpu"), batch_size=64)


def test_sliding_positions_stay_on_the_8px_grid() -> None:
    ys, xs = sliding_positions(100, 150, 32, 16)
    assert ys.tolist() == [0, 16, 32, 48, 64] and all(x % 8 == 0 for x in xs)
    assert xs[-1] + 32 <= 150 and len(xs) == (150 - 32) // 16 + 1
    ys, xs = sliding_positions(20, 20, 32, 32)  # smaller than a window: one padded view
    assert ys.tolist() == [0] and xs.tolist() == [0]
    with pytest.raises(ValueError, match="multiple of 8"):
        sliding_positions(100, 100, 32, 12)
    px = np.arange(64 * 96 * 3, dtype=np.uint8).reshape(64, 96, 3)
    views, boxes = sliding_views(px, 32, 32)
    assert views.shape == (6, 32, 32, 3) and boxes[4].tolist() == [32, 32, 64, 64]
    assert np.array_equal(views[4], px[32:64, 32:64])


def test_grid_to_pixels_paints_each_window_cell() -> None:
    geo = GridGeometry(height=70, width=100, window=32, stride=32, origin=(0, 0))
    vals = np.arange(6, dtype=float).reshape(2, 3)
    px = grid_to_pixels(vals, geo)
    assert px.shape == (70, 100)
    assert px[0, 0] == 0 and px[40, 70] == 5 and np.isnan(px[69, 99])  # margin: no window
    half = grid_to_pixels(vals, geo, 35, 50)  # scaled down, same aspect
    assert half[0, 0] == 0 and half[20, 35] == 5


def test_camera_map_equals_the_predictor_on_each_window(predictor, trained) -> None:
    px = fake_photo("Bolt B2", 777, size=(160, 96))
    cm = camera_map(predictor, px)
    assert cm.geometry.window == 32 and cm.geometry.stride == 32
    assert cm.probs.shape == (3, 5, 3)
    assert np.allclose(cm.probs.sum(axis=2), 1.0, atol=1e-5)
    t = predictor.card.calibration.get("temperature", 1.0)
    logits = predictor.forward(np.ascontiguousarray(px[32:64, 64:96])[None])
    expect = torch.softmax(torch.from_numpy(logits[0]).double() / t, 0).numpy()
    assert cm.probs[1, 2] == pytest.approx(expect, abs=1e-5)
    assert cm.classes[cm.camera_index(None)] == "Bolt B2"
    assert cm.correct("Bolt B2").mean() > 0.7  # the tiny model knows its cameras per patch
    assert cm.probability("Bolt B2").mean() > cm.probability("Acme Alpha").mean()
    over = camera_map(predictor, px, window=32, stride=16)
    assert over.probs.shape[:2] == (5, 9)


def test_position_accuracy_accumulates_on_a_normalised_grid(predictor, trained) -> None:
    rows = [r for r in read_manifest(trained[1]) if r.split == "test"]
    items = [(r.path, r.camera) for r in rows]
    results = list(position_accuracy(predictor, items, cells=4))
    acc = results[-1]
    assert isinstance(acc, PositionAccuracy)
    errors = [r for r in results[:-1] if isinstance(r[1], Exception)]
    assert len(errors) == sum(r.camera == OUTSIDER for r in rows)  # unknown camera
    assert acc.images == sum(r.camera in KNOWN for r in rows)
    assert acc.total.sum() == acc.images * 12  # 96x128 photos, 3x4 windows of 32 px
    # 3 window rows over 4 cell rows: one cell row holds no window centre -> NaN, not 0
    assert (acc.total > 0).sum() == 12 and np.isnan(acc.accuracy).sum() == 4
    assert (acc.total.sum(axis=0) == acc.images * 3).all()  # columns: one window each
    s = acc.summary()
    assert s["patch_accuracy"] > 0.6 > s["chance"]
    assert set(s["per_camera"]) == set(KNOWN)


def test_heatmap_cli_per_photo_and_dataset(trained, tmp_path: Path, capsys) -> None:
    photo = save_jpeg(fake_photo("Cora C3", 4242, (160, 96)), tmp_path / "ev" / "p.jpg", None, None)
    out_dir = tmp_path / "maps"
    rc = main(["heatmap", str(photo), "-m", "fk3", "--truth", "Cora C3", "-o", str(out_dir),
               "--json"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    (rec,) = json.loads(cap.out)
    assert rec["camera"] == rec["predicted"] == "Cora C3" and rec["patch_accuracy"] > 0.6
    assert rec["grid"]["rows"] == 3 and rec["grid"]["cols"] == 5
    grid = np.load(out_dir / "p.cnn.npy")
    assert grid.shape == (3, 5) and 0 <= grid.min() <= grid.max() <= 1
    assert np.load(out_dir / "p.cnn.correct.npy").mean() == pytest.approx(rec["patch_accuracy"])
    assert Image.open(out_dir / "p.cnn.png").size == (160, 96)
    side = json.loads((out_dir / "p.cnn.json").read_text())
    assert side["model"] == "fk3" and side["grid"]["window"] == 32
    assert sorted(x.name for x in photo.parent.iterdir()) == ["p.jpg"]  # evidence untouched
    # --camera maps another camera's probability; an unknown name is a usage error
    rc = main(["heatmap", str(photo), "-m", "fk3", "--camera", "Acme Alpha", "-o",
               str(out_dir), "--json"])  # fmt: skip
    rec2 = json.loads(capsys.readouterr().out)[0]
    assert rc == 0 and rec2["camera"] == "Acme Alpha" and rec2["mean"] < rec["mean"]
    assert main(["heatmap", str(photo), "-m", "fk3", "--camera", "Nope", "--json"]) == 2
    capsys.readouterr()
    # dataset mode: a manifest, the test split, accuracy by position
    rc = main(["heatmap", str(trained[1]), "-m", "fk3", "--split", "test", "--cells", "4",
               "-o", str(out_dir), "--json"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    obj = json.loads(cap.out)
    assert obj["images"] == 9 and len(obj["accuracy_grid"]) == 4
    assert obj["patch_accuracy"] > 0.6
    assert "skipped" in cap.err  # the outsider camera's photos
    assert np.load(out_dir / "cameras.position.npy").shape == (4, 4)
    assert Image.open(out_dir / "cameras.position.png").size == (256, 256)
    assert (out_dir / "cameras.position.figure.png").stat().st_size > 1000
    # a folder of one camera's photos (no EXIF) with --truth is a dataset too
    folder = tmp_path / "cora"
    for k in range(2):
        save_jpeg(fake_photo("Cora C3", 900 + k), folder / f"c{k}.jpg", None, None)
    rc = main(["heatmap", str(folder), "-m", "fk3", "--truth", "Cora C3", "--cells", "2",
               "-o", str(out_dir), "--json"])  # fmt: skip
    obj = json.loads(capsys.readouterr().out)
    assert rc == 0 and obj["images"] == 2 and obj["views"] == 24
    assert obj["per_camera"]["Cora C3"]["patch_accuracy"] == obj["patch_accuracy"] > 0.6
