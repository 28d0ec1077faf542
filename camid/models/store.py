"""Trained models on disk: one safetensors file per model, its card in the header.

A stored model is data, never code: tensors in safetensors format plus a JSON card
(architecture, classes, patch size, normalisation, recipe, metrics, calibration, camid
version, weights sha256). Loading verifies the weights hash from the card and, for models
in the registry folder, the whole-file hash recorded in the registry index.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import struct
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from camid import __version__
from camid.errors import AlreadyExistsError, CamidError, IntegrityError, NotFoundError, UsageError
from camid.home import camid_home
from camid.io.atomic import atomic_write, write_text_atomic
from camid.io.image import read_file_bytes, sha256_bytes, sha256_file

if TYPE_CHECKING:  # torch is imported where weights are touched: listing models needs none
    import torch
    from torch import nn

CARD_KEY = "camid_card"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MIN_VIEW, MAX_VIEW = 8, 4096
"""Sane bounds of a card's input (view) size in pixels."""
MAX_CLASSES = 100_000
MAX_CLASS_NAME = 200
MODEL_SUFFIX = ".safetensors"


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


def parse_json(text: str | bytes, path: str | Path, what: str) -> Any:
    """`json.loads` that turns every parse failure (deep nesting included) into an
    IntegrityError naming the file."""
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise IntegrityError(path, f"{what} is nested too deeply to be read") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise IntegrityError(path, f"{what} is not valid JSON") from exc


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _is_num(v) and math.isfinite(v)


def card_problem(data: Any) -> str | None:
    """What makes a card dict unusable (types, ranges, names), or None when it is sound.

    Checks what camid later relies on: the schema and types of every known field, class
    names (non-empty, unique), a view size in 8..4096 px, mean/std of 3 finite values
    (std > 0), and a calibration whose temperatures are finite and > 0 and whose
    thresholds lie in [0, 1]. Unknown keys are allowed (forward compatibility).
    """
    if not isinstance(data, dict):
        return f"model card is a JSON {type(data).__name__}, not an object"
    for key in ("name", "arch", "classes", "input_size"):
        if key not in data:
            return f"model card has no {key!r}"
    for key in ("name", "arch", "task", "camid_version", "created", "weights_sha256", "notes"):
        if key in data and not isinstance(data[key], str):
            return f"model card field {key!r} is not a string"
    if not data["name"].strip() or not data["arch"].strip():
        return "model card has an empty name or architecture"
    classes = data["classes"]
    if not isinstance(classes, list):
        return "model card 'classes' is not a list of names"
    if not 2 <= len(classes) <= MAX_CLASSES:
        return f"model card lists {len(classes)} classes (a classifier needs at least 2)"
    for c in classes:
        if not isinstance(c, str) or not c.strip() or len(c) > MAX_CLASS_NAME:
            return f"model card class {c!r} is not a non-empty name (max {MAX_CLASS_NAME})"[:300]
    if len(set(classes)) != len(classes):
        return "model card lists the same class name twice"
    size = data["input_size"]
    if not _is_int(size) or not MIN_VIEW <= size <= MAX_VIEW:
        return f"model card input_size {size!r} is not an integer in {MIN_VIEW}..{MAX_VIEW}"[:300]
    for key in ("mean", "std"):
        v = data.get(key, [0.5, 0.5, 0.5])
        if not isinstance(v, list) or len(v) != 3 or not all(_finite(x) for x in v):
            return f"model card {key!r} is not 3 finite numbers"
    if not all(x > 0 for x in data.get("std", [0.5])):
        return "model card 'std' has a value <= 0"
    if "parameters" in data and (not _is_int(data["parameters"]) or data["parameters"] < 0):
        return "model card 'parameters' is not a non-negative integer"
    for key in ("recipe", "metrics", "calibration"):
        if key in data and not isinstance(data[key], dict):
            return f"model card {key!r} is not an object"
    return _views_problem(data.get("recipe", {})) or _calibration_problem(
        data.get("calibration", {})
    )


def _views_problem(recipe: dict) -> str | None:
    """Problems of `recipe.views` (the inference views identify takes by default)."""
    views = recipe.get("views", {})
    if not isinstance(views, dict):
        return "model card 'recipe.views' is not an object"
    if "mode" in views and views["mode"] not in ("grid", "five"):
        return "model card 'recipe.views.mode' is not 'grid' or 'five'"
    mv = views.get("max_views", 1)
    if not _is_int(mv) or not 1 <= mv <= MAX_VIEW:
        return f"model card 'recipe.views.max_views' is not an integer in 1..{MAX_VIEW}"
    if "d4" in views and not isinstance(views["d4"], bool):
        return "model card 'recipe.views.d4' is not true or false"
    if "region" in views:
        from camid.data.patches import REGIONS

        if views["region"] not in REGIONS:
            return f"model card 'recipe.views.region' is not one of {', '.join(REGIONS)}"
    if views.get("probe") is not None:
        from camid.data.augment import PIXEL_PROBES

        if views["probe"] not in PIXEL_PROBES:
            return (
                "model card 'recipe.views.probe' is not a pixel probe of this camid "
                f"({', '.join(PIXEL_PROBES)})"
            )
    return None


