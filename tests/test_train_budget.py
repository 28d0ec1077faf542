"""`--time-budget` without `--epochs`: train until the budget or until validation stops
improving (patience), not for a fixed 20 epochs (issue 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from camid.cli import main
from camid.data.dataset import load_dataset
from camid.engine.train import TrainConfig, _is_better, _resolve_config, train
from camid.errors import UsageError
from camid.models.store import read_card
from tests.test_train_fakes import make_fake_cameras

TINY = dict(arch="patchnet_tiny", patch=32, patches_per_image=2, batch_size=6, val_fraction=0.25)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three fake cameras, 4 images of 64x64 each (one held out per camera)."""
    root = tmp_path_factory.mktemp("tiny")
    return make_fake_cameras(root, ["A a", "B b", "C c"], 4, 0, size=(64, 64))


class Stop(Exception):
    pass


def test_epochs_default_and_patience_resolution():
    cfg, _ = _resolve_config(TrainConfig(name="x", **TINY))
    assert cfg.epochs == 20 and cfg.patience == 0  # unchanged default without a budget
    cfg, _ = _resolve_config(TrainConfig(name="x", time_budget=60, **TINY))
    assert cfg.epochs is None and cfg.patience == 8  # open-ended: budget or patience
    cfg, _ = _resolve_config(TrainConfig(name="x", time_budget=60, epochs=5, **TINY))
    assert cfg.epochs == 5 and cfg.patience == 0
    with pytest.raises(UsageError, match="patience"):
        _resolve_config(TrainConfig(name="x", patience=-1, **TINY))


def test_budget_without_epochs_goes_past_20_epochs(tiny: Path, tmp_path: Path):
    samples = load_dataset(tiny).samples
    epochs: list[dict] = []

    def watch(ev: dict) -> None:
        if ev["event"] == "epoch":
            epochs.append(ev)
            if ev["epoch"] == 22:
                raise Stop  # the budget (10 min) and patience (100) would allow more

    with pytest.raises(Stop):
        cfg = TrainConfig(name="long", time_budget=600, patience=100, **TINY)
        train(cfg, samples, home=tmp_path, progress=watch)
    assert [e["epoch"] for e in epochs] == list(range(1, 23))


def test_budget_without_epochs_stops_on_patience(tiny: Path, tmp_path: Path, capsys):
    samples = load_dataset(tiny).samples
    res = train(
        TrainConfig(name="pat", time_budget=300, patience=2, lr=0.05, **TINY),
        samples,
        home=tmp_path,
    )
    best = res.card.metrics["best_epoch"]
    assert res.stopped == "patience" and res.card.metrics["stopped"] == "patience"
    assert len(res.history) == best + 2  # stopped 2 epochs after the last improvement
    assert res.card.recipe["epochs"] is None and res.card.recipe["patience"] == 2
    # no epoch after the best one was better than it
    vm = {k: res.history[best - 1][k] for k in ("val_accuracy", "val_loss")}
    for row in res.history[best:]:
        assert not _is_better({k: row[k] for k in vm}, {"metrics": vm})
    # the CLI: --time-budget alone, --patience, and the stop reason in the record
    rc = main(
        ["train", str(tiny), "-n", "cli", "--arch", "patchnet_tiny", "--patch", "32",
         "--patches-per-image", "2", "--batch-size", "6", "--lr", "0.05",
         "--time-budget", "300", "--patience", "2", "--json"]
    )  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert '"stopped": "patience"' in cap.out and "no better validation" in cap.err
    assert read_card("cli")[0].metrics["stopped"] == "patience"


def test_budget_on_resume_is_time_to_spend_now(tiny: Path, tmp_path: Path):
    """A run interrupted after a long first part: --resume with a budget trains on for the
    budget given now, not minus the earlier run's time (issue 17)."""
    import torch

    samples = load_dataset(tiny).samples

    def interrupt(ev: dict) -> None:
        if ev["event"] == "epoch" and ev["epoch"] == 1:
            raise Stop

    cfg = TrainConfig(name="again", epochs=3, time_budget=600, **TINY)
    with pytest.raises(Stop):
        train(cfg, samples, home=tmp_path, progress=interrupt)
    ckpt = tmp_path / "runs" / "again" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    state["elapsed"] = 5000.0  # the first part took longer than the whole budget
    torch.save(state, ckpt)
    events: list[dict] = []
    res = train(cfg, samples, home=tmp_path, resume=True, progress=events.append)
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [2, 3]
    assert res.stopped == "epochs"
