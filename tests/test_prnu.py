"""PRNU library: wavelets, residual vs the independent oracle, fingerprints, PCE, store, stats."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest
import torch

from camid.errors import IntegrityError
from camid.prnu import residual as R
from camid.prnu import wavelet as WV
from camid.prnu.fingerprint import (
    FingerprintAccumulator,
    build_fingerprint,
    intensity_weight,
    saturation_mask,
)
from camid.prnu.match import (
    FingerprintBank,
    match_residual,
    p_value_from_pce,
    pce_from_surface,
)
from camid.prnu.residual import ResidualParams, extract_residual, residual_and_grey
from camid.prnu.store import load_fingerprint, save_fingerprint
from camid.stats.verification import auc, eer, roc_curve, summarize, top1_accuracy, tpr_at_fpr

try:
    from tests.test_prnu_oracle import (
        make_camera,
        ncc,
        oracle_local_wiener,
        oracle_residual,
        oracle_wiener_dft,
        oracle_zero_mean,
        shoot,
    )
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    from test_prnu_oracle import (
        make_camera,
        ncc,
        oracle_local_wiener,
        oracle_residual,
        oracle_wiener_dft,
        oracle_zero_mean,
        shoot,
    )

pywt = pytest.importorskip("pywt")
ndimage = pytest.importorskip("scipy.ndimage")

SHAPE = (160, 192)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one intra-op thread is faster and deterministic on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def cameras():
    """Three devices; a and b are the same model (shared non-unique artefacts)."""
    return [
        make_camera("cam-a", SHAPE, seed=11, model_seed=5),
        make_camera("cam-b", SHAPE, seed=12, model_seed=5),
        make_camera("cam-c", SHAPE, seed=13, model_seed=9),
    ]


@pytest.fixture(scope="module")
def fingerprints(cameras):
    """One fingerprint per device from 6 flat JPEG frames."""
    torch.set_num_threads(1)
    return [
        build_fingerprint([shoot(c, 100 + i, flat=True) for i in range(6)], c.name) for c in cameras
    ]


# ----------------------------------------------------------------------------- wavelets


def test_db4_constants_match_pywavelets():
    """The hard-coded db4 filters are PyWavelets' (reconstruction order)."""
    w = pywt.Wavelet("db4")
    assert np.allclose(WV.DB4_REC_LO, w.rec_lo, atol=1e-14)
    assert np.allclose(WV.DB4_REC_HI, w.rec_hi, atol=1e-14)
    assert math.isclose(sum(WV.DB4_REC_LO), math.sqrt(2), rel_tol=1e-13)


@pytest.mark.parametrize(
    ("mode", "shape"),
    [
        ("symmetric", (64, 48)),
        ("symmetric", (37, 50)),
        ("symmetric", (9, 12)),
        ("symmetric", (5, 3)),
        ("periodization", (64, 48)),
        ("periodization", (16, 16)),
        ("periodization", (4, 2)),
        ("periodization", (10, 8)),
    ],
)
def test_dwt2_matches_pywavelets(mode, shape):
    """One level: same coefficients as pywt.dwt2 and exact inverse, any size (odd: symmetric)."""
    x = np.random.default_rng(0).standard_normal((2, *shape))
    bands = WV.dwt2(torch.from_numpy(x), mode)
    # camid's periodic alignment is PyWavelets' on the signal shifted by 3 samples
    ref_in = np.roll(x, (3, 3), axis=(-2, -1)) if mode == "periodization" else x
    ca, (ch, cv, cd) = pywt.dwt2(ref_in, "db4", mode=mode)
    for i, ref in enumerate((ca, ch, cv, cd)):
        assert np.allclose(bands[:, i].numpy(), ref, atol=1e-12)
    rec = WV.idwt2(bands, mode)[:, : shape[0], : shape[1]]
    assert np.allclose(rec.numpy(), x, atol=1e-12)


