"""Inference: views of images -> per-view logits, batched across images, then aggregated."""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import softmax
from torch import nn

from camid.engine.data import ViewSpec, to_input
from camid.errors import UsageError
from camid.models.registry import get_arch, head_names
from camid.models.store import ModelCard

DEFAULT_MAX_VIEWS = 64


def decision_logits(logits: np.ndarray) -> np.ndarray:
    """(V, C) decision logits from (V, C), or from (V, K, C) evidence-head logits (head 0)."""
    return logits[:, 0] if logits.ndim == 3 else logits


def default_view_spec(
    card: ModelCard,
    *,
    mode: str | None = None,
    max_views: int | None = None,
    d4: bool | None = None,
    region: str | None = None,
) -> ViewSpec:
    """Inference views for a model: a patch grid for patch nets, 5 crops x D4 for big nets;
    a model trained under a pixel probe (recipe views.probe) sees its views through it."""
    try:
        family = get_arch(card.arch).family
    except Exception:  # an architecture from a newer camid: treat as a big net
        family = "imagenet"
    views = card.recipe.get("views", {}) if isinstance(card.recipe, dict) else {}
    if family == "patch":
        base = ViewSpec(
            card.input_size,
            "grid",
            int(views.get("max_views", DEFAULT_MAX_VIEWS)),
            bool(views.get("d4", False)),
            str(views.get("region", "full")),
        )
    else:
        base = ViewSpec(
            card.input_size,
            "five",
            5,
            bool(views.get("d4", True)),
            str(views.get("region", "full")),
        )
    probe = views.get("probe")
    return ViewSpec(
        size=base.size,
        mode=mode or base.mode,
        max_views=max_views if max_views is not None else base.max_views,
        d4=base.d4 if d4 is None else d4,
        region=region or base.region,
        probe=str(probe) if probe else None,
    )


