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
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(path, "not a fingerprint file (unreadable header)") from exc
    if not isinstance(header, dict):
        raise IntegrityError(path, "not a fingerprint file (bad header)")
    return header


def _optional_text(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"camera must be text, not {type(value).__name__}")
    return value.strip() or None


def load_fingerprint(path: str | Path) -> Fingerprint:
    """Read and verify a fingerprint file; IntegrityError if it is not one or was modified."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    p = Path(path)
    data = read_file_bytes(p, what="a fingerprint")
    meta = _header(p, data).get("__metadata__") or {}
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
    if content_hash(info_json, k) != meta.get("sha256"):
        raise IntegrityError(p, "fingerprint hash mismatch: the file was modified or is corrupt")
    try:
        info = json.loads(info_json)
        params = info["params"]
        fp = Fingerprint(
            k=k,
            device_name=str(info["device_name"]),
            image_count=int(info["image_count"]),
            params=ResidualParams(
                sigma=float(params["sigma"]),
                levels=int(params["levels"]),
                compat=bool(params["compat"]),
            ),
            images=list(info.get("images", [])),
            created=str(info.get("created", "")),
            camid_version=str(info.get("camid_version", "")),
            sha256=meta["sha256"],
            path=p,
            camera=_optional_text(info.get("camera")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(p, f"fingerprint metadata incomplete ({exc})") from exc
    if fp.shape != (int(info.get("height", -1)), int(info.get("width", -1))):
        raise IntegrityError(p, "fingerprint size disagrees with its metadata")
    return fp


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
