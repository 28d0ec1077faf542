"""Image manipulations of the seed-002 recipe (JPEG, gamma, resize), the D4 group and the
pixel probes of seed 000 (binary masks, colour jitter, greyscale).

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
TEST_KINDS = (*MANIPULATION_KINDS, "crop")
"""Kinds a fixed test condition may name: "crop:N" cuts N pixels off the top and the left
(N not a multiple of 8: the photo's JPEG grid no longer starts at the first pixel)."""
AUGMENT_RECIPES = ("seed002", "robust")
"""Training manipulations: "seed002" draws one of JPEG 70-90, gamma 0.8-1.2, resize
x0.5/0.8/1.5/2.0; "robust" draws chains as photos meet them after the camera (see
`random_chain`)."""
ROBUST_JPEG_RANGE = (60, 95)
ROBUST_RESIZE_RANGE = (0.5, 1.6)


def jpeg_bytes(pixels: np.ndarray, quality: int) -> bytes:
    """The JPEG file (Pillow, 4:2:0) that `jpeg` decodes: for analyses that read its tables."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """HxWx3 uint8 pixels of in-memory JPEG bytes."""
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    """Re-compress as JPEG (Pillow, in memory, 4:2:0) and decode again."""
    return decode_jpeg(jpeg_bytes(pixels, quality))


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
        if self.kind == "crop":
            n = int(self.value)
            return np.ascontiguousarray(pixels[n:, n:])
        return resize(pixels, self.value)


def parse_manipulation(spec: str) -> Manipulation:
    """Parse 'jpeg:70', 'gamma:1.2', 'resize:0.5' or 'crop:3' (UsageError if malformed)."""
    kind, _, value = spec.strip().lower().partition(":")
    if kind not in TEST_KINDS or not value:
        raise UsageError(
            f"bad manipulation {spec!r}: use jpeg:Q (1-100), gamma:G (e.g. 1.2), resize:F "
            "or crop:N (pixels off the top and left)"
        )
    try:
        v = float(value)
    except ValueError:
        raise UsageError(f"bad manipulation value in {spec!r}") from None
    if kind == "jpeg" and not 1 <= v <= 100:
        raise UsageError(f"JPEG quality must be 1-100 in {spec!r}")
    if kind == "crop" and not (v == int(v) and 1 <= v <= 64):
        raise UsageError(f"crop must be a whole number of pixels 1-64 in {spec!r}")
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


def random_chain(rng: np.random.Generator) -> list[Manipulation]:
    """One chain of the "robust" recipe, as photos meet them after the camera:

    * 30 %: a JPEG re-save at quality 60-95;
    * 15 %: two re-saves (double compression: an editor, then a messenger);
    * 30 %: a resize by a continuous factor in 0.5-1.6, then (two times in three) a
      re-save at 60-95 (the usual upload path);
    * 15 %: a resize alone; 10 %: gamma 0.8-1.2.
    """

    def q() -> Manipulation:
        lo, hi = ROBUST_JPEG_RANGE
        return Manipulation("jpeg", float(rng.integers(lo, hi + 1)))

    def f() -> Manipulation:
        return Manipulation("resize", round(float(rng.uniform(*ROBUST_RESIZE_RANGE)), 3))

    u = float(rng.random())
    if u < 0.30:
        return [q()]
    if u < 0.45:
        return [q(), q()]
    if u < 0.75:
        return [f(), q()] if rng.random() < 2 / 3 else [f()]
    if u < 0.90:
        return [f()]
    return [Manipulation("gamma", float(rng.uniform(*GAMMA_RANGE)))]


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


# -- pixel probes (seed 000, Tables III-IV) ---------------------------------------------------
# A probe removes one kind of visual information from every training crop *and* every view a
# model is tested on, so the accuracy that survives says whether the camera is still visible
# without it. Each takes HxWx3 uint8 pixels and a generator (for the random ones).

BINARY_WINDOW = 15
"""Side of the local window whose mean a pixel is compared with (local-mean threshold)."""
JITTER_BRIGHTNESS = 0.5
JITTER_CONTRAST = 0.5
JITTER_SATURATION = 0.5
JITTER_HUE = 0.1
"""Colour-jitter ranges: factors uniform in [1-v, 1+v]; the hue turns by up to 0.1 of a
full circle either way (torchvision's ColorJitter conventions, strong settings)."""
_LUMA = np.array([0.299, 0.587, 0.114])


def greyscale(pixels: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Rounded luma (ITU-R BT.601 weights) copied to all three channels."""
    grey = np.clip(np.rint(pixels.astype(np.float64) @ _LUMA), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def binarise(
    pixels: np.ndarray,
    rng: np.random.Generator | None = None,
    window: int = BINARY_WINDOW,
) -> np.ndarray:
    """Local-mean thresholding (seed 000, Fig. 6): 255 where the grey value exceeds the mean
    of its `window` x `window` neighbourhood (mirrored at the borders), else 0, on all three
    channels. Colour and texture are gone; the shapes of dark/bright structures stay.

    Exact in integers: a pixel is set when value x window**2 > the window's sum.
    """
    if window < 1 or window % 2 == 0:
        raise UsageError(f"the binarisation window must be an odd number of pixels, got {window}")
    grey = greyscale(pixels)[..., 0].astype(np.int64)
    r = window // 2
    padded = np.pad(grey, r, mode="symmetric")
    integral = np.zeros((padded.shape[0] + 1, padded.shape[1] + 1), dtype=np.int64)
    integral[1:, 1:] = padded.cumsum(axis=0).cumsum(axis=1)
    h, w = grey.shape
    sums = (
        integral[window : window + h, window : window + w]
        - integral[:h, window : window + w]
        - integral[window : window + h, :w]
        + integral[:h, :w]
    )
    out = np.where(grey * window * window > sums, 255, 0).astype(np.uint8)
    return np.repeat(out[..., None], 3, axis=2)


def colour_jitter(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast, saturation and hue (seed 000, Fig. 7 / Table IV), in that
    order, each drawn from `rng`; removes global colour statistics (white balance, colour
    correction, tone) as a cue while keeping texture."""
    x = pixels.astype(np.float64)
    b = rng.uniform(1 - JITTER_BRIGHTNESS, 1 + JITTER_BRIGHTNESS)
    c = rng.uniform(1 - JITTER_CONTRAST, 1 + JITTER_CONTRAST)
    s = rng.uniform(1 - JITTER_SATURATION, 1 + JITTER_SATURATION)
    theta = 2 * np.pi * rng.uniform(-JITTER_HUE, JITTER_HUE)
    x = np.clip(x * b, 0, 255)
    x = np.clip((x - (x @ _LUMA).mean()) * c + (x @ _LUMA).mean(), 0, 255)
    grey = (x @ _LUMA)[..., None]
    x = np.clip(grey + (x - grey) * s, 0, 255)
    # hue: rotate the chroma plane of YIQ by theta (luma unchanged)
    to_yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    cos, sin = np.cos(theta), np.sin(theta)
    turn = np.array([[1, 0, 0], [0, cos, -sin], [0, sin, cos]])
    m = np.linalg.inv(to_yiq) @ turn @ to_yiq
    x = x @ m.T
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


PIXEL_PROBES = {"binary": binarise, "colour": colour_jitter, "grey": greyscale}
"""Pixel probes by name: fn(pixels, rng) -> pixels (HxWx3 uint8 in and out)."""


def check_pixel_probe(name: str | None) -> str | None:
    """The probe name itself (None: no probe); UsageError when it is not a pixel probe."""
    if name is None or name in PIXEL_PROBES:
        return name
    raise UsageError(f"unknown pixel probe {name!r}; choose one of: {', '.join(PIXEL_PROBES)}")


def apply_pixel_probe(
    name: str | None, pixels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """`pixels` with pixel probe `name` applied (unchanged when name is None)."""
    if name is None:
        return pixels
    return PIXEL_PROBES[check_pixel_probe(name)](pixels, rng)  # type: ignore[index]
