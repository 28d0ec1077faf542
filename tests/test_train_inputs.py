"""camid train with unreadable, missing and duplicate manifest rows (issue 9)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from camid.cli import main
from camid.data.dataset import load_dataset
from camid.engine.train import TrainConfig, train
from camid.errors import InputsError, UsageError
from camid.models.store import list_stored, read_card
from tests.test_train_fakes import make_fake_cameras

CAMS = ["Acme Alpha", "Bolt B2", "Cora C3"]
FAST = [
    "--arch", "patchnet_hp_tiny", "--patch", "32", "--patches-per-image", "4",
    "--batch-size", "16", "--epochs", "1", "--no-manipulate", "--val-fraction", "0.25",
]  # fmt: skip


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three fake cameras, 6 training images each."""
    return make_fake_cameras(
        tmp_path_factory.mktemp("fakes"), CAMS, per_camera=6, test_per_camera=0
    )


def _rows(manifest: Path) -> list[dict]:
    with manifest.open(newline="") as f:
        return list(csv.DictReader(f))


def _write(rows: list[dict], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _hostile_manifest(fakes: Path, tmp_path: Path) -> tuple[Path, set[str]]:
    """The fakes plus a truncated JPEG, a missing file, a text file and a duplicate row."""
    rows = [{**r, "path": str(fakes.parent / r["path"])} for r in _rows(fakes)]
    good = Path(rows[0]["path"])
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good.read_bytes()[:300])
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n")
    missing = tmp_path / "gone.jpg"
    bad = {str(trunc), str(text), str(missing)}
    extra = [
        {**rows[0], "path": str(trunc)},
        {**rows[7], "path": str(missing)},
        {**rows[13], "path": str(text)},
        {**rows[1], "path": str(tmp_path / ".." / tmp_path.name / ".." / Path(rows[1]["path"]))},
        dict(rows[2]),
    ]
    return _write(rows + extra, tmp_path / "hostile.csv"), bad


def test_unreadable_images_are_all_reported_skipped_and_listed(fakes, tmp_path, capsys):
    manifest, bad = _hostile_manifest(fakes, tmp_path)
    failed = tmp_path / "failed.txt"
    args = ["train", str(manifest), "-n", "robust", *FAST, "--failed-list", str(failed)]
    rc = main([*args, "--json"])
    cap = capsys.readouterr()
    assert rc == 3, cap.err  # some inputs could not be read; the model is stored anyway
    assert set(failed.read_text().splitlines()) == bad
    err_lines = cap.err.splitlines()
    for p in bad:  # each named on its own line
        assert sum(p in line for line in err_lines) == 1, cap.err
    assert "Traceback" not in cap.err
    assert "2 row(s) name a file listed before" in cap.err
    assert "3 of 21 images could not be read" in cap.err
    rec = json.loads(cap.out)
    card, _ = read_card("robust")
    assert rec["name"] == "robust" and card.metrics["unreadable_skipped"] == 3
    assert card.metrics["train_images"] + card.metrics["val_images"] == 18  # dupes once
    assert card.classes == sorted(CAMS) and card.metrics["val_images"] >= 3


def test_a_class_lost_to_unreadable_images_refuses_the_run(fakes, tmp_path, capsys):
    rows = [{**r, "path": str(fakes.parent / r["path"])} for r in _rows(fakes)]
    for r in rows:
        if r["camera"] == CAMS[1]:
            r["path"] = str(tmp_path / f"missing-{Path(r['path']).name}")
    failed = tmp_path / "failed.txt"
    manifest = _write(rows, tmp_path / "lost.csv")
    rc = main(["train", str(manifest), "-n", "lost", *FAST, "--failed-list", str(failed)])
    err = capsys.readouterr().err
    assert rc == 3 and "every image of 'Bolt B2'" in err and "Traceback" not in err, err
    assert len(failed.read_text().splitlines()) == 6
    assert not list_stored()


def test_zero_validation_images_is_refused(fakes, tmp_path, capsys):
    samples = load_dataset(fakes).samples
    cfg = TrainConfig(name="noval", arch="patchnet_hp_tiny", patch=32, epochs=1, val_fraction=0)
    with pytest.raises(UsageError, match="0 validation images"):
        train(cfg, samples, home=tmp_path)
    one_each = [next(s for s in samples if s.camera == c) for c in CAMS]
    with pytest.raises(UsageError, match="0 validation images"):
        train(TrainConfig(name="noval", arch="patchnet_hp_tiny", patch=32), one_each)
    # all validation rows unreadable: an input problem (exit 3), never a model
    rows = [{**r, "path": str(fakes.parent / r["path"])} for r in _rows(fakes)]
    for i, r in enumerate(rows):
        r["split"] = "val" if i % 6 == 0 else "train"
        if r["split"] == "val":
            r["path"] = str(tmp_path / f"gone{i}.jpg")
    with pytest.raises(InputsError, match="0 validation images"):
        train(cfg, load_dataset(_write(rows, tmp_path / "v.csv")).samples, home=tmp_path)
    rc = main(["train", str(fakes), "-n", "noval", *FAST[:-2], "--val-fraction", "0"])
    assert rc == 2 and "0 validation images" in capsys.readouterr().err
    assert not list_stored()
