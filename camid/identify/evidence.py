"""One shape for every kind of camera evidence, the providers that make it, and fusion.

Every kind of evidence about a photo's camera — the CNN's combined decision, each evidence
head of the network (pixel traces, compression traces), a PRNU match, the EXIF claim — is an
`Evidence`: what it points to, how strongly (on its own scale), whether that is decisive by
its own threshold, and why. identify, heatmap and bias-check all read this shape.

A *provider* turns a loaded photo into an `Evidence` (`PrnuProvider` here; the CNN evidence
comes from the Identifier's batched network pass). `fuse` combines them: device-level
evidence (a PRNU match with a known camera model) outranks model-level evidence (the CNN).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from camid.identify.history import History

KINDS = ("cnn", "head", "prnu", "exif")
"""cnn: the network's calibrated decision over all views. head: one evidence head of the
network (its `name` says which traces). prnu: the best PRNU fingerprint match. exif: what the
metadata claims (never decisive: it is editable)."""


@dataclass(frozen=True)
class Evidence:
    """What one kind of evidence says about a photo's camera model."""

    kind: str
    name: str
    camera: str | None
    strength: float | None
    scale: str
    decisive: bool
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """Flat JSON-ready fields (documented in docs/identify.md)."""
        rec: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "camera": self.camera,
            "strength": None if self.strength is None else round(float(self.strength), 6),
            "scale": self.scale,
            "decisive": self.decisive,
            "reason": self.reason,
        }
        rec.update(self.detail)
        return rec


@dataclass
class Photo:
    """What a provider may look at: the loaded file's facts (pixels when kept)."""

    path: Path
    sha256: str
    width: int
    height: int
    exif_camera: str | None
    pixels: np.ndarray | None
    grid: tuple[int, int] | None = None
    conversion: str | None = None
    format: str | None = None
    codec: str | None = None
    """The lossy coding the analysed pixels carry ("JPEG", "HEVC"; None: lossless/raw)."""
    history: History | None = None
    """What happened to the photo after the camera (re-saved, resampled, cropped off the
    JPEG grid), when the identifier analysed it (`camid.identify.history`)."""
    alteration: Any = None
    """A manipulation the caller applied and told about (camid.identify.policy.Alteration);
    it takes precedence over what the history analysis finds (it is known)."""


class EvidenceProvider(Protocol):
    """Anything that turns a photo into one Evidence (None: nothing to say)."""

    needs_pixels: bool

    def evidence(self, photo: Photo) -> Evidence | None:
        """The provider's evidence about `photo`."""
        ...


def exif_evidence(exif_camera: str | None) -> Evidence:
    """The metadata's claim as evidence (never decisive: EXIF is trivially edited)."""
    if not exif_camera:
        return Evidence("exif", "exif", None, None, "claim", False, "no EXIF Make/Model")
    return Evidence(
        "exif", "exif", exif_camera, None, "claim", False, f"EXIF claims {exif_camera!r}"
    )


def _resampled(photo: Photo) -> bool:
    """Whether the photo's history says it was resampled (resized)."""
    h = photo.history
    return bool(h is not None and h.resampled.detected)


class PrnuProvider:
    """Best PRNU match of a photo against a set of fingerprints, as Evidence.

    Decisive when the best PCE is above the threshold; it then points to the camera model
    recorded in that fingerprint (None when the fingerprint has none: the device is
    identified but the model is not named).
    """

    needs_pixels = True

    def __init__(self, fingerprints: Sequence[Any], device: Any = "cpu", **options: Any) -> None:
        """`options` go to FingerprintSet (rotations, search_shift, threshold, search_scale)."""
        from camid.prnu.match import FingerprintSet

        self.set = FingerprintSet(fingerprints, device, **options)

    def evidence(self, photo: Photo, search_scale: Any = None) -> Evidence | None:
        """Score the photo's pixels against every fingerprint; InputError if too small.

        `search_scale` (True, or resize factors; False: off) overrides the set's scale search
        for this photo. None keeps the set's, and turns the search on when the photo's
        history found resampling (the record's `scale_search` says so).
        """
        if photo.pixels is None:
            return None
        auto = search_scale is None and self.set.search_scale is None and _resampled(photo)
        if auto:  # the photo was resized: search the factors (threshold corrected for them)
            search_scale = True
        results = self.set.score(photo.pixels, photo.path, search_scale)
        fp, best = self.set.best(results)
        detail = {
            "best_fingerprint": best.fingerprint,
            "pce": round(best.pce, 3),
            "decision": "match" if best.decision else "no match",
            "outcome": best.outcome,
            "p_value": best.p_value,
            "rotation": best.rotation,
            "threshold": best.threshold,
            "n_fingerprints": len(results),
        }
        if best.scale is not None:  # a scale search ran: the factor and the tests it cost
            detail.update(
                scale=round(best.scale, 4),
                n_scales=best.n_scales,
                single_test_threshold=best.single_test_threshold,
                scale_search="on: resampling detected" if auto else "on",
            )
        if best.decision:
            model = f" of a {fp.camera}" if fp.camera else " (no camera model recorded)"
            reason = f"PRNU matches device {fp.label!r}{model}: PCE {best.pce:.1f} > "
            reason += f"{best.threshold:g}"
        elif best.outcome == "inconclusive":
            reason = (
                f"PRNU inconclusive: best PCE {best.pce:.1f} ({fp.label!r}) is above "
                f"{best.inconclusive_above:g} but not above the match threshold "
                f"{best.threshold:g}"
            )
        else:
            reason = (
                f"no PRNU match: best PCE {best.pce:.1f} ({fp.label!r}) <= "
                f"{min(best.inconclusive_above, best.threshold):g}"
            )
        return Evidence(
            "prnu",
            "prnu",
            fp.camera if best.decision else None,
            best.pce,
            "pce",
            bool(best.decision),
            reason,
            detail,
        )


@dataclass(frozen=True)
class Fused:
    """The decision after fusion, and who made it."""

    camera: str | None
    decided_by: str
    reason: str
    contradiction: str | None = None


def fuse(cnn: Evidence, others: Sequence[Evidence]) -> Fused:
    """Combine the CNN decision with the other evidence.

    A decisive PRNU match naming a camera model decides (device-level evidence outranks
    model-level): when the CNN named another camera the disagreement is reported as a
    contradiction; when the CNN said "unknown" the photo is identified with the reason
    saying so. Otherwise the CNN decides.
    """
    prnu = next((e for e in others if e.kind == "prnu" and e.decisive), None)
    if prnu is None or prnu.camera is None:
        note = ""
        if prnu is not None:  # a device match without a recorded model: say it, decide nothing
            note = f"; {prnu.reason}"
        return Fused(cnn.camera, "cnn" if cnn.camera else "none", cnn.reason + note)
    if cnn.camera is None:
        return Fused(
            prnu.camera,
            "prnu",
            f"{prnu.reason}; the CNN alone was inconclusive ({cnn.reason})",
        )
    if cnn.camera == prnu.camera:
        return Fused(cnn.camera, "cnn+prnu", f"{cnn.reason}; {prnu.reason}")
    return Fused(
        prnu.camera,
        "prnu",
        f"{prnu.reason}; it outranks the CNN, which points to {cnn.camera!r}",
        contradiction=(
            f"the CNN says {cnn.camera!r} (p={_num(cnn.strength)}) but the PRNU matches a "
            f"device of a {prnu.camera!r}"
        ),
    )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
