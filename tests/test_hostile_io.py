"""Issue 9, input/output half: hostile files made here, never analysed as if they were fine.

Corrupt data, FIFOs and devices, pixel limits, markup and terminal control in evidence text,
raw Python warnings, the batch counter, recorded conversions and too-small images.
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camid.cli import main
from camid.errors import InputError
from camid.io.exif import read_exif
from camid.io.image import DEFAULT_MAX_PIXELS, load_image, read_file_bytes, sha256_file
from camid.io.inputs import expand_inputs
from camid.report.output import Output, printable
from tests.conftest import natural_rgb, write_jpeg

REPO = Path(__file__).resolve().parents[1]


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _grey_png(width: int, height: int, rows: int | None = None) -> bytes:
    """An 8-bit grey PNG of zeros (compresses to a few kB); `rows` < height truncates it."""
    row = b"\x00" * (width + 1)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(height if rows is None else rows))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", body + z.flush())
        + _chunk(b"IEND", b"")
    )


def _camid(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real CLI in a fresh process (pytest's own warning capture cannot hide anything)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "camid", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def corrupt_png(tmp_path: Path) -> tuple[Path, Path]:
    """(intact PNG, the same PNG with one IDAT byte flipped: its CRC fails)."""
    buf = io.BytesIO()
    Image.fromarray(natural_rgb(48, 64)).save(buf, "PNG")
    good = tmp_path / "good.png"
    good.write_bytes(buf.getvalue())
    data = bytearray(buf.getvalue())
    data[data.index(b"IDAT") + 4 + len(data) // 3] ^= 0x01
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    return good, bad


# -- 1. corrupt evidence --------------------------------------------------------------------
def test_png_with_a_flipped_idat_byte_is_refused(corrupt_png, capsys) -> None:
    good, bad = corrupt_png
    assert load_image(good).pixels.shape == (48, 64, 3)
    with pytest.raises(InputError, match="checksum") as err:
        load_image(bad)
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="corrupt PNG"):
        read_exif(bad)
    assert main(["exif", str(bad), "--json"]) == 3
    cap = capsys.readouterr()
    assert json.loads(cap.out) == []
    errors = [line for line in cap.err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "Traceback" not in cap.err


def test_png_whose_data_ends_early_is_refused_not_padded(tmp_path: Path, capsys) -> None:
    short = tmp_path / "short.png"
    short.write_bytes(_grey_png(50, 40, rows=30))  # valid CRCs, a complete zlib stream
    assert np.asarray(Image.open(short)).shape == (40, 50)  # Pillow pads 10 rows of zeros
    with pytest.raises(InputError, match=r"ends early \(1530 of 2040 bytes"):
        load_image(short)
    assert main(["exif", str(short), "--json"]) == 3
    assert "ends early" in capsys.readouterr().err


def _interlaced_png(arr: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG (Pillow cannot write one), passes by slicing."""
    starts = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4))
    starts += ((1, 0, 2, 2), (0, 1, 1, 2))
    raw = b""
    for x0, y0, dx, dy in starts:
        sub = arr[y0::dy, x0::dx]
        if sub.size:
            raw += b"".join(b"\x00" + row.tobytes() for row in sub)
    ihdr = struct.pack(">IIBBBBB", arr.shape[1], arr.shape[0], 8, 2, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("mode", ["1", "L", "LA", "RGBA", "P", "I;16", "interlaced"])
def test_intact_pngs_of_every_layout_still_load(tmp_path: Path, mode: str) -> None:
    arr = natural_rgb(37, 29)
    p = tmp_path / f"ok_{mode.replace(';', '')}.png"
    if mode == "interlaced":
        p.write_bytes(_interlaced_png(arr))
        assert np.array_equal(np.asarray(Image.open(p).convert("RGB")), arr)
    elif mode == "I;16":
        Image.fromarray(arr[..., 0].astype(np.uint16) * 257).save(p)
    else:
        src = Image.fromarray(arr).convert(mode)
        src.save(p, bits=4) if mode == "P" else src.save(p)
    img = load_image(p)
    assert img.pixels.shape == (37, 29, 3)
    if mode == "interlaced":
        assert np.array_equal(img.pixels, arr)


@pytest.mark.parametrize(
    ("fmt", "kw"),
    [
        ("PNG", {}),
        ("JPEG", {"quality": 90}),
        ("TIFF", {"compression": "tiff_adobe_deflate"}),
        ("WEBP", {"quality": 90}),
        ("GIF", {}),
        ("BMP", {}),
    ],
)
def test_every_format_cut_short_is_an_input_error(tmp_path: Path, fmt: str, kw: dict) -> None:
    buf = io.BytesIO()
    Image.fromarray(natural_rgb(48, 64)).save(buf, fmt, **kw)
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    with pytest.raises(InputError) as err:
        load_image(p)
    assert str(err.value).startswith(str(p)) and "\n" not in str(err.value)


def test_deflate_tiff_with_a_flipped_byte_is_refused(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(natural_rgb(48, 64)).save(buf, "TIFF", compression="tiff_adobe_deflate")
    data = bytearray(buf.getvalue())
    data[len(data) // 3] ^= 0x10  # inside the deflate stream: its checksum fails
    (tmp_path / "bad.tif").write_bytes(bytes(data))
    with pytest.raises(InputError, match="cannot decode"):
        load_image(tmp_path / "bad.tif")


# -- 2. only regular files ------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_and_devices_are_refused_never_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    for target in (fifo, Path("/dev/zero"), Path("/dev/null")):
        if not target.exists():
            continue
        with pytest.raises(InputError, match="not a regular file"):
            read_file_bytes(target)
        with pytest.raises(InputError, match="not a regular file"):
            sha256_file(target)
        with pytest.raises(InputError, match="not a regular file"):
            read_exif(target)
    write_jpeg(tmp_path / "good.jpg")
    paths, errors = expand_inputs([tmp_path])
    assert [p.name for p in paths] == ["good.jpg"]
    assert [(Path(e.path).name, "not a regular file" in e.reason) for e in errors] == [
        ("pipe.jpg", True)
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_cli_with_a_fifo_a_device_a_folder_and_a_manifest_never_hangs(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    write_jpeg(folder / "a.jpg")
    os.mkfifo(folder / "pipe.jpg")
    os.mkfifo(tmp_path / "named.jpg")
    # a timeout makes a regression fail instead of hanging the suite
    res = _camid("exif", "named.jpg", "/dev/zero", "photos", "-r", "--json", cwd=tmp_path)
    assert res.returncode == 3, res.stderr
    assert [Path(r["path"]).name for r in json.loads(res.stdout)] == ["a.jpg"]
    assert res.stderr.count("not a regular file") == 3
    assert "3 input(s) of 4 could not be read" in res.stderr
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,camera\nphotos/a.jpg,x,\nphotos/pipe.jpg,y,\n")
    res = _camid("dataset", "summary", "m.csv", "--json", cwd=tmp_path)
    assert "Traceback" not in res.stderr


# -- 3. pixel limit -------------------------------------------------------------------------
def test_100_mp_passes_and_bombs_are_refused_from_the_header(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    assert PILImage.MAX_IMAGE_PIXELS is not None
    assert PILImage.MAX_IMAGE_PIXELS >= DEFAULT_MAX_PIXELS  # raised, never disabled
    big = load_image(tmp_path / "100mp.png", data=_grey_png(10000, 10000))
    assert (big.width, big.height) == (10000, 10000) and int(big.pixels.max()) == 0
    del big
    # 90 MP whose zlib stream ends after 10 rows: the size passes, the short data does not
    with pytest.raises(InputError, match=r"image data ends early \(94880 of 90012656 bytes"):
        load_image(tmp_path / "90mp.png", data=_grey_png(9487, 9487, rows=10))
    with pytest.raises(InputError, match="above the 120 MP limit"):
        load_image(tmp_path / "121mp.png", data=_grey_png(11000, 11000, rows=1))


# -- 4. text from evidence is data ----------------------------------------------------------
HOSTILE_MAKES = ["[/bold]", "[link=http://x]Canon[/link]", "\x1b]0;pwned\x07", "=1+2"]


def test_exif_text_is_plain_in_table_and_csv(tmp_path: Path) -> None:
    for i, make in enumerate(HOSTILE_MAKES):
        write_jpeg(tmp_path / f"e{i}.jpg", make=make, model="-3.2")
    names = [f"e{i}.jpg" for i in range(len(HOSTILE_MAKES))]
    table = _camid("exif", *names, "-f", "table", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "[/bold]" in table.stdout and "[link=http://x]Canon[/link]" in table.stdout
    assert "\\u001b]0;pwned\\u0007" in table.stdout
    assert "\x1b" not in table.stdout + table.stderr and "\x07" not in table.stdout
    res = _camid("exif", *names, "-f", "csv", "--no-tables", cwd=tmp_path)
    assert res.returncode == 0 and "\x1b" not in res.stdout
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["make"] for r in rows] == [
        "[/bold]",
        "[link=http://x]Canon[/link]",
        "\\u001b]0;pwned\\u0007",
        "'=1+2",
    ]
    assert {r["model"] for r in rows} == {"'-3.2"}  # text that looks like a number
    assert {r["width"] for r in rows} == {"128"}
    js = _camid("exif", "e2.jpg", "--json", cwd=tmp_path)
    assert "\x1b" not in js.stdout and json.loads(js.stdout)[0]["make"] == HOSTILE_MAKES[2]


def test_output_numbers_stay_numbers_and_messages_are_escaped() -> None:
    out_csv, err = io.StringIO(), io.StringIO()
    o = Output("csv", stdout=out_csv, stderr=err)
    o.emit([{"x": -3.2, "n": -7, "s": "-3.2", "at": "@SUM(A1)", "plus": "+1", "ok": "Canon"}])
    row = next(csv.DictReader(io.StringIO(out_csv.getvalue())))
    assert row == {
        "x": "-3.2",
        "n": "-7",
        "s": "'-3.2",
        "at": "'@SUM(A1)",
        "plus": "'+1",
        "ok": "Canon",
    }
    o.error("evil\x1b[2J\u202e.jpg: [bold]no[/bold] :skull:")
    o.warn("tab\there")
    text = err.getvalue()
    assert "\x1b" not in text and "\u202e" not in text and "\t" not in text
    assert "evil\\u001b[2J\\u202e.jpg: [bold]no[/bold] :skull:" in text
    assert printable("a\x9bb\x7f") == "a\\u009bb\\u007f"
    out_js = io.StringIO()
    Output("json", stdout=out_js).emit([{"make": "x\x9b\u202ey\x1b"}])
    assert not set("\x9b\u202e\x1b") & set(out_js.getvalue())
    assert json.loads(out_js.getvalue())[0]["make"] == "x\x9b\u202ey\x1b"
    out_tab = io.StringIO()
    Output("table", stdout=out_tab).emit([{"[b]k": "[red]v :skull:"}], title="[/b]")
    assert "[red]v :skull:" in out_tab.getvalue() and "[/b]" in out_tab.getvalue()


# -- 5. raw Python warnings -----------------------------------------------------------------
def test_no_raw_python_warning_reaches_stderr(tmp_path: Path) -> None:
    write_jpeg(tmp_path / "cexif.jpg", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\xff" * 3)
    nan = np.full((40, 50), np.nan, np.float32)
    nan[:20] = 0.5
    Image.fromarray(nan, mode="F").save(tmp_path / "nan.tif")
    for cmd in (["exif", "cexif.jpg", "nan.tif"], ["prnu", "residual", "cexif.jpg", "nan.tif"]):
        res = _camid(*cmd, "--json", cwd=tmp_path)
        for raw in ("UserWarning", "RuntimeWarning", "warnings.warn", "Traceback"):
            assert raw not in res.stderr, res.stderr
    img = load_image(tmp_path / "nan.tif")
    assert "1000 NaN/infinite value(s) set to 0" in img.conversion
    assert img.pixels[25:].max() == 0 and img.pixels[:20].min() == 128


def test_other_warnings_become_one_camid_line(monkeypatch) -> None:
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    err = io.StringIO()
    Output("json", stderr=err).route_warnings()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("something odd\n  happened", UserWarning, stacklevel=1)
    assert err.getvalue() == "Warning: something odd happened\n"


# -- 6. one counter -------------------------------------------------------------------------
def test_failure_counts_are_right(tmp_path: Path, capsys) -> None:
    (tmp_path / "zero.jpg").write_bytes(b"")
    assert main(["exif", str(tmp_path / "zero.jpg"), "--json"]) == 3
    assert "1 input(s) of 1 could not be read" in capsys.readouterr().err
    folder = tmp_path / "eight"
    folder.mkdir()
    for i in range(6):
        write_jpeg(folder / f"ok{i}.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    assert main(["exif", str(folder), "--json"]) == 3
    assert "2 input(s) of 8 could not be read" in capsys.readouterr().err
    assert main(["prnu", "residual", str(folder), str(tmp_path / "gone.jpg"), "--json"]) == 3
    assert "3 input(s) of 9 could not be read" in capsys.readouterr().err


# -- 7. conversions are recorded ------------------------------------------------------------
def _frames_gif(path: Path, n: int = 3) -> Path:
    frames = [Image.fromarray(natural_rgb(40, 48, seed=s)).convert("P") for s in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return path


def _rgb16_png(path: Path) -> Path:
    h, w = 36, 40
    rows = b"".join(b"\x00" + np.full((w, 3), 0x1234, ">u2").tobytes() for _ in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )
    return path


@pytest.fixture
def converted(tmp_path: Path) -> dict[str, Path]:
    """Files whose pixels the loader must convert, by kind."""
    src = Image.fromarray(natural_rgb(40, 48))
    src.convert("P").save(tmp_path / "palette.png")
    src.convert("RGBA").save(tmp_path / "rgba.png")
    grey16 = (np.linspace(0, 65535, 40 * 48).reshape(40, 48)).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    return {
        "palette": tmp_path / "palette.png",
        "rgba": tmp_path / "rgba.png",
        "grey16": tmp_path / "grey16.png",
        "rgb16": _rgb16_png(tmp_path / "rgb16.png"),
        "gif": _frames_gif(tmp_path / "anim.gif"),
        "jpeg": write_jpeg(tmp_path / "plain.jpg", natural_rgb(40, 48)),
    }


EXPECTED = {
    "palette": "palette expanded to RGB",
    "rgba": "RGBA: alpha dropped",
    "grey16": "16-bit I;16 scaled to 8-bit grey",
    "rgb16": "16-bit RGB reduced to 8-bit (top byte)",
    "gif": "first frame of 3; palette expanded to RGB",
    "jpeg": None,
}


def test_conversions_are_recorded_by_the_loader_and_exif(converted, capsys) -> None:
    for kind, path in converted.items():
        img = load_image(path)
        assert img.conversion == EXPECTED[kind], kind
        assert img.pixels.shape == (40, 48, 3) if kind != "rgb16" else (36, 40, 3)
    assert int(load_image(converted["rgb16"]).pixels[0, 0, 0]) == 0x12
    assert main(["exif", *map(str, converted.values()), "--json", "--no-tables"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert {Path(r["path"]).stem: r["conversion"] for r in recs} == {
        p.stem: EXPECTED[k] for k, p in converted.items()
    }


# -- 8. too small ---------------------------------------------------------------------------
def test_too_small_is_refused_from_the_header(tmp_path: Path) -> None:
    Image.fromarray(natural_rgb(2, 2)).save(tmp_path / "tiny.png")
    with pytest.raises(InputError, match=r"image is 2x2, too small for PRNU \(needs at least"):
        load_image(tmp_path / "tiny.png", min_side=64, purpose="PRNU")
    assert load_image(tmp_path / "tiny.png").width == 2  # no minimum unless asked


def test_identify_refuses_tiny_images_and_records_conversions(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from camid.identify import Identifier
    from tests.test_train_fakes import shared_model

    home, _csv = shared_model(tmp_path_factory.getbasetemp())  # the small real model 'fk3'
    monkeypatch.setenv("CAMID_HOME", str(home))
    ident = Identifier.from_model("fk3", device="cpu", batch_size=64, workers=0)
    paths = []
    for side in (1, 2, 31, 32):
        p = tmp_path / f"s{side}.png"
        Image.fromarray(natural_rgb(side, side)).save(p)
        paths.append(p)
    pal = tmp_path / "palette.png"
    Image.fromarray(natural_rgb(64, 80)).convert("P").save(pal)
    res = list(ident.identify([*paths, pal, write_jpeg(tmp_path / "plain.jpg")]))
    assert ident.min_side == 32
    for r, side in zip(res[:3], (1, 2, 31), strict=True):
        assert isinstance(r, InputError)
        assert r.reason == (
            f"image is {side}x{side}, too small for camera identification (needs at least 32x32)"
        )
    assert [r.to_record()["conversion"] for r in res[3:]] == [
        None,
        "palette expanded to RGB",
        None,
    ]
    assert all(r.camera for r in res[3:])
