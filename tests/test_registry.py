"""Model registry: builders, safe storage round trip, tamper and pickle refusal, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from camid.cli import main
from camid.errors import IntegrityError, NotFoundError, UsageError
from camid.models import get_model, list_models
from camid.models.registry import get_arch, load_torch_state_dict
from camid.models.store import (
    ModelCard,
    export_model,
    import_model,
    list_stored,
    load_model,
    models_dir,
    remove_model,
    save_model,
)
from tests.conftest import evil_pickle

REQUIRED = {"resnet34", "resnet101", "inception_v3", "alexnet", "vgg16", "densenet161",
            "mobilenet_v2", "patchnet"}  # fmt: skip


def test_required_architectures_registered():
    assert set(list_models()) >= REQUIRED
    with pytest.raises(NotFoundError, match="choose one of"):
        get_arch("resnet9000")


@pytest.mark.parametrize("name", sorted(list_models()))
def test_every_arch_builds_and_runs(name):
    model = get_model(name, 4).eval()
    size = max(get_arch(name).min_input_size, 64)
    with torch.no_grad():
        logits = model(torch.rand(1, 3, size, size))
    assert logits.shape == (1, 4)


def test_patchnet_is_size_agnostic():
    model = get_model("patchnet_tiny", 3).eval()
    with torch.no_grad():
        for s in (32, 48, 96):
            assert model(torch.rand(2, 3, s, s)).shape == (2, 3)


def _card(name="cams", classes=("A", "B", "C")) -> ModelCard:
    return ModelCard(
        name=name,
        arch="patchnet_tiny",
        classes=list(classes),
        input_size=64,
        recipe={"epochs": 1},
        metrics={"val_accuracy": 0.5},
        calibration={"temperature": 1.3},
    )


def test_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = get_model("patchnet_tiny", 3).eval()
    path = save_model(model, _card())
    assert path.parent == models_dir() and path.suffix == ".safetensors"
    loaded, card = load_model("cams")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert card.classes == ["A", "B", "C"] and card.calibration["temperature"] == 1.3
    assert len(card.weights_sha256) == 64 and card.parameters > 0
    assert [r["name"] for r in list_stored()] == ["cams"]
    with pytest.raises(UsageError, match="exists"):
        save_model(model, _card())
    # no temporary files are left next to the model
    assert not [p for p in models_dir().iterdir() if p.name.endswith(".part")]


def test_altered_weights_are_refused(tmp_path):
    save_model(get_model("patchnet_tiny", 3), _card())
    path = models_dir() / "cams.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # flip bits inside the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="altered"):
        load_model("cams")
    # a standalone file with altered weights fails the card's weights hash
    with pytest.raises(IntegrityError, match="sha256 in the model card"):
        load_model(path)


def test_pickle_payload_never_executes(tmp_path, capsys):
    marker = tmp_path / "pwned"
    for name in ("evil.safetensors", "evil.pt"):
        f = evil_pickle(tmp_path / name, marker)
        with pytest.raises(IntegrityError, match="pickle"):
            import_model(f)
        rc = main(["models", "import", str(f)])
        assert rc == 3 and "pickle" in capsys.readouterr().err
    # torchvision-style weights are read with weights_only=True: the payload is refused too
    with pytest.raises(IntegrityError, match="refused"):
        load_torch_state_dict(evil_pickle(tmp_path / "weights.pth", marker))
    assert not marker.exists()


def test_pretrained_needs_local_file_and_never_downloads(tmp_path):
    with pytest.raises(UsageError, match="never downloads"):
        get_model("mobilenet_v2", 5, pretrained=True)


def test_pretrained_from_local_torch_hub_file(tmp_path, isolated_home):
    # a stand-in ImageNet file with the real file name layout (no hash prefix check: renamed)
    src = get_model("mobilenet_v2", 1000)
    ckpt_dir = isolated_home / "torch" / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    torch.save(src.state_dict(), ckpt_dir / "mobilenet_v2-b0353104.pth")
    # the name claims sha256 prefix b0353104: a different file must be refused
    with pytest.raises(IntegrityError, match="sha256"):
        get_model("mobilenet_v2", 5, pretrained=True)


def test_pretrained_success_loads_the_local_file_and_replaces_the_head(isolated_home):
    """The ImageNet-initialisation path end to end: a real (small) weights file named the
    torchvision way, with the true sha256 prefix, is verified, loaded and given a new head."""
    from camid.io.image import sha256_file
    from camid.models.registry import _REGISTRY, register_model

    def tiny(num_classes: int) -> torch.nn.Module:
        net = torch.nn.Sequential()
        net.features = torch.nn.Conv2d(3, 8, 3)
        net.pool = torch.nn.AdaptiveAvgPool2d(1)
        net.flat = torch.nn.Flatten()
        net.classifier = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(8, num_classes))
        return net

    torch.manual_seed(7)
    src = tiny(1000)
    ckpt_dir = isolated_home / "torch" / "hub" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    tmp = ckpt_dir / "tiny.pth"
    torch.save(src.state_dict(), tmp)
    fname = f"tinyvision-{sha256_file(tmp)[:8]}.pth"
    tmp.rename(ckpt_dir / fname)
    _REGISTRY.pop("tinyvision_test", None)
    register_model(
        "tinyvision_test", input_size=32, min_input_size=8, description="test",
        imagenet_file=fname,
    )(tiny)  # fmt: skip
    try:
        model = get_model("tinyvision_test", 4, pretrained=True)
        assert torch.equal(model.features.weight, src.features.weight)  # ImageNet weights kept
        assert model.classifier[1].out_features == 4  # a fresh head for our classes
        assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 4)
        assert get_arch("tinyvision_test").to_record()["imagenet_available"] is True
    finally:
        _REGISTRY.pop("tinyvision_test", None)


def test_export_import_remove(tmp_path):
    save_model(get_model("patchnet_tiny", 2), _card(classes=("x", "y")))
    exported = export_model("cams", tmp_path)
    assert exported.is_file()
    name, _ = import_model(exported, name="cams-copy")
    assert name == "cams-copy"
    _, card = load_model("cams-copy")
    assert card.name == "cams-copy" and card.classes == ["x", "y"]
    remove_model("cams")
    assert [r["name"] for r in list_stored()] == ["cams-copy"]
    with pytest.raises(NotFoundError):
        load_model("cams")


def test_models_cli(tmp_path, capsys):
    save_model(get_model("patchnet_tiny", 2), _card(classes=("x", "y")))
    assert main(["models", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "cams" and rows[0]["status"] == "ok"
    assert main(["models", "list", "--archs", "--json"]) == 0
    assert {r["name"] for r in json.loads(capsys.readouterr().out)} >= REQUIRED
    assert main(["models", "show", "cams", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["arch"] == "patchnet_tiny" and card["classes"] == ["x", "y"]
    assert main(["models", "export", "cams", str(tmp_path / "c.safetensors")]) == 0
    assert main(["models", "remove", "cams"]) == 0
    assert main(["models", "import", str(tmp_path / "c.safetensors"), "--name", "back"]) == 0
    capsys.readouterr()
    assert main(["models", "show", "nope"]) == 2
    assert "no model named" in capsys.readouterr().err


def test_tracenet_heads_in_training_and_decision_logits_in_eval():
    from camid.models.registry import head_names

    net = get_model("tracenet", 4)
    assert head_names(net) == ("combined", "pixels", "compression")
    x = torch.randn(3, 3, 64, 64)
    net.train()
    assert net(x).shape == (3, 3, 4)
    net.eval()
    with torch.no_grad():
        out, ev = net(x), net.evidence(x)
    assert out.shape == (3, 4) and ev.shape == (3, 3, 4)
    assert torch.allclose(out, ev[:, 0])
    assert head_names(get_model("patchnet_tiny", 4)) is None
