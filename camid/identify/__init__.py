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
from camid.identify.identifier import UNKNOWN, Identification, Identifier

__all__ = [
    "EXIF_STATUSES",
    "UNKNOWN",
    "Identification",
    "Identifier",
    "camera_key",
    "exif_cross_check",
    "match_class",
]