@pytest.mark.parametrize("mode", ["symmetric", "periodization"])
def test_batched_planes_do_not_leak(mode):
    """Planes of one stack are transformed independently (blocks never read across planes)."""
    x = torch.from_numpy(np.random.default_rng(7).standard_normal((3, 150, 96)))
    whole = WV.dwt2(x, mode)
    for i in range(3):
        assert torch.allclose(WV.dwt2(x[i : i + 1], mode)[0], whole[i], atol=1e-12)
    rec = WV.idwt2(whole, mode)
    assert torch.allclose(rec[:, :150, :96], x, atol=1e-10)


@pytest.mark.parametrize("mode", ["symmetric", "periodization"])
def test_whole_plane_products_match_strips(monkeypatch, mode):
    """The one-product-per-level path (used on CUDA) equals the CPU's row strips."""
    x = torch.from_numpy(np.random.default_rng(8).standard_normal((3, 150, 96)))
    monkeypatch.setattr(WV, "STRIP_ELEMENTS", 1)  # one block row per strip
    strips = WV.dwt2(x, mode)
    rec = WV.idwt2(strips, mode)
    monkeypatch.setattr(WV, "strips_on", lambda device: False)
    assert torch.allclose(WV.dwt2(x, mode), strips, atol=1e-12)
    assert torch.allclose(WV.idwt2(strips, mode), rec, atol=1e-12)
    assert torch.allclose(rec[:, :150, :96], x, atol=1e-10)


@pytest.mark.filterwarnings("ignore:Level value")
def test_wavedec_four_levels_matches_pywavelets():
    """Four levels with PyWavelets' trimming of odd intermediate sizes."""
    x = np.random.default_rng(1).standard_normal((1, 101, 77))
    stacks = WV.wavedec2(torch.from_numpy(x), 4, "symmetric")
    ref = pywt.wavedec2(x, "db4", mode="symmetric", level=4, axes=(-2, -1))
    assert np.allclose(stacks[-1][:, 0].numpy(), ref[0], atol=1e-10)
    for s, r in zip(reversed(stacks), ref[1:], strict=True):
        for i in range(3):
            assert np.allclose(s[:, i + 1].numpy(), r[i], atol=1e-10)
    before = [s.clone() for s in stacks]
    rec = WV.waverec2(stacks, "symmetric")[:, :101, :77]
    assert np.allclose(rec.numpy(), x, atol=1e-10)
    assert all(torch.equal(a, b) for a, b in zip(before, stacks, strict=True))  # not mutated


# ----------------------------------------------------------------------------- residual


