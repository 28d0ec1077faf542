"""camid.synth: camera specs, the simulated pipeline, datasets, manifests and the CLI."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from camid.cli import main
from camid.errors import InputError, UsageError
from camid.io.exif import read_exif
from camid.synth import (
    LABELS,
    PRINTERS,
    bottle_scene,
    default_spec,
    device_prnu,
    flat_field_scene,
    load_spec,
    make_bottles_dataset,
    make_camera_dataset,
    natural_scene,
    simulate,
    spec_from_dict,
    spec_to_toml,
)
from camid.synth.demosaic import METHODS
from camid.synth.font import CHARSET, glyph
from camid.synth.jpeg import quant_tables
from camid.synth.sensor import mosaic

SPEC = default_spec()


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --- specs -------------------------------------------------------------------------------


def test_default_spec_five_models_two_devices_distinct_names():
    assert [c.id for c in SPEC.cameras] == ["A", "B", "C", "D", "E"]
    assert all(c.devices == 2 for c in SPEC.cameras)
    assert len({c.name for c in SPEC.cameras}) == 5
    for cam in SPEC.cameras:
        cam.validate()
        assert cam.name == f"{cam.make} {cam.model}"


def test_spec_toml_round_trip(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(spec_to_toml(SPEC))
    assert load_spec(path).cameras == SPEC.cameras


def test_spec_json_preset_override_and_errors(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(
        json.dumps(
            {
                "camera": [
                    {"preset": "A", "id": "P", "make": "Acme", "model": "One", "jpeg_quality": 80},
                    {
                        "id": "Q",
                        "make": "Acme",
                        "model": "Two",
                        "cfa": "GBRG",
                        "demosaic": "gradient",
                    },
                ]
            }
        )
    )
    spec = load_spec(path)
    p, q = spec.cameras
    assert p.jpeg_quality == 80 and p.demosaic == SPEC.cameras[0].demosaic
    assert q.cfa == "GBRG" and q.sensor_seed != 0
    with pytest.raises(InputError, match="unknown field"):
        spec_from_dict({"camera": [{"id": "Z", "make": "a", "model": "b", "colour": 1}]})
    with pytest.raises(InputError, match="cfa"):
        spec_from_dict({"camera": [{"id": "Z", "make": "a", "model": "b", "cfa": "RGBG"}]})
    with pytest.raises(InputError, match="unique"):
        spec_from_dict({"camera": [{"id": "Z", "make": "a", "model": "b"}] * 2})
    bad = tmp_path / "bad.toml"
    bad.write_text("[[camera]\n")
    with pytest.raises(InputError, match="not a valid spec"):
        load_spec(bad)


# --- the pipeline --------------------------------------------------------------------------


def test_simulate_writes_model_jpeg_and_exif(tmp_path):
    scene = natural_scene((96, 128), np.random.default_rng(1))
    for cam in SPEC.cameras:
        px, data = simulate(
            scene, cam, 1, np.random.default_rng(2), datetime_original="2023:05:06 07:08:09"
        )
        assert px.shape == (96, 128, 3) and px.dtype == np.uint8
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG"
            assert np.array_equal(np.asarray(im.convert("RGB")), px)
            q = im.quantization
            assert [list(q[0]), list(q[1])] == quant_tables(cam)
            sampling = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}[cam.subsampling]
            assert JpegImagePlugin.get_sampling(im) == sampling
        f = tmp_path / f"{cam.id}.jpg"
        f.write_bytes(data)
        info = read_exif(f)
        assert (info.make, info.model, info.software) == (cam.make, cam.model, cam.software)
        assert info.camera == cam.name
        assert info.datetime_original == "2023:05:06 07:08:09"


def test_simulate_is_deterministic_and_device_specific():
    scene = natural_scene((64, 64), np.random.default_rng(3))
    cam = SPEC.cameras[1]
    a = simulate(scene, cam, 0, np.random.default_rng(5))[1]
    b = simulate(scene, cam, 0, np.random.default_rng(5))[1]
    c = simulate(scene, cam, 1, np.random.default_rng(5))[1]
    assert a == b and a != c
    with pytest.raises(UsageError):
        simulate(scene, cam, 2, np.random.default_rng(5))


def test_orientation_tag_can_disagree_with_pixels(tmp_path):
    import dataclasses

    cam = dataclasses.replace(SPEC.cameras[0], orientation_mismatch=1.0)
    scene = natural_scene((48, 80), np.random.default_rng(0))
    px, data = simulate(scene, cam, 0, np.random.default_rng(0))
    f = tmp_path / "o.jpg"
    f.write_bytes(data)
    assert px.shape[:2] == (48, 80)  # pixels stay in sensor (landscape) orientation
    assert read_exif(f).orientation == 6
    plain = dataclasses.replace(cam, orientation_mismatch=0.0)
    f.write_bytes(simulate(scene, plain, 0, np.random.default_rng(0))[1])
    assert read_exif(f).orientation == 1


def test_prnu_pattern_properties():
    cam = SPEC.cameras[0]
    k0 = device_prnu(cam, 0, (300, 260))
    assert k0.dtype == np.float32 and k0.shape == (300, 260)
    assert 0.007 < float(k0.std()) < 0.013 and abs(float(k0.mean())) < 0.001
    # a smaller frame is the top-left crop of a larger one (a fixed physical pattern)
    assert np.array_equal(device_prnu(cam, 0, (100, 90)), k0[:100, :90])
    k1 = device_prnu(cam, 1, (300, 260))
    assert abs(np.corrcoef(k0.ravel(), k1.ravel())[0, 1]) < 0.02
    # mostly white: neighbouring pixels only weakly correlated
    lag1 = np.corrcoef(k0[:, :-1].ravel(), k0[:, 1:].ravel())[0, 1]
    assert 0.02 < lag1 < 0.4


@pytest.mark.parametrize("pattern", ["RGGB", "BGGR", "GRBG", "GBRG"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_demosaic_reconstructs_smooth_images(pattern, method):
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    rgb = np.stack(
        [
            0.5 + 0.3 * np.sin(xx / 9),
            0.4 + 0.2 * np.cos(yy / 7),
            0.3 + 0.2 * np.sin((xx + yy) / 11),
        ],
        axis=-1,
    ).astype(np.float32)
    raw = mosaic(rgb, pattern)
    out = METHODS[method](raw, pattern)
    inner = (slice(4, -4), slice(4, -4))
    assert np.abs(out[inner] - rgb[inner]).max() < 0.03
    # known samples pass through unchanged
    assert np.allclose(mosaic(out, pattern), raw, atol=1e-6)


def test_flat_fields_bright_unsaturated_with_vignetting():
    cam = SPEC.cameras[2]
    rng = np.random.default_rng(4)
    px, _ = simulate(flat_field_scene((120, 160), rng), cam, 0, rng, exposure_ev=1.3)
    grey = px.astype(np.float64).mean(axis=2)
    assert 140 < grey.mean() < 225 and px.max() < 250
    assert grey[50:70, 70:90].mean() > grey[:15, :15].mean() + 3  # corners darker


def test_dot_matrix_font_and_printers_differ_only_in_geometry():
    assert len(CHARSET) == 36
    shapes = {c: glyph(c).tobytes() for c in CHARSET}
    assert len(set(shapes.values())) == 36 and all(glyph(c).shape == (7, 5) for c in CHARSET)
    # same random state -> same text, layout and plastic; only the dots differ
    a, ta = bottle_scene((192, 192), np.random.default_rng(9), PRINTERS[0])
    b, tb = bottle_scene((192, 192), np.random.default_rng(9), PRINTERS[1])
    assert ta == tb and len(ta[0]) >= 6
    assert not np.array_equal(a, b)
    # the ink amount is about the same, so the label is not a brightness cue
    assert abs(a.mean() - b.mean()) / a.mean() < 0.01


# --- datasets ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bottles(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bottles")
    return make_bottles_dataset(out, per_device=5, size=(64, 64), seed=3, test_fraction=0.2)


def test_bottle_manifests_share_a_balanced_test_split(bottles):
    sets = {k: _rows(v) for k, v in bottles.items()}
    for rows in sets.values():
        assert list(rows[0]) == ["path", "label", "camera", "device", "split"]
        assert {r["split"] for r in rows} == {"train", "test"}
        for r in rows:
            assert (bottles["balanced"].parent / r["path"]).is_file()
    tests = {k: [r for r in rows if r["split"] == "test"] for k, rows in sets.items()}
    assert tests["balanced"] == tests["partial"] == tests["disjoint"]
    cells = Counter((r["camera"], r["label"]) for r in tests["balanced"])
    assert len(cells) == 5 * 2 and len(set(cells.values())) == 1  # camera x label balanced
    assert sum(cells.values()) == 10 * 2  # 20% of 10 images per camera x label cell
    assert len(sets["balanced"]) == 5 * 2 * 2 * 5


def test_bottle_settings_have_the_stated_camera_label_structure(bottles):
    names = {c.id: c.name for c in SPEC.cameras}
    train = {k: [r for r in _rows(v) if r["split"] == "train"] for k, v in bottles.items()}
    bal = Counter((r["camera"], r["label"]) for r in train["balanced"])
    assert len(bal) == 10 and len(set(bal.values())) == 1
    part = Counter((r["camera"], r["label"]) for r in train["partial"])
    assert {c for c, _ in part} == {names["A"], names["B"]} and len(set(part.values())) == 1
    assert set(part) == {(names[c], lab) for c in "AB" for lab in LABELS}
    dis = {(r["camera"], r["label"]) for r in train["disjoint"]}
    assert dis == {
        (names["A"], "maker1"),
        (names["B"], "maker1"),
        (names["C"], "maker2"),
        (names["D"], "maker2"),
    }
    assert names["E"] not in {r["camera"] for r in train["disjoint"]}


def test_dataset_is_byte_identical_for_the_same_seed(tmp_path, bottles):
    again = make_bottles_dataset(
        tmp_path / "again", per_device=5, size=(64, 64), seed=3, test_fraction=0.2
    )
    assert _tree_hashes(again["balanced"].parent) == _tree_hashes(bottles["balanced"].parent)
    other = make_bottles_dataset(
        tmp_path / "other", per_device=5, size=(64, 64), seed=4, test_fraction=0.2
    )
    assert _tree_hashes(other["balanced"].parent) != _tree_hashes(bottles["balanced"].parent)


def test_parallel_rendering_matches_serial(tmp_path):
    kw = dict(per_device=3, flat_per_device=2, size=(48, 40), seed=1)
    serial = make_camera_dataset(tmp_path / "s", workers=1, **kw).parent
    parallel = make_camera_dataset(tmp_path / "p", workers=2, **kw).parent
    assert _tree_hashes(serial) == _tree_hashes(parallel)


def test_camera_dataset_manifests_and_exif_agree(tmp_path):
    manifest = make_camera_dataset(tmp_path, per_device=4, flat_per_device=2, size=(80, 64), seed=2)
    rows = _rows(manifest)
    flats = _rows(tmp_path / "flatfield.csv")
    assert len(rows) == 10 * 4 and len(flats) == 10 * 2
    per_dev = Counter((r["device"], r["split"]) for r in rows)
    assert all(
        per_dev[(d, "test")] == 1 and per_dev[(d, "train")] == 3
        for d in {r["device"] for r in rows}
    )
    assert all(r["label"] == r["camera"] for r in rows)
    for r in rows[::7] + flats[::5]:
        info = read_exif(tmp_path / r["path"])
        assert info.camera == r["camera"]
        assert r["device"][0] in "ABCDE"
    with pytest.raises(UsageError, match="already exists"):
        make_camera_dataset(tmp_path, per_device=2, flat_per_device=0, size=(64, 64))


# --- CLI ------------------------------------------------------------------------------------


def test_cli_cameras_bottles_spec_preview(tmp_path, capsys):
    rc = main(
        [
            "synth",
            "cameras",
            str(tmp_path / "c"),
            "--per-device",
            "2",
            "--flat",
            "1",
            "--size",
            "64x48",
            "--json",
        ]
    )
    assert rc == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["setting"] for r in recs] == ["cameras", "flatfield"]
    assert recs[0]["images"] == 20 and recs[0]["cameras"] == 5 and recs[1]["images"] == 10
    # second run without --force refuses; with --force succeeds
    assert main(["synth", "cameras", str(tmp_path / "c"), "--size", "64"]) == 2
    assert (
        main(
            [
                "synth",
                "cameras",
                str(tmp_path / "c"),
                "--per-device",
                "2",
                "--flat",
                "0",
                "--size",
                "64",
                "--force",
                "-q",
                "--json",
            ]
        )
        == 0
    )
    capsys.readouterr()
    rc = main(
        [
            "synth",
            "bottles",
            str(tmp_path / "b"),
            "--per-device",
            "2",
            "--size",
            "64",
            "--test-fraction",
            "0.5",
            "--format",
            "json",
        ]
    )
    assert rc == 0
    recs = {r["setting"]: r for r in json.loads(capsys.readouterr().out)}
    assert recs["balanced"]["test"] == recs["disjoint"]["test"] == 20  # 2 per camera x label
    assert recs["disjoint"]["cameras"] == 5  # the test split keeps every camera
    assert main(["synth", "bottles", str(tmp_path / "x"), "--size", "10x10"]) == 2
    assert main(["synth", "spec"]) == 0
    toml_text = capsys.readouterr().out
    (tmp_path / "s.toml").write_text(toml_text)
    assert load_spec(tmp_path / "s.toml").cameras == SPEC.cameras
    spec_json = tmp_path / "two.json"
    spec_json.write_text(json.dumps({"camera": [{"preset": "A"}, {"preset": "C"}]}))
    assert (
        main(
            [
                "synth",
                "bottles",
                str(tmp_path / "two"),
                "--spec",
                str(spec_json),
                "--per-device",
                "2",
                "--size",
                "48",
                "--test-fraction",
                "0.5",
                "-q",
                "--json",
            ]
        )
        == 0
    )
    two = _rows(tmp_path / "two" / "disjoint.csv")
    assert {r["camera"] for r in two} == {SPEC.cameras[0].name, SPEC.cameras[2].name}
    assert main(["synth", "preview", str(tmp_path / "p.png"), "--size", "64x48"]) == 0
    with Image.open(tmp_path / "p.png") as im:
        assert im.format == "PNG" and im.width > 5 * 64
    assert (
        main(["synth", "cameras", str(tmp_path / "d"), "--spec", str(tmp_path / "missing.toml")])
        == 3
    )
