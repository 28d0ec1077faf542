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

import math

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
