"""camid train: recipe pieces, image-level splits, calibration, end-to-end, resume, torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from camid.cli import main
from camid.data.augment import d4, d4_tensor, gamma, jpeg, parse_manipulations, resize
from camid.data.dataset import load_dataset
from camid.data.manifest import Sample
from camid.data.patches import CropRecipe, grid_positions, random_crop, region_view, training_crop
from camid.engine.calibration import fit_temperature, nll
from camid.engine.data import BalancedSampler
from camid.engine.train import TrainConfig, prepare_data, train
from camid.errors import UsageError
from camid.models.store import load_model, read_card
from tests.test_train_fakes import make_fake_cameras

CAMS = ["Acme Alpha", "Bolt B2", "Cora C3"]
FAST = dict(
    arch="patchnet_hp_tiny",
    patch=32,
    patches_per_image=16,
    batch_size=32,
    manipulate=False,
    d4=False,
    val_fraction=0.25,
)


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three fake cameras, 10 images each (2 test)."""
    return make_fake_cameras(tmp_path_factory.mktemp("fakes"), CAMS, per_camera=10)


# --- recipe pieces -----------------------------------------------------------------------


def test_manipulations_change_pixels_as_specified() -> None:
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    j = jpeg(px, 70)
    assert j.shape == px.shape and np.abs(j.astype(int) - px).mean() > 1
    g = gamma(px, 1.2)
    assert g.shape == px.shape and (g <= px).all() and (g < px).any()  # darkens mid-tones
    assert resize(px, 0.5).shape == (20, 30, 3)
    assert resize(px, 2.0).shape == (80, 120, 3)
    names = [m.name for m in parse_manipulations("jpeg:70,gamma:1.2,resize:0.5")]
    assert names == ["jpeg:70", "gamma:1.2", "resize:0.5"]
    with pytest.raises(UsageError):
        parse_manipulations("blur:3")


def test_d4_group_has_eight_distinct_elements_matching_tensor_version() -> None:
    px = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    outs = [d4(px, k) for k in range(8)]
    assert len({o.tobytes() + bytes(o.shape) for o in outs}) == 8
    t = torch.from_numpy(px).permute(2, 0, 1)[None]
    for k in range(8):
        np.testing.assert_array_equal(d4_tensor(t, k)[0].permute(1, 2, 0).numpy(), outs[k])


def test_regions_keep_crops_inside_their_half() -> None:
    px = np.zeros((64, 128, 3), dtype=np.uint8)
    px[:, 64:] = 255
    rng = np.random.default_rng(1)
    for _ in range(50):
        assert random_crop(px, 32, rng, "left").max() == 0
        assert random_crop(px, 32, rng, "right").min() == 255
        recipe = CropRecipe(patch=16, large=48, manipulate_p=1.0, d4=True, region="right")
        assert training_crop(px, recipe, rng).min() >= 250  # gamma/JPEG keep it near white
    right = region_view(px, "right")
    for y, x in grid_positions(*right.shape[:2], 16):
        assert right[y : y + 16, x : x + 16].min() == 255
    c80 = region_view(px, "center80")
    assert c80.shape[:2] == (48, 96)  # 10 % margins rounded up to the 8-px lattice


def test_validation_split_is_by_image_and_never_shares_an_image(tmp_path: Path) -> None:
    samples = [
        Sample(path=tmp_path / f"{c}{i}.jpg", camera=c, split="test" if i == 0 else None)
        for c in "ABC"
        for i in range(12)
    ]
    samples += samples[3:6]  # the same files listed twice must stay on one side
    data = prepare_data(samples, "camera", 0.25, seed=3)
    train_paths = {s.path for s in data.train}
    val_paths = {s.path for s in data.val}
    assert train_paths and val_paths and not train_paths & val_paths
    assert all(s.split != "test" for s in data.train + data.val)
    assert {s.camera for s in data.val} == {"A", "B", "C"}  # stratified
    # the sampler only ever draws training images, and balances classes
    sampler = BalancedSampler(data.train_y, balanced=True, seed=0, draws=300)
    drawn = [i for i, _slot in sampler]
    assert max(drawn) < len(data.train)
    counts = np.bincount([data.train_y[i] for i in drawn])
    assert counts.max() - counts.min() <= 1


