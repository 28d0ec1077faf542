"""What a photo's EXIF claims about its camera, and whether the image content agrees."""

from __future__ import annotations

import re
from collections.abc import Sequence

EXIF_STATUSES = ("consistent", "mismatch", "no-exif", "unknown-camera", "inconclusive")
"""consistent: EXIF names the predicted class. mismatch: the network confidently names
another class than the EXIF camera, which is one of its classes. no-exif: no Make/Model.
unknown-camera: the EXIF camera is not among the model's classes (the model cannot confirm
or refute it). inconclusive: the EXIF camera is a model class but the network said
"unknown" (evidence too weak to judge)."""


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