def test_min_box_mean_matches_scipy():
    """Local means equal scipy's zero-padded uniform_filter, also on the blocked CPU path."""
    e = torch.from_numpy(np.random.default_rng(2).random((3, 45, 70)) * 100).float()
    ref = np.min(
        [
            [ndimage.uniform_filter(p.astype(np.float64), k, mode="constant") for k in (3, 5, 7, 9)]
            for p in e.numpy()
        ],
        axis=1,
    )
    assert np.allclose(R.min_box_mean(e).numpy(), ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("shape", [(45, 70), (7, 5), (33, 1)])
def test_dilated_min_box_mean_is_per_sublattice(shape):
    """Dilation 2 gives each of the 4 interleaved sub-lattices its own zero-padded means."""
    e = torch.from_numpy(np.random.default_rng(4).random((2, *shape)) * 100)
    ours = R.min_box_mean(e, square=True, dilation=2)
    for i in (0, 1):
        for j in (0, 1):
            sub = e[:, i::2, j::2]
            if sub.numel():
                assert torch.allclose(ours[:, i::2, j::2], R.min_box_mean(sub, square=True))


@pytest.mark.parametrize("shape", [(61, 50), (3, 200)])
def test_wiener_shrink_matches_oracle(shape):
    """In-place shrinkage equals the oracle."""
    c = np.random.default_rng(10).standard_normal((2, *shape)) * 8
    ours = R.wiener_shrink_(torch.from_numpy(c).float(), 9.0).numpy()
    for i in range(2):
        assert np.allclose(ours[i], oracle_local_wiener(c[i], 9.0), rtol=1e-4, atol=1e-4)


def test_adaptive_gain_matches_oracle():
    """Wavelet-domain Wiener gain: c * gain equals the oracle's noise part."""
    c = np.random.default_rng(3).standard_normal((40, 52)) * 12
    ours = torch.from_numpy(c).float() * R.adaptive_wiener_gain(torch.from_numpy(c).float(), 25.0)
    assert np.allclose(ours.numpy(), oracle_local_wiener(c, 25.0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(64, 64), (65, 70), (19, 23), (128, 97)])
def test_half_plane_dft_gain_equals_full_plane(shape):
    """The half-plane Wiener gain with border strips equals the full-plane computation."""
    h, w = shape
    x = torch.randn(2, h, w, generator=torch.Generator().manual_seed(h * w))
    mag = torch.fft.rfft2(x).abs() / math.sqrt(h * w)
    nv = torch.tensor([0.8, 1.3]).reshape(2, 1, 1)
    full = R._dft_gain_full(mag * mag, w, nv)
    half = R._dft_gain_half(mag * mag, w, nv)
    assert torch.allclose(full, half, atol=1e-6)


def test_wiener_dft_matches_oracle():
    """DFT-domain Wiener filtering equals the oracle's full complex-FFT rendering."""
    x = np.random.default_rng(9).standard_normal((48, 62)) * 3
    ours = R.wiener_dft(torch.from_numpy(x).float()[None], sigma=2.5)[0].numpy()
    assert np.allclose(ours, oracle_wiener_dft(x, 2.5), atol=1e-4)


@pytest.mark.parametrize("shape", [(160, 192), (151, 203)])
def test_compat_residual_matches_oracle(cameras, shape):
    """compat mode reproduces the reference residual (independent NumPy oracle) to >= 0.9999."""
    img = shoot(cameras[0], 7)[: shape[0], : shape[1]]
    ours = extract_residual(img, ResidualParams(compat=True))
    ref = oracle_residual(img, sigma=5.0)
    assert ours.dtype == np.float32 and ours.shape == img.shape[:2]
    assert ncc(ours, ref) >= 0.9999
    assert np.abs(ours - ref).max() < 1e-3 * np.abs(ref).max()


def test_compat_grey_input_matches_oracle(cameras):
    """Single-channel images take the same path without the RGB->grey step."""
    img = shoot(cameras[1], 8)[..., 1]
    assert ncc(extract_residual(img, ResidualParams(compat=True)), oracle_residual(img)) >= 0.9999


def test_default_residual_is_sigma3_and_close_to_reference(cameras):
    """The default (sigma 3, periodic db4) differs from compat but carries the same noise."""
    img = shoot(cameras[0], 9)
    d = extract_residual(img)
    c = extract_residual(img, ResidualParams(compat=True))
    assert ResidualParams().noise_sigma == 3.0 and ResidualParams(compat=True).noise_sigma == 5.0
    assert 0.6 < ncc(d, c) < 0.9999


def test_grey_noise_plane_loop_equals_channels(cameras, monkeypatch):
    """The CPU's one-plane-at-a-time grey path equals to_grey of the channel noise."""
    imgs = np.stack([shoot(cameras[2], s) for s in (4, 5)])
    noise, pixels = R.channel_noise(imgs)
    want = R.to_grey(noise)
    monkeypatch.setattr(R, "PLANE_LOOP_PIXELS", 1)
    assert torch.allclose(R.grey_noise(pixels), want, atol=1e-5)
    assert torch.allclose(
        R.to_grey(
            R.wavelet_noise(pixels.reshape(6, *SHAPE), ResidualParams()).reshape(2, 3, *SHAPE)
        ),
        want,
        atol=1e-5,
    )


def test_reused_workspace_keeps_results(cameras, monkeypatch):
    """Scratch buffers reused across sizes (and after a release) do not change a residual."""
    from camid.prnu import workspace

    monkeypatch.setattr(R, "PLANE_LOOP_PIXELS", 1)  # the workspace-backed plane loop
    img = shoot(cameras[0], 3)
    first = extract_residual(img)
    extract_residual(shoot(cameras[1], 4)[:97, :131])
    assert np.array_equal(extract_residual(img), first)
    workspace.release()
    assert np.array_equal(extract_residual(img), first)


def test_batched_residuals_equal_single(cameras):
    """A batch gives the same residuals as one image at a time."""
    imgs = [shoot(cameras[2], s) for s in (1, 2, 3)]
    batch = R.extract_residuals(np.stack(imgs)).numpy()
    for i, img in enumerate(imgs):
        assert np.allclose(batch[i], extract_residual(img), atol=1e-4)


@pytest.mark.parametrize("shape", [(30, 41), (30, 40), (31, 40)])
def test_zero_mean_cfa_rows_and_columns(shape):
    """After zero-mean every CFA sub-lattice has zero row and column means (even/odd sizes)."""
    w = torch.randn(1, *shape) + torch.arange(float(shape[1])) * 0.3 + 5
    w[0, ::2, ::2] += 4.0  # a lattice offset
    z = R.zero_mean_cfa(w)[0]
    assert np.allclose(z.numpy(), oracle_zero_mean(w[0].double().numpy()), atol=1e-5)
    for i in (0, 1):
        for j in (0, 1):
            sub = z[i::2, j::2]
            assert torch.allclose(sub.mean(0), torch.zeros(sub.shape[1]), atol=1e-5)
            assert torch.allclose(sub.mean(1), torch.zeros(sub.shape[0]), atol=1e-5)


# ----------------------------------------------------------------------------- fingerprint


def test_saturation_mask_is_per_channel():
    """A clipped red channel masks red pixels only (the reference masks all channels)."""
    x = torch.full((1, 3, 20, 20), 120.0)
    x[0, 0, 5:10, 5:10] = 255.0  # a flat clipped patch in red
    x[0, 1] += torch.arange(20.0)  # green max 139 < 250: never masked
    m = saturation_mask(x)
    assert not m[0, 0, 5:10, 5:10].any()
    assert m[0, 0].sum() == 400 - 25
    assert m[0, 1:].all()


def test_saturation_needs_equal_neighbour():
    """A single brightest pixel (no equal neighbour) is not treated as clipped."""
    x = torch.arange(400.0).reshape(1, 1, 20, 20) % 250
    x[0, 0, 3, 3] = 254.0
    assert saturation_mask(x).all()


def test_intensity_weight_shape():
    """Linear up to 252, then a Gaussian attenuation."""
    v = intensity_weight(torch.tensor([0.0, 126.0, 251.0, 252.0, 255.0]))
    assert torch.allclose(v[:3], torch.tensor([0.0, 0.5, 251 / 252]))
    assert v[3] == 1.0 and v[4] < math.exp(-1.4)


def test_running_sums_equal_batch_computation(cameras):
    """Adding images one by one, or in uneven batches, gives the one-batch estimate."""
    imgs = [shoot(cameras[0], 40 + i, flat=True) for i in range(5)]
    one = FingerprintAccumulator()
    one.add(np.stack(imgs))
    steps = FingerprintAccumulator()
    steps.add(imgs[0])
    steps.add(imgs[1:3])
    steps.add(np.stack(imgs[3:]))
    assert steps.count == one.count == 5
    assert torch.allclose(steps.num, one.num, atol=1e-3, rtol=1e-5)
    assert torch.allclose(steps.den, one.den, rtol=1e-6)
    assert np.allclose(steps.estimate().numpy(), one.estimate().numpy(), atol=1e-5)
    # the direct formula: K = sum W T / (sum T^2 + 1)
    noise, pix = R.channel_noise(np.stack(imgs))
    from camid.prnu.fingerprint import pixel_weights

    t = pixel_weights(pix)
    assert torch.allclose(one.num, (noise * t).sum(0), atol=1e-3)


def test_accumulator_rejects_other_sizes(cameras):
    """An image of another size is refused with a message (rotated frames get a hint)."""
    acc = FingerprintAccumulator()
    acc.add(shoot(cameras[0], 1))
    with pytest.raises(ValueError, match="rotated"):
        acc.add(np.ascontiguousarray(np.rot90(shoot(cameras[0], 2))))


# ----------------------------------------------------------------------------- PCE


def test_pce_known_peak_and_exclusion_with_wraparound():
    """PCE = peak^2 / mean energy outside the 11x11 window, which wraps around the edges."""
    c = torch.ones(40, 50)
    c[0, 0] = 10.0
    c[-3, -4] = 100.0  # inside the wrapped neighbourhood of (0, 0): excluded
    c[2, 5] = 100.0  # inside too
    c[20, 25] = 7.0  # outside: counted
    pce, peak, loc = pce_from_surface(c)
    n = 40 * 50 - 121
    energy = (n - 1 + 49.0) / n
    assert loc == (0, 0) and peak == 10.0
    assert pce == pytest.approx(100.0 / energy, rel=1e-9)


def test_pce_sign_follows_peak():
    """A negative correlation peak gives a negative PCE."""
    rng = np.random.default_rng(4)
    c = torch.from_numpy(rng.standard_normal((64, 64)))
    c[0, 0] = -12.0
    pce, _, _ = pce_from_surface(c)
    assert pce < -60


def test_pce_synthetic_gaussian_peak():
    """Unit-variance noise with a peak of height a: PCE close to a^2."""
    rng = np.random.default_rng(5)
    c = torch.from_numpy(rng.standard_normal((256, 256)))
    c[0, 0] = 20.0
    pce, _, _ = pce_from_surface(c)
    assert pce == pytest.approx(400.0, rel=0.05)


def test_pce_search_region():
    """With a search region the peak is the maximum over the allowed shifts only."""
    rng = np.random.default_rng(6)
    c = torch.from_numpy(rng.standard_normal((64, 80)))
    c[7, 11] = 30.0
    c[50, 70] = 90.0  # outside the allowed region
    pce, peak, loc = pce_from_surface(c, search=(10, 20))
    assert loc == (7, 11) and peak == 30.0


def test_p_value():
    """p = Q(sqrt(PCE)); n tested alignments raise it about n-fold; tiny values stay finite."""
    p, lg = p_value_from_pce(60.0)
    q = 0.5 * math.erfc(math.sqrt(60.0) / math.sqrt(2))
    assert p == pytest.approx(q, rel=1e-9) and lg == pytest.approx(math.log10(q), rel=1e-9)
    p8, _ = p_value_from_pce(60.0, 8)
    assert p8 == pytest.approx(8 * q, rel=1e-6)
    assert p_value_from_pce(0.0)[0] == pytest.approx(0.5)
    assert p_value_from_pce(-50.0)[0] > 0.99
    _, lg_big = p_value_from_pce(1e5)
    assert -25000 < lg_big < -2000


# ----------------------------------------------------------------------------- matching


def test_same_device_far_above_threshold_others_below(cameras, fingerprints):
    """Same device: PCE >> 60; other devices, including the same model, stay below 60."""
    bank = FingerprintBank(fingerprints)
    for ci, cam in enumerate(cameras):
        for seed in (500, 501):
            w, g = residual_and_grey(shoot(cam, seed))
            res = bank.score(w, g)
            for fi, r in enumerate(res):
                if fi == ci:
                    assert r.pce > 150 and r.decision and r.p_value < 1e-30
                else:
                    assert r.pce < 60 and not r.decision


def test_bank_equals_pairwise(cameras, fingerprints):
    """The batched many-to-many path gives the pairwise PCE and NCC."""
    w, g = residual_and_grey(shoot(cameras[1], 77))
    bank = FingerprintBank(fingerprints).score(w, g)
    for fp, b in zip(fingerprints, bank, strict=True):
        r = match_residual(w, g, torch.from_numpy(fp.k), name=fp.label)
        assert b.pce == pytest.approx(r.pce, rel=1e-3, abs=1e-3)
        assert b.ncc == pytest.approx(r.ncc, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize(
    ("turns", "transpose", "name"),
    [(1, False, "rot90"), (2, False, "rot180"), (3, False, "rot270"), (0, True, "transpose")],
)
def test_rotation_found(cameras, fingerprints, turns, transpose, name):
    """A photo stored rotated/transposed relative to the sensor is matched in that orientation."""
    img = np.rot90(shoot(cameras[2], 321), turns)
    if transpose:
        img = img.transpose(1, 0, 2)
    img = np.ascontiguousarray(img)
    w, g = residual_and_grey(img)
    rot = "all" if img.shape[:2] == SHAPE else "auto"
    r = match_residual(w, g, torch.from_numpy(fingerprints[2].k), rotations=rot)
    assert r.rotation == name and r.pce > 60 and r.n_tests == 8
    wrong = match_residual(w, g, torch.from_numpy(fingerprints[0].k), rotations="all")
    assert wrong.pce < 60


def test_cropped_query_shift_search(cameras, fingerprints):
    """A crop at an unknown offset is found by the shift search; centre crop alone fails."""
    full = shoot(cameras[0], 600)
    crop = np.ascontiguousarray(full[17 : 17 + 112, 29 : 29 + 128])
    w, g = residual_and_grey(crop)
    k = torch.from_numpy(fingerprints[0].k)
    r = match_residual(w, g, k, search_shift=True, rotations="none")
    assert r.shift == (17, 29) and r.pce > 60 and r.n_tests == (160 - 112 + 1) * (192 - 128 + 1)
    assert "searched" in r.crop_note
    centre = match_residual(w, g, k, rotations="none")
    assert centre.pce < 60 and "centre-cropped" in centre.crop_note
    other = match_residual(w, g, torch.from_numpy(fingerprints[2].k), search_shift=True)
    assert other.pce < 60


def test_centre_crop_when_sizes_differ(cameras, fingerprints):
    """A centrally cropped photo matches after centre-cropping the fingerprint too."""
    full = shoot(cameras[1], 601)
    crop = np.ascontiguousarray(full[10:-10, 16:-16])
    w, g = residual_and_grey(crop)
    r = match_residual(w, g, torch.from_numpy(fingerprints[1].k), rotations="none")
    assert r.pce > 60 and r.compared_size == crop.shape[:2]
    assert "fingerprint 192x160" in r.crop_note


# ----------------------------------------------------------------------------- store


def test_save_load_round_trip(tmp_path, fingerprints):
    """Save and load keep K bit-exact and all metadata; the hash is verified."""
    fp = fingerprints[0]
    fp.images = [{"name": "a.jpg", "sha256": "0" * 64}]
    path = save_fingerprint(fp, tmp_path / "a.fp.safetensors")
    back = load_fingerprint(path)
    assert np.array_equal(back.k, fp.k) and back.k.dtype == np.float32
    assert back.device_name == "cam-a" and back.image_count == 6
    assert back.params == fp.params and back.sha256 == fp.sha256
    assert back.images == fp.images and back.camid_version == fp.camid_version
    assert not list(tmp_path.glob("*.part"))


def _header_len(data: bytes) -> int:
    return 8 + struct.unpack("<Q", data[:8])[0]


def test_tampered_tensor_raises(tmp_path, fingerprints):
    """One changed value in the tensor data -> IntegrityError."""
    path = save_fingerprint(fingerprints[1], tmp_path / "b.fp.safetensors")
    data = bytearray(path.read_bytes())
    off = _header_len(bytes(data)) + 400
    data[off] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="hash mismatch"):
        load_fingerprint(path)


def test_tampered_metadata_raises(tmp_path, fingerprints):
    """Renaming the device inside the header -> IntegrityError."""
    path = save_fingerprint(fingerprints[2], tmp_path / "c.fp.safetensors")
    data = path.read_bytes()
    hl = _header_len(data)
    header = json.loads(data[8:hl])
    info = json.loads(header["__metadata__"]["info"])
    info["device_name"] = "cam-X"
    header["__metadata__"]["info"] = json.dumps(info, sort_keys=True, separators=(",", ":"))
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[hl:])
    with pytest.raises(IntegrityError, match="hash mismatch"):
        load_fingerprint(path)


