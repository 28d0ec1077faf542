"""Contact sheets of the synthetic cameras and printers (PNG) for docs and quick checks."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from camid.io.atomic import write_bytes_atomic
from camid.synth.datasets import FLAT_EV, LABELS
from camid.synth.pipeline import simulate
from camid.synth.scenes import PRINTERS, bottle_scene, flat_field_scene, natural_scene
from camid.synth.spec import SynthSpec, default_spec, stable_seed

_BG = (245, 245, 245)
_INK = (20, 20, 20)
_GAP = 6


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _zoom(px: np.ndarray, y: int, x: int, n: int, factor: int) -> np.ndarray:
    crop = px[y : y + n, x : x + n]
    return np.repeat(np.repeat(crop, factor, axis=0), factor, axis=1)


def _sheet(rows: list[tuple[str, list[np.ndarray]]], title: str, label_w: int) -> Image.Image:
    tile_h = max(t.shape[0] for _, tiles in rows for t in tiles)
    row_w = max(sum(t.shape[1] + _GAP for t in tiles) for _, tiles in rows)
    head = 30
    sheet = Image.new("RGB", (label_w + row_w + _GAP, head + len(rows) * (tile_h + _GAP)), _BG)
    draw = ImageDraw.Draw(sheet)
    draw.text((_GAP, 8), title, fill=_INK, font=_font(15))
    small = _font(12)
    for r, (label, tiles) in enumerate(rows):
        y = head + r * (tile_h + _GAP)
        for i, line in enumerate(label.split("\n")):
            draw.text((_GAP, y + 4 + 15 * i), line, fill=_INK, font=small)
        x = label_w
        for t in tiles:
            sheet.paste(Image.fromarray(t), (x, y))
            x += t.shape[1] + _GAP
    return sheet


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def camera_sheet(
    spec: SynthSpec | None = None,
    *,
    seed: int = 0,
    size: tuple[int, int] = (256, 192),
    n_scenes: int = 3,
) -> Image.Image:
    """One row per camera model: the same scenes through each camera, a flat field, and a
    4x enlarged 48-pixel crop of the first image."""
    spec = spec or default_spec()
    w, h = size
    scenes = [
        natural_scene((h, w), np.random.default_rng(stable_seed("pv", seed, i)))
        for i in range(n_scenes)
    ]
    flat = flat_field_scene((h, w), np.random.default_rng(stable_seed("pvf", seed)))
    rows = []
    for cam in spec.cameras:
        tiles = []
        for i, sc in enumerate(scenes):
            rng = np.random.default_rng(stable_seed("pvc", seed, cam.id, i))
            px, _ = simulate(sc, cam, 0, rng)
            tiles.append(px)
        rng = np.random.default_rng(stable_seed("pvcf", seed, cam.id))
        tiles.append(simulate(flat, cam, 0, rng, exposure_ev=FLAT_EV)[0])
        n = min(48, h // 4, w // 4)
        tiles.append(_zoom(tiles[0], h // 2 - n // 2, w // 2 - n // 2, n, max(1, h // n)))
        label = (
            f"{cam.id}: {cam.name}\n{cam.cfa} {cam.demosaic}\n"
            f"JPEG q{cam.jpeg_quality} {cam.subsampling}\n"
            f"NR {cam.denoise_luma:.2f} sharpen {cam.sharpen_amount:.2f}"
        )
        rows.append((label, tiles))
    return _sheet(
        rows,
        "camid synth: the same scenes through each camera model "
        "(last: flat field, 4x crop of the first)",
        170,
    )


def bottle_sheet(
    spec: SynthSpec | None = None,
    *,
    seed: int = 0,
    size: tuple[int, int] = (384, 384),
    n_samples: int = 3,
) -> Image.Image:
    """One row per printer (label): bottle shots from different cameras plus 4x crops."""
    spec = spec or default_spec()
    w, h = size
    rows = []
    for li, printer in enumerate(PRINTERS):
        tiles = []
        crops = []
        for i in range(n_samples):
            cam = spec.cameras[(2 * i) % len(spec.cameras)]
            srng = np.random.default_rng(stable_seed("pvb", seed, li, i))
            scene, _ = bottle_scene((h, w), srng, printer)
            px, _ = simulate(scene, cam, 0, np.random.default_rng(stable_seed("pvbc", seed, i)))
            tiles.append(px)
            crops.append(_zoom(px, h // 2 - 24, w // 2 - 48, 48, 4))
        tiles.append(np.concatenate([crops[0][:, :192], crops[1][:, :192]], axis=0))
        label = (
            f"{LABELS[li]} = {printer.name}\ndot {printer.dot_diameter:.2f} pitch\n"
            f"aspect {printer.dot_aspect:.2f}\npitch_x {printer.pitch_x:.2f}"
        )
        rows.append((label, tiles))
    cams = ", ".join(spec.cameras[(2 * i) % len(spec.cameras)].id for i in range(n_samples))
    return _sheet(
        rows, f"camid synth bottles: one row per printer (cameras {cams}; last: 4x crops)", 150
    )


def stages_sheet(
    spec: SynthSpec | None = None,
    *,
    seed: int = 0,
    size: tuple[int, int] = (256, 192),
) -> Image.Image:
    """One scene through camera A stage by stage, with 4x crops of each stage below."""
    from camid.synth.pipeline import simulate_stages
    from camid.synth.sensor import cfa_channel_map

    spec = spec or default_spec()
    cam = spec.cameras[0]
    w, h = size
    scene = natural_scene((h, w), np.random.default_rng(stable_seed("pvs", seed)))
    st = simulate_stages(scene, cam, 0, np.random.default_rng(seed), keep=True)
    raw = st["raw"]
    cfa = np.zeros((h, w, 3), dtype=np.float32)
    cmap = cfa_channel_map(cam.cfa, (h, w))
    for c in range(3):
        cfa[..., c] = np.where(cmap == c, raw, 0.0)
    gains = st["balanced"].reshape(-1, 3).mean(0) / np.maximum(
        st["demosaiced"].reshape(-1, 3).mean(0), 1e-6
    )

    def disp(x: np.ndarray) -> np.ndarray:
        return np.clip(np.power(np.clip(x, 0, 1), 1 / 2.2) * 255 + 0.5, 0, 255).astype(np.uint8)

    full = [
        ("scene (linear)", disp(scene / max(float(np.percentile(scene, 99)), 1e-6))),
        ("raw CFA + noise", disp(cfa * gains * 2)),
        ("demosaiced", disp(st["demosaiced"] * gains)),
        ("white bal. + CCM + tone", (st["toned"] * 255 + 0.5).clip(0, 255).astype(np.uint8)),
        ("JPEG (after NR/sharpen)", st["pixels"]),
    ]
    n = 40
    y0, x0 = h // 2 - n // 2, w // 2 - n // 2
    factor = max(1, min(h, w) // n)
    zooms = [_zoom(img, y0, x0, n, factor) for _, img in full]
    title = (
        f"camid synth: one scene through camera {cam.id} ({cam.name}: {cam.cfa}, "
        f"{cam.demosaic}, q{cam.jpeg_quality} {cam.subsampling}); "
        f"bottom: {factor}x centre crops"
    )
    rows = [("full frame", [img for _, img in full]), ("centre\ncrops", zooms)]
    sheet = _sheet(rows, title, 90)
    draw = ImageDraw.Draw(sheet)
    x = 90
    for name, img in full:
        draw.text((x + 4, 30 + 2), name, fill=(255, 255, 0), font=_font(12))
        x += img.shape[1] + _GAP
    return sheet


def write_preview(
    out: str | Path,
    kind: str = "cameras",
    *,
    spec: SynthSpec | None = None,
    seed: int = 0,
    size: tuple[int, int] | None = None,
) -> Path:
    """Write a PNG contact sheet ('cameras', 'bottles' or 'stages'); return its path."""
    if kind == "cameras":
        img = camera_sheet(spec, seed=seed, size=size or (256, 192))
    elif kind == "bottles":
        img = bottle_sheet(spec, seed=seed, size=size or (384, 384))
    elif kind == "stages":
        img = stages_sheet(spec, seed=seed, size=size or (256, 192))
    else:
        raise ValueError(f"unknown preview kind {kind!r}")
    return write_bytes_atomic(out, _png(img))
