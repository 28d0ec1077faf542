"""Which camera model took a photo: CNN evidence, an open-set decision and an EXIF cross-check.

`Identifier` loads each file once (bytes -> pixels + EXIF), cuts the model's views (a patch
grid for patch networks, 5 crops x D4 for big networks), runs them through the network in
batches shared across images (decoding on threads overlaps compute), aggregates calibrated
view probabilities, decides "unknown camera" when the evidence is weak, and compares the
result with what the EXIF Make/Model claims.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from camid import __version__
from camid.data.augment import Manipulation, decode_jpeg, jpeg_bytes
from camid.engine.data import ViewSpec, extract_views, prefetch_map
from camid.engine.predict import (
    Aggregate,
    OpenSetRule,
    Predictor,
    aggregate,
    decision_logits,
    default_view_spec,
)
from camid.errors import InputError, UsageError
from camid.identify.evidence import (
    Evidence,
    EvidenceProvider,
    Photo,
    exif_evidence,
    fuse,
)
from camid.identify.exif_check import exif_cross_check, match_class
from camid.identify.history import History, analyse_history
from camid.identify.policy import (
    Alteration,
    PixelRule,
    alteration_from_manipulation,
    alteration_of,
)
from camid.io.exif import quick_camera
from camid.io.formats import is_raw
from camid.io.image import load_image, read_file_bytes
from camid.models.store import ModelCard
from camid.models.traces import detect_jpeg_grid

UNKNOWN = "unknown"
COMPRESSION_HEADS = ("compression",)
"""Evidence heads that read JPEG-lattice traces: they say nothing about pixels that were
never JPEG-coded (HEIF/HEVC, PNG, a RAW developed by LibRaw)."""
MIN_SIDE = 32
"""Smallest side (pixels) of a photo camid identifies, or the model's view size when that
is smaller: below it a view would be mostly reflected padding (and fewer than 4x4 JPEG
blocks), so a result would describe the padding rather than the camera."""


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
    conversion: str | None = None
    format: str | None = None
    compression_traces: str = "jpeg lattice"
    evidence: list[Evidence] = field(default_factory=list)
    decided_by: str = "cnn"
    contradiction: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    history: History | None = None
    """What happened to the photo after the camera (None: not analysed)."""

    @property
    def prnu(self) -> dict | None:
        """The PRNU match details when fingerprints were given."""
        ev = next((e for e in self.evidence if e.kind == "prnu"), None)
        return dict(ev.detail) if ev is not None else None

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
            "decided_by": self.decided_by,
            "contradiction": self.contradiction,
            "top": self.top,
            "exif_camera": self.exif_camera,
            "exif_check": self.exif_check,
            "exif_note": self.exif_note,
            "width": self.width,
            "height": self.height,
            "conversion": self.conversion,
            "format": self.format,
            "compression_traces": self.compression_traces,
            "model": self.model,
            "model_sha256": self.model_sha256,
            "camid_version": self.camid_version,
            "evidence": [e.to_record() for e in self.evidence],
        }
        if self.prnu is not None:
            rec["prnu"] = self.prnu
        if self.history is not None:
            rec["history"] = self.history.to_record()
            rec["history_summary"] = self.history.summary()
        rec.update(self.extra)
        return rec


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
        history: bool = True,
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
        self.history = history
        """Analyse each photo's history (re-saved, resampled, cropped) while loading it."""
        self.head_calibration = {
            str(h["name"]): h
            for h in card.calibration.get("heads", [])
            if isinstance(h, dict) and "name" in h
        }
        self.pixel_rule = PixelRule.from_card(card.calibration, self.predictor.heads)
        """How re-saved or resized photos are decided (camid.identify.policy)."""

    @classmethod
    def from_model(
        cls,
        ref: str | Path,
        *,
        device: str | torch.device = "auto",
        unknown_threshold: float | None = None,
        min_agreement: float | None = None,
        trace_check: bool = True,
        max_views: int | None = None,
        d4: bool | None = None,
        region: str | None = None,
        batch_size: int = 128,
        workers: int = 2,
        top_k: int = 3,
        find_grid: bool = False,
        home: Path | None = None,
    ) -> Identifier:
        """The one door: load a registry model (name or file) and build what `camid identify`
        uses — the card's calibrated open-set rule (threshold, view agreement, trace checks)
        and view spec, each overridable. The CLI and `camid evaluate` call exactly this.
        """
        from camid.device import resolve_device
        from camid.models.store import load_model

        if unknown_threshold is not None and not 0 <= unknown_threshold <= 1:
            raise UsageError("the unknown threshold must be between 0 and 1")
        if min_agreement is not None and not 0 <= min_agreement <= 1:
            raise UsageError("the minimum view agreement must be between 0 and 1")
        if batch_size < 1 or workers < 0 or top_k < 1:
            raise UsageError("batch size and top-k must be positive, workers at least 0")
        dev = device if isinstance(device, torch.device) else resolve_device(device)
        model, card = load_model(ref, dev, home=home)
        rule = OpenSetRule.from_card(card, unknown_threshold, min_agreement, trace_check)
        views = default_view_spec(card, max_views=max_views, d4=d4, region=region)
        return cls(
            model,
            card,
            dev,
            views=views,
            rule=rule,
            top_k=top_k,
            batch_size=batch_size,
            workers=workers,
            find_grid=find_grid,
        )

    @property
    def min_side(self) -> int:
        """Smallest image side this identifier accepts (see MIN_SIDE)."""
        return min(MIN_SIDE, self.views.size)

    def _load(self, path: Path, manipulation: Manipulation | None = None):
        raw = read_file_bytes(path)
        img = load_image(path, data=raw, min_side=self.min_side, purpose="camera identification")
        exif_cam = quick_camera(raw)
        data, codec = raw, img.codec  # what the analysed pixels were coded as
        if manipulation is None:
            px = img.pixels
        elif manipulation.kind == "jpeg":  # a real re-save: its own file and tables
            data = jpeg_bytes(img.pixels, int(manipulation.value))
            px, codec = decode_jpeg(data), "JPEG"
        else:  # resized / gamma-mapped pixels held in memory: no longer a JPEG's decode
            px, data, codec = manipulation.apply(img.pixels), None, None
        history = analyse_history(px, data, codec) if self.history else None
        kept = img.pixels if self.keep_pixels else None
        if kept is not None and is_raw(path, raw[:32]):  # PRNU reads the sensor's mosaic
            from camid.io.raw import load_raw_mosaic

            kept = load_raw_mosaic(path, raw).pixels
        grid = None
        if self.find_grid:  # views start on the photo's own JPEG grid (cropped photos)
            grid = detect_jpeg_grid(px)
            px = px[grid[0] :, grid[1] :]
        views = extract_views(px, self.views)
        meta = Photo(
            path,
            img.sha256,
            img.width,
            img.height,
            exif_cam,
            kept,
            grid,
            img.conversion,
            img.format,
            img.codec,
            history,
        )
        meta.alteration = alteration_from_manipulation(manipulation)
        return meta, views

    def logits_stream(
        self, paths: Iterable[Path], manipulation: Manipulation | None = None
    ) -> Iterator[tuple[int, Path, Photo | None, np.ndarray | Exception]]:
        """(index, path, loaded facts, per-view logits) per input, in order; errors as values."""
        paths = list(paths)
        loaded = prefetch_map(
            lambda p: self._load(p, manipulation),
            paths,
            workers=self.workers,
            lookahead=max(4, 2 * self.workers),
        )
        metas: dict[int, Photo] = {}

        def feed() -> Iterator[tuple[int, np.ndarray | Exception]]:
            for i, res in enumerate(loaded):
                if isinstance(res, Exception):
                    yield i, res
                else:
                    metas[i] = res[0]
                    yield i, res[1]

        for i, out in self.predictor.stream(feed()):
            yield int(i), paths[int(i)], metas.pop(int(i), None), out

    def decide(
        self,
        logits: np.ndarray,
        skip: Sequence[str] = (),
        alteration: Alteration | None = None,
    ) -> tuple[Aggregate, bool, str]:
        """Aggregate view logits and apply the open-set rule (heads in `skip` unchecked).

        A re-saved or resampled photo (`alteration`) is decided on the pixel-trace head
        alone with its own calibrated threshold (`camid.identify.policy.PixelRule`); the
        returned aggregate is then that head's.
        """
        if alteration is not None and alteration.altered:
            agg = self.pixel_rule.aggregate(logits, self.aggregation)
            agg = dataclasses.replace(agg, heads=self._head_probs(logits))
            known, reason = self.pixel_rule.decide(agg, list(self.card.classes), alteration)
            if known and self.rule.min_agreement and agg.agreement < self.rule.min_agreement:
                known, reason = False, (
                    f"{alteration.words()}: views disagree: only {agg.agreement:.0%} of "
                    f"{agg.n_views} views vote for {self.card.classes[agg.top]!r}"
                )
            return agg, known, reason
        agg = aggregate(decision_logits(logits), self.temperature, self.aggregation)
        if logits.ndim == 3 and self.predictor.heads:
            agg = dataclasses.replace(agg, heads=self._head_probs(logits))
        known, reason = self.rule.decide(agg, list(self.card.classes), skip)
        return agg, known, reason

    def _head_probs(self, logits: np.ndarray) -> dict[str, np.ndarray] | None:
        """Each auxiliary evidence head's calibrated probabilities (None: no heads)."""
        if logits.ndim != 3 or not self.predictor.heads:
            return None
        heads = {}
        for k, name in enumerate(self.predictor.heads[1:], start=1):
            t = float(self.head_calibration.get(name, {}).get("temperature", 1.0))
            heads[name] = aggregate(logits[:, k], t, self.aggregation).probs
        return heads

    def identify(
        self,
        paths: Iterable[Path],
        providers: Sequence[EvidenceProvider] = (),
        manipulation: Manipulation | None = None,
    ) -> Iterator[Identification | InputError]:
        """Identify each photo; unreadable files come out as InputError values.

        `providers` add evidence beside the network's (e.g. `PrnuProvider`); a decisive
        PRNU match naming a camera model decides the camera (see `fuse`). `manipulation`
        is applied to every photo first and told to the decision (a JPEG re-save or a
        resize is decided on pixel traces alone: camid.identify.policy), as
        `camid evaluate` does with its conditions.
        """
        classes = list(self.card.classes)
        if any(getattr(pv, "needs_pixels", False) for pv in providers):
            self.keep_pixels = True
        for _i, path, meta, out in self.logits_stream(paths, manipulation):
            if isinstance(out, InputError):
                yield out
                continue
            if isinstance(out, Exception):
                yield InputError(path, f"cannot process image: {type(out).__name__}: {out}")
                continue
            assert meta is not None
            try:
                yield self._identification(meta, out, classes, providers)
            except InputError as exc:
                yield exc

    def _identification(
        self,
        meta: Photo,
        logits: np.ndarray,
        classes: list[str],
        providers: Sequence[EvidenceProvider],
    ) -> Identification:
        traces = compression_traces(meta.format, meta.codec)
        alteration = photo_alteration(meta)
        altered = alteration is not None and alteration.altered
        if altered and meta.codec == "JPEG":
            traces = f"overwritten: {alteration.words()}"
        skip = COMPRESSION_HEADS if (meta.codec != "JPEG" or altered) else ()
        agg, known, reason = self.decide(logits, skip, alteration)
        if skip and not altered and any(h in self.rule.support for h in skip):
            reason += f"; compression-trace check skipped ({traces})"
        order = np.argsort(-agg.probs)[: self.top_k]
        top = [
            {
                "camera": classes[i],
                "probability": round(float(agg.probs[i]), 6),
                "votes": round(float(agg.votes[i]), 6),
            }
            for i in order
        ]
        p_top = float(agg.probs[agg.top])
        cnn = Evidence(
            "cnn",
            "cnn",
            classes[agg.top] if known else None,
            p_top if np.isfinite(p_top) else None,
            "probability",
            known,
            reason,
        )
        heads = self._head_evidence(agg, classes, skip, traces)
        if altered and not known:  # the pixel head decides altered photos: below its threshold
            heads = [dataclasses.replace(e, decisive=False) for e in heads]
        evidence = [cnn, *heads]
        others = [ev for pv in providers if (ev := pv.evidence(meta)) is not None]
        for ev in others:  # name a fingerprint's camera model as the network's class
            if ev.camera is not None:
                cls = match_class(ev.camera, classes)
                if cls is not None and cls != ev.camera:
                    ev = Evidence(**{**ev.__dict__, "camera": cls})
            evidence.append(ev)
        evidence.append(exif_evidence(meta.exif_camera))
        fused = fuse(cnn, evidence[1:])
        meta.pixels = None  # providers are done with the pixels: do not hold them
        status, note = exif_cross_check(meta.exif_camera, fused.camera, classes)
        return Identification(
            path=str(meta.path),
            sha256=meta.sha256,
            model=self.card.name,
            model_sha256=self.card.weights_sha256,
            camera=fused.camera if fused.camera is not None else UNKNOWN,
            decision="known" if fused.camera is not None else "unknown",
            probability=p_top,
            agreement=agg.agreement,
            n_views=agg.n_views,
            reason=fused.reason,
            top=top,
            exif_camera=meta.exif_camera,
            exif_check=status,
            exif_note=note,
            width=meta.width,
            height=meta.height,
            conversion=meta.conversion,
            format=meta.format,
            compression_traces=traces,
            evidence=evidence,
            decided_by=(
                f"cnn:{self.pixel_rule.head}"
                if altered and fused.decided_by == "cnn"
                else fused.decided_by
            ),
            contradiction=fused.contradiction,
            extra=self._extra(meta, alteration),
            history=meta.history,
        )

    def _extra(self, meta: Photo, alteration: Alteration | None) -> dict[str, Any]:
        """Record fields beyond the fixed ones: the JPEG grid found, what happened to the
        photo and which head decided."""
        extra: dict[str, Any] = {}
        if meta.grid is not None:
            extra["jpeg_grid"] = list(meta.grid)
        if alteration is not None:
            extra["alteration"] = alteration.to_record()
            heads = self.predictor.heads or ("network",)
            extra["decision_head"] = self.pixel_rule.head if alteration.altered else heads[0]
        return extra

    def _head_evidence(
        self,
        agg: Aggregate,
        classes: list[str],
        skip: Sequence[str] = (),
        traces: str = "jpeg lattice",
    ) -> list[Evidence]:
        """One Evidence per evidence head: where its traces point, and its support. A head
        in `skip` is reported, never decisive, with the reason its traces do not apply."""
        out = []
        for name, p in (agg.heads or {}).items():
            need = self.rule.support.get(name, 0.0)
            support = float(p[agg.top])
            best = int(np.argmax(p))
            if name in skip:
                out.append(
                    Evidence(
                        "head",
                        name,
                        None,
                        float(np.max(p)),
                        "probability",
                        False,
                        f"{name} traces not used: {traces}",
                        {"support": round(support, 6), "support_threshold": round(need, 6)},
                    )
                )
                continue
            out.append(
                Evidence(
                    "head",
                    name,
                    classes[best],
                    float(np.max(p)),
                    "probability",
                    bool(best == agg.top and support >= need),
                    f"{name} traces point to {classes[best]!r} ({float(np.max(p)):.2f}); "
                    f"support for {classes[agg.top]!r} {support:.3f} (needs {need:.3f})",
                    {"support": round(support, 6), "support_threshold": round(need, 6)},
                )
            )
        return out


def photo_alteration(meta: Photo) -> Alteration | None:
    """What happened to a photo: the manipulation the caller applied and told about
    (`meta.alteration`: it is known), else what the photo's history analysis found
    (`meta.history`: a re-save or a resampling), else None."""
    if meta.alteration is not None:
        return meta.alteration
    return alteration_of(meta.history)


def compression_traces(fmt: str | None, codec: str | None) -> str:
    """Whether a photo's pixels carry the JPEG-lattice traces the compression head reads."""
    if codec == "JPEG":
        return "jpeg lattice"
    if codec == "HEVC":
        return f"not applicable: {fmt or 'the file'} is HEVC-coded, not JPEG"
    return f"not applicable: {fmt or 'the image'} pixels were never JPEG-coded"
