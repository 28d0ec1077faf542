"""Re-saved and resized photos: the decision policy (pixel traces, own threshold), its
calibration in the model card, the robust training chains and the named recipes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from camid.data.augment import Manipulation, parse_manipulation, random_chain
from camid.data.patches import CropRecipe, training_crop
from camid.engine.recipes import RECIPES, apply_recipe
from camid.engine.train import TrainConfig, _resolve_config
from camid.errors import UsageError
from camid.identify.policy import (
    WRONG_TARGET,
    Alteration,
    alteration_from_manipulation,
    alteration_of,
    choose_threshold,
)
from tests.test_train_fakes import KNOWN, make_fake_cameras


def test_threshold_keeps_the_wrong_camera_rate_under_target() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.3, 1.0, 400)
    right = rng.random(400) < p  # confident answers are right more often
    t = choose_threshold(p, right, target=0.02)
    assert 0.5 <= t < 1.0
    assert np.sum((p >= t) & ~right) <= 0.02 * 400
    lower = max(q for q in p if q < t) if (p < t).any() else None
    if lower is not None and lower >= 0.5:  # the lowest such threshold was chosen
        assert np.sum((p >= lower) & ~right) > 0.02 * 400
    assert choose_threshold(np.array([0.9, 0.95]), np.array([False, False])) == 1.0


def test_alterations_from_conditions_and_from_a_history() -> None:
    a = alteration_from_manipulation(Manipulation("jpeg", 70))
    assert a is not None and a.resaved and not a.resampled and a.source == "given"
    assert "re-saved" in a.words() and "Q70" in a.words()
    assert alteration_from_manipulation(Manipulation("resize", 0.5)).resampled
    assert alteration_from_manipulation(Manipulation("gamma", 1.2)) is None
    assert alteration_from_manipulation(Manipulation("crop", 3)) is None
    # the shape of camid.identify.history.History (duck-typed: .resaved.detected ...)
    hist = SimpleNamespace(
        resaved=SimpleNamespace(detected=True),
        resampled=SimpleNamespace(detected=True),
        summary=lambda: "re-saved at ~Q75, resampled x0.5",
    )
    b = alteration_of(hist)
    assert b == Alteration(True, True, "re-saved at ~Q75, resampled x0.5", "detected")
    assert b.words() == "re-saved at ~Q75, resampled x0.5"  # the history's own phrase
    assert alteration_of(None) is None
    hist.resaved.detected = hist.resampled.detected = False
    assert alteration_of(hist) is None  # nothing found: the combined rule decides


def test_crop_condition_and_robust_chains() -> None:
    m = parse_manipulation("crop:3")
    px = np.zeros((40, 48, 3), np.uint8)
    assert m.apply(px).shape == (37, 45, 3) and m.name == "crop:3"
    with pytest.raises(UsageError):
        parse_manipulation("crop:2.5")
    rng = np.random.default_rng(1)
    chains = [random_chain(rng) for _ in range(400)]
    kinds = [tuple(c.kind for c in ch) for ch in chains]
    assert ("jpeg", "jpeg") in kinds and ("resize", "jpeg") in kinds and ("resize",) in kinds
    qs = [m.value for ch in chains for m in ch if m.kind == "jpeg"]
    fs = [m.value for ch in chains for m in ch if m.kind == "resize"]
    assert min(qs) >= 60 and max(qs) <= 95 and min(fs) >= 0.5 and max(fs) <= 1.6
    assert len({round(f, 2) for f in fs}) > 20  # continuous factors, not four values
    img = np.random.default_rng(2).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    recipe = CropRecipe(patch=32, large=64, manipulate_p=1.0, augment="robust")
    for k in range(20):
        assert training_crop(img, recipe, np.random.default_rng(k)).shape == (32, 32, 3)


def test_recipes_resolve_to_their_settings() -> None:
    gpu = apply_recipe(TrainConfig(name="g"), "seed002-gpu")
    assert (gpu.arch, gpu.patch, gpu.large, gpu.patches_per_image) == ("densenet161", 480, 960, 1)
    assert gpu.pretrained and gpu.lr == 1e-4 and gpu.augment == "seed002" and not gpu.d4
    assert gpu.recipe == "seed002-gpu"
    resolved, family = _resolve_config(gpu)
    assert family == "imagenet" and resolved.patch == 480
    mine = apply_recipe(TrainConfig(name="g", lr=3e-4), "seed002-gpu")
    assert mine.lr == 3e-4 and mine.arch == "densenet161"  # explicit values win
    robust = apply_recipe(TrainConfig(name="r"), "cpu-robust")
    assert robust.augment == "robust" and robust.manipulate_p == 0.7 and robust.arch == "tracenet"
    assert apply_recipe(TrainConfig(name="d"), "cpu-default").augment == "seed002"
    assert set(RECIPES) >= {"cpu-default", "cpu-robust", "seed002-gpu"}
    with pytest.raises(UsageError):
        apply_recipe(TrainConfig(name="x"), "nope")
    with pytest.raises(UsageError):
        _resolve_config(TrainConfig(name="x", augment="strong"))


@pytest.fixture(scope="module")
def robust_model(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A small real TraceNet (pixel + compression heads) trained for a few seconds."""
    from camid.data.manifest import read_manifest
    from camid.engine.train import train

    root = tmp_path_factory.mktemp("robust")
    home = root / "home"
    csv = make_fake_cameras(root / "data", KNOWN, per_camera=8, test_per_camera=2)
    rows = read_manifest(csv)
    res = train(
        TrainConfig(
            name="rb",
            arch="tracenet",
            patch=32,
            patches_per_image=8,
            batch_size=32,
            epochs=3,
            val_fraction=0.34,
            augment="robust",
            seed=1,
            overwrite=True,
        ),
        rows,
        home=home,
    )
    return {"home": home, "card": res.card, "test": [r for r in rows if r.split == "test"]}


