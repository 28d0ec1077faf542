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
from tests.test_train_fakes import KNOWN, make_fake_cameras, shared_model


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


def test_adversarial_attack_flips_decisions_within_epsilon(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Targeted PGD on the shared tiny model: at least one decision moves to the target
    class, every perturbation stays within epsilon levels (checked on the 8-bit pixels),
    and the flipped image, written as PNG, is identified as the target by `identify`."""
    from PIL import Image

    from camid.audit.probes import attack, attack_set
    from camid.data.manifest import read_manifest
    from camid.identify.identifier import Identifier
    from camid.io.image import load_image

    home, csv = shared_model(tmp_path_factory.getbasetemp())
    ident = Identifier.from_model("fk3", device="cpu", home=home, workers=0)
    rows = [r for r in read_manifest(csv) if r.split == "test" and r.camera in KNOWN]
    eps = 2
    flipped = 0
    for r in rows[:6]:
        px = load_image(r.path).pixels
        res = attack(ident, px, epsilon=eps, steps=10)
        diff = res.perturbed.astype(int) - px.astype(int)
        assert np.abs(diff).max() <= eps and res.linf == np.abs(diff).max()
        assert res.perturbed.dtype == np.uint8 and res.target != res.original
        if res.success:
            flipped += 1
            png = tmp_path / f"adv_{flipped}.png"
            Image.fromarray(res.perturbed).save(png)
            (out,) = list(ident.identify([png]))
            assert out.top[0]["camera"] == res.target
    assert flipped >= 1
    with pytest.raises(UsageError, match="epsilon"):
        attack(ident, load_image(rows[0].path).pixels, epsilon=0)

    result, errors = attack_set(ident, rows, epsilon=eps, steps=10, limit=3,
                                figure_dir=tmp_path / "figs", figures=1)  # fmt: skip
    assert errors == [] and result.n_test == 3
    assert 0 < result.success_rate <= 1 and result.mean_steps >= 0
    assert result.epsilon == pytest.approx(2 / 255)
    (fig,) = result.figures
    with Image.open(fig) as im:
        assert im.format == "PNG" and im.width > 2 * im.height


def test_attack_refuses_a_model_behind_a_pixel_probe(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    import dataclasses

    from camid.audit.probes import attack
    from camid.identify.identifier import Identifier

    home, _ = shared_model(tmp_path_factory.getbasetemp())
    ident = Identifier.from_model("fk3", device="cpu", home=home)
    ident.views = dataclasses.replace(ident.views, probe="binary")
    with pytest.raises(UsageError, match="gradient"):
        attack(ident, natural_rgb(64, 64))


def test_parse_probes_and_split() -> None:
    from camid.audit.probes import PROBES, parse_probes, probe_split
    from camid.data.manifest import Sample

    assert parse_probes("grey, binary") == ["binary", "grey"]
    assert parse_probes("all") == list(PROBES)
    with pytest.raises(UsageError, match="unknown probe 'sepia'"):
        parse_probes("grey,sepia")
    rows = [Sample(Path(f"/x/{c}{i}.jpg"), camera=c) for c in "ab" for i in range(8)]
    train, test, note = probe_split(rows, "camera", 0.25, seed=0)
    assert len(test) == 4 and {s.camera for s in test} == {"a", "b"}
    assert not {s.path for s in train} & {s.path for s in test}
    rows[0].split = "test"
    train, test, note = probe_split(rows, "camera", 0.25, seed=0)
    assert test == [rows[0]] and "split=test" in note


def test_probe_command_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Every probe through the CLI with a tiny budget: one result each, accuracies in
    [0, 1], the chart and an adversarial figure written, no model left in the registry."""
    from camid.cli import main

    home = tmp_path / "home"
    monkeypatch.setenv("CAMID_HOME", str(home))
    csv = make_fake_cameras(
        tmp_path / "d", ["Acme Alpha", "Bolt B2"], per_camera=5, test_per_camera=2, size=(64, 64)
    )
    out = tmp_path / "out"
    args = ["probe", str(csv), "--arch", "patchnet_hp_tiny", "--patch", "32", "--epochs", "1",
            "--time-budget", "5", "--attack-images", "2", "--attack-steps", "5",
            "--epsilon", "8", "-o", str(out), "--json"]  # fmt: skip
    rc = main(args)
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rep = json.loads(cap.out)
    probes = [r["probe"] for r in rep["results"]]
    assert probes == ["baseline", "binary", "colour", "grey", "crop32", "adversarial"]
    base = rep["results"][0]["accuracy"]
    for r in rep["results"]:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["n_test"] >= 2
        if r["probe"] != "adversarial":
            assert r["baseline_accuracy"] == base and r["train_seconds"] > 0
    adv = rep["results"][-1]
    assert 0.0 <= adv["success_rate"] <= 1.0 and adv["epsilon"] == pytest.approx(8 / 255)
    assert rep["n_test"] == 4 and rep["chance"] == 0.5
    assert Path(rep["plot"]).is_file() and (out / "probes.png").is_file()
    assert not (home / "models").exists() or not list((home / "models").glob("probe-*"))
    assert main(["probe", str(csv), "--probes", "sepia"]) == 2


def test_probe_attacks_a_given_model_without_training(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """`--probes adversarial --model NAME` trains nothing and attacks that registry model."""
    from camid.cli import main

    home, csv = shared_model(tmp_path_factory.getbasetemp())
    monkeypatch.setenv("CAMID_HOME", str(home))
    before = sorted(p.name for p in (home / "models").iterdir())
    rc = main(["probe", str(csv), "--probes", "adversarial", "--model", "fk3", "--epsilon",
               "2", "--attack-images", "3", "--attack-steps", "10", "--json"])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rep = json.loads(cap.out)
    (adv,) = rep["results"]
    assert adv["probe"] == "adversarial" and adv["model"] == "fk3" and adv["n_test"] == 3
    assert adv["train_seconds"] is None and adv["success_rate"] > 0
    assert adv["baseline_accuracy"] >= 0.6  # the shared model knows most of its test images
    assert sorted(p.name for p in (home / "models").iterdir()) == before
