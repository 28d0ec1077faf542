"""PRNU splice map: a block pasted from another camera's photo loses the fingerprint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from camid.cli import main
from camid.prnu import build_fingerprint
from camid.prnu.localize import local_correlation, splice_map
from camid.prnu.store import save_fingerprint
from camid.synth import default_spec, flat_field_scene, natural_scene, simulate

H, W = 384, 512
Y0, X0, B = 96, 224, 192  # the pasted block
WIN = 128


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _shot(cam, device: int, seed: int, flat: bool = False) -> np.ndarray:
    rng = np.random.default_rng([seed, 0])
    scene = flat_field_scene((H, W), rng) if flat else natural_scene((H, W), rng)
    px, _ = simulate(scene, cam, device, np.random.default_rng([seed, 1]), exposure_ev=0.7 * flat)
    return px


@pytest.fixture(scope="module")
def case():
    """(fingerprint of camera C unit 0 from 12 flats, genuine photo, spliced photo)."""
    torch.set_num_threads(1)
    cams = default_spec().cameras
    cam, other = cams[2], cams[0]
    fp = build_fingerprint([_shot(cam, 0, 100 + i, flat=True) for i in range(12)], "C0")
    genuine = _shot(cam, 0, 9)
    spliced = genuine.copy()
    donor = _shot(other, 0, 59)  # another camera's photo
    spliced[Y0 : Y0 + B, X0 : X0 + B] = donor[Y0 : Y0 + B, X0 : X0 + B]
    return fp, genuine, spliced


def _block(margin: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[Y0 + margin : Y0 + B - margin, X0 + margin : X0 + B - margin] = True
    return m


def test_local_correlation_matches_direct_pearson() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((40, 56))
    b = 0.3 * a + rng.standard_normal((40, 56))
    rho, va, vb, ys, xs = local_correlation(a, b, 16, 8)
    i, j = 2, 3
    wa = a[ys[i] : ys[i] + 16, xs[j] : xs[j] + 16].ravel()
    wb = b[ys[i] : ys[i] + 16, xs[j] : xs[j] + 16].ravel()
    assert rho[i, j] == pytest.approx(np.corrcoef(wa, wb)[0, 1], abs=1e-9)
    assert va[i, j] == pytest.approx(wa.var(), rel=1e-9)


def test_splice_map_drops_inside_the_pasted_block(case) -> None:
    fp, _genuine, spliced = case
    m = splice_map(spliced, fp, window=WIN, stride=16)
    corr = m.pixel_map(m.correlation)
    core = _block(WIN // 2)  # pixels whose centred window lies wholly inside the block
    outside = ~_block(-WIN // 2)  # pixels whose centred window does not touch it
    inside_mean = np.nanmean(corr[core])
    outside_mean = np.nanmean(corr[outside])
    assert outside_mean > 0.02
    assert inside_mean < 0.5 * outside_mean
    assert (
        np.nanmean(m.pixel_map(m.p_foreign)[core])
        > 0.5
        > np.nanmean(m.pixel_map(m.p_foreign)[outside])
    )
    mask = m.pixel_mask()
    assert mask.any()
    near = _block(-WIN // 4)
    assert mask[near].sum() / mask.sum() > 0.8  # what is flagged is the pasted block
    assert mask[core].mean() > 0.3  # and a good part of its core is flagged


def test_genuine_photo_has_few_flags(case) -> None:
    fp, genuine, _ = case
    m = splice_map(genuine, fp, window=WIN, stride=16)
    assert m.reliable.mean() > 0.9
    assert m.mask.mean() < 0.05  # nominal 1 % per window; overlap makes flags come in runs
    assert m.sigma1 >= m.sigma0 > 0
    assert m.n_eff == pytest.approx(1 / m.sigma0**2)


def test_splice_map_rejects_a_wrong_size() -> None:
    fp = build_fingerprint([np.full((64, 80, 3), 128, np.uint8)] * 2, "x")
    with pytest.raises(ValueError, match="rotated"):
        splice_map(np.zeros((80, 64, 3), np.uint8), fp, window=32)


def test_heatmap_cli_prnu_writes_grid_sidecar_and_pngs(case, tmp_path: Path, capsys) -> None:
    fp, _, spliced = case
    fp_path = save_fingerprint(fp, tmp_path / "c0.camfp")
    photo = tmp_path / "evidence" / "spliced.png"
    photo.parent.mkdir()
    Image.fromarray(spliced).save(photo)
    before = sorted(p.name for p in photo.parent.iterdir())
    out_dir = tmp_path / "maps"
    rc = main(["heatmap", str(photo), "--fingerprint", str(fp_path), "-o", str(out_dir), "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    (rec,) = json.loads(cap.out)
    assert rec["kind"] == "prnu" and rec["flagged_area_fraction"] > 0
    assert rec["grid"]["window"] == 128 and rec["grid"]["stride"] == 16
    grid = np.load(out_dir / "spliced.prnu.npy")
    assert grid.shape == (rec["grid"]["rows"], rec["grid"]["cols"])
    side = json.loads((out_dir / "spliced.prnu.json").read_text())
    assert side["grid"]["image_width"] == W and side["summary"]["alpha"] == 0.01
    bare = Image.open(out_dir / "spliced.prnu.png")
    assert bare.size == (W, H)  # the photo's aspect, no margins
    assert Image.open(out_dir / "spliced.prnu.overlay.png").size[0] > 0
    assert np.load(out_dir / "spliced.prnu.mask.npy").dtype == bool
    assert sorted(p.name for p in photo.parent.iterdir()) == before  # evidence untouched
    # a photo of the wrong size is a one-line input error, exit 3
    small = tmp_path / "small.png"
    Image.fromarray(spliced[:200, :300]).save(small)
    rc = main(["heatmap", str(small), "-F", str(fp_path), "-o", str(out_dir), "--json"])
    cap = capsys.readouterr()
    assert rc == 3, cap.err
    assert "differs from the fingerprint" in cap.err and "Traceback" not in cap.err
