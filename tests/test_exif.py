"""EXIF reading, JPEG tables and quality, odd encodings, and `camid exif` batches."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from camid.cli import main
from camid.io.exif import camera_name, estimate_jpeg_quality, parse_jpeg_qtables, read_exif
from tests.conftest import natural_rgb, write_jpeg


def test_read_exif_tags_and_quality(tmp_path):
    p = write_jpeg(tmp_path / "a.jpg", quality=85, make="Acme", model="Snap 100", orientation=8)
    info = read_exif(p)
    assert (info.make, info.model, info.software) == ("Acme", "Snap 100", "fw 1.0")
    assert info.camera == "Acme Snap 100"
    assert info.orientation == 8
    assert (info.width, info.height) == (128, 96)
    assert info.jpeg_quality == 85 and info.jpeg_quality_exact
    assert set(info.quant_tables) == {0, 1}


def test_qtables_match_pillow(tmp_path):
    # Pillow reports the tables it wrote; our own DQT parser (natural order) must agree
    p = tmp_path / "q.jpg"
    Image.fromarray(natural_rgb(32, 32)).save(p, "JPEG", quality=63)
    ours = parse_jpeg_qtables(p.read_bytes())
    with Image.open(p) as im:
        theirs = im.quantization
    for k, table in theirs.items():
        assert ours[k].flatten().tolist() == list(table)
    q, exact = estimate_jpeg_quality(ours)
    assert q == 63 and exact


def test_custom_tables_get_nearest_quality(tmp_path):
    p = tmp_path / "custom.jpg"
    luma = list(np.full(64, 3))  # a camera-like flat table, not libjpeg's
    Image.fromarray(natural_rgb(32, 32)).save(p, "JPEG", qtables=[luma, luma])
    q, exact = estimate_jpeg_quality(parse_jpeg_qtables(p.read_bytes()))
    assert q is not None and q > 90 and not exact


def test_camera_name_normalisation():
    assert camera_name("Canon", "Canon EOS 5D") == "Canon EOS 5D"
    assert camera_name("NIKON CORPORATION", "NIKON D700") == "NIKON D700"
    assert camera_name("Apple", "iPhone 12") == "Apple iPhone 12"
    assert camera_name("  OLYMPUS\x00\x00 ", " E-M10  ") == "OLYMPUS E-M10"
    assert camera_name("Acme", None) is None and camera_name(None, "X1") == "X1"


def test_odd_encodings_and_missing_tags(tmp_path):
    odd = write_jpeg(tmp_path / "odd.jpg", make=b"Ac\xffme\x00\x00", model=b"Mod\xc3\xa8le 7")
    info = read_exif(odd)
    assert info.model == "Mod\u00e8le 7"
    assert info.make is not None and "\x00" not in info.make
    none = write_jpeg(tmp_path / "none.jpg", exif=None)
    info = read_exif(none)
    assert info.make is None and info.camera is None and "no EXIF metadata" in info.warnings
    broken = write_jpeg(tmp_path / "broken.jpg", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\xff" * 3)
    info = read_exif(broken)  # malformed metadata: warnings, never an exception
    assert info.camera is None and info.width == 128


def test_exif_batch_goes_on_and_exits_3(bad_files, capsys, tmp_path):
    failed_list = tmp_path / "failed.txt"
    folder = bad_files["good"].parent
    before = {p: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    rc = main(["exif", str(folder), "--json", "--failed-list", str(failed_list)])
    out, err = capsys.readouterr()
    assert rc == 3
    records = json.loads(out)
    by_name = {r["path"].rsplit("/", 1)[-1]: r for r in records}
    assert {"good.jpg", "cmyk.jpg", "gray16.png", "truncated.jpg"} <= set(by_name)
    assert by_name["good.jpg"]["camera"] == "Acme Snap 100"
    assert len(by_name["good.jpg"]["sha256"]) == 64
    error_lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert any("text.jpg: not an image" in e for e in error_lines)
    assert any("empty.jpg: empty file" in e for e in error_lines)
    assert "Traceback" not in err
    assert "truncated" in err  # the truncated JPEG is reported, its metadata still read
    failed = failed_list.read_text().split()
    assert any(f.endswith("text.jpg") for f in failed)
    assert {p: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_exif_formats(tmp_path, capsys):
    p = write_jpeg(tmp_path / "a.jpg")
    assert main(["exif", str(p), "--format", "csv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("path,") and len(out) == 2
    assert main(["exif", str(p), "--format", "ndjson", "--no-tables"]) == 0
    rec = json.loads(capsys.readouterr().out.strip())
    assert rec["camera"] == "Acme Snap 100" and "quant_tables" not in rec
    assert main(["exif", str(p), "--format", "table"]) == 0
    assert "Acme Snap 100" in capsys.readouterr().out


def test_paths_from_stdin(tmp_path, capsys, monkeypatch):
    import io

    a = write_jpeg(tmp_path / "a.jpg")
    b = write_jpeg(tmp_path / "b.jpg", model="Other 2")
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{a}\n\n{b}\n"))
    assert main(["exif", "-", "--json", "--no-tables"]) == 0
    cams = [r["camera"] for r in json.loads(capsys.readouterr().out)]
    assert cams == ["Acme Snap 100", "Acme Other 2"]


def test_empty_result_is_empty_json_array(tmp_path, capsys):
    d = tmp_path / "empty_dir"
    d.mkdir()
    rc = main(["exif", str(d), "--json"])
    out, err = capsys.readouterr()
    assert json.loads(out) == [] and rc == 3 and "no image files" in err