def test_calibration_temperature_positive_and_lowers_nll() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    logits = rng.normal(0, 1, (400, 4))
    logits[np.arange(400), y] += 2.0
    over = logits * 5  # overconfident
    fit = fit_temperature(over, y)
    assert fit["temperature"] > 1 and fit["nll_after"] < fit["nll_before"]
    assert abs(nll(over, y, fit["temperature"]) - fit["nll_after"]) < 1e-9
    under = logits * 0.2
    fit2 = fit_temperature(under, y)
    assert 0 < fit2["temperature"] < 1 and fit2["nll_after"] < fit2["nll_before"]


# --- training runs ----------------------------------------------------------------------


def test_train_cli_end_to_end_registry_curve_calibration(
    fakes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("CAMID_HOME", str(tmp_path / "home"))
    rc = main(
        [
            "train",
            str(fakes),
            "--name",
            "e2e",
            "--arch",
            "patchnet_hp_tiny",
            "--patch",
            "32",
            "--patches-per-image",
            "16",
            "--batch-size",
            "32",
            "--epochs",
            "6",
            "--no-manipulate",
            "--no-d4",
            "--val-fraction",
            "0.25",
            "--seed",
            "1",
            "--json",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rec = json.loads(cap.out)
    assert rec["classes"] == sorted(CAMS)
    assert Path(rec["curve"]).is_file() and Path(rec["curve"]).read_bytes()[:4] == b"\x89PNG"
    card, path = read_card("e2e", home=tmp_path / "home")
    assert card.arch == "patchnet_hp_tiny" and card.input_size == 32 and card.task == "camera"
    assert card.calibration["temperature"] > 0
    assert card.calibration["nll_after"] <= card.calibration["nll_before"]
    assert card.metrics["val_accuracy"] >= 0.8
    assert len(card.metrics["history"]) == 6
    assert "epoch 6" in cap.err  # live per-epoch lines on stderr
    # the stored model identifies the held-out test images
    test_imgs = [str(s.path) for s in load_dataset(fakes).samples if s.split == "test"]
    rc = main(["identify", *test_imgs, "--model", "e2e", "--json", "--unknown-threshold", "0"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    recs = json.loads(cap.out)
    truth = {str(s.path): s.camera for s in load_dataset(fakes).samples}
    acc = np.mean([r["camera"] == truth[r["path"]] for r in recs])
    assert acc >= 0.8
    assert all(r["model_sha256"] == card.weights_sha256 for r in recs)


def _weights(name: str, home: Path) -> dict[str, torch.Tensor]:
    model, _ = load_model(name, home=home)
    return model.state_dict()


def test_resume_after_interruption_matches_uninterrupted(fakes: Path, tmp_path: Path) -> None:
    """Also proves --seed repeatability: two runs from one seed end with equal weights."""
    samples = load_dataset(fakes).samples
    full = train(TrainConfig(name="full", epochs=2, seed=5, **FAST), samples, home=tmp_path)

    class Stop(Exception):
        pass

    def interrupt(ev: dict) -> None:
        if ev["event"] == "epoch" and ev["epoch"] == 1:
            raise Stop  # after the epoch-1 checkpoint was written

    with pytest.raises(Stop):
        train(
            TrainConfig(name="part", epochs=2, seed=5, **FAST),
            samples,
            home=tmp_path,
            progress=interrupt,
        )
    ckpt = tmp_path / "runs" / "part" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 0 and len(state["history"]) == 1
    events: list[dict] = []
    resumed = train(
        TrainConfig(name="part", epochs=2, seed=5, **FAST),
        samples,
        home=tmp_path,
        resume=True,
        progress=events.append,
    )
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [2]
    assert len(resumed.history) == 2
    for a, b in zip(full.history, resumed.history, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
    wa, wb = _weights("full", tmp_path), _weights("part", tmp_path)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    with pytest.raises(UsageError):  # nothing to resume under another name
        train(TrainConfig(name="other", epochs=1, **FAST), samples, home=tmp_path, resume=True)


def test_train_refuses_existing_name_and_bad_values(fakes: Path, tmp_path: Path) -> None:
    samples = load_dataset(fakes).samples
    train(TrainConfig(name="dup", epochs=1, **FAST), samples, home=tmp_path)
    with pytest.raises(UsageError, match="exists"):
        train(TrainConfig(name="dup", epochs=1, **FAST), samples, home=tmp_path)
    with pytest.raises(UsageError):
        train(TrainConfig(name="bad", epochs=1, **{**FAST, "patch": 4}), samples, home=tmp_path)
    one_cam = [s for s in samples if s.camera == CAMS[0]]
    with pytest.raises(UsageError, match="at least 2"):
        train(TrainConfig(name="one", epochs=1, **FAST), one_cam, home=tmp_path)


def test_train_on_label_column_and_left_half(fakes: Path, tmp_path: Path) -> None:
    samples = load_dataset(fakes).samples
    res = train(
        TrainConfig(name="lab", epochs=1, target="label", region="left", **FAST),
        samples,
        home=tmp_path,
    )
    assert res.card.task == "label" and res.card.classes == ["x", "y"]
    assert res.card.recipe["region"] == "left"


def test_torchrun_two_processes_gloo(fakes: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CAMID_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "camid",
        "train",
        str(fakes),
        "--name",
        "ddp",
        "--arch",
        "tracenet",  # the default, with evidence heads (3-head output under DDP)
        "--patch",
        "32",
        "--patches-per-image",
        "8",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--json",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(proc.stdout)  # only rank 0 prints
    assert rec["name"] == "ddp"
    card, _ = read_card("ddp", home=tmp_path / "home")
    assert card.recipe["world_size"] == 2
    assert card.metrics["epochs_run"] == 1
    assert [h["name"] for h in card.calibration["heads"]] == ["pixels", "compression"]


@pytest.mark.slow
def test_big_net_path_five_crops_times_d4(fakes: Path, tmp_path: Path) -> None:
    """An ImageNet-family net goes through the same loop: 1 crop per image, D4 TTA."""
    from camid.engine.predict import OpenSetRule, default_view_spec
    from camid.identify import Identifier

    samples = load_dataset(fakes).samples
    res = train(
        TrainConfig(
            name="mnet",
            arch="mobilenet_v2",
            patch=32,
            epochs=1,
            batch_size=8,
            d4=True,
            val_fraction=0.25,
        ),
        samples,
        home=tmp_path,
    )
    assert res.card.recipe["patches_per_image"] == 1 and res.card.recipe["large"] == 64
    model, card = load_model("mnet", home=tmp_path)
    spec = default_view_spec(card)
    assert (spec.mode, spec.d4, spec.size) == ("five", True, 32)
    ident = Identifier(model, card, torch.device("cpu"), views=spec, rule=OpenSetRule(0.0))
    recs = list(ident.identify([s.path for s in samples[:2]]))
    assert all(r.n_views == 5 * 8 for r in recs)
    assert all(abs(sum(t["probability"] for t in r.top) - 1) < 1e-4 for r in recs)


def test_default_arch_learns_the_synthetic_cameras(tmp_path: Path) -> None:
    """The default recipe (tracenet, manipulations on) tells the five synthetic camera
    models apart on held-out photos after a few short epochs on the CPU."""
    from camid.engine.predict import OpenSetRule, default_view_spec
    from camid.identify import Identifier
    from camid.synth import make_camera_dataset

    torch.set_num_threads(2)
    csv = make_camera_dataset(
        tmp_path / "cams", per_device=6, flat_per_device=0, size=(256, 192), seed=11
    )
    samples = load_dataset(csv).samples
    res = train(
        TrainConfig(name="synth5", epochs=5, patches_per_image=16, seed=3),
        samples,
        home=tmp_path / "home",
    )
    assert res.card.arch == "tracenet"
    model, card = load_model("synth5", home=tmp_path / "home")
    rule = OpenSetRule(0.0)  # closed-set accuracy here
    ident = Identifier(model, card, torch.device("cpu"), views=default_view_spec(card), rule=rule)
    test = [s for s in samples if s.split == "test"]
    recs = list(ident.identify([s.path for s in test]))
    right = np.mean([r.top[0]["camera"] == s.camera for r, s in zip(recs, test, strict=True)])
    assert len(test) >= 10
    assert right >= 0.9, right
    # evidence heads: calibrated at training, reported per photo
    heads = card.calibration["heads"]
    assert [h["name"] for h in heads] == ["pixels", "compression"]
    assert all(0 <= h["support_threshold"] <= 0.5 for h in heads)
    assert set(OpenSetRule.from_card(card).support) == {"pixels", "compression"}
    assert OpenSetRule.from_card(card, trace_check=False).support == {}
    ev = recs[0].to_record()["evidence"]
    assert [e["kind"] for e in ev] == ["cnn", "head", "head", "exif"]
    heads = {e["name"]: e for e in ev if e["kind"] == "head"}
    assert set(heads) == {"pixels", "compression"}
    assert all(0 <= e["support"] <= e["strength"] <= 1 for e in heads.values())


# --- holding large photos: tiles and cached validation views -----------------------------


def test_store_plan_caches_small_sets_and_tiles_large_photos(tmp_path: Path) -> None:
    from camid.engine.data import plan_store
    from tests.conftest import natural_rgb, write_jpeg

    paths = [write_jpeg(tmp_path / f"p{i}.jpg", natural_rgb(1000, 1400, seed=i)) for i in range(4)]
    assert plan_store(paths, 128).mode == "cache"  # 4 x 4.2 MB fits the default budget
    assert plan_store(paths, 128, cache=False).mode == "decode"
    plan = plan_store(paths, 128, limit_bytes=4_000_000)  # too small for whole photos
    assert plan.mode == "tiles" and plan.tile == 256 and 4 <= plan.per_image <= 32
    assert plan.per_image * 256 * 256 * 3 * len(paths) <= 4_000_000
    assert plan_store(paths, 512, limit_bytes=4_000_000).mode == "decode"  # tiles too big


def test_tiles_sit_on_the_jpeg_grid_inside_the_region(tmp_path: Path) -> None:
    from camid.engine.data import TileStore
    from camid.io.image import load_image
    from tests.conftest import natural_rgb, write_jpeg

    path = write_jpeg(tmp_path / "big.jpg", natural_rgb(520, 700, seed=3))
    px = load_image(path).pixels
    store = TileStore([path], tile=128, per_image=6, region="right", seed=1)
    store.preload(workers=1)
    tiles = store.tiles(0)
    assert tiles.shape == (6, 128, 128, 3)
    again = TileStore([path], tile=128, per_image=6, region="right", seed=1).tiles(0)
    assert np.array_equal(tiles, again)  # repeatable (resume draws the same tiles)
    x_min = 352  # the right half starts at 350 rounded up to the 8-px grid
    for t in tiles:
        hits = [
            (y, x)
            for y in range(0, 520 - 128 + 1, 8)
            for x in range(x_min, 700 - 128 + 1, 8)
            if np.array_equal(px[y : y + 128, x : x + 128], t)
        ]
        assert hits, "every tile is an aligned crop of the right half"


def test_training_from_tiles_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When whole photos do not fit the memory budget, training runs from tiles and the
    validation views are taken once."""
    import camid.engine.data as data_mod

    big = make_fake_cameras(tmp_path / "big", CAMS, per_camera=5, size=(1024, 768))
    samples = load_dataset(big).samples
    monkeypatch.setattr(data_mod, "DEFAULT_CACHE_BYTES", 16_000_000)  # < 15 x 2.4 MB
    events: list[dict] = []
    res = train(
        TrainConfig(name="tiles", epochs=2, **{**FAST, "patch": 16}),
        samples,
        home=tmp_path / "home",
        progress=events.append,
    )
    messages = [e["message"] for e in events if e["event"] == "info"]
    assert any("tiles of 256 px" in m for m in messages), messages
    assert res.card.metrics["epochs_run"] == 2
    assert 0.0 <= res.card.metrics["val_accuracy"] <= 1.0
