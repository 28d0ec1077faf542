"""What happened to a photo after the camera: re-saved, resampled, cropped off the grid.

Real small files written here: a synthetic camera's JPEG (its own tables), re-saves,
resized and cropped copies, each loaded as identify loads them.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from camid.identify.history import Finding, History, analyse_history, ijg_table
from camid.io.image import load_image, read_file_bytes
from camid.synth.pipeline import simulate
from camid.synth.scenes import natural_scene
from camid.synth.spec import default_spec


@pytest.fixture(scope="module")
def camera_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 256x256 photo as synthetic camera A writes it (its own JPEG tables, ~Q93)."""
    rng = np.random.default_rng(7)
    scene = natural_scene((256, 256), rng)
    _, jpeg = simulate(scene, default_spec().cameras[0], 0, rng)
    path = tmp_path_factory.mktemp("history") / "camera.jpg"
    path.write_bytes(jpeg)
    return path


def pixels_of(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def save(pixels: np.ndarray, path: Path, quality: int | None = None) -> Path:
    Image.fromarray(np.ascontiguousarray(pixels)).save(
        path, **({"quality": quality} if quality else {})
    )
    return path


def analyse(path: Path) -> History:
    raw = read_file_bytes(path)
    img = load_image(path, data=raw)
    return analyse_history(img.pixels, raw, img.codec)


def test_camera_original_is_as_the_camera_wrote_it(camera_jpeg: Path) -> None:
    h = analyse(camera_jpeg)
    assert h.resaved.detected is False and h.resampled.detected is False
    assert h.cropped.detected is False and h.cropped.detail["grid_offset"] == [0, 0]
    assert "not looked for" in h.cropped.reason  # a JPEG file: its last save sets the grid
    assert not h.manipulated
    assert h.summary().startswith("as the camera wrote it")
    assert h.short() == "as shot"
    # the file's own table is the camera's (not a standard IJG table, ~Q93)
    assert 88 <= h.resaved.detail["last_quality"] <= 97


def test_resave_at_q70_over_q75_is_found_with_the_first_quality(
    camera_jpeg: Path, tmp_path: Path
) -> None:
    first = save(pixels_of(camera_jpeg), tmp_path / "q75.jpg", 75)
    h = analyse(save(pixels_of(first), tmp_path / "q75_q70.jpg", 70))
    assert h.resaved.detected is True and h.manipulated
    assert h.resaved.estimate is not None and abs(h.resaved.estimate - 75) <= 5
    assert h.resaved.detail["last_quality"] == 70
    assert f"first quality ~{h.resaved.estimate:.0f}" in h.summary()
    assert h.short().startswith("re-saved ~Q")
    # the Q75 copy it came from is itself a re-save of the camera's JPEG (~Q93)
    once = analyse(first).resaved
    assert once.detected is True and once.estimate is not None and once.estimate >= 88


def test_camera_photo_resaved_at_q80_is_found(camera_jpeg: Path, tmp_path: Path) -> None:
    h = analyse(save(pixels_of(camera_jpeg), tmp_path / "q80.jpg", 80))
    assert h.resaved.detected is True
    assert h.resaved.score > 0


def test_upsizing_by_1_5_is_found_with_its_factor(camera_jpeg: Path, tmp_path: Path) -> None:
    px = pixels_of(camera_jpeg)
    big = np.asarray(Image.fromarray(px).resize((384, 384), Image.Resampling.BICUBIC))
    for path in (save(big, tmp_path / "big.png"), save(big, tmp_path / "big.jpg", 90)):
        h = analyse(path)
        assert h.resampled.detected is True, path.name
        assert h.resampled.estimate == pytest.approx(1.5, abs=0.05)
        assert "resized (x~1.5)" in h.summary()


def test_crop_off_the_grid_is_found_in_a_png_copy(camera_jpeg: Path, tmp_path: Path) -> None:
    cut = pixels_of(camera_jpeg)[3:, 5:]  # 3 rows off the top, 5 columns off the left
    h = analyse(save(cut, tmp_path / "cut.png"))
    assert h.cropped.detected is True
    assert h.cropped.detail["grid_offset"] == [5, 3]  # the old blocks now start at (5, 3)
    assert h.resaved.detected is None  # a PNG: no last JPEG table to test
    assert "cannot tell" in h.resaved.reason


def test_pixels_that_never_were_jpeg_have_no_grid_and_no_resave(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    scene = natural_scene((160, 160), rng)
    px = np.clip(np.round(scene / scene.max() * 255), 0, 255).astype(np.uint8)
    h = analyse(save(px, tmp_path / "drawn.png"))
    assert h.resaved.detected is None and h.cropped.detected is None
    assert not h.manipulated
    assert "cannot tell" in h.summary()


def test_too_small_images_cannot_be_told(tmp_path: Path) -> None:
    px = np.full((40, 48, 3), 128, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format="JPEG", quality=80)
    h = analyse_history(px, buf.getvalue(), "JPEG")
    assert h.resaved.detected is None and h.resampled.detected is None
    assert "too small" in h.resaved.reason and "too small" in h.resampled.reason
    assert analyse_history(px).cropped.detected is None  # decoded pixels, no file


def test_records_are_json_ready() -> None:
    f = Finding("resaved", True, 0.123456, 75.0, "double JPEG", {"last_quality": 70})
    ok = Finding("resampled", False, 2.0, None, "none")
    h = History(f, ok, Finding("cropped", None, None, None, "cannot tell"))
    rec = h.to_record()
    assert rec["manipulated"] is True
    assert rec["resaved"] == {
        "detected": True,
        "score": 0.1235,
        "estimate": 75.0,
        "reason": "double JPEG",
        "last_quality": 70,
    }
    assert h.summary() == "re-saved (first quality ~75)"


def test_ijg_tables_match_pillow() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="JPEG", quality=75)
    with Image.open(buf) as im:
        assert list(ijg_table(75).astype(int)) == list(im.quantization[0])
