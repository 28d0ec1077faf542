"""lr-check: a model trained on left halves transfers to right halves when the traces repeat;
the PRNU control fails on the unseen half by construction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from camid.audit.lrcheck import lr_check, split_train_test, transfer_ratio, verdict
from camid.cli import main
from camid.data.manifest import Sample, read_manifest, write_manifest
from camid.data.patches import region_bounds
from camid.engine.train import TrainConfig
from tests.test_train_fakes import fake_photo, save_jpeg

CAMS = ["Acme Alpha", "Bolt B2"]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 fake cameras x 2 devices x 8 photos (2 test), 128x96. The camera's 4x4 pattern
    repeats over the frame (a processing trace); each device also has its own fixed
    multiplicative sensor pattern (3 % PRNU), different at every pixel."""
    root = tmp_path_factory.mktemp("lr")
    rows = []
    for ci, cam in enumerate(CAMS):
        for dev in range(2):
            k = np.random.default_rng(1000 + 10 * ci + dev).normal(0, 0.03, (96, 128, 1))
            for j in range(8):
                px = fake_photo(cam, 50_000 + ci * 100 + dev * 10 + j).astype(float)
                px = np.clip(np.round(px * (1 + k)), 0, 255).astype(np.uint8)
                p = save_jpeg(px, root / "images" / f"{ci}{dev}_{j}.jpg", *cam.split())
                rows.append(
                    {
                        "path": p,
                        "label": "x",
                        "camera": cam,
                        "device": f"{cam}-{dev}",
                        "split": "test" if j < 2 else "train",
                    }  # fmt: skip
                )
    return write_manifest(rows, root / "cameras.csv")


def _cfg(**kw) -> TrainConfig:
    base = dict(
        name="lr-test", arch="patchnet_hp_tiny", patch=32, patches_per_image=16, batch_size=32,
        epochs=4, manipulate=False, val_fraction=0.25, seed=3, device="cpu",
    )  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def test_regions_top_bottom_and_verdicts() -> None:
    assert region_bounds(100, 60, "top") == (0, 50, 0, 60)
    assert region_bounds(100, 60, "bottom") == (56, 100, 0, 60)  # starts on the 8-px grid
    assert transfer_ratio(0.9, 0.88, 0.5) == pytest.approx(0.95)
    assert verdict(0.95).startswith("traces repeat")
    assert verdict(0.05).startswith("position-bound")
    assert verdict(None).startswith("undecided")
    rows = [Sample(Path(f"{c}{i}.jpg"), camera=c) for c in "ab" for i in range(4)]
    train, test, notes = split_train_test(rows)
    assert len(test) == 2 and {s.camera for s in test} == {"a", "b"} and "held out" in notes[0]


def test_lr_check_cnn_transfers_and_prnu_does_not(dataset: Path, tmp_path: Path) -> None:
    samples = read_manifest(dataset)
    res = lr_check(samples, _cfg(), home=tmp_path / "home", workers=0).to_dict()
    assert res["train_region"] == "left" and res["test_region"] == "right"
    cnn = res["cnn"]
    assert cnn["test_left"]["images"] == cnn["test_right"]["images"] == 8
    assert cnn["test_right"]["accuracy"] >= 0.85  # the repeating pattern transfers
    assert cnn["test_right"]["patch_accuracy"] > 0.7
    assert res["verdict"].startswith("traces repeat")
    prnu = res["prnu"]
    assert prnu["fingerprints"] == {f"{c}-{d}": 6 for c in CAMS for d in range(2)}
    assert prnu["test_left"]["device_accuracy"] == 1.0  # same sensor area: it matches
    assert prnu["test_left"]["own_device_match_rate"] >= 0.75
    assert prnu["test_right"]["own_device_match_rate"] == 0.0  # unseen area: no match
    assert prnu["test_right"]["own_device_pce_median"] < 10
    assert prnu["transfer_measure"] == "own_device_match_rate"
    assert prnu["transfer"] == 0.0 and prnu["verdict"].startswith("position-bound")
    # the argmax over devices still finds the camera on the unseen half here: the fake
    # cameras' repeating 4x4 pattern is in every fingerprint (a non-unique artefact)
    assert prnu["test_right"]["device_accuracy"] < prnu["test_left"]["device_accuracy"]
    assert res["model"]["stored"] is None
    assert not (tmp_path / "home" / "models").exists()  # nothing left in the registry


def test_lr_check_cli_vertical_writes_json_and_plot(dataset: Path, tmp_path: Path, capsys):
    out = tmp_path / "lr"
    rc = main(["lr-check", str(dataset), "--axis", "vertical", "--arch", "patchnet_hp_tiny",
               "--patch", "32", "--epochs", "3", "--no-prnu", "--device", "cpu", "-o",
               str(out), "--json"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads(cap.out)
    assert res["train_region"] == "top" and res["test_region"] == "bottom"
    assert "prnu" not in res and res["cnn"]["test_bottom"]["images"] == 8
    assert (out / "lr-check.png").stat().st_size > 1000
    assert json.loads((out / "lr-check.json").read_text())["axis"] == "vertical"
    assert main(["lr-check", str(dataset), "--axis", "diagonal", "--json"]) == 2
