"""camid identify: top-k, open-set 'unknown', EXIF cross-check, batches with bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from camid.cli import main
from camid.data.dataset import load_dataset
from camid.engine.data import ViewSpec
from camid.engine.predict import Aggregate, OpenSetRule, Predictor, aggregate
from camid.identify import exif_cross_check, match_class
from camid.models.store import load_model
from tests.test_train_fakes import fake_photo, save_jpeg, shared_model

CAMS = ["Acme Alpha", "Bolt B2", "Cora C3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(camid home with model 'fk3', dataset folder), shared with the evaluate tests."""
    home, csv = shared_model(tmp_path_factory.getbasetemp())
    return home, csv.parent


@pytest.fixture(autouse=True)
def _home(trained: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAMID_HOME", str(trained[0]))


def _identify(capsys, *args: str) -> tuple[int, list[dict], str]:
    rc = main(["identify", *args, "--model", "fk3", "--json"])
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if cap.out.strip() else []), cap.err


def test_match_class_is_robust_to_case_space_and_punctuation() -> None:
    classes = ["Canon EOS 5D", "NIKON D700", "Hollis Mobile HM-X3"]
    assert match_class("canon  eos 5d", classes) == "Canon EOS 5D"
    assert match_class("Nikon D700", classes) == "NIKON D700"
    assert match_class("Hollis_Mobile_HMX3", classes) == "Hollis Mobile HM-X3"
    assert match_class("EOS 5D", classes) == "Canon EOS 5D"  # model without make
    assert match_class("Sony A7", classes) is None
    assert match_class(None, classes) is None
    assert exif_cross_check(None, "NIKON D700", classes)[0] == "no-exif"
    assert exif_cross_check("Sony A7", "NIKON D700", classes)[0] == "unknown-camera"
    assert exif_cross_check("nikon d700", "NIKON D700", classes)[0] == "consistent"
    assert exif_cross_check("Canon EOS 5D", "NIKON D700", classes)[0] == "mismatch"
    assert exif_cross_check("Canon EOS 5D", None, classes)[0] == "inconclusive"


def test_open_set_rule_and_aggregation() -> None:
    confident = np.tile([[6.0, 0.0, 0.0]], (10, 1))
    agg = aggregate(confident)
    assert agg.top == 0 and agg.probs[0] > 0.99 and agg.agreement == 1.0
    flat = aggregate(np.zeros((10, 3)))
    rule = OpenSetRule(threshold=0.5)
    assert rule.decide(agg, ["a", "b", "c"])[0] is True
    known, reason = rule.decide(flat, ["a", "b", "c"])
    assert known is False and "below the given threshold 0.5" in reason
    near = Aggregate(np.array([0.904, 0.096, 0.0]), np.array([1.0, 0.0, 0.0]), 64)
    card_rule = OpenSetRule(0.91, threshold_source="model")
    known, reason = card_rule.decide(near, ["a", "b", "c"])
    assert not known and "p = 0.904, 0.006 below the model's calibrated threshold 0.91" in reason
    split = Aggregate(np.array([0.6, 0.4, 0.0]), np.array([0.3, 0.7, 0.0]), 10)
    known, reason = OpenSetRule(0.5, min_agreement=0.5).decide(split, ["a", "b", "c"])
    assert known is False and "disagree" in reason
    geo = aggregate(np.array([[2.0, 0.0], [0.0, 1.0]]), 1.0, "geometric")
    assert geo.probs == pytest.approx(torch.softmax(torch.tensor([1.0, 0.5]), 0).numpy())


def test_open_set_rule_refuses_a_decision_its_evidence_heads_contradict() -> None:
    classes = ["a", "b", "c"]
    heads = {"pixels": np.array([0.02, 0.9, 0.08]), "compression": np.array([0.97, 0.02, 0.01])}
    agg = Aggregate(np.array([0.9, 0.08, 0.02]), np.array([1.0, 0.0, 0.0]), 10, heads)
    assert OpenSetRule(0.5).decide(agg, classes)[0] is True  # no support test asked for
    known, reason = OpenSetRule(0.5, support={"pixels": 0.05}).decide(agg, classes)
    assert known is False
    assert "pixels traces give 'a' only 0.020 (< 0.050)" in reason and "point to 'b'" in reason
    assert OpenSetRule(0.5, support={"pixels": 0.01}).decide(agg, classes)[0] is True
    plain = Aggregate(agg.probs, agg.votes, 10)  # a model without heads is never refused
    assert OpenSetRule(0.5, support={"pixels": 0.05}).decide(plain, classes)[0] is True


