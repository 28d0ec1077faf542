"""Fingerprint files: safetensors (no pickle) with JSON metadata and a content hash.

Layout: one float32 tensor ``fingerprint`` (H, W) and the header metadata
``format = camid.prnu.fingerprint``, ``format_version = 1``, ``info`` (JSON: device name,
image count, size, residual parameters, camid version, creation time, input image hashes)
and ``sha256`` = sha256 over the format tag, the canonical ``info`` JSON and the raw
little-endian tensor bytes. Loading recomputes the hash and raises IntegrityError on any
difference; the write is atomic.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import numpy as np

from camid.errors import IntegrityError
from camid.io.atomic import write_bytes_atomic
from camid.io.image import read_file_bytes
from camid.prnu.fingerprint import Fingerprint
from camid.prnu.residual import ResidualParams

FORMAT = "camid.prnu.fingerprint"
FORMAT_VERSION = "1"
TENSOR_KEY = "fingerprint"
SUFFIX = ".fp.safetensors"
MAX_HEADER = 64 << 20
MIN_SIZE = 64
"""Smallest fingerprint side in pixels that camid matches against."""


def content_hash(info_json: str, k: np.ndarray) -> str:
    """sha256 of the format tag, the canonical info JSON and the float32 tensor bytes."""
    h = hashlib.sha256()
    h.update(f"{FORMAT}\n{FORMAT_VERSION}\n".encode())
    h.update(info_json.encode("utf-8"))
    h.update(b"\n")
    h.update(np.ascontiguousarray(k, dtype="<f4").tobytes())
    return h.hexdigest()


def _canonical(info: dict) -> str:
    return json.dumps(info, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint_bytes(fp: Fingerprint) -> tuple[bytes, str]:
    """Serialise a fingerprint; returns (file bytes, content hash)."""
    from safetensors.numpy import save

    k = np.ascontiguousarray(fp.k, dtype=np.float32)
    if k.ndim != 2:
        raise ValueError(f"a fingerprint is 2-D, got shape {k.shape}")
    info_json = _canonical(fp.info())
    digest = content_hash(info_json, k)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "info": info_json,
        "sha256": digest,
    }
    return save({TENSOR_KEY: k}, metadata=meta), digest


def save_fingerprint(fp: Fingerprint, path: str | Path) -> Path:
    """Write `fp` atomically to `path`; sets fp.sha256 and fp.path."""
    data, digest = fingerprint_bytes(fp)
    target = Path(path)
    write_bytes_atomic(target, data)
    fp.sha256 = digest
    fp.path = target
    return target


def _header(path: Path, data: bytes) -> dict:
    if len(data) < 8:
        raise IntegrityError(path, "not a fingerprint file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER or 8 + n > len(data):
        raise IntegrityError(path, "not a fingerprint file (bad safetensors header)")
    header = _parse(path, data[8 : 8 + n], "header")
    if not isinstance(header, dict):
        raise IntegrityError(path, "not a fingerprint file (bad header)")
    return header


def _optional_text(value: object, path: Path) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise IntegrityError(path, f"fingerprint metadata 'camera' is {type(value).__name__}")
    return value.strip() or None


def load_fingerprint(path: str | Path) -> Fingerprint:
    """Read and verify a fingerprint file; IntegrityError if it is not one or was modified."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    p = Path(path)
    data = read_file_bytes(p, what="a fingerprint")
    meta = _header(p, data).get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise IntegrityError(p, "not a camid fingerprint file (bad metadata)")
    if meta.get("format") != FORMAT:
        raise IntegrityError(p, "not a camid fingerprint file (format tag missing)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise IntegrityError(
            p, f"unsupported fingerprint format version {meta.get('format_version')!r}"
        )
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, OSError) as exc:
        raise IntegrityError(p, f"corrupt fingerprint tensor data ({exc})") from exc
    k = tensors.get(TENSOR_KEY)
    if k is None or k.ndim != 2 or k.dtype != np.float32:
        raise IntegrityError(p, "fingerprint tensor missing or not a 2-D float32 array")
    info_json = meta.get("info", "")
    if not isinstance(info_json, str) or content_hash(info_json, k) != meta.get("sha256"):
        raise IntegrityError(p, "fingerprint hash mismatch: the file was modified or is corrupt")
    info = _parse(p, info_json, "metadata")
    fp = _fingerprint_from(p, k, info, meta["sha256"])
    problem = fingerprint_problem(fp.k) or _params_problem(fp.params)
    if problem is not None:
        raise IntegrityError(p, problem)
    return fp


