"""Fixed forensic front ends for the patch networks.

`JpegLattice` measures how strongly the 8x8 block-DCT coefficients of the luma channel sit on
the lattices of candidate quantisation steps. A JPEG from a camera carries its encoder's
quantisation table in exactly this form: decoded pixels re-transformed on the same 8x8 grid
give coefficients clustered on multiples of each frequency's step (Fan & de Queiroz; Farid's
"JPEG ghosts" and q-table ballistics rely on the same fact). The statistics are computed from
pixels, so they describe the last compression the image went through: re-saving replaces
them, which is why camid's training manipulations (JPEG 70-90, gamma, resize) keep the
pixel-trace branch of `TraceNet` honest.

Views must start on the JPEG grid (camid's crops and view grids are aligned to 8 pixels and
EXIF orientation is never applied, so stored pixels keep the encoder's grid).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

BLOCK = 8
LUMA = (0.299, 0.587, 0.114)
"""JPEG's (JFIF) RGB -> Y weights."""
DEFAULT_STEPS: tuple[int, ...] = tuple(range(2, 25))
"""Candidate quantisation steps: 2..24 covers the tables of qualities ~70-99 at the
frequencies that carry most energy; coarser steps alias onto these (a lattice of step 2q
also shows at q)."""


def dct_basis(n: int = BLOCK) -> torch.Tensor:
    """(n*n, 1, n, n) orthonormal 2-D DCT-II basis as convolution kernels (row-major u, v)."""
    k = torch.arange(n, dtype=torch.float64)
    c = torch.cos(math.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))  # [freq, pos]
    c[0] *= math.sqrt(1.0 / n)
    c[1:] *= math.sqrt(2.0 / n)
    basis = torch.einsum("ui,vj->uvij", c, c).reshape(n * n, 1, n, n)
    return basis.float()


class JpegLattice(nn.Module):
    """Per-frequency quantisation-lattice strength of the luma block DCT.

    Input: normalised RGB as the patch networks receive it, with (mean, std) of the
    normalisation given here so pixels can be recovered on the 0-255 scale. Output
    (N, 63 * len(steps)): for every AC frequency f and step q, the mean over blocks of
    cos(2 pi c_f / q). A coefficient quantised with step q (or a multiple of it) scores
    1; unquantised coefficients average to ~0.
    """

    def __init__(
        self,
        steps: tuple[int, ...] = DEFAULT_STEPS,
        mean: float = 0.5,
        std: float = 0.5,
    ) -> None:
        super().__init__()
        self.register_buffer("basis", dct_basis()[1:])  # the DC term carries no table step
        self.register_buffer(
            "inv_steps", (2.0 * math.pi / torch.tensor(steps, dtype=torch.float32)).view(1, -1, 1)
        )
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1) * (255.0 * std))
        self.offset = 255.0 * mean
        self.n_features = (BLOCK * BLOCK - 1) * len(steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, 63 * steps) lattice statistics (float32).

        The block DCT runs in float64 with autocast off: a coefficient of a few hundred
        must stay accurate to a few hundredths for the small steps, which fp16 (CUDA mixed
        precision) and TF32 convolutions would not guarantee.
        """
        with torch.autocast(x.device.type, enabled=False):
            h, w = x.shape[-2:]
            hb, wb = h // BLOCK, w // BLOCK
            x = x[..., : hb * BLOCK, : wb * BLOCK].double()
            y = (x * self.luma.double()).sum(1) + self.offset  # (N, H, W) luma on 0..255
            n = y.shape[0]
            blocks = y.reshape(n, hb, BLOCK, wb, BLOCK).permute(0, 1, 3, 2, 4)
            blocks = blocks.reshape(n, hb * wb, BLOCK * BLOCK)
            basis = self.basis.reshape(-1, BLOCK * BLOCK).double()  # (63, 64)
            coef = (blocks @ basis.T).float().transpose(1, 2)  # (N, 63, B)
            f, b = coef.shape[1:]
            phase = coef.reshape(n, 1, f * b) * self.inv_steps.float()  # (N, S, 63*B)
            return torch.cos(phase).reshape(n, -1, f, b).mean(-1).flatten(1)


GRID_STEPS = tuple(range(2, 13))
GRID_FREQS = (1, 2, 8, 9, 10, 16)  # low AC frequencies (row-major u*8+v): the most energy
GRID_STRONG = 0.5
"""Mean lattice strength above which a grid is taken as found (1 = perfectly quantised)."""
GRID_MIN = 0.2
"""Below this at every offset the photo shows no JPEG lattice: the grid stays at (0, 0)."""
GRID_MARGIN = 0.1
"""How far one offset's lattice must stand above another's to be preferred."""
GRID_PROBES = ((4, 4), (2, 6), (6, 3))
"""Misaligned offsets compared with (0, 0) before any search."""


@functools.cache
def _grid_basis() -> np.ndarray:
    """(len(GRID_FREQS), 64) float64 DCT basis rows used by `lattice_strength`."""
    return dct_basis().reshape(64, 64).double().numpy()[list(GRID_FREQS)]


def lattice_strength(luma: np.ndarray) -> float:
    """How clearly the 8x8 block DCT of `luma` (grid at (0, 0)) sits on a quantisation
    lattice: the mean over a few low frequencies of the best step's mean cos(2 pi c / q)."""
    h, w = luma.shape[0] // 8 * 8, luma.shape[1] // 8 * 8
    if h == 0 or w == 0:
        return 0.0
    blocks = luma[:h, :w].reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3).reshape(-1, 64)
    coef = blocks.astype(np.float64) @ _grid_basis().T  # (blocks, freqs)
    steps = np.asarray(GRID_STEPS, dtype=np.float64)
    score = np.cos(2 * np.pi * coef[:, :, None] / steps).mean(axis=0)  # (freqs, steps)
    return float(score.max(axis=1).mean())


def detect_jpeg_grid(pixels: np.ndarray, side: int = 256) -> tuple[int, int]:
    """(dy, dx): where the 8x8 JPEG block grid starts in an image (0..7 each).

    A camera original starts its grid at (0, 0); a photo cropped by an editor may not, and
    then its views would miss the quantisation lattice. The lattice strength of a central
    `side` x `side` crop is measured at (0, 0) and at three misaligned probes first (enough
    for camera originals, whose lattice stands out at (0, 0)); only when it does not are all
    64 offsets tried, and the grid moves only to an offset whose lattice is clearly present.
    """
    h, w = pixels.shape[:2]
    y0, x0 = max(0, (h - side - 8) // 2) // 8 * 8, max(0, (w - side - 8) // 2) // 8 * 8
    px = pixels[y0 : y0 + side + 8, x0 : x0 + side + 8].astype(np.float64)
    luma = px @ np.asarray(LUMA) if px.ndim == 3 else px
    n = min(side, luma.shape[0] - 7, luma.shape[1] - 7) // 8 * 8
    if n < 16:
        return 0, 0
    base = lattice_strength(luma[:n, :n])
    probes = [lattice_strength(luma[dy : dy + n, dx : dx + n]) for dy, dx in GRID_PROBES]
    if base >= GRID_STRONG or base > max(probes) + GRID_MARGIN:
        return 0, 0  # the stored grid holds the lattice (camera originals)
    best, where = base, (0, 0)
    for dy in range(8):
        for dx in range(8):
            if dy or dx:
                s = lattice_strength(luma[dy : dy + n, dx : dx + n])
                if s > best:
                    best, where = s, (dy, dx)
    return where if best >= GRID_MIN and best > base + GRID_MARGIN else (0, 0)
