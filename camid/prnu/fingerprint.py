"""Sensor fingerprint estimation: K = sum W_i T_i / sum T_i^2, accumulated as running sums.

T_i is the image intensity scaled to [0, 1], attenuated near 255 and zeroed on saturated
pixels, per colour channel (Chen, Fridrich, Goljan, Lukas 2008; Binghamton's code). Memory
does not grow with the number of images: only the two per-channel sums are kept.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from camid.prnu.residual import (
    ResidualParams,
    as_batch,
    channel_noise_bchw,
    to_grey,
    wiener_dft,
    zero_mean_cfa,
)

SATURATION_LEVEL = 250
"""A channel whose maximum exceeds this value may be clipped: its maximal pixels are masked."""
INTENSITY_KNEE = 252.0
INTENSITY_WIDTH = 6.0


def saturation_mask(pixels: torch.Tensor) -> torch.Tensor:
    """True where a pixel is usable: not (== channel max > 250 with an equal 4-neighbour).

    Works per image and per channel on (B, C, H, W) values; unlike the prnu-python
    reference, one channel's clipping never masks the other channels.
    """
    x = pixels
    equal_neighbour = (
        (x == torch.roll(x, 1, dims=-1))
        | (x == torch.roll(x, -1, dims=-1))
        | (x == torch.roll(x, 1, dims=-2))
        | (x == torch.roll(x, -1, dims=-2))
    )
    peak = x.amax(dim=(-2, -1), keepdim=True)
    saturated = equal_neighbour & (x == peak) & (peak > SATURATION_LEVEL)
    return ~saturated


def intensity_weight(pixels: torch.Tensor) -> torch.Tensor:
    """x / 252 below 252, exp(-(x - 252)^2 / 6) above (near-white pixels carry little PRNU)."""
    lin = pixels / INTENSITY_KNEE
    att = torch.exp(-((pixels - INTENSITY_KNEE) ** 2) / INTENSITY_WIDTH)
    return torch.where(pixels < INTENSITY_KNEE, lin, att)


def pixel_weights(pixels: torch.Tensor) -> torch.Tensor:
    """Intensity weight times the saturation mask, (B, C, H, W) float32."""
    return intensity_weight(pixels) * saturation_mask(pixels)


def finish_fingerprint(k_channels: torch.Tensor) -> torch.Tensor:
    """Grey, CFA zero-mean and DFT Wiener filtering of a (C, H, W) per-channel estimate."""
    return wiener_dft(zero_mean_cfa(to_grey(k_channels[None])))[0]


class FingerprintAccumulator:
    """Running sums of W*T and T^2 for one device; add images in any number of batches."""

    def __init__(
        self,
        params: ResidualParams | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.params = params or ResidualParams()
        self.params.validate()
        self.device = torch.device(device)
        self.num: torch.Tensor | None = None
        self.den: torch.Tensor | None = None
        self.count = 0
        self.images: list[dict[str, str]] = []

    @property
    def shape(self) -> tuple[int, int] | None:
        """(height, width) of the accumulated images, None before the first one."""
        return None if self.num is None else (int(self.num.shape[-2]), int(self.num.shape[-1]))

    def check_shape(self, shape: Sequence[int]) -> None:
        """Raise ValueError when an image of `shape` (H, W[, C]) cannot join the sums."""
        if self.num is None:
            return
        h, w = int(shape[0]), int(shape[1])
        c = int(shape[2]) if len(shape) > 2 else 1
        if (h, w) != self.shape:
            hint = " (rotated by 90 degrees?)" if (w, h) == self.shape else ""
            raise ValueError(
                f"size {w}x{h} differs from the fingerprint's {self.shape[1]}x{self.shape[0]}{hint}"
            )
        if c != self.num.shape[0]:
            raise ValueError(f"{c} colour channel(s), the fingerprint has {self.num.shape[0]}")

    def add(
        self,
        images: np.ndarray | torch.Tensor | Sequence[np.ndarray],
        names: Sequence[dict[str, str]] | None = None,
    ) -> None:
        """Add a batch of equal-size uint8 images (H,W[,3]), (B,H,W,3) or a list of arrays."""
        batch = as_batch(images)
        self.check_shape((batch.shape[-2], batch.shape[-1], batch.shape[1]))
        noise, pixels = channel_noise_bchw(batch, self.params, self.device)
        weights = pixel_weights(pixels)
        num = (noise * weights).sum(dim=0)
        den = (weights * weights).sum(dim=0)
        if self.num is None:
            self.num, self.den = num, den
        else:
            self.num += num
            self.den += den
        self.count += int(batch.shape[0])
        if names:
            self.images.extend(dict(n) for n in names)

    def estimate(self) -> torch.Tensor:
        """The fingerprint K (H, W) float32 from the images added so far."""
        if self.num is None or self.den is None or self.count == 0:
            raise ValueError("no images were added to the fingerprint")
        return finish_fingerprint(self.num / (self.den + 1.0))

    def finish(self, device_name: str, camera: str | None = None) -> Fingerprint:
        """Package the estimate with its metadata (not yet saved); `camera` is the device's
        camera model, which lets a PRNU match name the model in `camid identify`."""
        k = self.estimate().cpu().numpy().astype(np.float32)
        return Fingerprint(
            k=k,
            device_name=device_name,
            camera=camera,
            image_count=self.count,
            params=self.params,
            images=list(self.images),
        )


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _camid_version() -> str:
    from camid import __version__

    return __version__


@dataclass
class Fingerprint:
    """A sensor fingerprint K (grey, stored sensor orientation) and where it came from."""

    k: np.ndarray
    device_name: str
    image_count: int
    params: ResidualParams
    images: list[dict[str, str]] = field(default_factory=list)
    created: str = field(default_factory=_now)
    camid_version: str = field(default_factory=_camid_version)
    sha256: str | None = None
    path: Path | None = None
    camera: str | None = None
    """The camera model of the device (from its photos' EXIF or given by the user)."""

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return int(self.k.shape[0]), int(self.k.shape[1])

    @property
    def label(self) -> str:
        """Name used in reports: the device name, else the file name."""
        return self.device_name or (self.path.name if self.path else "fingerprint")

    def info(self) -> dict:
        """Metadata as stored in the file header (without the hash)."""
        info = {
            "device_name": self.device_name,
            "image_count": int(self.image_count),
            "height": self.shape[0],
            "width": self.shape[1],
            "params": self.params.to_dict(),
            "camid_version": self.camid_version,
            "created": self.created,
            "images": self.images,
        }
        if self.camera is not None:  # absent in files made before camera models were kept
            info["camera"] = self.camera
        return info


def build_fingerprint(
    images: Sequence[np.ndarray],
    device_name: str,
    params: ResidualParams | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    camera: str | None = None,
) -> Fingerprint:
    """Fingerprint of equal-size uint8 images (convenience over FingerprintAccumulator)."""
    acc = FingerprintAccumulator(params, device)
    for i in range(0, len(images), max(1, batch_size)):
        acc.add(list(images[i : i + batch_size]))
    return acc.finish(device_name, camera)
