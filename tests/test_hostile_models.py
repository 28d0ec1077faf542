"""Model, card, index and fingerprint files that try to lie their way into a result.

Each test writes a real file through camid's own store, then tampers with it the way an
attacker could (the card's weights hash and a fingerprint's content hash are not
signatures: anyone can recompute them), and checks that camid refuses it naming the file.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from camid.cli import main
from camid.engine.data import ViewSpec
from camid.engine.predict import OpenSetRule, aggregate
from camid.errors import IntegrityError, UsageError
from camid.identify import Identifier
from camid.models import get_model
from camid.models.store import (
    CARD_KEY,
    ModelCard,
    import_model,
    list_stored,
    load_model,
    models_dir,
    read_card,
    remove_model,
    save_model,
    tensors_sha256,
    write_model_file,
)
from camid.prnu.fingerprint import Fingerprint
from camid.prnu.residual import ResidualParams
from camid.prnu.store import (
    FORMAT,
    FORMAT_VERSION,
    content_hash,
    load_fingerprint,
    save_fingerprint,
)
from tests.conftest import natural_rgb, write_jpeg

# --------------------------------------------------------------------------- helpers


def _card(name: str = "cams", classes=("A", "B", "C")) -> ModelCard:
    return ModelCard(
        name=name,
        arch="patchnet_tiny",
        classes=list(classes),
        input_size=64,
        calibration={"temperature": 1.2, "unknown_threshold": 0.5},
    )


def _model_file(path: Path) -> Path:
    torch.manual_seed(0)
    write_model_file(get_model("patchnet_tiny", 3), _card(), path)
    return path


def _header(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def _rewrite_card(path: Path, edit) -> Path:
    """Replace the card JSON text in a model file's header (the tensors stay as they are)."""
    header, body = _header(path)
    card = json.loads(header["__metadata__"][CARD_KEY])
    header["__metadata__"][CARD_KEY] = edit(card)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    return path


def _poison_weights(path: Path) -> Path:
    """NaN in one tensor, with the card's weights hash recomputed to match (as an attacker
    who edits the file would)."""
    state = load_file(str(path))
    header, _ = _header(path)
    card = json.loads(header["__metadata__"][CARD_KEY])
    key = next(k for k in sorted(state) if state[k].is_floating_point())
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    card["weights_sha256"] = tensors_sha256(state)
    save_file(state, str(path), metadata={CARD_KEY: json.dumps(card)})
    return path


def _refused(capsys, path: Path, match: str) -> None:
    """Library and CLI import both refuse `path` with a one-line error naming it."""
    with pytest.raises(IntegrityError, match=match) as info:
        import_model(path)
    assert info.value.path == str(path)
    capsys.readouterr()
    rc = main(["models", "import", str(path)])
    err = capsys.readouterr().err
    assert rc == 3 and str(path) in err and "Traceback" not in err, err
    assert not list_stored()  # nothing reached the registry


# --------------------------------------------------------------------------- model files


def test_nan_weights_refused_at_import_and_load(tmp_path, capsys):
    path = _poison_weights(_model_file(tmp_path / "nan.safetensors"))
    _refused(capsys, path, "NaN or infinite")
    with pytest.raises(IntegrityError, match="NaN"):
        load_model(path)


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_refused(tmp_path, capsys, temperature):
    def edit(card):
        card["calibration"]["temperature"] = temperature
        return json.dumps(card)  # writes NaN / Infinity tokens, which Python's json reads

    path = _rewrite_card(_model_file(tmp_path / "t.safetensors"), edit)
    _refused(capsys, path, "temperature")
    with pytest.raises(IntegrityError, match="temperature"):
        read_card(path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: json.dumps([c]), "not an object"),
        (lambda c: json.dumps({**c, "classes": 7}), "classes"),
        (lambda c: json.dumps({**c, "classes": ["A", "A", "B"]}), "same class"),
        (lambda c: json.dumps({**c, "classes": ["A", "", "C"]}), "non-empty"),
        (lambda c: json.dumps({**c, "classes": ["A", "B", "C", "D"]}), "4 classes"),
        (lambda c: json.dumps({**c, "input_size": -5}), "input_size"),
        (lambda c: json.dumps({**c, "input_size": 1000000}), "input_size"),
        (lambda c: json.dumps({**c, "input_size": "64"}), "input_size"),
        (lambda c: json.dumps({**c, "arch": "resnet9000"}), "unknown to this camid"),
        (lambda c: json.dumps({**c, "std": [0.5, 0, 0.5]}), "std"),
        (lambda c: json.dumps({**c, "calibration": {"unknown_threshold": 1.5}}), "in \\[0, 1\\]"),
        (
            lambda c: json.dumps({**c, "calibration": {"altered": {"thresholds": {"resaved": 7}}}}),
            "altered-photo threshold",
        ),
        (
            lambda c: json.dumps({**c, "calibration": {"altered": {"temperature": -1}}}),
            "altered-photo temperature",
        ),
        (lambda c: json.dumps({**c, "recipe": {"views": {"max_views": 10**9}}}), "max_views"),
        (lambda c: json.dumps({**c, "recipe": {"views": {"probe": "sepia"}}}), "pixel probe"),
        (lambda c: "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    ],
)
def test_impossible_cards_refused_at_import(tmp_path, capsys, edit, match):
    path = _rewrite_card(_model_file(tmp_path / "bad.safetensors"), edit)
    _refused(capsys, path, match)