def test_find_grid_reports_the_grid_and_keeps_originals_aligned(trained, capsys) -> None:
    home, data = trained
    ds = load_dataset(data / "cameras.csv")
    photo = next(s.path for s in ds.samples if s.split == "test")
    rc, recs, err = _identify(capsys, str(photo), "--find-grid")
    assert rc == 0, err
    assert recs[0]["jpeg_grid"] == [0, 0]
    rc, recs, _ = _identify(capsys, str(photo))
    assert "jpeg_grid" not in recs[0]


def test_identify_known_photos_top_k_and_provenance(trained, capsys) -> None:
    home, data = trained
    ds = load_dataset(data / "cameras.csv")
    test = [s for s in ds.samples if s.split == "test" and s.camera in CAMS]
    rc, recs, err = _identify(capsys, *[str(s.path) for s in test], "--top-k", "2")
    assert rc == 0, err
    assert len(recs) == len(test)
    truth = {str(s.path): s.camera for s in test}
    correct = [r["top"][0]["camera"] == truth[r["path"]] for r in recs]
    assert np.mean(correct) >= 0.8
    _, card = load_model("fk3", home=home)
    for r in recs:
        assert len(r["top"]) == 2 and r["top"][0]["probability"] >= r["top"][1]["probability"]
        assert r["model"] == "fk3" and r["model_sha256"] == card.weights_sha256
        assert len(r["sha256"]) == 64 and r["camid_version"]
        assert r["exif_camera"] == truth[r["path"]]
        if r["decision"] == "known":
            assert r["exif_check"] in ("consistent", "mismatch")
        else:
            assert r["camera"] == "unknown" and r["exif_check"] == "inconclusive"
    assert sum(r["exif_check"] == "consistent" for r in recs) >= 0.8 * len(recs) - 1


def test_exif_mismatch_is_a_finding_with_the_flag(trained, tmp_path: Path, capsys) -> None:
    # content of an Acme camera, EXIF claiming Bolt B2
    liar = save_jpeg(fake_photo("Acme Alpha", 777), tmp_path / "liar.jpg", "Bolt", "B2")
    rc, recs, err = _identify(capsys, str(liar), "--unknown-threshold", "0")
    assert rc == 0, err
    assert recs[0]["camera"] == "Acme Alpha"
    assert recs[0]["exif_check"] == "mismatch" and "Bolt B2" in recs[0]["exif_note"]
    rc, recs, err = _identify(capsys, str(liar), "--unknown-threshold", "0", "--fail-on-mismatch")
    assert rc == 1 and recs[0]["exif_check"] == "mismatch"
    honest = save_jpeg(fake_photo("Acme Alpha", 778), tmp_path / "ok.jpg", "Acme", "Alpha")
    rc, recs, _ = _identify(capsys, str(honest), "--unknown-threshold", "0", "--fail-on-mismatch")
    assert rc == 0 and recs[0]["exif_check"] == "consistent"


def test_exif_no_exif_and_unknown_camera(trained, tmp_path: Path, capsys) -> None:
    bare = save_jpeg(fake_photo("Bolt B2", 901), tmp_path / "bare.jpg", None, None)
    other = save_jpeg(fake_photo("Bolt B2", 902), tmp_path / "other.jpg", "Zeta", "Z9 Pro")
    rc, recs, _ = _identify(capsys, str(bare), str(other))
    assert rc == 0
    by = {Path(r["path"]).name: r for r in recs}
    assert by["bare.jpg"]["exif_check"] == "no-exif" and by["bare.jpg"]["exif_camera"] is None
    assert by["other.jpg"]["exif_check"] == "unknown-camera"