@pytest.mark.slow  # trains a small model (~45 s on a loaded 2-core CPU)
def test_calibration_for_altered_photos_round_trips_through_the_card(robust_model) -> None:
    from camid.models.store import load_model

    alt = robust_model["card"].calibration["altered"]
    assert alt["head"] == "pixels" and alt["target_wrong_rate"] == WRONG_TARGET
    assert set(alt["thresholds"]) == {"resaved", "resampled"}
    assert all(0.5 <= t <= 1.0 for t in alt["thresholds"].values())
    for kind, stats in alt["per_kind"].items():  # the chosen thresholds meet the target
        assert stats["wrong_rate"] <= WRONG_TARGET, kind
    _model, card = load_model("rb", home=robust_model["home"])
    assert card.calibration["altered"] == alt
    assert card.recipe["augment"] == "robust"


@pytest.mark.slow  # trains a small model (~45 s on a loaded 2-core CPU)
def test_a_resaved_photo_is_decided_on_pixel_traces_and_says_so(robust_model) -> None:
    from camid.identify import Identifier

    ident = Identifier.from_model("rb", device="cpu", home=robust_model["home"], workers=0)
    paths = [Path(r.path) for r in robust_model["test"]]
    resaved = list(ident.identify(paths, manipulation=Manipulation("jpeg", 70)))
    assert len(resaved) == len(paths)
    thr = robust_model["card"].calibration["altered"]["thresholds"]["resaved"]
    for r in resaved:
        rec = r.to_record()
        assert rec["alteration"]["resaved"] and rec["decision_head"] == "pixels"
        assert rec["compression_traces"].startswith("overwritten: re-saved")
        comp = next(e for e in rec["evidence"] if e["name"] == "compression")
        assert not comp["decisive"] and "not used" in comp["reason"]
        assert "compression traces not used" in rec["reason"]
        pixels = next(e for e in rec["evidence"] if e["name"] == "pixels")
        if rec["decision"] == "known":
            assert rec["decided_by"] == "cnn:pixels" and rec["probability"] >= thr
            assert rec["camera"] == pixels["camera"]
        else:
            assert rec["decided_by"] == "none" and "pixel evidence too weak" in rec["reason"]
            assert not pixels["decisive"]
    # originals keep the combined decision and say nothing about alterations
    orig = [r.to_record() for r in ident.identify(paths)]
    assert all("alteration" not in r and r["decided_by"] in ("cnn", "none") for r in orig)


@pytest.mark.slow  # trains a small model (~45 s on a loaded 2-core CPU)
def test_evaluate_reports_wrong_camera_rate_and_the_deciding_head(robust_model) -> None:
    from camid.identify import Identifier
    from camid.identify.evaluate import evaluate

    ident = Identifier.from_model("rb", device="cpu", home=robust_model["home"], workers=0)
    rep = evaluate(
        ident,
        robust_model["test"],
        conditions=[None, Manipulation("jpeg", 80), Manipulation("gamma", 1.2)],
    )
    orig, jpeg, gam = rep.conditions
    assert (orig.decided_on, jpeg.decided_on, gam.decided_on) == ("combined", "pixels", "combined")
    for c in rep.conditions:
        assert c.wrong_rate == pytest.approx(c.decided_share - c.identified)
    assert rep.summary_rows()[1]["wrong"] == jpeg.wrong_rate


def test_cli_recipe_is_checked_before_training(tmp_path: Path, capsys) -> None:
    from camid.cli import main

    csv = make_fake_cameras(tmp_path / "d", KNOWN[:2], per_camera=3, test_per_camera=1)
    rc = main(["train", str(csv), "--name", "x", "--recipe", "nope"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown recipe 'nope'" in err and "seed002-gpu" in err
    rc = main(["train", str(csv), "--name", "x", "--augment", "strong"])
    assert rc == 2 and "unknown augmentation 'strong'" in capsys.readouterr().err


@pytest.mark.slow  # the small model above, and 20 synthetic photos of 384x288 (>= 1024 JPEG blocks)
def test_a_resave_the_history_finds_is_decided_on_pixel_traces(robust_model, tmp_path) -> None:
    from PIL import Image

    from camid.data.manifest import read_manifest
    from camid.identify import Identifier
    from camid.synth import make_camera_dataset

    ident = Identifier.from_model("rb", device="cpu", home=robust_model["home"], workers=0)
    csv = make_camera_dataset(
        tmp_path / "cams", per_device=2, flat_per_device=0, size=(384, 288), workers=1
    )
    paths = []
    for k, r in enumerate(read_manifest(csv)[:4]):
        with Image.open(r.path) as im:  # a real second JPEG file, as a messenger writes it
            p = tmp_path / f"resaved_{k}.jpg"
            im.convert("RGB").save(p, "JPEG", quality=70)
            paths.append(p)
    recs = [r.to_record() for r in ident.identify(paths)]
    found = [r for r in recs if r["history"]["resaved"]["detected"]]
    assert len(found) >= 3  # the history analysis sees the re-saves
    for rec in found:
        assert rec["alteration"]["source"] == "detected" and rec["decision_head"] == "pixels"
        assert rec["alteration"]["summary"].startswith("re-saved")
        assert rec["decided_by"] in ("cnn:pixels", "none")
        assert "compression traces not used" in rec["reason"]
        assert rec["compression_traces"].startswith("overwritten: re-saved")