def test_deeply_nested_safetensors_header_refused(tmp_path, capsys):
    path = _model_file(tmp_path / "deep.safetensors")
    header, body = _header(path)
    header["x"] = None
    raw = json.dumps(header).replace("null", "[" * 200_000 + "]" * 200_000).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    _refused(capsys, path, "nested too deeply")


def test_invalid_model_is_never_written(tmp_path):
    bad = _card()
    bad.calibration = {"temperature": 0.0}
    with pytest.raises(Exception, match="not written: model card temperature"):
        write_model_file(get_model("patchnet_tiny", 3), bad, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


# --------------------------------------------------------------------------- decisions


def test_non_finite_probabilities_are_never_a_decision():
    rule = OpenSetRule(0.5)
    logits = np.array([[2.0, 0.0, 0.0], [3.0, 0.0, 1.0]])
    known, reason = rule.decide(aggregate(logits, temperature=1.0), ["a", "b", "c"])
    assert known and reason.startswith("probability")
    for agg in (aggregate(logits, temperature=0.0), aggregate(logits * np.nan)):
        assert not np.isfinite(agg.probs).all()
        assert rule.decide(agg, ["a", "b", "c"]) == (False, "non-finite probabilities")
    with pytest.raises(UsageError, match="threshold"):
        OpenSetRule(float("nan"))
    with pytest.raises(UsageError, match="min_agreement"):
        OpenSetRule(0.5, 1.5)


def test_identifier_with_nan_network_calls_the_photo_unknown(tmp_path):
    """Even a network that bypassed the file checks (built in memory) cannot name a camera
    from NaN outputs."""
    torch.manual_seed(0)
    model = get_model("patchnet_tiny", 3).eval()
    with torch.no_grad():
        model.classifier.bias.fill_(float("nan"))
    photo = write_jpeg(tmp_path / "p.jpg", natural_rgb(128, 128))
    ident = Identifier(
        model,
        _card(),
        torch.device("cpu"),
        views=ViewSpec(64, "grid", 4),
        rule=OpenSetRule(0.5),
        workers=0,
    )
    (rec,) = list(ident.identify([photo]))
    assert rec.decision == "unknown" and rec.camera == "unknown"
    assert rec.reason == "non-finite probabilities"
    with pytest.raises(UsageError, match="temperature"):
        Identifier(
            model, _card(), torch.device("cpu"), views=ViewSpec(64), rule=OpenSetRule(),
            temperature=0.0,
        )  # fmt: skip


# --------------------------------------------------------------------------- registry index


def _index_with(entry: dict) -> Path:
    index = models_dir() / "index.json"
    data = json.loads(index.read_text())
    data["evil"] = entry
    index.write_text(json.dumps(data))
    return index


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "subdir", "symlink", "not-a-model"])
def test_index_cannot_point_outside_the_registry(tmp_path, capsys, kind):
    save_model(get_model("patchnet_tiny", 3), _card())
    victim = tmp_path / "victim.txt"
    victim.write_text("evidence\n")
    outside = _model_file(tmp_path / "outside.safetensors")
    if kind == "symlink":
        (models_dir() / "evil.safetensors").symlink_to(outside)
    file = {
        "dotdot": "../../" + "../" * len(tmp_path.parts) + str(victim)[1:],
        "absolute": str(victim),
        "subdir": "sub/evil.safetensors",
        "symlink": "evil.safetensors",
        "not-a-model": "index.json",
    }[kind]
    index = _index_with({"file": file, "sha256": None, "arch": "patchnet_tiny"})

    with pytest.raises(IntegrityError, match="refused") as info:
        remove_model("evil")
    assert info.value.path == str(index)
    for args in (["models", "remove", "evil"], ["models", "show", "evil"]):
        rc = main(args)
        err = capsys.readouterr().err
        assert rc == 3 and "refused" in err and "Traceback" not in err, (args, err)
    photo = write_jpeg(tmp_path / "p.jpg", natural_rgb(96, 96))
    rc = main(["identify", str(photo), "-m", "evil", "--json", "--device", "cpu"])
    assert rc == 3 and "refused" in capsys.readouterr().err
    with pytest.raises(IntegrityError):
        load_model("evil")
    # list shows the bad entry as refused and the good one as usable
    assert main(["models", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cams"]["status"] == "ok" and rows["evil"]["status"].startswith("refused")
    # nothing outside the registry was touched, and the index still lists the entry
    assert victim.read_text() == "evidence\n" and outside.is_file()
    assert "evil" in json.loads(index.read_text())
    remove_model("cams")  # a sound entry is still removable
    assert not (models_dir() / "cams.safetensors").exists()


# --------------------------------------------------------------------------- fingerprints


def _fingerprint_file(path: Path) -> Path:
    k = np.random.default_rng(0).normal(0, 0.01, (96, 80)).astype(np.float32)
    save_fingerprint(Fingerprint(k, "cam-a", 6, ResidualParams()), path)
    return path


def _rewrite_fingerprint(path: Path, k: np.ndarray | None = None, **info_changes) -> Path:
    """Edit a fingerprint file's tensor and metadata, recomputing its content hash."""
    from safetensors.numpy import load, save

    header, _ = _header(path)
    info = json.loads(header["__metadata__"]["info"])
    k = load(path.read_bytes())["fingerprint"] if k is None else k.astype(np.float32)
    info.update(height=int(k.shape[0]), width=int(k.shape[1]))
    for key, value in info_changes.items():
        if key == "sigma":
            info["params"]["sigma"] = value
        else:
            info[key] = value
    text = json.dumps(info, sort_keys=True, separators=(",", ":"))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "info": text,
        "sha256": content_hash(text, k),
    }
    path.write_bytes(save({"fingerprint": np.ascontiguousarray(k)}, metadata=meta))
    return path


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"sigma": -1.0}, "sigma"),
        ({"sigma": float("nan")}, "sigma"),
        ({"sigma": float("inf")}, "sigma"),
        ({"k": np.ones((1, 1))}, "1x1 px"),
        ({"k": np.zeros((96, 80))}, "constant"),
        ({"k": np.full((96, 80), np.nan)}, "NaN or infinite"),
        ({"k": np.full((96, 80), np.inf)}, "NaN or infinite"),
        ({"image_count": "6"}, "image_count"),
        ({"image_count": 0}, "image_count"),
        ({"device_name": ["x"]}, "device_name"),
        ({"images": "a.jpg"}, "images"),
    ],
)
def test_impossible_fingerprints_refused_at_load(tmp_path, capsys, change, match):
    good = _fingerprint_file(tmp_path / "good.fp.safetensors")
    assert load_fingerprint(good).shape == (96, 80)
    path = _rewrite_fingerprint(_fingerprint_file(tmp_path / "a.fp.safetensors"), **change)
    with pytest.raises(IntegrityError, match=match) as info:
        load_fingerprint(path)
    assert info.value.path == str(path)
    photo = write_jpeg(tmp_path / "p.jpg", natural_rgb(96, 80))
    rc = main(["prnu", "match", str(photo), "-F", str(path), "--json"])
    err = capsys.readouterr().err
    assert rc == 3 and str(path) in err and "Traceback" not in err, err


def test_deeply_nested_fingerprint_header_refused(tmp_path):
    path = _fingerprint_file(tmp_path / "d.fp.safetensors")
    header, body = _header(path)
    header["x"] = None
    raw = json.dumps(header).replace("null", "[" * 200_000 + "]" * 200_000).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)
    with pytest.raises(IntegrityError, match="nested too deeply"):
        load_fingerprint(path)
    assert math.isfinite(
        load_fingerprint(_fingerprint_file(tmp_path / "ok.fp.safetensors")).k[0, 0]
    )