def test_bad_files_in_a_batch_are_reported_and_the_batch_goes_on(
    trained, tmp_path: Path, capsys
) -> None:
    good = save_jpeg(fake_photo("Cora C3", 50), tmp_path / "good.jpg", "Cora", "C3")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good.read_bytes()[:300])
    failed = tmp_path / "failed.txt"
    rc, recs, err = _identify(
        capsys,
        str(text),
        str(good),
        str(trunc),
        str(tmp_path / "missing.jpg"),
        "--failed-list",
        str(failed),
    )
    assert rc == 3
    assert [Path(r["path"]).name for r in recs] == ["good.jpg"]
    assert "notes.jpg" in err and "trunc.jpg" in err and "missing.jpg" in err
    assert "Traceback" not in err
    assert len(failed.read_text().splitlines()) == 3


def test_directory_and_stdin_inputs_and_formats(trained, tmp_path: Path, capsys, monkeypatch):
    folder = tmp_path / "photos"
    for i in range(3):
        save_jpeg(fake_photo(CAMS[i], 60 + i), folder / f"p{i}.jpg", None, None)
    rc = main(["identify", str(folder), "--model", "fk3", "--format", "csv"])
    cap = capsys.readouterr()
    assert rc == 0
    lines = cap.out.strip().splitlines()
    assert lines[0].startswith("path,") and len(lines) == 4
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(f"{folder / 'p0.jpg'}\n{folder / 'p1.jpg'}\n"))
    rc = main(["identify", "-", "--model", "fk3", "--format", "ndjson"])
    cap = capsys.readouterr()
    assert rc == 0
    assert [json.loads(x)["path"] for x in cap.out.strip().splitlines()] == [
        str(folder / "p0.jpg"),
        str(folder / "p1.jpg"),
    ]


def test_predictor_stream_equals_per_image_forward(trained) -> None:
    home, data = trained
    model, card = load_model("fk3", home=home)
    pred = Predictor(model, card, torch.device("cpu"), batch_size=7)
    rng = np.random.default_rng(0)
    items = [
        (i, rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8))
        for i, n in enumerate([3, 10, 1, 0, 8])
    ]
    items.insert(2, ("bad", ValueError("x")))
    out = list(pred.stream(items))
    assert [k for k, _ in out] == [0, 1, "bad", 2, 3, 4]
    for (key, views), (_k, logits) in zip(items, out, strict=True):
        if key == "bad":
            assert isinstance(logits, ValueError)
            continue
        assert logits.shape == (len(views), 3)
        if len(views):
            np.testing.assert_allclose(logits, pred.forward(views), rtol=1e-4, atol=1e-4)
    spec = ViewSpec(32, "grid", 64)
    assert spec.to_dict()["max_views"] == 64


def test_fingerprint_option_reports_best_pce(trained, tmp_path: Path, capsys) -> None:
    from camid.prnu.fingerprint import build_fingerprint
    from camid.prnu.store import save_fingerprint

    rng = np.random.default_rng(5)
    prnu = 1 + 0.05 * rng.standard_normal((96, 128, 1))  # one sensor's gain pattern

    def shot(seed: int) -> np.ndarray:
        base = fake_photo("Acme Alpha", seed).astype(np.float64)
        return np.clip(np.round(base * prnu), 0, 255).astype(np.uint8)

    fp = build_fingerprint([shot(300 + i) for i in range(6)], "acme-unit-1")
    fp_file = save_fingerprint(fp, tmp_path / "acme1.fp")
    same = save_jpeg(shot(400), tmp_path / "same.jpg", "Acme", "Alpha")
    other = save_jpeg(fake_photo("Acme Alpha", 401), tmp_path / "other.jpg", "Acme", "Alpha")
    rc, recs, err = _identify(capsys, str(same), str(other), "--fingerprint", str(fp_file))
    assert rc == 0, err
    by = {Path(r["path"]).name: r["prnu"] for r in recs}
    assert by["same.jpg"]["best_fingerprint"] == "acme-unit-1"
    assert by["same.jpg"]["pce"] > by["other.jpg"]["pce"]


# --- one evidence shape, PRNU + CNN fusion --------------------------------------------------


def _sensor_shots(cam: str, sensor_seed: int, seeds: range) -> list[np.ndarray]:
    """Photos of camera model `cam` through one device's multiplicative sensor pattern."""
    rng = np.random.default_rng(sensor_seed)
    prnu = 1 + 0.05 * rng.standard_normal((96, 128, 1))
    return [
        np.clip(np.round(fake_photo(cam, s).astype(np.float64) * prnu), 0, 255).astype(np.uint8)
        for s in seeds
    ]


