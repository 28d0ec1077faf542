"""PRNU sensor fingerprints: noise residuals, fingerprint estimation, PCE matching, statistics.

Library only (no printing, no CLI options); the command group is camid/cli/prnu.py and the
method is documented in docs/prnu.md.
"""

from __future__ import annotations

from camid.prnu.fingerprint import (
    Fingerprint,
    FingerprintAccumulator,
    build_fingerprint,
    pixel_weights,
    saturation_mask,
)
from camid.prnu.match import (
    DEFAULT_THRESHOLD,
    FingerprintBank,
    MatchResult,
    match_residual,
    p_value_from_pce,
    pce_from_surface,
)
from camid.prnu.residual import (
    ResidualParams,
    extract_residual,
    extract_residuals,
    residual_and_grey,
)
from camid.prnu.store import load_fingerprint, save_fingerprint
from camid.stats.verification import MatrixSummary, auc, eer, roc_curve, summarize, tpr_at_fpr

__all__ = [
    "DEFAULT_THRESHOLD",
    "Fingerprint",
    "FingerprintAccumulator",
    "FingerprintBank",
    "MatchResult",
    "MatrixSummary",
    "ResidualParams",
    "auc",
    "build_fingerprint",
    "eer",
    "extract_residual",
    "extract_residuals",
    "load_fingerprint",
    "match_residual",
    "p_value_from_pce",
    "pce_from_surface",
    "pixel_weights",
    "residual_and_grey",
    "roc_curve",
    "saturation_mask",
    "save_fingerprint",
    "summarize",
    "tpr_at_fpr",
]
