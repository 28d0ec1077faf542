"""Camera-model identification as a library: the Identifier, the EXIF cross-check, evaluation.

    from camid.identify import Identifier
    ident = Identifier.from_model("synth-cams")
    for result in ident.identify(paths): ...

The command line (`camid identify`, `camid evaluate`) is a thin layer over this package.
"""

from __future__ import annotations

from camid.identify.exif_check import (
    EXIF_STATUSES,
    camera_key,
    exif_cross_check,
    match_class,
)

_LAZY = {"UNKNOWN", "Identification", "Identifier"}
_HISTORY = {"Finding", "History", "analyse_history"}


def __getattr__(name: str):
    """The identifier needs torch: import it on first use, so that `camid --help` and the
    commands that run no network (which import this package's light parts) start fast."""
    if name in _LAZY:
        from camid.identify import identifier

        return getattr(identifier, name)
    if name in _HISTORY:  # NumPy/SciPy: what happened to a photo after the camera
        from camid.identify import history

        return getattr(history, name)
    raise AttributeError(f"module 'camid.identify' has no attribute {name!r}")

__all__ = [
    "EXIF_STATUSES",
    "UNKNOWN",
    "Finding",
    "History",
    "Identification",
    "Identifier",
    "analyse_history",
    "camera_key",
    "exif_cross_check",
    "match_class",
]
