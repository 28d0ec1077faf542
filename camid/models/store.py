"""Trained models on disk: one safetensors file per model, its card in the header.

A stored model is data, never code: tensors in safetensors format plus a JSON card
(architecture, classes, patch size, normalisation, recipe, metrics, calibration, camid
version, weights sha256). Loading verifies the weights hash from the card and, for models
in the registry folder, the whole-file hash recorded in the registry index.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file
from torch import nn

from camid import __version__
from camid.errors import IntegrityError, NotFoundError, UsageError
from camid.home import camid_home
from camid.io.atomic import atomic_write, write_text_atomic
from camid.io.image import read_file_bytes, sha256_bytes, sha256_file
from camid.models.registry import get_model

CARD_KEY = "camid_card"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class ModelCard:
    """Everything needed to rebuild, use and cite a trained model."""

    name: str
    arch: str
    classes: list[str]
    input_size: int
    task: str = "camera"
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    camid_version: str = __version__
    created: str = ""
    weights_sha256: str = ""
    parameters: int = 0
    notes: str = ""

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.classes)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelCard:
        """Build from a dict, ignoring unknown keys (forward compatibility)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """Canonical sha256 over names, dtypes, shapes and bytes of a state dict's tensors."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def models_dir(home: Path | None = None) -> Path:
    """Folder of the registry's trained models."""
    d = (home or camid_home()) / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _index_path(home: Path | None) -> Path:
    return models_dir(home) / "index.json"


def _read_index(home: Path | None) -> dict[str, dict]:
    p = _index_path(home)
    if not p.is_file():
        return {}
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(p, "registry index is not valid JSON") from exc
    return data if isinstance(data, dict) else {}


def _write_index(index: dict[str, dict], home: Path | None) -> None:
    write_text_atomic(_index_path(home), json.dumps(index, indent=2, sort_keys=True) + "\n")


def check_name(name: str) -> str:
    """Validate a model name (letters, digits, . _ -), else UsageError."""
    if not NAME_RE.match(name):
        raise UsageError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (max 100)"
        )
    return name


def write_model_file(model: nn.Module, card: ModelCard, path: Path) -> ModelCard:
    """Write weights + card to a safetensors file atomically; returns the completed card."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    card.weights_sha256 = tensors_sha256(state)
    card.parameters = int(sum(p.numel() for p in model.parameters()))
    card.camid_version = __version__
    if not card.created:
        card.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata={CARD_KEY: json.dumps(card.to_dict())})
    return card


def read_model_file(
    path: Path, expected_sha256: str | None = None
) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """Read and verify a model file, reading it once.

    Checks, in order: the whole-file sha256 (when the registry index gives one), that the
    file is safetensors and not a pickle, that the card is present, and that the tensors hash
    to the card's `weights_sha256`.
    """
    if not path.is_file():
        if expected_sha256 is not None:
            raise IntegrityError(path, "registry entry exists but its file is missing")
        raise NotFoundError(f"{path}: no such model file")
    data = read_file_bytes(path, what="a model")
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise IntegrityError(path, "file sha256 differs from the registry index (altered)")
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or data[:2] == b"PK":
        raise IntegrityError(
            path,
            "refused: this is a pickle/torch.save file, which can run code when loaded; "
            "camid models are .safetensors files",
        )
    try:
        meta = _safetensors_metadata(data)
        state = load_bytes(data)
    except (SafetensorError, ValueError) as exc:
        raise IntegrityError(path, f"not a valid safetensors model file ({exc})") from exc
    if CARD_KEY not in meta:
        raise IntegrityError(path, "no camid model card in the file header")
    try:
        card = ModelCard.from_dict(json.loads(meta[CARD_KEY]))
    except (json.JSONDecodeError, TypeError) as exc:
        raise IntegrityError(path, "model card is not valid JSON") from exc
    if tensors_sha256(state) != card.weights_sha256:
        raise IntegrityError(path, "weights do not match the sha256 in the model card (altered)")
    return state, card


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors blob (8-byte little-endian header size + JSON)."""
    if len(data) < 8:
        raise ValueError("file too short")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise ValueError("header size exceeds the file")
    try:
        header = json.loads(data[8 : 8 + size])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError("header is not JSON") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def build_from_state(state: dict[str, torch.Tensor], card: ModelCard, path: Path) -> nn.Module:
    """Instantiate the card's architecture and load the verified weights into it."""
    model = get_model(card.arch, card.num_classes)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise IntegrityError(path, f"weights do not fit {card.arch}: {str(exc)[:160]}") from exc
    model.eval()
    return model


