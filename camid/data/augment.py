"""Image manipulations of the seed-002 recipe (JPEG, gamma, resize) and the D4 group.

All functions take and return HxWx3 uint8 arrays in stored orientation. Manipulations are
used twice: as training augmentation (random, p=0.5) and as fixed test conditions in
`camid evaluate` ("jpeg:70", "gamma:1.2", "resize:0.5").
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from camid.errors import UsageError

JPEG_QUALITY_RANGE = (70, 90)
GAMMA_RANGE = (0.8, 1.2)
RESIZE_FACTORS = (0.5, 0.8, 1.5, 2.0)
MANIPULATION_KINDS = ("jpeg", "gamma", "resize")


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    """Re-compress as JPEG (Pillow, in memory, 4:2:0) and decode again."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


_GAMMA_LUTS: dict[float, np.ndarray] = {}


def gamma(pixels: np.ndarray, g: float) -> np.ndarray:
    """Gamma correction out = 255 * (in/255) ** g through a 256-entry lookup table."""
    key = round(float(g), 4)
    lut = _GAMMA_LUTS.get(key)
    if lut is None:
        lut = np.clip(np.round(255.0 * (np.arange(256) / 255.0) ** key), 0, 255).astype(np.uint8)
        if len(_GAMMA_LUTS) < 4096:
            _GAMMA_LUTS[key] = lut
    return lut[pixels]


def resize(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Bicubic resize by `factor` (at least 1x1 pixel)."""
    h, w = pixels.shape[:2]
    nh, nw = max(1, int(round(h * factor))), max(1, int(round(w * factor)))
    img = Image.fromarray(np.ascontiguousarray(pixels)).resize((nw, nh), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


@dataclass(frozen=True)
class Manipulation:
    """One fixed manipulation: kind in {jpeg, gamma, resize} and its parameter."""

    kind: str
    value: float

    @property
    def name(self) -> str:
        """Short stable name, e.g. 'jpeg:70'."""
        v = int(self.value) if self.kind == "jpeg" else self.value
        return f"{self.kind}:{v:g}"

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Apply to HxWx3 uint8 pixels."""
        if self.kind == "jpeg":
            return jpeg(pixels, int(self.value))
        if self.kind == "gamma":
            return gamma(pixels, self.value)
        return resize(pixels, self.value)


def parse_manipulation(spec: str) -> Manipulation:
    """Parse 'jpeg:70', 'gamma:1.2' or 'resize:0.5' (UsageError if malformed)."""
    kind, _, value = spec.strip().lower().partition(":")
    if kind not in MANIPULATION_KINDS or not value:
        raise UsageError(
            f"bad manipulation {spec!r}: use jpeg:Q (1-100), gamma:G (e.g. 1.2) or resize:F"
        )
    try:
        v = float(value)
    except ValueError:
        raise UsageError(f"bad manipulation value in {spec!r}") from None
    if kind == "jpeg" and not 1 <= v <= 100:
        raise UsageError(f"JPEG quality must be 1-100 in {spec!r}")
    if kind in ("gamma", "resize") and not 0.05 <= v <= 8:
        raise UsageError(f"{kind} value must be between 0.05 and 8 in {spec!r}")
    return Manipulation(kind, v)


def parse_manipulations(spec: str | None) -> list[Manipulation]:
    """A comma-separated list of manipulations; '', 'none' or None gives []."""
    if not spec or spec.strip().lower() == "none":
        return []
    return [parse_manipulation(s) for s in spec.split(",") if s.strip()]


def random_manipulation(rng: np.random.Generator) -> Manipulation:
    """Draw one manipulation of the recipe: JPEG 70-90, gamma 0.8-1.2 or resize x0.5-2.0."""
    kind = MANIPULATION_KINDS[int(rng.integers(len(MANIPULATION_KINDS)))]
    if kind == "jpeg":
        return Manipulation(
            "jpeg", float(rng.integers(JPEG_QUALITY_RANGE[0], JPEG_QUALITY_RANGE[1] + 1))
        )
    if kind == "gamma":
        return Manipulation("gamma", float(rng.uniform(*GAMMA_RANGE)))
    return Manipulation("resize", float(RESIZE_FACTORS[int(rng.integers(len(RESIZE_FACTORS)))]))


def d4(pixels: np.ndarray, k: int) -> np.ndarray:
    """Element k (0-7) of the dihedral group D4: k%4 quarter turns, then a flip if k>=4."""
    out = np.rot90(pixels, k % 4, axes=(0, 1))
    if k >= 4:
        out = out[:, ::-1]
    return out


def d4_tensor(x, k: int):
    """D4 element k on a (N, C, H, W) tensor, matching `d4` on HxWxC arrays."""
    import torch

    out = torch.rot90(x, k % 4, dims=(2, 3))
    if k >= 4:
        out = torch.flip(out, dims=(3,))
    return out