def _calibration_problem(cal: dict) -> str | None:
    """Problems of a card's calibration: temperatures finite > 0, thresholds in [0, 1]."""
    t = cal.get("temperature", 1.0)
    if not _finite(t) or t <= 0:
        return f"model card temperature {t!r} is not a finite number > 0"
    for key in ("unknown_threshold", "min_agreement"):
        v = cal.get(key, 0.5)
        if not _finite(v) or not 0.0 <= v <= 1.0:
            return f"model card {key} {v!r} is not a number in [0, 1]"
    if cal.get("aggregation", "mean") not in ("mean", "geometric"):
        return "model card aggregation is not 'mean' or 'geometric'"
    heads = cal.get("heads", [])
    if not isinstance(heads, list):
        return "model card calibration 'heads' is not a list"
    for h in heads:
        if not isinstance(h, dict):
            return "model card calibration head is not an object"
        if "name" in h and not isinstance(h["name"], str):
            return "model card calibration head name is not a string"
        ht = h.get("temperature", 1.0)
        if not _finite(ht) or ht <= 0:
            return f"model card head temperature {ht!r} is not a finite number > 0"
        st = h.get("support_threshold", 0.0)
        if not _finite(st) or not 0.0 <= st <= 1.0:
            return f"model card head support_threshold {st!r} is not a number in [0, 1]"
    return _altered_problem(cal.get("altered", {}))


def _altered_problem(alt: Any) -> str | None:
    """Problems of the calibration for altered photos (camid.identify.policy)."""
    if not isinstance(alt, dict):
        return "model card calibration 'altered' is not an object"
    t = alt.get("temperature", 1.0)
    if not _finite(t) or t <= 0:
        return f"model card altered-photo temperature {t!r} is not a finite number > 0"
    thresholds = alt.get("thresholds", {})
    if not isinstance(thresholds, dict):
        return "model card altered-photo thresholds are not an object"
    for kind, v in thresholds.items():
        if not _finite(v) or not 0.0 <= v <= 1.0:
            return f"model card altered-photo threshold {kind}={v!r} is not a number in [0, 1]"
    return None


def validate_card(data: Any, path: str | Path) -> ModelCard:
    """A ModelCard from a card dict after `card_problem`; IntegrityError naming the file."""
    problem = card_problem(data)
    if problem is not None:
        raise IntegrityError(path, problem)
    return ModelCard.from_dict(data)