@pytest.fixture(scope="module")
def fused_setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Fingerprints of an 'Acme Alpha' unit and a 'Bolt B2' unit (camera models recorded),
    and photos: Acme photos from the Acme unit, and an Acme-looking photo from the Bolt unit."""
    from camid.prnu.fingerprint import build_fingerprint
    from camid.prnu.store import save_fingerprint

    d = tmp_path_factory.mktemp("fusion")
    acme = _sensor_shots("Acme Alpha", 11, range(500, 508))
    bolt = _sensor_shots("Bolt B2", 12, range(600, 608))
    fp_a = save_fingerprint(
        build_fingerprint(acme[:6], "acme-unit", camera="Acme Alpha"), d / "a.fp.safetensors"
    )
    fp_b = save_fingerprint(
        build_fingerprint(bolt[:6], "bolt-unit", camera="Bolt B2"), d / "b.fp.safetensors"
    )
    # an Acme-processed picture taken through the Bolt unit's sensor: the CNN sees Acme
    # processing, the sensor pattern is Bolt's
    rng = np.random.default_rng(12)
    bolt_prnu = 1 + 0.05 * rng.standard_normal((96, 128, 1))
    acme_look = np.clip(
        np.round(fake_photo("Acme Alpha", 777).astype(np.float64) * bolt_prnu), 0, 255
    ).astype(np.uint8)
    return {
        "fps": [fp_a, fp_b],
        "same": save_jpeg(acme[7], d / "same.jpg", "Acme", "Alpha"),
        "cross": save_jpeg(acme_look, d / "cross.jpg", "Acme", "Alpha"),
    }


def test_prnu_match_and_cnn_agree(fused_setup: dict) -> None:
    from camid.identify import Identifier
    from camid.identify.evidence import PrnuProvider
    from camid.prnu.store import load_fingerprint

    ident = Identifier.from_model("fk3", device="cpu")
    prnu = PrnuProvider([load_fingerprint(f) for f in fused_setup["fps"]])
    (res,) = list(ident.identify([fused_setup["same"]], [prnu]))
    kinds = [e.kind for e in res.evidence]
    assert kinds[0] == "cnn" and "prnu" in kinds and kinds[-1] == "exif"
    ev = {e.kind: e for e in res.evidence}
    assert ev["prnu"].decisive and ev["prnu"].camera == "Acme Alpha"
    assert res.camera == "Acme Alpha" and res.contradiction is None
    assert res.decided_by in ("cnn+prnu", "prnu")
    assert res.prnu["best_fingerprint"] == "acme-unit" and res.prnu["pce"] > 60


def test_prnu_match_outranks_a_contradicting_cnn(fused_setup: dict, capsys) -> None:
    """Acme processing through the Bolt unit's sensor: the network names another camera,
    PRNU decides, the contradiction is reported, and --fail-on-mismatch makes it exit 1."""
    args = [str(fused_setup["cross"]), *[a for f in fused_setup["fps"] for a in ("-F", str(f))]]
    rc, recs, err = _identify(capsys, *args, "--unknown-threshold", "0")
    assert rc == 0, err
    (rec,) = recs
    assert rec["prnu"]["best_fingerprint"] == "bolt-unit" and rec["prnu"]["decision"] == "match"
    cnn_says = rec["top"][0]["camera"]  # what the network alone says
    assert cnn_says != "Bolt B2"
    assert rec["camera"] == "Bolt B2" and rec["decided_by"] == "prnu"
    assert f"CNN says {cnn_says!r}" in rec["contradiction"]
    assert "outranks the CNN" in rec["reason"]
    rc, _, err = _identify(capsys, *args, "--unknown-threshold", "0", "--fail-on-mismatch")
    assert rc == 1 and "PRNU matches a device of a 'Bolt B2'" in err


def test_prnu_match_identifies_what_the_cnn_calls_unknown(fused_setup: dict, capsys) -> None:
    args = [str(fused_setup["same"]), *[a for f in fused_setup["fps"] for a in ("-F", str(f))]]
    # an impossible threshold: the network alone calls everything unknown
    rc, recs, err = _identify(capsys, *args, "--unknown-threshold", "1")
    assert rc == 0, err
    (rec,) = recs
    cnn = rec["evidence"][0]
    assert cnn["kind"] == "cnn" and cnn["camera"] is None and not cnn["decisive"]
    assert rec["camera"] == "Acme Alpha" and rec["decision"] == "known"
    assert rec["decided_by"] == "prnu" and "CNN alone was inconclusive" in rec["reason"]
    # without fingerprints the same photo stays unknown
    rc, recs, _ = _identify(capsys, str(fused_setup["same"]), "--unknown-threshold", "1")
    assert recs[0]["camera"] == "unknown" and recs[0]["decided_by"] == "none"


def test_fuse_rules_without_a_model() -> None:
    from camid.identify.evidence import Evidence, fuse

    cnn = Evidence("cnn", "cnn", "A", 0.9, "probability", True, "p 0.90")
    unsure = Evidence("cnn", "cnn", None, 0.3, "probability", False, "weak")
    match_b = Evidence("prnu", "prnu", "B", 900.0, "pce", True, "PRNU matches B")
    device_only = Evidence("prnu", "prnu", None, 900.0, "pce", True, "PRNU matches unit-7")
    no_match = Evidence("prnu", "prnu", None, 3.0, "pce", False, "no PRNU match")
    assert fuse(cnn, [no_match]).camera == "A"
    assert fuse(cnn, [match_b]).camera == "B" and fuse(cnn, [match_b]).contradiction
    assert fuse(unsure, [match_b]).decided_by == "prnu"
    assert fuse(unsure, [no_match]).camera is None
    f = fuse(cnn, [device_only])  # a device match without a model decides nothing
    assert f.camera == "A" and "unit-7" in f.reason and f.contradiction is None


def test_library_door_gives_the_cli_records(trained: tuple[Path, Path], capsys) -> None:
    """docs/identify.md's library example: Identifier.from_model == `camid identify`."""
    from camid.identify import Identifier

    photos = sorted(trained[1].rglob("*.jpg"))[:6]
    ident = Identifier.from_model("fk3", device="cpu")
    lib = [r.to_record() for r in ident.identify(photos)]
    rc, cli, err = _identify(capsys, *map(str, photos))
    assert rc == 0, err
    keys = ("path", "camera", "decision", "probability", "reason", "exif_check", "evidence")
    assert [{k: r[k] for k in keys} for r in lib] == [{k: r[k] for k in keys} for r in cli]
    assert ident.rule.threshold == pytest.approx(float(ident.card.calibration["unknown_threshold"]))