def autocast_context(device: torch.device, enabled: bool = True):
    """CUDA mixed precision (fp16) when on a GPU, else a no-op context."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


class Predictor:
    """Runs a model over uint8 views in fixed-size batches, across image boundaries."""

    def __init__(
        self,
        model: nn.Module,
        card: ModelCard,
        device: torch.device,
        batch_size: int = 128,
        amp: bool = True,
    ) -> None:
        self.model = model.to(device).eval()
        self.card = card
        self.device = device
        self.batch_size = max(1, int(batch_size))
        self.amp = amp
        self.heads = head_names(model)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def forward(self, views: np.ndarray) -> np.ndarray:
        """(V, C) float32 logits of (V, S, S, 3) uint8 views, in chunks of batch_size
        ((V, K, C) for a model with evidence heads)."""
        out = []
        for i in range(0, len(views), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(views[i : i + self.batch_size]))
            out.append(self._run(chunk.permute(0, 3, 1, 2)))
        return np.concatenate(out) if out else self._empty()

    def _empty(self) -> np.ndarray:
        k = (len(self.heads),) if self.heads else ()
        return np.zeros((0, *k, self.card.num_classes), np.float32)

    def _run(self, x_uint8: torch.Tensor) -> np.ndarray:
        x = x_uint8.to(self.device, non_blocking=True)
        x = to_input(x, self.card.mean, self.card.std)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(self.device, self.amp):
            logits = self.model.evidence(x) if self.heads else self.model(x)
        return logits.float().cpu().numpy()

    @torch.inference_mode()
    def stream(
        self, items: Iterable[tuple[Hashable, np.ndarray | Exception]]
    ) -> Iterator[tuple[Hashable, np.ndarray | Exception]]:
        """(key, views or error) in -> (key, (V, C) logits or the error) out, in order.

        Views of consecutive images share batches of exactly `batch_size` (the last one
        may be smaller), so small images do not waste the device.
        """
        queue: deque[dict] = deque()
        buf: deque[list] = deque()  # [entry, views, start]
        waiting = 0
        bs = self.batch_size

        def run(n: int) -> None:
            nonlocal waiting
            parts, owners = [], []
            need = n
            while need > 0 and buf:
                entry, views, start = buf[0]
                take = min(need, len(views) - start)
                parts.append(views[start : start + take])
                owners.append((entry, take))
                need -= take
                if start + take >= len(views):
                    buf.popleft()
                else:
                    buf[0][2] = start + take
            x = torch.from_numpy(np.ascontiguousarray(np.concatenate(parts)))
            logits = self._run(x.permute(0, 3, 1, 2))
            pos = 0
            for entry, take in owners:
                entry["logits"].append(logits[pos : pos + take])
                entry["left"] -= take
                pos += take
            waiting -= n - need

        def done() -> Iterator[tuple[Hashable, np.ndarray | Exception]]:
            while queue and queue[0]["left"] == 0:
                e = queue.popleft()
                if isinstance(e["payload"], Exception):
                    yield e["key"], e["payload"]
                elif e["logits"]:
                    yield e["key"], np.concatenate(e["logits"])
                else:
                    yield e["key"], self._empty()

        for key, payload in items:
            n = 0 if isinstance(payload, Exception) else len(payload)
            entry = {"key": key, "payload": payload, "logits": [], "left": n}
            queue.append(entry)
            if n:
                buf.append([entry, payload, 0])
                waiting += n
            while waiting >= bs:
                run(bs)
            yield from done()
        while waiting > 0:
            run(min(bs, waiting))
        yield from done()


@dataclass(frozen=True)
class Aggregate:
    """Image-level evidence from per-view logits."""

    probs: np.ndarray  # (C,) calibrated class probabilities
    votes: np.ndarray  # (C,) fraction of views whose argmax is each class
    n_views: int
    heads: dict[str, np.ndarray] | None = None  # evidence head -> (C,) probabilities

    @property
    def top(self) -> int:
        """Index of the most probable class."""
        return int(np.argmax(self.probs))

    @property
    def agreement(self) -> float:
        """Share of views voting for the top class."""
        return float(self.votes[self.top])


def aggregate(logits: np.ndarray, temperature: float = 1.0, method: str = "mean") -> Aggregate:
    """Combine view logits: mean of calibrated view probabilities, or their geometric mean.

    "mean" averages softmax(logits / T) over views (soft voting, seed 002's averaging);
    "geometric" is softmax(mean(logits) / T).
    """
    logits = np.asarray(logits, dtype=np.float64)
    n, c = logits.shape
    if n == 0:
        return Aggregate(np.full(c, 1.0 / c), np.zeros(c), 0)
    with np.errstate(all="ignore"):  # non-finite results are refused by OpenSetRule.decide
        if method == "geometric":
            probs = softmax(logits.mean(axis=0) / temperature)
        else:
            probs = softmax(logits / temperature, axis=1).mean(axis=0)
    votes = np.bincount(logits.argmax(axis=1), minlength=c) / n
    return Aggregate(probs, votes, n)


@dataclass(frozen=True)
class OpenSetRule:
    """When an image is called "unknown camera" instead of its nearest class.

    Unknown when the calibrated max-probability is below `threshold`, when fewer than
    `min_agreement` of the views vote for the top class (0 disables the vote test), or when
    an evidence head named in `support` gives the top class less than its threshold (the
    kinds of trace contradict each other).
    """

    threshold: float = 0.5
    min_agreement: float = 0.0
    support: dict[str, float] = field(default_factory=dict)
    threshold_source: str = "given"
    """Where `threshold` came from: 'model' (the card's calibrated value), 'given' (the
    caller's) or 'default' (0.5: the card has no calibrated value)."""

    @property
    def threshold_origin(self) -> str:
        """The threshold and its origin in words, e.g. "the model's threshold 0.91"."""
        words = {"model": "the model's calibrated threshold", "default": "the default threshold"}
        return f"{words.get(self.threshold_source, 'the given threshold')} {self.threshold:g}"

    def __post_init__(self) -> None:
        limits = {"threshold": self.threshold, "min_agreement": self.min_agreement}
        limits.update({f"support threshold of {k}": v for k, v in self.support.items()})
        for what, value in limits.items():
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise UsageError(f"the {what} must be a number in [0, 1], got {value}")

    @classmethod
    def from_card(
        cls,
        card: ModelCard,
        threshold: float | None = None,
        min_agreement: float | None = None,
        trace_check: bool = True,
    ) -> OpenSetRule:
        """The rule a model's card suggests (validation-derived), with overrides."""
        cal = card.calibration or {}
        if threshold is not None:
            t, source = threshold, "given"
        elif "unknown_threshold" in cal:
            t, source = float(cal["unknown_threshold"]), "model"
        else:
            t, source = 0.5, "default"
        a = min_agreement if min_agreement is not None else float(cal.get("min_agreement", 0.0))
        support: dict[str, float] = {}
        if trace_check:
            for head in cal.get("heads", []):
                if isinstance(head, dict) and "name" in head:
                    support[str(head["name"])] = float(head.get("support_threshold", 0.0))
        return cls(t, a, support, source)

    def decide(
        self, agg: Aggregate, classes: list[str], skip: Sequence[str] = ()
    ) -> tuple[bool, str]:
        """(known, reason) for one aggregated image; heads named in `skip` are not checked
        (their traces do not apply to the image, e.g. JPEG traces of a HEIF)."""
        if agg.n_views == 0:
            return False, "no views could be taken from the image"
        heads = agg.heads.values() if agg.heads else ()
        if not all(np.isfinite(v).all() for v in (agg.probs, agg.votes, *heads)):
            # NaN compares False with every threshold: never let it through as a decision
            return False, "non-finite probabilities"
        p = float(agg.probs[agg.top])
        name = classes[agg.top]
        votes = f"{agg.agreement:.0%} of {agg.n_views} views vote for it"
        if p < self.threshold:
            return False, (
                f"weak evidence: best match {name!r} has p = {p:.3f}, "
                f"{self.threshold - p:.3f} below {self.threshold_origin}; {votes}"
            )
        if agg.agreement < self.min_agreement:
            return False, (
                f"views disagree: only {agg.agreement:.0%} of {agg.n_views} views vote for "
                f"{name!r} (< {self.min_agreement:.0%}); probability {p:.2f}"
            )
        for head, need in self.support.items():
            hp = agg.heads.get(head) if agg.heads else None
            if hp is None or need <= 0 or head in skip:
                continue
            if hp[agg.top] < need:
                return False, (
                    f"traces disagree: {head} traces give {name!r} only {hp[agg.top]:.3f} "
                    f"(< {need:.3f}) and point to {classes[int(np.argmax(hp))]!r}; "
                    f"combined probability {p:.2f}"
                )
        return True, f"probability {p:.3f} >= {self.threshold_origin}; {votes}"