def test_not_a_fingerprint_raises(tmp_path):
    """Random bytes, a truncated file, or another safetensors file are refused."""
    bad = tmp_path / "x.fp.safetensors"
    bad.write_bytes(b"\x00\x01not a fingerprint")
    with pytest.raises(IntegrityError):
        load_fingerprint(bad)
    from safetensors.numpy import save

    bad.write_bytes(save({"fingerprint": np.zeros((4, 4), np.float32)}))
    with pytest.raises(IntegrityError, match="format"):
        load_fingerprint(bad)


# ----------------------------------------------------------------------------- statistics


def test_auc_one_on_separable_scores():
    """Every positive above every negative: AUC 1, EER 0, TPR@1% = 1."""
    s = [900, 450, 120, 80, 3, -2, 10, 0.5]
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    assert auc(s, y) == 1.0
    assert eer(s, y)[0] == 0.0
    assert tpr_at_fpr(s, y, 0.01) == 1.0


def test_auc_with_ties_and_reversed():
    """Ties count one half; reversed scores give AUC 0."""
    assert auc([1, 1], [1, 0]) == 0.5
    assert auc([0, 1, 2], [1, 0, 0]) == 0.0
    fpr, tpr, thr = roc_curve([3, 2, 2, 1], [1, 1, 0, 0])
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0] and tpr.tolist() == [0.0, 0.5, 1.0, 1.0]
    assert thr[1:].tolist() == [3, 2, 1]


