"""Which camera model took a photo: CNN evidence, an open-set decision and an EXIF cross-check.

`Identifier` loads each file once (bytes -> pixels + EXIF), cuts the model's views (a patch
grid for patch networks, 5 crops x D4 for big networks), runs them through the network in
batches shared across images (decoding on threads overlaps compute), aggregates calibrated
view probabilities, decides "unknown camera" when the evidence is weak, and compares the
result with what the EXIF Make/Model claims.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import exifread
import numpy as np
import torch
from torch import nn

from camid import __version__
from camid.data.augment import Manipulation
from camid.engine.data import ViewSpec, extract_views, prefetch_map
from camid.engine.predict import Aggregate, OpenSetRule, Predictor, aggregate, decision_logits
from camid.errors import InputError, UsageError
from camid.io.exif import camera_name, clean_text
from camid.io.image import load_image, read_file_bytes
from camid.models.store import ModelCard
from camid.models.traces import detect_jpeg_grid

UNKNOWN = "unknown"
EXIF_STATUSES = ("consistent", "mismatch", "no-exif", "unknown-camera", "inconclusive")
"""consistent: EXIF names the predicted class. mismatch: the network confidently names
another class than the EXIF camera, which is one of its classes. no-exif: no Make/Model.
unknown-camera: the EXIF camera is not among the model's classes (the model cannot confirm
or refute it). inconclusive: the EXIF camera is a model class but the network said
"unknown" (evidence too weak to judge)."""


def exif_camera(raw: bytes) -> str | None:
    """'Make Model' from a file's EXIF bytes (None when absent or unreadable).

    Reads only up to the Model tag, so it is cheap enough to run on every photo.
    """
    try:
        tags = exifread.process_file(io.BytesIO(raw), details=False, stop_tag="Model")
    except Exception:  # malformed metadata is "no EXIF", never an error
        return None
    return camera_name(clean_text(tags.get("Image Make")), clean_text(tags.get("Image Model")))


def camera_key(name: str | None) -> str:
    """Normalised camera name for matching: case-folded, only letters and digits."""
    return re.sub(r"[^0-9a-z]+", "", (name or "").casefold())


def match_class(camera: str | None, classes: Sequence[str]) -> str | None:
    """The model class naming the same camera as `camera` (robust to case, spaces, '-', '_').

    Exact normalised equality wins; otherwise one name may end with the other (a class
    'EOS 5D' matches EXIF 'Canon EOS 5D') when the shorter key has at least 3 characters.
    """
    key = camera_key(camera)
    if not key:
        return None
    keys = {c: camera_key(c) for c in classes}
    for c, k in keys.items():
        if k == key:
            return c
    hits = [
        c
        for c, k in keys.items()
        if min(len(k), len(key)) >= 3 and (k.endswith(key) or key.endswith(k))
    ]
    return hits[0] if len(hits) == 1 else None


def exif_cross_check(
    exif_camera: str | None, predicted: str | None, classes: Sequence[str]
) -> tuple[str, str]:
    """(status, note) comparing the EXIF camera with the prediction (None = unknown)."""
    if not exif_camera:
        return "no-exif", "no EXIF Make/Model in the file"
    cls = match_class(exif_camera, classes)
    if cls is None:
        return "unknown-camera", f"EXIF camera {exif_camera!r} is not one of the model's classes"
    if predicted is None:
        return "inconclusive", (
            f"EXIF says {cls!r} (a model class) but the image evidence is too weak to decide"
        )
    if predicted == cls:
        return "consistent", f"EXIF and image content agree on {cls!r}"
    return "mismatch", f"EXIF says {cls!r} but the image content points to {predicted!r}"


@dataclass
class Identification:
    """The result for one photo; `to_record` gives the stable output fields."""

    path: str
    sha256: str
    model: str
    model_sha256: str
    camera: str
    decision: str
    probability: float
    agreement: float
    n_views: int
    reason: str
    top: list[dict]
    exif_camera: str | None
    exif_check: str
    exif_note: str
    width: int
    height: int
    camid_version: str = __version__
    prnu: dict | None = None
    evidence: dict | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict:
        """Flat JSON-ready dict (documented in docs/identify.md)."""
        rec = {
            "path": self.path,
            "sha256": self.sha256,
            "camera": self.camera,
            "decision": self.decision,
            "probability": round(self.probability, 6),
            "agreement": round(self.agreement, 6),
            "n_views": self.n_views,
            "reason": self.reason,
            "top": self.top,
            "exif_camera": self.exif_camera,
            "exif_check": self.exif_check,
            "exif_note": self.exif_note,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "camid_version": self.camid_version,
        }
        if self.evidence is not None:
            rec["evidence"] = self.evidence
        if self.prnu is not None:
            rec["prnu"] = self.prnu
        rec.update(self.extra)
        return rec


@dataclass
class _Loaded:
    path: Path
    sha256: str
    width: int
    height: int
    exif_camera: str | None
    pixels: np.ndarray | None
    grid: tuple[int, int] | None = None


class Identifier:
    """A trained model ready to identify photos (see module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        card: ModelCard,
        device: torch.device,
        *,
        views: ViewSpec,
        rule: OpenSetRule,
        top_k: int = 3,
        batch_size: int = 128,
        workers: int = 2,
        aggregation: str | None = None,
        temperature: float | None = None,
        keep_pixels: bool = False,
        find_grid: bool = False,
    ) -> None:
        self.card = card
        self.predictor = Predictor(model, card, device, batch_size=batch_size)
        self.views = views
        self.rule = rule
        self.top_k = max(1, top_k)
        self.workers = workers
        self.aggregation = aggregation or card.calibration.get("aggregation", "mean")
        self.temperature = float(
            temperature if temperature is not None else card.calibration.get("temperature", 1.0)
        )
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise UsageError(f"the temperature must be a finite number > 0, got {self.temperature}")
        self.keep_pixels = keep_pixels
        self.find_grid = find_grid
        self.head_calibration = {
            str(h["name"]): h
            for h in card.calibration.get("heads", [])
            if isinstance(h, dict) and "name" in h
        }

    def _load(self, path: Path, manipulation: Manipulation | None = None):
        raw = read_file_bytes(path)
        img = load_image(path, data=raw)
        exif_cam = exif_camera(raw)
        px = img.pixels if manipulation is None else manipulation.apply(img.pixels)
        grid = None
        if self.find_grid:  # views start on the photo's own JPEG grid (cropped photos)
            grid = detect_jpeg_grid(px)
            px = px[grid[0] :, grid[1] :]
        views = extract_views(px, self.views)
        meta = _Loaded(
            path,
            img.sha256,
            img.width,
            img.height,
            exif_cam,
            img.pixels if self.keep_pixels else None,
            grid,
        )
        return meta, views

    def logits_stream(
        self, paths: Iterable[Path], manipulation: Manipulation | None = None
    ) -> Iterator[tuple[int, Path, _Loaded | None, np.ndarray | Exception]]:
        """(index, path, loaded facts, per-view logits) per input, in order; errors as values."""
        paths = list(paths)
        loaded = prefetch_map(
            lambda p: self._load(p, manipulation),
            paths,
            workers=self.workers,
            lookahead=max(4, 2 * self.workers),
        )
        metas: dict[int, _Loaded] = {}

        def feed() -> Iterator[tuple[int, np.ndarray | Exception]]:
            for i, res in enumerate(loaded):
                if isinstance(res, Exception):
                    yield i, res
                else:
                    metas[i] = res[0]
                    yield i, res[1]

        for i, out in self.predictor.stream(feed()):
            yield int(i), paths[int(i)], metas.pop(int(i), None), out

    def decide(self, logits: np.ndarray) -> tuple[Aggregate, bool, str]:
        """Aggregate view logits and apply the open-set rule."""
        agg = aggregate(decision_logits(logits), self.temperature, self.aggregation)
        if logits.ndim == 3 and self.predictor.heads:
            heads = {}
            for k, name in enumerate(self.predictor.heads[1:], start=1):
                t = float(self.head_calibration.get(name, {}).get("temperature", 1.0))
                heads[name] = aggregate(logits[:, k], t, self.aggregation).probs
            agg = dataclasses.replace(agg, heads=heads)
        known, reason = self.rule.decide(agg, list(self.card.classes))
        return agg, known, reason

    def identify(
        self,
        paths: Iterable[Path],
        extra: Callable[[_Loaded, Aggregate], dict | None] | None = None,
    ) -> Iterator[Identification | InputError]:
        """Identify each photo; unreadable files come out as InputError values."""
        classes = list(self.card.classes)
        for _i, path, meta, out in self.logits_stream(paths):
            if isinstance(out, InputError):
                yield out
                continue
            if isinstance(out, Exception):
                yield InputError(path, f"cannot process image: {type(out).__name__}: {out}")
                continue
            assert meta is not None
            agg, known, reason = self.decide(out)
            order = np.argsort(-agg.probs)[: self.top_k]
            top = [
                {
                    "camera": classes[i],
                    "probability": round(float(agg.probs[i]), 6),
                    "votes": round(float(agg.votes[i]), 6),
                }
                for i in order
            ]
            predicted = classes[agg.top] if known else None
            status, note = exif_cross_check(meta.exif_camera, predicted, classes)
            prnu = extra(meta, agg) if extra else None
            evidence = None
            if agg.heads:
                evidence = {
                    name: {
                        "camera": classes[int(np.argmax(p))],
                        "probability": round(float(np.max(p)), 6),
                        "support": round(float(p[agg.top]), 6),
                    }
                    for name, p in agg.heads.items()
                }
            yield Identification(
                path=str(path),
                sha256=meta.sha256,
                model=self.card.name,
                model_sha256=self.card.weights_sha256,
                camera=predicted if predicted is not None else UNKNOWN,
                decision="known" if known else "unknown",
                probability=float(agg.probs[agg.top]),
                agreement=agg.agreement,
                n_views=agg.n_views,
                reason=reason,
                top=top,
                exif_camera=meta.exif_camera,
                exif_check=status,
                exif_note=note,
                width=meta.width,
                height=meta.height,
                prnu=prnu,
                evidence=evidence,
                extra={"jpeg_grid": list(meta.grid)} if meta.grid is not None else {},
            )
