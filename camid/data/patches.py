"""Patch geometry: frame regions, random training crops, inference grids, image-level splits.

A *region* restricts every crop to part of the frame: `full`, `left` / `right` half (the
left->right transfer check of seed 000), `top` / `bottom` half (the same check along the
other axis), or `center80` (the central 80 %, a Kaggle trick).
Splits are always by image: all patches of one image sit on the same side.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from camid.data.augment import apply_pixel_probe, d4, random_chain, random_manipulation
from camid.errors import UsageError

REGIONS = ("full", "left", "right", "top", "bottom", "center80")
ALIGN = 8
"""Crop corners sit on multiples of 8 pixels of the original frame: that keeps the 2x2
colour-filter (demosaicing) lattice and the 8x8 JPEG block grid in the same phase in every
crop, which are among the strongest camera-model traces."""


def _up(v: int, a: int) -> int:
    return -(-v // a) * a


def region_bounds(height: int, width: int, region: str = "full") -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of a region of an HxW frame; starts are multiples of ALIGN."""
    if region == "full":
        return 0, height, 0, width
    if region == "left":
        return 0, height, 0, max(1, width // 2)
    if region == "right":
        x0 = min(_up(width // 2, ALIGN), width - 1)
        return 0, height, x0, width
    if region == "top":
        return 0, max(1, height // 2), 0, width
    if region == "bottom":
        y0 = min(_up(height // 2, ALIGN), height - 1)
        return y0, height, 0, width
    if region == "center80":
        dy, dx = _up(int(round(height * 0.1)), ALIGN), _up(int(round(width * 0.1)), ALIGN)
        if dy >= height - dy or dx >= width - dx:
            return 0, height, 0, width
        return dy, height - dy, dx, width - dx
    raise UsageError(f"unknown region {region!r}; choose one of: {', '.join(REGIONS)}")


def _pad_to(pixels: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad an image so both sides are at least `size`."""
    h, w = pixels.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return pixels
    mode = "reflect" if h > 1 and w > 1 and ph < h and pw < w else "edge"
    return np.pad(pixels, ((0, ph), (0, pw), (0, 0)), mode=mode)


def crop(pixels: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    """A size x size crop at (y, x), reflect-padded where the image is too small."""
    out = pixels[y : y + size, x : x + size]
    return _pad_to(out, size) if out.shape[0] < size or out.shape[1] < size else out


def region_view(pixels: np.ndarray, region: str = "full") -> np.ndarray:
    """The part of an image inside a region (a view, no copy); crops never leave it."""
    y0, y1, x0, x1 = region_bounds(pixels.shape[0], pixels.shape[1], region)
    return pixels[y0:y1, x0:x1]


def random_crop(
    pixels: np.ndarray,
    size: int,
    rng: np.random.Generator,
    region: str = "full",
    align: int = ALIGN,
) -> np.ndarray:
    """One uniformly placed size x size crop inside the region (padded if it is smaller),
    its corner on a multiple of `align` pixels (1 = anywhere)."""
    view = region_view(pixels, region)
    h, w = view.shape[:2]
    a = max(1, align)
    y = int(rng.integers(0, max(0, h - size) // a + 1)) * a
    x = int(rng.integers(0, max(0, w - size) // a + 1)) * a
    return crop(view, y, x, size)


@dataclass(frozen=True)
class CropRecipe:
    """How one training crop is made (seed 002): large crop -> manipulation -> final crop."""

    patch: int
    large: int
    manipulate_p: float = 0.5
    d4: bool = False
    region: str = "full"
    align: int = ALIGN
    probe: str | None = None  # a pixel probe (camid.data.augment.PIXEL_PROBES), applied last
    augment: str = "seed002"  # manipulations: camid.data.augment.AUGMENT_RECIPES


def training_crop(pixels: np.ndarray, recipe: CropRecipe, rng: np.random.Generator) -> np.ndarray:
    """Draw one augmented training crop of `recipe.patch` pixels."""
    big = random_crop(pixels, recipe.large, rng, recipe.region, recipe.align)
    a = max(1, recipe.align)
    if recipe.manipulate_p > 0 and rng.random() < recipe.manipulate_p:
        chain = random_chain(rng) if recipe.augment == "robust" else [random_manipulation(rng)]
        changed = big
        for manip in chain:
            changed = manip.apply(changed)
        if min(changed.shape[:2]) >= recipe.patch:
            big = changed
            kinds = [m.kind for m in chain if m.kind != "gamma"]
            if kinds and kinds[-1] == "resize":
                a = 1  # the lattice is gone: any offset
            # after a final re-save the new lattice starts at the large crop's corner:
            # crops on multiples of 8 stay on that grid (views on the detected grid)
    h, w = big.shape[:2]
    y = int(rng.integers(0, (h - recipe.patch) // a + 1)) * a
    x = int(rng.integers(0, (w - recipe.patch) // a + 1)) * a
    out = big[y : y + recipe.patch, x : x + recipe.patch]
    if recipe.d4:
        out = d4(out, int(rng.integers(8)))
    if recipe.probe is not None:
        out = apply_pixel_probe(recipe.probe, np.ascontiguousarray(out), rng)
    return np.ascontiguousarray(out)


def grid_positions(
    height: int, width: int, size: int, max_patches: int | None = None
) -> list[tuple[int, int]]:
    """Top-left corners of a centred, non-overlapping size x size grid over an HxW frame
    (the offset rounded down to a multiple of ALIGN).

    With more cells than `max_patches`, an evenly spread subset is kept (deterministic).
    A frame smaller than one patch yields (0, 0) (the crop is padded). Apply it to
    `region_view(pixels, region)` to stay inside a region.
    """
    ny, nx = max(1, height // size), max(1, width // size)
    oy = (max(0, height - ny * size) // 2) // ALIGN * ALIGN
    ox = (max(0, width - nx * size) // 2) // ALIGN * ALIGN
    pos = [(oy + i * size, ox + j * size) for i in range(ny) for j in range(nx)]
    if max_patches is not None and len(pos) > max_patches:
        idx = np.linspace(0, len(pos) - 1, max_patches).round().astype(int)
        pos = [pos[i] for i in sorted(set(idx.tolist()))]
    return pos


def five_crop_positions(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """The 4 corners and the centre of an HxW frame (seed 002 inference crops)."""
    ye, xe = max(0, height - size) // ALIGN * ALIGN, max(0, width - size) // ALIGN * ALIGN
    yc, xc = ye // 2 // ALIGN * ALIGN, xe // 2 // ALIGN * ALIGN
    pos: list[tuple[int, int]] = []
    for p in [(0, 0), (0, xe), (ye, 0), (ye, xe), (yc, xc)]:
        if p not in pos:
            pos.append(p)
    return pos


def split_by_image(
    keys: Sequence[str],
    labels: Sequence[str],
    val_fraction: float,
    seed: int,
) -> tuple[list[int], list[int]]:
    """Indices (train, val) split by image key, stratified by label, at least 1 val per class.

    Every image appears on exactly one side; images sharing a key (the same file listed
    twice) stay together. Classes with a single image stay in training.
    """
    if not 0 <= val_fraction < 1:
        raise UsageError("the validation fraction must be in [0, 1)")
    by_label: dict[str, list[str]] = defaultdict(list)
    key_label: dict[str, str] = {}
    for k, lab in zip(keys, labels, strict=True):
        if k not in key_label:
            key_label[k] = lab
            by_label[lab].append(k)
    rng = np.random.default_rng(seed)
    val_keys: set[str] = set()
    if val_fraction > 0:
        for lab in sorted(by_label):
            ks = sorted(by_label[lab])
            if len(ks) < 2:
                continue
            rng.shuffle(ks)
            n = min(len(ks) - 1, max(1, int(round(len(ks) * val_fraction))))
            val_keys.update(ks[:n])
    train = [i for i, k in enumerate(keys) if k not in val_keys]
    val = [i for i, k in enumerate(keys) if k in val_keys]
    return train, val
