"""PRNU on resized photos (scale search, corrected threshold) and PRNU at scale (batched matrix).

Real synthetic cameras, real JPEG files written by the test, real fingerprints made through the
CLI; the resized queries are resampled with Pillow (bicubic), not by camid.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import log_ndtr

from camid.cli import main
from camid.identify.evidence import Photo, PrnuProvider
from camid.identify.history import Finding
from camid.prnu.match import (
    DEFAULT_SCALES,
    FingerprintSet,
    corrected_threshold,
    implied_scales,
    scale_candidates,
)
from camid.prnu.store import load_fingerprint

try:
    from tests.test_prnu_oracle import make_camera, shoot
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    from test_prnu_oracle import make_camera, shoot

SHAPE = (160, 208)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small images: one intra-op thread is faster on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _resized(arr: np.ndarray, factor: float) -> Image.Image:
    h, w = arr.shape[:2]
    return Image.fromarray(arr).resize((round(w * factor), round(h * factor)), Image.BICUBIC)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Fingerprints of devices A and B (one model) from 6 flat JPEG frames each, and evidence
    files: each device's photo resized x0.8, and A's resized x0.8 then centre-cropped."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("prnu_scale")
    cams = {
        "A": make_camera("A", SHAPE, seed=31, strength=0.007, model_seed=4),
        "B": make_camera("B", SHAPE, seed=32, strength=0.007, model_seed=4),
    }
    out = {"root": root}
    for name, cam in cams.items():
        flat = root / f"flat_{name}"
        flat.mkdir()
        for i in range(6):
            Image.fromarray(shoot(cam, 10 + i, flat=True, quality=None)).save(
                flat / f"f{i}.jpg", quality=95
            )
        fp = root / f"{name}.fp.safetensors"
        rc = main(["prnu", "fingerprint", str(flat), "-o", str(fp), "--device-name", name,
                   "--json", "-q"])  # fmt: skip
        assert rc == 0
        out[f"fp_{name}"] = fp
        photo = shoot(cam, 400, quality=None)
        p = root / f"{name}_x0.8.jpg"
        _resized(photo, 0.8).save(p, quality=90)
        out[f"resized_{name}"] = p
        out[f"photo_{name}"] = photo
    small = _resized(out["photo_A"], 0.8)  # 166x128, centre crop 120x96 (not a resized frame)
    x0, y0 = (small.width - 120) // 2, (small.height - 96) // 2
    crop = root / "A_x0.8_crop.jpg"
    small.crop((x0, y0, x0 + 120, y0 + 96)).save(crop, quality=90)
    out["crop_A"] = crop
    return out


def _match(capsys, *args: str) -> tuple[int, dict[str, dict]]:
    capsys.readouterr()
    rc = main(["prnu", "match", *args, "--json", "-q"])
    rows = json.loads(capsys.readouterr().out)
    return rc, {r["fingerprint"]: r for r in rows}


def test_resized_photo_matches_only_with_search_scale(scene, capsys):
    fps = ["-F", str(scene["fp_A"]), "-F", str(scene["fp_B"])]
    rc, rows = _match(capsys, str(scene["resized_A"]), *fps)
    assert rc == 1  # without the search: no fingerprint matches the resized photo
    assert rows["A"]["outcome"] == "no match" and rows["A"]["pce"] < 25
    assert "scale" not in rows["A"]  # records without the flag are as before
    rc, rows = _match(capsys, str(scene["resized_A"]), *fps, "--search-scale")
    assert rc == 0
    a, b = rows["A"], rows["B"]
    assert a["outcome"] == "match" and a["pce"] > 100, a
    assert a["scale"] == pytest.approx(0.8, abs=0.01)
    assert a["compared_size"] == "166x128"
    assert a["n_scales"] == 1 and a["threshold"] == 60.0  # the size implies the factor
    assert b["outcome"] == "no match" and b["pce"] < 25  # same model, other device


def test_other_device_resized_does_not_match(scene, capsys):
    rc, rows = _match(capsys, str(scene["resized_B"]), "-F", str(scene["fp_A"]), "--search-scale")
    assert rc == 1
    assert rows["A"]["outcome"] == "no match" and rows["A"]["pce"] < 25


def test_crop_of_resized_photo_uses_the_grid_and_a_higher_threshold(scene, capsys):
    fps = ["-F", str(scene["fp_A"]), "-F", str(scene["fp_B"])]
    rc, rows = _match(capsys, str(scene["crop_A"]), *fps)
    assert rows["A"]["outcome"] == "no match"
    rc, rows = _match(capsys, str(scene["crop_A"]), *fps, "--search-scale")
    a, b = rows["A"], rows["B"]
    n = len(DEFAULT_SCALES) + 1  # 1.0 and the grid: all give distinct sizes here
    assert a["n_scales"] == n and a["single_test_threshold"] == 60.0
    assert a["threshold"] == pytest.approx(corrected_threshold(60.0, n))
    assert a["threshold"] > 60.0 and a["inconclusive_above"] > 25.0
    assert a["scale"] == 0.8 and a["outcome"] == "match" and rc == 0, a
    assert b["outcome"] == "no match"
    assert a["n_tests"] > n  # orientations of each scale are counted in the p-value
    rc, rows = _match(capsys, str(scene["crop_A"]), *fps, "--scales", "0.5,0.8")
    assert rows["A"]["n_scales"] == 3 and rows["A"]["scale"] == 0.8
    assert rows["A"]["threshold"] == pytest.approx(corrected_threshold(60.0, 3))


def test_bad_scales_is_a_usage_error(scene, capsys):
    rc = main(["prnu", "match", str(scene["crop_A"]), "-F", str(scene["fp_A"]),
               "--scales", "0.8,nine", "-q"])  # fmt: skip
    assert rc == 2
    rc = main(["prnu", "match", str(scene["crop_A"]), "-F", str(scene["fp_A"]),
               "--scales", "0", "-q"])  # fmt: skip
    assert rc == 2
    assert "--scales" in capsys.readouterr().err


def test_corrected_threshold_is_bonferroni():
    assert corrected_threshold(60.0, 1) == 60.0
    prev = 60.0
    for n in (2, 8, 10, 100, 10_000):
        t = corrected_threshold(60.0, n)
        assert t > prev
        prev = t
        # n tests at t have the false-alarm probability of one test at 60
        assert log_ndtr(-math.sqrt(t)) + math.log(n) == pytest.approx(log_ndtr(-math.sqrt(60)))
    assert corrected_threshold(60.0, 10) == pytest.approx(64.53, abs=0.01)


def test_scale_candidates():
    assert implied_scales((128, 166), (160, 208)) == [(pytest.approx(0.799, abs=2e-3), (128, 166))]
    # a portrait copy of a landscape frame: the target is in the fingerprint's orientation
    assert implied_scales((166, 128), (160, 208))[0][1] == (128, 166)
    assert scale_candidates((160, 208), (160, 208)) == [(1.0, (160, 208))]
    assert scale_candidates((128, 166), (160, 208))[0][1] == (128, 166)  # implied only
    grid = scale_candidates((96, 120), (160, 208))  # a crop: 1.0 and the default grid
    assert [f for f, _ in grid] == [1.0, *DEFAULT_SCALES]
    cands = scale_candidates((96, 120), (160, 208), (0.5, 0.8, 0.8001))
    assert [t for _, t in cands] == [(160, 208), (80, 104), (128, 166)]  # distinct sizes
    # factors given are tried besides the implied one (an aspect-keeping crop looks resized)
    cands = scale_candidates((120, 156), (160, 208), (0.8,))
    assert [t for _, t in cands] == [(120, 156), (160, 208), (128, 166)]


def test_provider_search_scale_per_photo(scene):
    fps = [load_fingerprint(scene["fp_A"]), load_fingerprint(scene["fp_B"])]
    pixels = np.asarray(Image.open(scene["resized_A"]).convert("RGB"))
    photo = Photo(scene["resized_A"], "0" * 64, 166, 128, None, pixels)
    prov = PrnuProvider(fps, "cpu")
    assert not prov.evidence(photo).decisive
    ev = prov.evidence(photo, search_scale=True)  # e.g. turned on by a resampling finding
    assert ev.decisive and ev.detail["best_fingerprint"] == "A"
    assert ev.detail["scale"] == pytest.approx(0.8, abs=0.01)
    on = PrnuProvider(fps, "cpu", search_scale=[0.8])
    assert on.evidence(photo).decisive
    assert not on.evidence(photo, search_scale=False).decisive


def test_resampling_finding_turns_the_search_on(scene):
    """identify -F without --search-scale: a photo whose history found resampling is
    searched over scale factors by itself, and the record says why."""
    from camid.identify.history import analyse_history

    fps = [load_fingerprint(scene["fp_A"]), load_fingerprint(scene["fp_B"])]
    pixels = np.asarray(Image.open(scene["resized_A"]).convert("RGB"))
    prov = PrnuProvider(fps, "cpu")
    plain = Photo(scene["resized_A"], "0" * 64, 166, 128, None, pixels)
    assert not prov.evidence(plain).decisive  # no history: no search
    resized = Finding("resampled", True, 9.0, 1.25, "resampled (test)")
    history = dataclasses.replace(analyse_history(pixels), resampled=resized)
    told = Photo(scene["resized_A"], "0" * 64, 166, 128, None, pixels, history=history)
    ev = prov.evidence(told)
    assert ev.decisive and ev.detail["best_fingerprint"] == "A"
    assert ev.detail["scale_search"] == "on: resampling detected"
    assert ev.detail["threshold"] >= 60
    assert not prov.evidence(told, search_scale=False).decisive  # an explicit off wins


def test_search_scale_off_is_unchanged(scene):
    fps = [load_fingerprint(scene["fp_A"]), load_fingerprint(scene["fp_B"])]
    img = shoot(make_camera("A", SHAPE, seed=31, strength=0.007, model_seed=4), 401)
    a = FingerprintSet(fps).score(img)
    b = FingerprintSet(fps, search_scale=False).score(img)
    assert [r.to_record() for r in a] == [r.to_record() for r in b]


# ----------------------------------------------------------------------------- at scale


def test_batched_matrix_equals_unbatched(scene, capsys, tmp_path):
    """`prnu matrix` (batched, cached spectra, streamed photos) against one `match_residual`
    per pair: bit for bit where a photo is rotated, cropped or searched over orientations."""
    from camid.prnu.match import match_residual
    from camid.prnu.residual import residual_and_grey

    photo = shoot(make_camera("A", SHAPE, seed=31, strength=0.007, model_seed=4), 402)
    files = {
        "same": photo,
        "portrait": np.ascontiguousarray(np.rot90(photo)),
        "crop": photo[7:140, 5:191],
    }
    paths = []
    for name, arr in files.items():
        p = tmp_path / f"{name}.png"  # lossless: the test reads back the same pixels
        Image.fromarray(arr).save(p)
        paths.append(p)
    fp_files = [scene["fp_A"], scene["fp_B"]]
    fps = [load_fingerprint(f) for f in fp_files]
    for rotations in ("auto", "all"):
        args = ["prnu", "matrix", *map(str, paths), "--rotations", rotations, "-q"]
        for f in fp_files:
            args += ["-F", str(f)]
        capsys.readouterr()
        assert main([*args, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert main([*args, "--format", "ndjson"]) == 0  # streamed: the same records
        assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == rows
        assert len(rows) == len(paths) * len(fps)
        for j, (name, arr) in enumerate(files.items()):
            w, g = residual_and_grey(arr, fps[0].params)
            for i, fp in enumerate(fps):
                ref = match_residual(
                    w, g, torch.from_numpy(fp.k), name=fp.label, rotations=rotations
                ).to_record()
                got = {k: rows[j * len(fps) + i][k] for k in ref}
                if name == "same" and rotations == "auto":  # the same-size batched path
                    assert got["pce"] == pytest.approx(ref["pce"], rel=1e-6, abs=1e-3)
                    assert got["rotation"] == ref["rotation"] == "rot0"
                else:
                    assert got == ref, (name, rotations, fp.label)
    assert rows[0 * 2]["outcome"] == "match" and rows[1 * 2]["rotation"] != "rot0"


def test_spectra_cache_is_bounded(scene):
    """Rotated photos reuse cached fingerprint spectra; a tiny budget keeps none and still
    gives the same numbers."""
    from camid.prnu.match import FingerprintBank
    from camid.prnu.residual import residual_and_grey

    fps = [load_fingerprint(scene["fp_A"]), load_fingerprint(scene["fp_B"])]
    arr = np.ascontiguousarray(np.rot90(shoot(make_camera("A", SHAPE, 31, 0.007, 4), 403)))
    w, g = residual_and_grey(arr)
    bank = FingerprintBank(fps)
    first = [r.to_record() for r in bank.score(w, g)]
    assert bank._oriented  # spectra of the rotated fingerprints kept for the next photo
    assert [r.to_record() for r in bank.score(w, g)] == first
    small = FingerprintBank(fps)
    small.spectra_budget = 1024
    assert [r.to_record() for r in small.score(w, g)] == first
    assert not small._oriented
    assert first[0]["outcome"] == "match" and first[1]["outcome"] == "no match"


def test_identify_search_scale_flag(scene, tmp_path_factory, monkeypatch, capsys):
    """`camid identify -F ... --search-scale`: the resized photo's PRNU matches only with it,
    and the prnu object carries the factor."""
    from tests.test_train_fakes import shared_model

    home, _ = shared_model(tmp_path_factory.getbasetemp())
    monkeypatch.setenv("CAMID_HOME", str(home))
    base = ["identify", str(scene["resized_A"]), "--model", "fk3", "--json", "-q",
            "-F", str(scene["fp_A"]), "-F", str(scene["fp_B"])]  # fmt: skip
    capsys.readouterr()
    assert main(base) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    assert rec["prnu"]["outcome"] == "no match" and "scale" not in rec["prnu"]
    assert main([*base, "--search-scale"]) == 0
    (rec,) = json.loads(capsys.readouterr().out)
    prnu = rec["prnu"]
    assert prnu["outcome"] == "match" and prnu["best_fingerprint"] == "A"
    assert prnu["scale"] == pytest.approx(0.8, abs=0.01) and prnu["n_scales"] == 1


def test_batched_scale_search_equals_pairwise(scene):
    """The bank's batched scale search gives `match_residual_scaled`'s numbers per pair."""
    from camid.prnu.match import FingerprintBank, match_residual_scaled
    from camid.prnu.residual import residual_and_grey

    fps = [load_fingerprint(scene["fp_A"]), load_fingerprint(scene["fp_B"])]
    crop = np.asarray(Image.open(scene["crop_A"]).convert("RGB"))
    portrait = np.ascontiguousarray(np.rot90(np.asarray(Image.open(scene["resized_A"]))))
    for arr in (crop, portrait):
        w, g = residual_and_grey(arr)
        for scales in ((), (0.8, 0.5)):
            bank = FingerprintBank(fps, search_scale=scales or True)
            for _ in range(2):  # the second photo uses the cached copies and spectra
                got = bank.score(w, g)
                for fp, r in zip(fps, got, strict=True):
                    k = torch.from_numpy(fp.k)
                    ref = match_residual_scaled(w, g, k, scales, name=fp.label)
                    assert r.to_record() == ref.to_record()
            assert got[0].outcome == "match" and got[1].outcome == "no match"


def test_bank_records_equal_the_pre_change_code(scene):
    """The bank's records are bit for bit those of camid/prnu/match.py before this change
    (read from git; skipped where the history is not there)."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    from camid.prnu.match import FingerprintBank
    from camid.prnu.residual import residual_and_grey

    root = Path(__file__).resolve().parents[1]
    try:
        src = subprocess.run(
            ["git", "-C", str(root), "show", "1ca3f16:camid/prnu/match.py"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history with the pre-change code")
    path = scene["root"] / "match_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("camid_match_before", path)
    old = importlib.util.module_from_spec(spec)
    sys.modules["camid_match_before"] = old
    spec.loader.exec_module(old)
    fps = [load_fingerprint(scene["fp_A"]), load_fingerprint(scene["fp_B"])]
    photo = shoot(make_camera("A", SHAPE, seed=31, strength=0.007, model_seed=4), 404)
    arrays = [photo, np.ascontiguousarray(np.rot90(photo)), photo[3:150, 9:200]]
    for rotations in ("auto", "all"):
        for shift in (False, True):
            new_bank = FingerprintBank(fps, rotations=rotations, search_shift=shift)
            old_bank = old.FingerprintBank(fps, rotations=rotations, search_shift=shift)
            for arr in arrays:
                w, g = residual_and_grey(arr)
                got = [(r.to_record(), r.pce, r.ncc) for r in new_bank.score(w, g)]
                assert got == [(r.to_record(), r.pce, r.ncc) for r in old_bank.score(w, g)]
