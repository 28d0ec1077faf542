"""HEIC/HEIF (pillow-heif) and camera RAW (rawpy) through the one loader, exif, identify, PRNU.

Every file is made here: HEIC by libheif's encoder, DNG by camid's minimal DNG writer
(uncompressed 16-bit Bayer mosaic, opened by LibRaw), RAW flats by the synthetic sensor.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camid.cli import main
from camid.errors import InputError
from camid.io.exif import quick_camera, read_exif
from camid.io.image import load_image, load_sensor_pixels
from camid.io.raw import load_raw_mosaic
from camid.synth.dng import write_dng
from camid.synth.files import encode_heic
from tests.conftest import make_exif, natural_rgb, write_jpeg


def _gradient(h: int = 64, w: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 2, yy * 3, xx + yy], -1).astype(np.uint8)


def _heic(path: Path, px: np.ndarray, **exif_kw) -> Path:
    ex = Image.Exif()
    ex.load(make_exif(**exif_kw))
    ex.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"
    path.write_bytes(encode_heic(px, ex.tobytes(), quality=95))
    return path


def _jpeg_bytes(px: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "JPEG", quality=92, exif=make_exif("Acme", "RX1"))
    return buf.getvalue()


def _dng(path: Path, mosaic: np.ndarray | None = None, preview: bool = True, **kw) -> Path:
    rng = np.random.default_rng(1)
    mosaic = rng.integers(64, 4000, (64, 96)).astype(np.uint16) if mosaic is None else mosaic
    h, w = mosaic.shape
    px = natural_rgb(h // 2, w // 2)
    args = dict(black_level=64, white_level=4095, make="Acme", model="RX1", serial="SN-0042")
    args.update(kw)
    if preview:
        args.update(preview_jpeg=_jpeg_bytes(px), preview_size=(w // 2, h // 2))
    path.write_bytes(write_dng(mosaic, datetime_original="2023:01:02 03:04:05", **args))
    return path


def _cli(capsys, *args: str) -> tuple[int, list[dict], str]:
    rc = main([*args, "--json"])
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if cap.out.strip() else []), cap.err


# ----------------------------------------------------------------------------- HEIC / HEIF


def test_heic_pixels_come_back_in_the_coded_orientation(tmp_path: Path) -> None:
    src = _gradient()
    p = _heic(tmp_path / "phone.heic", src, make="Apple", model="iPhone 15", orientation=6)
    img = load_image(p)
    assert img.format == "HEIF" and img.codec == "HEVC"
    assert img.pixels.shape == src.shape  # libheif's rotation undone: the stored grid
    assert np.abs(img.pixels.astype(int) - src).mean() < 3.0
    assert img.exif_orientation == 6 and "orientation 6" in img.conversion
    assert img.other_images == 0


def test_heic_exif_reads_like_a_jpeg(tmp_path: Path) -> None:
    p = _heic(tmp_path / "phone.heic", _gradient(), make="Apple", model="iPhone 15", orientation=6)
    info = read_exif(p)
    assert (info.make, info.model, info.camera) == ("Apple", "iPhone 15", "Apple iPhone 15")
    assert info.datetime_original == "2024:05:06 07:08:09"
    assert info.orientation == 6 and info.file_format == "HEIF"
    assert (info.width, info.height) == (96, 64)  # the stored grid, as load_image gives it
    assert info.jpeg_quality is None and info.quant_tables == {}
    assert quick_camera(p) == "Apple iPhone 15" == quick_camera(p.read_bytes())


def test_heic_with_10_bit_primary_and_a_second_image(tmp_path: Path) -> None:
    import pillow_heif

    src = _gradient()
    heif = pillow_heif.from_bytes(
        mode="RGB;16", size=(96, 64), data=(src.astype(np.uint16) * 257).tobytes()
    )
    heif.add_frombytes(mode="RGB", size=(96, 64), data=src[::-1].copy().tobytes())
    p = tmp_path / "burst.heic"
    heif.save(p, quality=95)
    img = load_image(p)
    assert img.other_images == 1 and img.pixels.dtype == np.uint8
    assert "10-bit HEIF reduced to 8-bit" in img.conversion
    assert "primary image of a HEIF with 1 other image(s)" in img.conversion
    assert np.abs(img.pixels.astype(int) - src).mean() < 3.0  # the primary, not the flipped one
    assert read_exif(p).other_images == 1
    full = load_sensor_pixels(p)  # PRNU: the 10 bits kept, as float on the 0-255 scale
    assert full.pixels.dtype == np.float32 and full.pixels.shape == src.shape
    assert "10-bit HEIF kept at full precision" in full.conversion
    assert np.abs(full.pixels - src).mean() < 3.0
    assert np.abs(full.pixels - np.round(full.pixels)).max() > 0.2  # not 8-bit values


def test_10_bit_heic_keeps_its_orientation_undone_at_full_precision(tmp_path: Path) -> None:
    import pillow_heif

    src = _gradient()
    heif = pillow_heif.from_bytes(
        mode="RGB;16", size=(96, 64), data=(src.astype(np.uint16) * 257).tobytes()
    )
    heif.info["exif"] = make_exif(orientation=8)  # coded as given, an irot box to turn it
    p = tmp_path / "turned.heic"
    heif.save(p, quality=95)
    assert pillow_heif.open_heif(p).size == (64, 96)  # libheif shows it turned
    eight, full = load_image(p), load_sensor_pixels(p)
    assert eight.exif_orientation == 8 and eight.pixels.shape == src.shape
    assert np.abs(eight.pixels.astype(int) - src).mean() < 3.0  # back in the coded grid
    assert full.pixels.shape == src.shape and np.abs(full.pixels - eight.pixels).mean() < 1.0


def test_heif_and_raw_libraries_load_only_when_such_a_file_is_read() -> None:
    code = (
        "import sys, camid.cli, camid.io.image, camid.io.exif, camid.io.inputs\n"
        "assert not {'pillow_heif', 'rawpy', 'torch'} & set(sys.modules), sys.modules.keys()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_synth_writes_heic_cameras_that_exif_reads(tmp_path: Path, capsys) -> None:
    out = tmp_path / "set"
    rc = main(["synth", "cameras", str(out), "--per-device", "2", "--flat", "0", "--size",
               "64", "--file-format", "heic", "-q", "--json"])  # fmt: skip
    capsys.readouterr()
    assert rc in (0, None)
    files = sorted((out / "images").glob("*.heic"))
    assert len(files) == 20 and not list((out / "images").glob("*.jpg"))
    rc, recs, _ = _cli(capsys, "exif", str(out / "images"))
    assert rc == 0 and len(recs) == 20
    assert all(r["file_format"] == "HEIF" and r["camera"] for r in recs)
    assert {r["camera"] for r in recs} == {r["camera"] for r in recs if r["datetime_original"]}


# ----------------------------------------------------------------------------- identify


def _identifier(tmp_path: Path):
    """A real (untrained) TraceNet whose card demands full compression-trace support."""
    import torch

    from camid.engine.data import ViewSpec
    from camid.engine.predict import OpenSetRule
    from camid.identify.identifier import Identifier
    from camid.models.registry import get_model
    from camid.models.store import ModelCard

    torch.manual_seed(0)
    model = get_model("tracenet", 3)
    card = ModelCard("tn", "tracenet", ["a", "b", "c"], 64, weights_sha256="0" * 64)
    rule = OpenSetRule(0.0, 0.0, {"compression": 1.0})  # every JPEG fails this check
    views = ViewSpec(mode="grid", size=64, max_views=4, d4=False)
    return Identifier(model, card, torch.device("cpu"), views=views, rule=rule, workers=0)


def test_identify_does_not_hold_jpeg_traces_against_a_heic(tmp_path: Path) -> None:
    px = natural_rgb(128, 128)
    heic = _heic(tmp_path / "p.heic", px)
    jpeg = write_jpeg(tmp_path / "p.jpg", px)
    ident = _identifier(tmp_path)
    by_name = {Path(r.path).name: r for r in ident.identify([heic, jpeg])}
    h, j = by_name["p.heic"].to_record(), by_name["p.jpg"].to_record()
    assert j["format"] == "JPEG" and j["compression_traces"] == "jpeg lattice"
    assert j["decision"] == "unknown" and "compression traces give" in j["reason"]
    assert h["format"] == "HEIF" and h["compression_traces"].startswith("not applicable")
    assert h["decision"] == "known" and "compression-trace check skipped" in h["reason"]
    head = next(e for e in h["evidence"] if e["name"] == "compression")
    assert head["decisive"] is False and "not used" in head["reason"]


def test_identify_reads_a_raw_files_embedded_preview(tmp_path: Path) -> None:
    p = _dng(tmp_path / "shot.dng", np.full((128, 192), 900, np.uint16))
    (rec,) = [r.to_record() for r in _identifier(tmp_path).identify([p])]
    assert rec["format"] == "DNG" and rec["compression_traces"] == "jpeg lattice"
    assert "embedded JPEG preview 96x64 of the DNG file" in rec["conversion"]
    assert rec["exif_camera"] == "Acme RX1" and (rec["width"], rec["height"]) == (96, 64)


# ----------------------------------------------------------------------------- RAW


def test_dng_exif_shows_camera_serial_and_sensor_size(tmp_path: Path, capsys) -> None:
    p = _dng(tmp_path / "shot.dng")
    info = read_exif(p)
    assert info.camera == "Acme RX1" and info.body_serial == "SN-0042"
    assert (info.width, info.height, info.file_format) == (96, 64, "DNG")
    assert info.datetime_original == "2023:01:02 03:04:05"
    assert "RGGB colour-filter mosaic 96x64" in info.conversion
    rc, recs, _ = _cli(capsys, "exif", str(p))
    assert rc == 0 and recs[0]["body_serial"] == "SN-0042" and recs[0]["other_images"] == 1


def test_raw_mosaic_is_black_subtracted_and_never_demosaiced(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    mosaic = rng.integers(0, 4096, (64, 96)).astype(np.uint16)
    img = load_raw_mosaic(_dng(tmp_path / "m.dng", mosaic))
    want = np.clip((mosaic.astype(np.float64) - 64) * 255.0 / (4095 - 64), 0, 255)
    assert img.pixels.shape == (64, 96) and img.pixels.dtype == np.float32
    np.testing.assert_allclose(img.pixels, want, atol=1e-3)
    assert "RGGB" in img.conversion and "no demosaicing" in img.conversion
    assert load_sensor_pixels(tmp_path / "m.dng").sha256 == img.sha256


def test_raw_preview_is_the_cameras_jpeg_else_a_libraw_development(tmp_path: Path) -> None:
    with_preview = load_image(_dng(tmp_path / "a.dng"))
    assert with_preview.pixels.shape == (32, 48, 3) and with_preview.codec == "JPEG"
    assert "embedded JPEG preview 48x32" in with_preview.conversion
    bare = load_image(_dng(tmp_path / "b.dng", preview=False))
    assert bare.pixels.shape == (64, 96, 3) and bare.codec is None
    assert "developed by LibRaw" in bare.conversion


def _synth_device_files(tmp_path: Path, size: int = 256) -> dict[str, list[Path]]:
    """DNG flats of device A1, camera JPEGs of devices A1 and A2 (same camera model) and a
    DNG photo of A1 (a shot not among the flats)."""
    from camid.synth import default_spec, flat_field_scene, natural_scene
    from camid.synth.datasets import FLAT_EV
    from camid.synth.files import simulate_file

    cam = default_spec().cameras[0]
    files: dict[str, list[Path]] = {"raw_flats": [], "A1": [], "A2": []}
    for k in range(8):
        scene = flat_field_scene((size, size), np.random.default_rng([k, 0]))
        data = simulate_file(scene, cam, 0, np.random.default_rng([k, 1]),
                             file_format="dng", exposure_ev=FLAT_EV)  # fmt: skip
        files["raw_flats"].append(tmp_path / f"flat{k}.dng")
        files["raw_flats"][-1].write_bytes(data)
    for dev in (0, 1):
        for k in range(2):
            scene = natural_scene((size, size), np.random.default_rng([100 + k, 0]))
            data = simulate_file(scene, cam, dev, np.random.default_rng([100 + k, 1]))
            p = tmp_path / f"A{dev + 1}_{k}.jpg"
            p.write_bytes(data)
            files[f"A{dev + 1}"].append(p)
    # a textured scene (seed 102; single-photo PCE varies by scene: 21..503 over 10 seeds)
    scene = natural_scene((size, size), np.random.default_rng([102, 0]))
    files["A1_raw"] = [tmp_path / "A1_raw.dng"]
    data = simulate_file(scene, cam, 0, np.random.default_rng([102, 1]), file_format="dng")
    files["A1_raw"][0].write_bytes(data)
    return files


def test_fingerprint_from_raw_flats_matches_jpegs_of_the_same_device(
    tmp_path: Path, capsys
) -> None:
    files = _synth_device_files(tmp_path)
    fp = tmp_path / "A1.fp.safetensors"
    rc, recs, _ = _cli(capsys, "prnu", "fingerprint", *map(str, files["raw_flats"]), "-o",
                       str(fp), "-n", "A1", "--device", "cpu")  # fmt: skip
    assert rc == 0 and recs[0]["image_count"] == 8 and recs[0]["camera"]
    assert (recs[0]["width"], recs[0]["height"]) == (256, 256)  # the mosaic's photosites
    photos = [*files["A1"], *files["A2"]]
    rc, recs, _ = _cli(capsys, "prnu", "match", *map(str, photos), "-F", str(fp),
                       "--device", "cpu", "--no-match-ok")  # fmt: skip
    pce = {Path(r["path"]).name: r["pce"] for r in recs}
    assert all(pce[p.name] > 60 for p in files["A1"]), pce
    assert all(pce[p.name] < 60 for p in files["A2"]), pce
    assert {r["format"] for r in recs} == {"JPEG"}
    # identify -F on a RAW photo: PRNU reads its mosaic, the CNN its preview
    from camid.identify.evidence import PrnuProvider
    from camid.prnu.store import load_fingerprint

    (rec,) = _identifier(tmp_path).identify(files["A1_raw"], [PrnuProvider([load_fingerprint(fp)])])
    assert rec.prnu["decision"] == "match" and rec.prnu["pce"] > 60
    assert rec.decided_by == "prnu" and "embedded JPEG preview" in rec.conversion


def test_a_fingerprint_refuses_to_mix_raw_mosaics_and_developed_photos(
    tmp_path: Path, capsys
) -> None:
    raw = _dng(tmp_path / "a.dng", np.full((64, 96), 900, np.uint16))
    jpg = write_jpeg(tmp_path / "b.jpg", natural_rgb(64, 96))
    rc, _, err = _cli(capsys, "prnu", "fingerprint", str(raw), str(jpg), "-o",
                      str(tmp_path / "x.fp.safetensors"), "--device", "cpu")  # fmt: skip
    assert rc == 3 and "b.jpg: a RAW mosaic and developed photos cannot share" in err


# ----------------------------------------------------------------------------- bad files


@pytest.fixture
def bad_format_files(tmp_path: Path) -> dict[str, Path]:
    heic = _heic(tmp_path / "good.heic", _gradient()).read_bytes()
    dng = _dng(tmp_path / "good.dng").read_bytes()
    files = {
        "truncated.heic": heic[: len(heic) // 2],
        "garbage.heic": heic[:32] + bytes(range(256)) * 8,
        "notheic.heic": b"hello, not an image at all" * 10,
        "truncated.dng": dng[:200],
        "cut.dng": dng[: len(dng) // 3],
        "garbage.nef": np.random.default_rng(0).bytes(5000),
        "empty.cr2": b"",
    }
    short = bytearray(dng)  # the IFD is intact, the mosaic's strip runs past the end
    first = int.from_bytes(short[4:8], "little")
    for i in range(int.from_bytes(short[first : first + 2], "little")):
        at = first + 2 + 12 * i
        if int.from_bytes(short[at : at + 2], "little") == 0x0111:  # StripOffsets
            short[at + 8 : at + 12] = (len(short) - 100).to_bytes(4, "little")
    files["short-strip.dng"] = bytes(short)
    out = {}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        out[name] = tmp_path / name
    return out


@pytest.mark.parametrize(
    "name",
    ["truncated.heic", "garbage.heic", "notheic.heic", "truncated.dng", "cut.dng",
     "short-strip.dng", "garbage.nef", "empty.cr2"],
)  # fmt: skip
def test_bad_heic_and_raw_files_give_one_line_errors(bad_format_files, name: str) -> None:
    p = bad_format_files[name]
    loads = [load_sensor_pixels] + ([load_image] if name != "short-strip.dng" else [])
    for load in loads:  # (a short strip is found when the mosaic is read: PRNU only)
        with pytest.raises(InputError) as err:
            load(p)
        msg = str(err.value)
        assert msg.startswith(f"{p}: ") and "\n" not in msg and "b'" not in msg
    if name == "truncated.heic":
        assert "cannot decode HEIF: truncated file" in msg


def test_a_batch_with_bad_heic_and_raw_files_goes_on(
    bad_format_files, tmp_path: Path, capsys
) -> None:
    good = [tmp_path / "good.heic", tmp_path / "good.dng"]
    bad = [bad_format_files[n] for n in ("truncated.heic", "garbage.nef", "truncated.dng")]
    rc, recs, err = _cli(capsys, "exif", *map(str, [bad[0], *good, *bad[1:]]))
    assert rc == 3 and sorted(Path(r["path"]).name for r in recs) == ["good.dng", "good.heic"]
    for p in bad:
        assert f"{p}: " in err
    assert "Traceback" not in err


def test_decompression_limits_hold_before_decoding(tmp_path: Path) -> None:
    heic = _heic(tmp_path / "a.heic", _gradient())
    dng = _dng(tmp_path / "a.dng")
    for p, load in ((heic, load_image), (dng, load_image), (dng, load_raw_mosaic)):
        with pytest.raises(InputError, match="above the 0 MP limit"):
            load(p, max_pixels=1000)
    big = bytearray(dng.read_bytes())  # a header claiming a 60000 x 60000 sensor
    tags = {0x0100: 60000, 0x0101: 60000}
    first = int.from_bytes(big[4:8], "little")
    for i in range(int.from_bytes(big[first : first + 2], "little")):
        at = first + 2 + 12 * i
        tag = int.from_bytes(big[at : at + 2], "little")
        if tag in tags:
            big[at + 8 : at + 12] = tags[tag].to_bytes(4, "little")
    bomb = tmp_path / "bomb.dng"
    bomb.write_bytes(bytes(big))
    with pytest.raises(InputError) as err:
        load_raw_mosaic(bomb)
    assert str(err.value).startswith(str(bomb))