def test_records_carry_what_happened_to_the_photo(trained, tmp_path: Path, capsys) -> None:
    """identify's record has the history findings: a small original not resampled (too
    small to test for a re-save), an x1.5 PNG copy resized (and no JPEG table to test);
    the table shows the short form."""
    from PIL import Image

    ds = load_dataset(trained[1] / "cameras.csv")
    photo = next(s.path for s in ds.samples if s.split == "test" and s.camera in CAMS)
    with Image.open(photo) as im:
        px = np.asarray(im.convert("RGB"))
    h, w = px.shape[:2]
    big = tmp_path / "big.png"
    Image.fromarray(px).resize((w * 3 // 2, h * 3 // 2), Image.Resampling.BICUBIC).save(big)
    rc, recs, err = _identify(capsys, str(photo), str(big))
    assert rc == 0, err
    orig, up = recs
    assert set(orig["history"]) == {"manipulated", "resaved", "resampled", "cropped"}
    assert orig["history"]["manipulated"] is False
    assert orig["history"]["resampled"]["detected"] is False
    assert orig["history"]["resaved"]["detected"] is None  # 128x96: too few 8x8 blocks
    assert "too small" in orig["history"]["resaved"]["reason"]
    assert up["history"]["resampled"]["detected"] is True
    assert up["history"]["resampled"]["estimate"] == pytest.approx(1.5, abs=0.05)
    assert up["history"]["resaved"]["detected"] is None  # a PNG: no last table
    assert "resized (x~1.5)" in up["history_summary"]
    rc = main(["identify", str(photo), str(big), "--model", "fk3", "-f", "table"])
    out = capsys.readouterr().out
    assert rc == 0 and "history" in out and "x1.5" in out