def _parse(path: Path, text: str | bytes, what: str) -> object:
    """JSON of a fingerprint file; every failure (deep nesting too) is an IntegrityError."""
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise IntegrityError(path, f"not a fingerprint file ({what} nested too deeply)") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(path, f"not a fingerprint file (unreadable {what})") from exc


def _typed(info: dict, key: str, kind: type | tuple[type, ...], path: Path, default=None):
    """info[key] if it has the type `kind` (bools are never numbers), else IntegrityError."""
    value = info.get(key, default)
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        value = None
    if not isinstance(value, kind):
        raise IntegrityError(path, f"fingerprint metadata {key!r} is missing or of the wrong type")
    return value


def _fingerprint_from(path: Path, k: np.ndarray, info: object, digest: str) -> Fingerprint:
    """A Fingerprint from verified tensor and metadata, checking every field's type."""
    if not isinstance(info, dict):
        raise IntegrityError(path, "fingerprint metadata is not an object")
    params = _typed(info, "params", dict, path)
    images = _typed(info, "images", list, path, [])
    if not all(isinstance(i, dict) for i in images):
        raise IntegrityError(path, "fingerprint metadata 'images' is not a list of objects")
    count = _typed(info, "image_count", int, path)
    if count < 1:
        raise IntegrityError(path, f"fingerprint metadata image_count {count} is not positive")
    fp = Fingerprint(
        k=k,
        device_name=_typed(info, "device_name", str, path),
        image_count=count,
        params=ResidualParams(
            sigma=_typed(params, "sigma", (int, float), path),
            levels=_typed(params, "levels", int, path),
            compat=_typed(params, "compat", bool, path),
        ),
        images=images,
        created=_typed(info, "created", str, path, ""),
        camid_version=_typed(info, "camid_version", str, path, ""),
        sha256=digest,
        path=path,
        camera=_optional_text(info.get("camera"), path),
    )
    size = (_typed(info, "height", int, path), _typed(info, "width", int, path))
    if fp.shape != size:
        raise IntegrityError(path, "fingerprint size disagrees with its metadata")
    return fp


def fingerprint_problem(k: np.ndarray) -> str | None:
    """Why a fingerprint array cannot be matched against (too small, non-finite, constant),
    or None. A constant K has no correlation peak: every photo would score PCE 0."""
    if k.ndim != 2 or min(k.shape) < MIN_SIZE:
        return f"fingerprint is {'x'.join(map(str, k.shape))} px; at least {MIN_SIZE}x{MIN_SIZE}"
    if not np.isfinite(k).all():
        return "fingerprint holds NaN or infinite values"
    if not float(k.max()) > float(k.min()):
        return "fingerprint is constant (all values equal): it carries no sensor pattern"
    return None


def _params_problem(params: ResidualParams) -> str | None:
    if not math.isfinite(params.noise_sigma):
        return f"fingerprint residual sigma {params.noise_sigma} is not finite"
    try:
        params.validate()
    except ValueError as exc:
        return f"fingerprint residual parameters are impossible ({exc})"
    return None


RESIDUAL_FORMAT = "camid.prnu.residual"


def save_residual(
    residual: np.ndarray,
    path: str | Path,
    *,
    source: str,
    source_sha256: str,
    params: ResidualParams,
) -> Path:
    """Write one residual (H, W) float32 as safetensors with its source and parameters."""
    from safetensors.numpy import save

    from camid import __version__

    r = np.ascontiguousarray(residual, dtype=np.float32)
    info = {
        "source": source,
        "source_sha256": source_sha256,
        "params": params.to_dict(),
        "camid_version": __version__,
    }
    info_json = _canonical(info)
    meta = {
        "format": RESIDUAL_FORMAT,
        "format_version": FORMAT_VERSION,
        "info": info_json,
        "sha256": content_hash(info_json, r),
    }
    target = Path(path)
    write_bytes_atomic(target, save({"residual": r}, metadata=meta))
    return target