def test_eer_hand_made():
    """Positives 4,3,2,0.5 / negatives 2.5,1,0,-1: FPR = FNR = 0.25 exactly at the crossing."""
    s = [4, 3, 2, 0.5, 2.5, 1, 0, -1]
    y = [1, 1, 1, 1, 0, 0, 0, 0]
    rate, _ = eer(s, y)
    assert rate == pytest.approx(0.25)
    assert auc(s, y) == pytest.approx(13 / 16)
    assert tpr_at_fpr(s, y, 0.0) == 0.5
    assert tpr_at_fpr(s, y, 0.25) == 0.75


def test_eer_interpolates():
    """Where the ROC steps over the diagonal, the EER is the interpolated crossing."""
    s = [3, 2, 1, 0]
    y = [1, 0, 1, 0]  # ROC: (0,.5) -> (.5,.5) -> (.5,1) -> (1,1)
    assert eer(s, y)[0] == pytest.approx(0.5)
    s = [5, 4, 3, 2, 1]
    y = [1, 1, 0, 1, 0]  # (0,1/3),(0,2/3),(.5,2/3),(.5,1),(1,1)
    rate, _ = eer(s, y)
    assert rate == pytest.approx(1 / 3)


def test_summarize_and_top1():
    """Matrix summary: ground truth by label, closed-set top-1 ignores unknown devices."""
    m = np.array([[500.0, 3.0, 2.0, 90.0], [1.0, 300.0, 70.0, 5.0]])
    fps = ["A", "B"]
    photos = ["A", "B", "A", None]
    acc, used = top1_accuracy(m, fps, photos)
    assert used == 3 and acc == pytest.approx(2 / 3)
    s = summarize(m, fps, photos, threshold=60.0)
    assert s.pairs == 6 and s.positives == 3 and s.negatives == 3
    assert s.fpr_at_threshold == pytest.approx(1 / 3)
    assert s.tpr_at_threshold == pytest.approx(2 / 3)
    assert s.auc == pytest.approx(7 / 9)
