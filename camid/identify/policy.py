"""Which evidence decides for a photo changed after the camera (re-saved, resized).

A re-save writes the editor's JPEG quantisation lattice over the camera's and a resize
destroys the lattice, so the compression-trace head then describes the editor, not the
camera. For such photos the decision rests on the pixel-trace head alone, with its own
temperature and threshold, both fitted when the model was trained on *altered* copies of
the validation photos (JPEG re-saves and resizes) so that at most `WRONG_TARGET` of them
would get a wrong camera (`calibrate_altered`, stored in the card as
`calibration["altered"]`). A photo whose pixel evidence stays below that threshold is
"unknown" with the reason: wrong is worse than unknown.

What happened to a photo comes from the photo's history analysis when there is one
(`alteration_of`, duck-typed on `History` with `.resaved.detected` / `.resampled.detected`),
or is given by the caller (`camid evaluate` knows the manipulation it applied).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from camid.data.augment import Manipulation, parse_manipulations

if TYPE_CHECKING:  # the aggregation lives with the network code (torch): imported on use
    from camid.engine.predict import Aggregate

PIXEL_HEAD = "pixels"
"""The evidence head that reads pixel traces only (TraceNet); a model without evidence
heads is pixel evidence as a whole and its decision head takes this role."""
WRONG_TARGET = 0.05
"""The wrong-camera rate on altered photos the threshold is chosen for."""
MARGIN = 0.5
"""The threshold is set for MARGIN x WRONG_TARGET on the validation photos: they are few,
and they chose the best epoch, so their rate understates the rate on new photos."""
MIN_THRESHOLD = 0.5
CALIBRATION_CONDITIONS = {
    "resaved": "jpeg:95,jpeg:85,jpeg:75,jpeg:65",
    "resampled": "resize:0.55,resize:0.7,resize:0.9,resize:1.2,resize:1.6",
}
"""The altered validation copies each threshold is fitted on (other values than the
benchmark's, so the benchmark does not score the calibration's own conditions)."""


@dataclass(frozen=True)
class Alteration:
    """What happened to a photo after the camera, as far as it matters for the decision."""

    resaved: bool = False
    resampled: bool = False
    summary: str = ""
    source: str = "detected"
    """"detected" (the photo's history analysis) or "given" (told by the caller)."""

    @property
    def altered(self) -> bool:
        """True when the camera's compression traces cannot be trusted."""
        return self.resaved or self.resampled

    @property
    def kinds(self) -> tuple[str, ...]:
        """("resaved", "resampled") or the one that applies."""
        return tuple(k for k in ("resaved", "resampled") if getattr(self, k))

    def words(self) -> str:
        """Short words for reasons, e.g. "re-saved (JPEG Q70) and resized"."""
        if self.source == "detected" and self.summary:  # the history's own phrase
            return self.summary
        names = {"resaved": "re-saved", "resampled": "resized"}
        parts = [names[k] for k in self.kinds]
        text = " and ".join(parts) or "unaltered"
        return f"{text} ({self.summary})" if self.summary else text

    def to_record(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "resaved": self.resaved,
            "resampled": self.resampled,
            "summary": self.summary,
            "source": self.source,
        }


def alteration_of(history: Any) -> Alteration | None:
    """An Alteration from a photo history analysis (`camid.identify.history.History`, or
    anything with `.resaved.detected`, `.resampled.detected` and optionally `.summary()`);
    None when there is none or it found neither a re-save nor a resampling."""
    if history is None:
        return None
    resaved = bool(getattr(getattr(history, "resaved", None), "detected", False))
    resampled = bool(getattr(getattr(history, "resampled", None), "detected", False))
    if not (resaved or resampled):
        return None
    summary = history.summary() if callable(getattr(history, "summary", None)) else ""
    return Alteration(resaved, resampled, str(summary), "detected")


def alteration_from_manipulation(m: Manipulation | None) -> Alteration | None:
    """The Alteration a known manipulation makes: JPEG re-save or resize (gamma and crops
    leave the camera's lattice in place: None)."""
    if m is None:
        return None
    if m.kind == "jpeg":
        return Alteration(resaved=True, summary=f"JPEG Q{int(m.value)}", source="given")
    if m.kind == "resize" and m.value != 1:
        return Alteration(resampled=True, summary=f"x{m.value:g}", source="given")
    return None


@dataclass(frozen=True)
class PixelRule:
    """The decision for altered photos: the pixel head's calibrated probability against its
    own threshold (per kind of alteration; both kinds: the stricter)."""

    head: str
    index: int
    temperature: float
    thresholds: dict[str, float]
    calibrated: bool

    @classmethod
    def from_card(cls, calibration: dict[str, Any], heads: Sequence[str] | None) -> PixelRule:
        """The rule a model card's calibration holds; an older card without an "altered"
        section gets the pixel head's own temperature and the strict default 0.95."""
        names = list(heads or ())
        index = names.index(PIXEL_HEAD) if PIXEL_HEAD in names else 0
        head = names[index] if names else "network"
        alt = calibration.get("altered") if isinstance(calibration, dict) else None
        if isinstance(alt, dict) and alt.get("thresholds"):
            return cls(
                head,
                index,
                float(alt.get("temperature", 1.0)),
                {str(k): float(v) for k, v in alt["thresholds"].items()},
                True,
            )
        t = 1.0
        for h in calibration.get("heads", []) if isinstance(calibration, dict) else []:
            if isinstance(h, dict) and h.get("name") == head:
                t = float(h.get("temperature", 1.0))
        if index == 0:
            t = float(calibration.get("temperature", 1.0)) if isinstance(calibration, dict) else 1.0
        return cls(head, index, t, {"resaved": 0.95, "resampled": 0.95}, False)

    def threshold(self, alteration: Alteration) -> float:
        """The threshold for this photo: the strictest of its kinds of alteration."""
        return max([self.thresholds.get(k, 0.95) for k in alteration.kinds] or [0.95])

    def aggregate(self, logits: np.ndarray, method: str = "mean") -> Aggregate:
        """The pixel head's calibrated aggregate of (V, C) or (V, K, C) view logits."""
        from camid.engine.predict import aggregate

        lg = logits[:, self.index] if logits.ndim == 3 else logits
        return aggregate(lg, self.temperature, method)

    def decide(
        self, agg: Aggregate, classes: Sequence[str], alteration: Alteration
    ) -> tuple[bool, str]:
        """(known, reason) for an altered photo from its pixel-head aggregate."""
        what = alteration.words()
        if agg.n_views == 0:
            return False, "no views could be taken from the image"
        if not (np.isfinite(agg.probs).all() and np.isfinite(agg.votes).all()):
            return False, "non-finite probabilities"
        p = float(agg.probs[agg.top])
        t = self.threshold(alteration)
        origin = "the model's threshold for altered photos" if self.calibrated else (
            "the default threshold for altered photos (the model has no calibration for them)"
        )
        votes = f"{agg.agreement:.0%} of {agg.n_views} views vote for it"
        if p < t:
            return False, (
                f"{what}: pixel evidence too weak; compression traces not used; best match "
                f"{classes[agg.top]!r} has p = {p:.3f} < {t:.3f} ({origin}); {votes}"
            )
        return True, (
            f"{what}: decided on {self.head} traces alone (compression traces not used); "
            f"p = {p:.3f} >= {t:.3f} ({origin}); {votes}"
        )


def choose_threshold(
    max_probs: np.ndarray, right: np.ndarray, target: float = WRONG_TARGET * MARGIN
) -> float:
    """The lowest threshold (>= MIN_THRESHOLD) at which the photos decided wrongly are at
    most `target` of all photos; 1.0 (never decide) when no threshold reaches it."""
    p, ok = np.asarray(max_probs, float), np.asarray(right, bool)
    n = len(p)
    if n == 0:
        return 1.0
    for t in sorted({MIN_THRESHOLD, *p[p >= MIN_THRESHOLD].tolist()}):
        if np.sum((p >= t) & ~ok) <= target * n:
            return float(t)
    return 1.0


def calibrate_altered(
    logits: dict[str, list[np.ndarray]], labels: dict[str, list[int]], head: str
) -> dict[str, Any]:
    """Fit the pixel head on altered validation views: one temperature over all of them,
    then a threshold per kind of alteration (see `choose_threshold`).

    `logits[kind]` holds (V, C) pixel-head view logits per altered validation photo, with
    `labels[kind]` their true classes.
    """
    from camid.engine.calibration import fit_temperature
    from camid.engine.predict import aggregate

    all_lg = [lg for k in logits for lg in logits[k]]
    all_y = [y for k in logits for y in labels[k]]
    if not all_lg:
        return {}
    stacked = np.concatenate(all_lg)
    view_y = np.concatenate([np.full(len(lg), y) for lg, y in zip(all_lg, all_y, strict=True)])
    t = float(fit_temperature(stacked, view_y)["temperature"])
    out: dict[str, Any] = {
        "head": head,
        "temperature": t,
        "target_wrong_rate": WRONG_TARGET,
        "margin": MARGIN,
        "conditions": dict(CALIBRATION_CONDITIONS),
        "thresholds": {},
        "per_kind": {},
        "rule": f"lowest threshold >= {MIN_THRESHOLD} at which at most "
        f"{WRONG_TARGET * MARGIN:.1%} of the altered validation photos get a wrong camera",
    }
    for kind, lgs in logits.items():
        aggs = [aggregate(lg, t) for lg in lgs]
        p = np.array([a.probs[a.top] for a in aggs])
        right = np.array([a.top == y for a, y in zip(aggs, labels[kind], strict=True)])
        thr = choose_threshold(p, right)
        decided = p >= thr
        out["thresholds"][kind] = thr
        out["per_kind"][kind] = {
            "n_images": len(lgs),
            "closed_set_accuracy": float(right.mean()),
            "identified": float(np.mean(decided & right)),
            "wrong_rate": float(np.mean(decided & ~right)),
        }
    return out


def calibration_manipulations() -> dict[str, list[Manipulation]]:
    """The altered copies of validation photos per kind (CALIBRATION_CONDITIONS)."""
    return {k: parse_manipulations(v) for k, v in CALIBRATION_CONDITIONS.items()}
