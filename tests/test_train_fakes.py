"""A small stand-in camera generator for the train/evaluate/identify tests.

Each fake "camera" stamps its own fixed 4x4 colour pattern (a stand-in for demosaicing and
processing traces) onto smooth random scenes and writes JPEG files whose EXIF Make/Model
name it. It is fast (milliseconds per image) and easy enough for a tiny network to learn in
seconds, which keeps the end-to-end tests real but short.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from camid.data.manifest import write_manifest

MAKES = {
    "Acme Alpha": ("Acme", "Alpha"),
    "Bolt B2": ("Bolt", "B2"),
    "Cora C3": ("Cora", "C3"),
    "Dyna D4": ("Dyna", "D4"),
}


def camera_tile(camera: str, amplitude: float = 7.0) -> np.ndarray:
    """The fixed 4x4x3 pattern of a fake camera."""
    rng = np.random.default_rng(zlib.crc32(camera.encode()))
    return rng.uniform(-amplitude, amplitude, size=(4, 4, 3))


def fake_photo(camera: str, seed: int, size: tuple[int, int] = (128, 96)) -> np.ndarray:
    """An HxWx3 uint8 photo: smooth random content + the camera's pattern + noise."""
    w, h = size
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, size=(h // 16 + 2, w // 16 + 2, 3))
    img = np.asarray(
        Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC),
        dtype=np.float64,
    )
    tile = camera_tile(camera)
    img += np.tile(tile, (h // 4 + 1, w // 4 + 1, 1))[:h, :w]
    img += rng.normal(0, 1.5, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def save_jpeg(pixels: np.ndarray, path: Path, make: str | None, model: str | None) -> Path:
    """Write a JPEG (quality 95) with optional EXIF Make/Model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    Image.fromarray(pixels).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


def make_fake_cameras(
    root: Path,
    cameras: list[str],
    per_camera: int = 8,
    test_per_camera: int = 2,
    size: tuple[int, int] = (128, 96),
    seed: int = 0,
) -> Path:
    """Write images + a manifest (path,label,camera,device,split); returns the CSV path."""
    rows = []
    for ci, cam in enumerate(cameras):
        make, model = MAKES.get(cam, (cam.split()[0], " ".join(cam.split()[1:]) or cam))
        for k in range(per_camera):
            px = fake_photo(cam, seed * 100_000 + ci * 1000 + k, size)
            p = save_jpeg(px, root / "images" / f"{ci}_{k:03d}.jpg", make, model)
            split = "test" if k < test_per_camera else "train"
            rows.append(
                {
                    "path": p,
                    "label": "x" if k % 2 else "y",
                    "camera": cam,
                    "device": f"{cam}-1",
                    "split": split,
                }
            )
    return write_manifest(rows, root / "cameras.csv")


def test_fake_cameras_differ_by_pattern(tmp_path: Path) -> None:
    """The fakes are what the other tests rely on: distinct patterns, readable EXIF."""
    from camid.io.exif import read_exif

    csv = make_fake_cameras(tmp_path, ["Acme Alpha", "Bolt B2"], per_camera=2, test_per_camera=1)
    assert csv.is_file()
    a, b = camera_tile("Acme Alpha"), camera_tile("Bolt B2")
    assert np.abs(a - b).mean() > 2
    info = read_exif(tmp_path / "images" / "0_000.jpg")
    assert info.camera == "Acme Alpha"


KNOWN = ["Acme Alpha", "Bolt B2", "Cora C3"]
OUTSIDER = "Dyna D4"


def shared_model(base: Path) -> tuple[Path, Path]:
    """(camid home holding model 'fk3', manifest) — trained once per test session.

    Four fake cameras are written (10 images each, 3 marked test); the model learns the
    first three, so the fourth is a camera it has never seen. The result is kept under the
    session's base temp folder and reused by the identify and evaluate tests.
    """
    from camid.data.manifest import read_manifest
    from camid.engine.train import TrainConfig, train

    root = base / "camid_shared_fakes"
    home, csv, done = root / "home", root / "data" / "cameras.csv", root / "done"
    if not done.is_file():
        make_fake_cameras(root / "data", [*KNOWN, OUTSIDER], per_camera=10, test_per_camera=3)
        rows = [r for r in read_manifest(csv) if r.camera != OUTSIDER]
        train(
            TrainConfig(
                name="fk3",
                arch="patchnet_hp_tiny",
                patch=32,
                patches_per_image=16,
                batch_size=32,
                epochs=6,
                manipulate=False,
                d4=False,
                val_fraction=0.25,
                seed=4,
                overwrite=True,
            ),
            rows,
            home=home,
        )
        done.write_text("ok")
    return home, csv