def nonfinite_tensor(state: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or infinity, else None."""
    import torch

    for key in sorted(state):
        t = state[key]
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            return key
    return None


def check_fit(state: dict[str, torch.Tensor], card: ModelCard, path: str | Path) -> None:
    """Refuse weights that do not fit the card's architecture and class count.

    The network is built on the meta device (no memory, no computation), so this is cheap
    enough for every read of a card.
    """
    import torch

    from camid.models.registry import get_model

    try:
        with torch.device("meta"):
            ref = get_model(card.arch, card.num_classes).state_dict()
    except NotFoundError as exc:
        raise IntegrityError(path, f"architecture {card.arch!r} is unknown to this camid") from exc
    missing = sorted(set(ref) - set(state))
    extra = sorted(set(state) - set(ref))
    if missing or extra:
        first = (missing or extra)[0]
        kind = "missing" if missing else "unexpected"
        raise IntegrityError(path, f"weights do not fit {card.arch}: {kind} tensor {first!r}"[:300])
    for key in sorted(ref):
        if tuple(ref[key].shape) != tuple(state[key].shape):
            why = f"weights do not fit {card.arch}: {key} has shape {tuple(state[key].shape)}"
            why += f", expected {tuple(ref[key].shape)}"
            if card.num_classes in tuple(ref[key].shape):
                why += f" (the card lists {card.num_classes} classes)"
            raise IntegrityError(path, why)


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """Canonical sha256 over names, dtypes, shapes and bytes of a state dict's tensors."""
    import torch

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
        text = p.read_bytes()
    except OSError as exc:
        raise IntegrityError(p, f"registry index cannot be read ({exc.strerror})") from exc
    data = parse_json(text, p, "registry index")
    return data if isinstance(data, dict) else {}


def entry_path(name: str, entry: Any, home: Path | None = None) -> Path:
    """The model file of a registry index entry, refusing anything but a plain file name
    inside the registry folder (no separators, no '..', not absolute, no symlink).

    The index is a file on disk that anyone with write access can edit: without this, an
    entry could make `remove` delete, or `load` read, any file on the machine.
    """
    index = _index_path(home)
    file = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(file, str):
        raise IntegrityError(index, f"registry entry {name!r} has no file name")
    plain = (
        file not in ("", ".", "..")
        and "/" not in file
        and "\\" not in file
        and "\x00" not in file
        and not Path(file).is_absolute()
        and file.endswith(MODEL_SUFFIX)
    )
    if not plain:
        raise IntegrityError(
            index,
            f"registry entry {name!r} points to {file!r}, which is not a model file name "
            "inside the registry folder; refused"[:400],
        )
    folder = models_dir(home)
    path = folder / file
    if path.is_symlink() or path.resolve().parent != folder.resolve():
        raise IntegrityError(
            index, f"registry entry {name!r}: {file!r} is a link out of the registry; refused"
        )
    sha = entry.get("sha256")
    if sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
        raise IntegrityError(index, f"registry entry {name!r} has a malformed sha256")
    return path


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
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    card.weights_sha256 = tensors_sha256(state)
    card.parameters = int(sum(p.numel() for p in model.parameters()))
    card.camid_version = __version__
    if not card.created:
        card.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    # never write a file that reading would refuse
    problem = card_problem(json.loads(json.dumps(card.to_dict())))
    bad = nonfinite_tensor(state)
    if problem is not None or bad is not None:
        why = problem or f"weights hold NaN or infinite values (tensor {bad!r})"
        raise CamidError(f"{path}: not written: {why}")
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
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    try:
        meta = _safetensors_metadata(data, path)
        state = load_bytes(data)
    except (SafetensorError, ValueError) as exc:
        raise IntegrityError(path, f"not a valid safetensors model file ({exc})") from exc
    if CARD_KEY not in meta or not isinstance(meta[CARD_KEY], str):
        raise IntegrityError(path, "no camid model card in the file header")
    card = validate_card(parse_json(meta[CARD_KEY], path, "model card"), path)
    if tensors_sha256(state) != card.weights_sha256:
        raise IntegrityError(path, "weights do not match the sha256 in the model card (altered)")
    bad = nonfinite_tensor(state)
    if bad is not None:
        raise IntegrityError(path, f"weights hold NaN or infinite values (tensor {bad!r})")
    check_fit(state, card, path)
    return state, card


def _safetensors_metadata(data: bytes, path: str | Path = "<bytes>") -> dict[str, str]:
    """The `__metadata__` of a safetensors blob (8-byte little-endian header size + JSON)."""
    if len(data) < 8:
        raise ValueError("file too short")
    (size,) = struct.unpack("<Q", data[:8])
    if size > len(data) - 8:
        raise ValueError("header size exceeds the file")
    header = parse_json(data[8 : 8 + size], path, "safetensors header")
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def build_from_state(state: dict[str, torch.Tensor], card: ModelCard, path: Path) -> nn.Module:
    """Instantiate the card's architecture and load the verified weights into it."""
    from camid.models.registry import get_model

    check_fit(state, card, path)
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
        raise AlreadyExistsError(f"a model named {card.name!r} already exists")
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
    return entry_path(str(ref), entry, home), entry.get("sha256")


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
        arch = entry.get("arch") if isinstance(entry, dict) else None
        rec = {"name": name, "arch": arch if isinstance(arch, str) else None, "status": "ok"}
        try:
            rec["path"] = str(entry_path(name, entry, home))
        except IntegrityError as exc:
            rec.update(path=None, status=f"refused: {exc.reason}")
            out.append(rec)
            continue
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
    path = entry_path(name, index[name], home)  # never deletes outside the registry
    del index[name]
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
        raise AlreadyExistsError(f"a model named {new_name!r} already exists")
    if new_name != card.name:
        from safetensors.torch import save_file

        card.name = new_name
        with atomic_write(dest) as tmp:
            save_file(state, str(tmp), metadata={CARD_KEY: json.dumps(card.to_dict())})
    else:
        with atomic_write(dest) as tmp:
            shutil.copyfile(src, tmp)
    index[new_name] = {"file": dest.name, "sha256": sha256_file(dest), "arch": card.arch}
    _write_index(index, home)
    return new_name, dest
