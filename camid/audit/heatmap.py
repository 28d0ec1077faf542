"""Where is the camera evidence in a photo? CNN heatmaps per image and per dataset.

Per image: a window (default the model's view size) slides over the photo on the 8-px
JPEG grid; every view is classified with the shared Predictor (batches), and the grid of
calibrated probabilities gives three maps: the probability of the camera of interest, the
predicted camera, and (with the true camera) correctness.

Per dataset (seed 000 Fig. 8): the correctness of every view, accumulated over many photos
on a normalised cells x cells grid of the frame (a view counts in the cell holding its
centre), so photos of any size add up: is the evidence uniform over the frame, or at the
borders, the corners, a label?
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import softmax

from camid.engine.data import sliding_positions
from camid.engine.predict import Predictor, decision_logits
from camid.errors import InputError, UsageError
from camid.io.image import load_image
from camid.report.maps import GridGeometry

VIEW_CHUNK = 4096
"""Views cut and classified at once (bounds memory for small strides on large photos)."""


@dataclass
class CameraMap:
    """Per-window class probabilities of one photo on a sliding grid."""

    probs: np.ndarray  # (rows, cols, C) calibrated probabilities
    geometry: GridGeometry
    classes: list[str]

    @property
    def predicted(self) -> np.ndarray:
        """(rows, cols) index of the most probable camera per window."""
        return self.probs.argmax(axis=2)

    @property
    def image_probs(self) -> np.ndarray:
        """(C,) mean of the window probabilities (the photo's soft vote)."""
        return self.probs.reshape(-1, self.probs.shape[2]).mean(axis=0)

    def camera_index(self, camera: str | None) -> int:
        """Index of a camera class (None: the photo's most probable camera)."""
        if camera is None:
            return int(np.argmax(self.image_probs))
        if camera not in self.classes:
            raise UsageError(
                f"camera {camera!r} is not one of the model's classes: {', '.join(self.classes)}"
            )
        return self.classes.index(camera)

    def probability(self, camera: str | None = None) -> np.ndarray:
        """(rows, cols) probability of one camera (default the predicted one)."""
        return self.probs[:, :, self.camera_index(camera)]

    def correct(self, truth: str) -> np.ndarray:
        """(rows, cols) bool: the window's top camera is `truth`."""
        return self.predicted == self.camera_index(truth)


def camera_map(
    predictor: Predictor,
    pixels: np.ndarray,
    *,
    window: int | None = None,
    stride: int | None = None,
    temperature: float | None = None,
) -> CameraMap:
    """Classify every window of a sliding grid over `pixels` (H, W, 3 uint8).

    `window` defaults to the model's view size, `stride` to the window (non-overlapping);
    the stride must be a multiple of 8 px (the JPEG grid). Probabilities are
    softmax(logits / T) with the model's calibrated temperature unless given.
    """
    card = predictor.card
    size = int(window or card.input_size)
    step = int(stride or size)
    if size < 8:
        raise UsageError("the window must be at least 8 px")
    try:
        ys, xs = sliding_positions(pixels.shape[0], pixels.shape[1], size, step)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    t = float(temperature if temperature is not None else card.calibration.get("temperature", 1))
    pos = [(int(y), int(x)) for y in ys for x in xs]
    out = []
    for i in range(0, len(pos), VIEW_CHUNK):
        chunk = pos[i : i + VIEW_CHUNK]
        views = np.stack([_crop(pixels, y, x, size) for y, x in chunk])
        logits = decision_logits(predictor.forward(views))
        out.append(softmax(logits.astype(np.float64) / t, axis=1))
    probs = np.concatenate(out).reshape(len(ys), len(xs), -1).astype(np.float32)
    geo = GridGeometry(
        int(pixels.shape[0]), int(pixels.shape[1]), size, step, (int(ys[0]), int(xs[0]))
    )
    return CameraMap(probs, geo, list(card.classes))


def _crop(pixels: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    from camid.data.patches import crop

    return np.ascontiguousarray(crop(pixels, y, x, size))


@dataclass
class PositionAccuracy:
    """Patch accuracy by position over a dataset, on a normalised cells x cells grid."""

    correct: np.ndarray  # (cells, cells) correct views per cell
    total: np.ndarray  # (cells, cells) views per cell
    images: int
    window: int
    stride: int
    classes: list[str]
    per_camera: dict[str, dict]

    @property
    def accuracy(self) -> np.ndarray:
        """(cells, cells) share of correct views (NaN where no view fell)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.total > 0, self.correct / np.maximum(self.total, 1), np.nan)

    @property
    def overall(self) -> float:
        """Patch accuracy over all views."""
        return float(self.correct.sum() / max(1, self.total.sum()))

    def summary(self) -> dict:
        """Uniformity statistics of the accuracy grid (JSON-ready)."""
        acc = self.accuracy
        ok = acc[np.isfinite(acc)]
        cells = acc.shape[0]
        border = np.zeros_like(acc, dtype=bool)
        border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
        centre = ~border
        corners = np.zeros_like(border)
        corners[[0, 0, -1, -1], [0, -1, 0, -1]] = True

        def mean_of(sel: np.ndarray) -> float | None:
            v = acc[sel & np.isfinite(acc)]
            return float(v.mean()) if v.size else None

        return {
            "images": self.images,
            "views": int(self.total.sum()),
            "patch_accuracy": self.overall,
            "chance": 1.0 / max(1, len(self.classes)),
            "cells": cells,
            "min": float(ok.min()) if ok.size else None,
            "max": float(ok.max()) if ok.size else None,
            "mean": float(ok.mean()) if ok.size else None,
            "std": float(ok.std()) if ok.size else None,
            "border_mean": mean_of(border),
            "centre_mean": mean_of(centre),
            "corner_mean": mean_of(corners),
            "per_camera": self.per_camera,
        }


def position_accuracy(
    predictor: Predictor,
    items: Iterable[tuple[Path, str]],
    *,
    window: int | None = None,
    stride: int | None = None,
    cells: int = 8,
) -> Iterator[tuple[Path, InputError | CameraMap] | PositionAccuracy]:
    """Accumulate patch correctness by position over (path, true camera) items.

    Yields (path, CameraMap or InputError) per photo as it goes (unreadable files and
    cameras the model does not know are errors, the batch goes on), then the
    PositionAccuracy as the last item.
    """
    if cells < 1:
        raise UsageError("the grid needs at least 1 cell per side")
    classes = list(predictor.card.classes)
    correct = np.zeros((cells, cells))
    total = np.zeros((cells, cells))
    cams: dict[str, list[float]] = {}
    n_img = 0
    size = int(window or predictor.card.input_size)
    step = int(stride or size)
    for path, truth in items:
        if truth not in classes:
            yield path, InputError(path, f"camera {truth!r} is not one of the model's classes")
            continue
        try:
            px = load_image(path).pixels
        except InputError as exc:
            yield path, exc
            continue
        cmap = camera_map(predictor, px, window=size, stride=step)
        ok = cmap.correct(truth)
        geo = cmap.geometry
        rows, cols = ok.shape
        cy = geo.origin[0] + geo.window / 2 + geo.stride * np.arange(rows)
        cx = geo.origin[1] + geo.window / 2 + geo.stride * np.arange(cols)
        iy = np.clip((cy / geo.height * cells).astype(int), 0, cells - 1)
        ix = np.clip((cx / geo.width * cells).astype(int), 0, cells - 1)
        np.add.at(correct, (iy[:, None], ix[None, :]), ok.astype(float))
        np.add.at(total, (iy[:, None], ix[None, :]), 1.0)
        cams.setdefault(truth, []).append(float(ok.mean()))
        n_img += 1
        yield path, cmap
    per_camera = {
        c: {"images": len(v), "patch_accuracy": float(np.mean(v))} for c, v in sorted(cams.items())
    }
    yield PositionAccuracy(correct, total, n_img, size, step, classes, per_camera)