def save_model(
    model: nn.Module, card: ModelCard, *, home: Path | None = None, overwrite: bool = False
) -> Path:
    """Store a trained model in the registry under `card.name` (atomic, indexed)."""
    check_name(card.name)
    index = _read_index(home)
    path = models_dir(home) / f"{card.name}.safetensors"
    if not overwrite and (card.name in index or path.exists()):
        raise UsageError(f"a model named {card.name!r} exists; choose another name or --overwrite")
    write_model_file(model, card, path)
    index[card.name] = {"file": path.name, "sha256": sha256_file(path), "arch": card.arch}
    _write_index(index, home)
    return path


def resolve_model_path(ref: str | Path, home: Path | None = None) -> tuple[Path, str | None]:
    """A registry name or a file path -> (file, expected whole-file sha256 or None)."""
    p = Path(ref)
    if p.suffix == ".safetensors" or p.exists() or "/" in str(ref):
        return p, None
    index = _read_index(home)
    if str(ref) not in index:
        known = ", ".join(sorted(index)) or "none yet (train one with `camid train`)"
        raise NotFoundError(f"no model named {str(ref)!r} in the registry; models: {known}")
    entry = index[str(ref)]
    return models_dir(home) / entry["file"], entry.get("sha256")


def load_model(
    ref: str | Path, device: torch.device | str = "cpu", *, home: Path | None = None
) -> tuple[nn.Module, ModelCard]:
    """Load a verified model (registry name or file) in eval mode on `device`."""
    path, expected = resolve_model_path(ref, home)
    state, card = read_model_file(path, expected)
    model = build_from_state(state, card, path)
    return model.to(device), card


def read_card(ref: str | Path, *, home: Path | None = None) -> tuple[ModelCard, Path]:
    """The card of a stored model (verified), without building the network."""
    path, expected = resolve_model_path(ref, home)
    _, card = read_model_file(path, expected)
    return card, path


def list_stored(home: Path | None = None) -> list[dict]:
    """Index entries of the registry's trained models with their card summaries."""
    out = []
    for name, entry in sorted(_read_index(home).items()):
        path = models_dir(home) / entry["file"]
        rec = {"name": name, "arch": entry.get("arch"), "path": str(path), "status": "ok"}
        try:
            card, _ = read_card(name, home=home)
            rec.update(
                classes=len(card.classes),
                input_size=card.input_size,
                task=card.task,
                created=card.created,
                accuracy=card.metrics.get("val_accuracy"),
            )
        except (IntegrityError, NotFoundError) as exc:
            rec["status"] = f"damaged: {getattr(exc, 'reason', str(exc))}"
        out.append(rec)
    return out


def remove_model(name: str, *, home: Path | None = None) -> Path:
    """Delete a trained model from the registry."""
    index = _read_index(home)
    if name not in index:
        raise NotFoundError(f"no model named {name!r} in the registry")
    path = models_dir(home) / index.pop(name)["file"]
    _write_index(index, home)
    path.unlink(missing_ok=True)
    return path


def export_model(name: str, dest: Path, *, home: Path | None = None) -> Path:
    """Copy a verified registry model to a standalone .safetensors file."""
    _, src = read_card(name, home=home)
    if dest.is_dir():
        dest = dest / src.name
    with atomic_write(dest) as tmp:
        shutil.copyfile(src, tmp)
    return dest


def import_model(
    src: Path, *, name: str | None = None, home: Path | None = None, overwrite: bool = False
) -> tuple[str, Path]:
    """Verify a .safetensors model file and add it to the registry (optionally renamed)."""
    state, card = read_model_file(src)
    build_from_state(state, card, src)  # proves the weights fit the architecture
    new_name = check_name(name or card.name)
    index = _read_index(home)
    dest = models_dir(home) / f"{new_name}.safetensors"
    if not overwrite and (new_name in index or dest.exists()):
        raise UsageError(f"a model named {new_name!r} exists; use --name or --overwrite")
    if new_name != card.name:
        card.name = new_name
        with atomic_write(dest) as tmp:
            save_file(state, str(tmp), metadata={CARD_KEY: json.dumps(card.to_dict())})
    else:
        with atomic_write(dest) as tmp:
            shutil.copyfile(src, tmp)
    index[new_name] = {"file": dest.name, "sha256": sha256_file(dest), "arch": card.arch}
    _write_index(index, home)
    return new_name, dest
