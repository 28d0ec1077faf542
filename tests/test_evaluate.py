"""camid evaluate: per-condition accuracy, confusion matrix PNG, open-set unknown rates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from camid.cli import main
from camid.data.dataset import load_dataset
from camid.data.manifest import read_manifest, write_manifest
from tests.test_train_fakes import KNOWN, OUTSIDER, shared_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The shared 3-camera model; a test manifest that adds the never-seen fourth camera."""
    home, csv = shared_model(tmp_path_factory.getbasetemp())
    rows = read_manifest(csv)
    # every test row of every camera, the outsider's training rows too (never seen)
    test_rows = [r for r in rows if r.split == "test" or r.camera == OUTSIDER]
    for r in test_rows:
        r.split = "test"
    test_csv = write_manifest(test_rows, csv.parent / "test.csv")
    return home, test_csv


def test_evaluate_json_conditions_confusion_and_open_set(
    setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    home, test_csv = setup
    monkeypatch.setenv("CAMID_HOME", str(home))
    plot = tmp_path / "confusion.png"
    rc = main(
        [
            "evaluate",
            "fk3",
            str(test_csv),
            "--manipulations",
            "jpeg:90,gamma:1.2",
            "--plot",
            str(plot),
            "--json",
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rep = json.loads(cap.out)
    assert [c["condition"] for c in rep["conditions"]] == ["original", "jpeg:90", "gamma:1.2"]
    assert plot.read_bytes()[:4] == b"\x89PNG"
    orig = rep["conditions"][0]
    assert orig["n"] == 9  # 3 known cameras x 3 test images
    assert orig["accuracy"] >= 0.75
    assert set(orig["per_class"]) == set(KNOWN)
    matrix = orig["confusion"]["matrix"]
    assert sum(map(sum, matrix)) == 9
    assert sum(matrix[i][i] for i in range(3)) == round(orig["accuracy"] * 9)
    # the outsider camera is called unknown more often than the known ones
    open_set = orig["open_set"]
    assert open_set["n"] == 10 and OUTSIDER in open_set["per_class"]
    assert open_set["unknown_rate"] > orig["unknown_rate"]


def test_evaluate_table_and_no_split_uses_all_rows(
    setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    home, test_csv = setup
    monkeypatch.setenv("CAMID_HOME", str(home))
    rows = [r for r in read_manifest(test_csv) if r.camera == KNOWN[0]][:2]
    for r in rows:
        r.split = None
    csv = write_manifest(rows, test_csv.parent / "nosplit.csv")
    assert len(load_dataset(csv).samples) == 2
    rc = main(["evaluate", "fk3", str(csv), "--manipulations", "none", "--format", "table"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "original" in cap.out and "confusion matrix" in cap.out
    assert "all 2 rows" in cap.err


def test_evaluate_reports_unreadable_test_images(
    setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    home, test_csv = setup
    monkeypatch.setenv("CAMID_HOME", str(home))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"junk")
    rows = [r for r in read_manifest(test_csv)][:2]
    rows.append(type(rows[0])(path=bad, camera=KNOWN[0], split="test"))
    csv = write_manifest(rows, tmp_path / "withbad.csv")
    rc = main(["evaluate", "fk3", str(csv), "--manipulations", "none", "--json"])
    cap = capsys.readouterr()
    assert rc == 3
    rep = json.loads(cap.out)
    assert len(rep["errors"]) == 1 and "bad.jpg" in rep["errors"][0]


def test_decided_share_and_accuracy_side_by_side():
    """0.95 closed-set accuracy with 90% called unknown: the table says 10% decided."""
    import numpy as np

    from camid.identify.evaluate import EvaluationReport, _summarise

    closed = np.array([[19, 1], [1, 19]])
    matrix = np.array([[2, 0, 18], [0, 2, 18]])  # 4 of 40 decided, all correct
    cond = _summarise("original", ["a", "b"], closed, matrix, {})
    assert cond.accuracy == 0.95 and cond.unknown_rate == 0.9
    assert cond.decided_share == pytest.approx(0.1) and cond.accuracy_decided == 1.0
    assert cond.identified == pytest.approx(0.1)
    report = EvaluationReport("m", "x", "camera", ["a", "b"], 40, conditions=[cond])
    row = report.summary_rows()[0]
    keys = list(row)
    assert keys.index("decided") + 1 == keys.index("accuracy_decided")
    assert row["closed_set_accuracy"] == 0.95 and row["identified"] == pytest.approx(0.1)
    none = _summarise("x", ["a", "b"], closed, np.array([[0, 0, 20], [0, 0, 20]]), {})
    assert none.accuracy_decided is None and none.decided_share == 0.0


def test_figures_say_what_they_show(tmp_path):
    """The confusion figure gets an 'unknown' column when photos were called unknown; the
    training curve is written with the best epoch and the crop note (PNG, real matplotlib)."""
    import numpy as np
    from PIL import Image

    from camid.identify.evaluate import _summarise
    from camid.report.plots import _fit_name, confusion_figure, training_curve

    closed = np.array([[3, 1], [0, 4]])
    cond = _summarise("original", ["a", "b"], closed, np.array([[3, 0, 1], [0, 4, 0]]), {})
    assert cond.figure_confusion()["predicted"] == ["a", "b", "unknown"]
    sure = _summarise("original", ["a", "b"], closed, np.array([[3, 1, 0], [0, 4, 0]]), {})
    assert sure.figure_confusion()["predicted"] == ["a", "b"]
    long = "Hollis Mobile HM-X3 Professional Edition Ultra Max"
    assert all(len(line) <= 22 for line in _fit_name(long).split("\n"))
    c = cond.figure_confusion()
    png = confusion_figure(c["matrix"], [long, "b"], [long, "b", "unknown"], tmp_path / "c.png")
    assert Image.open(png).size[0] > 400
    hist = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.5} for e in (1, 2, 3)]
    png = training_curve(hist, tmp_path / "t.png", "m", best_epoch=2, manipulated=True)
    assert Image.open(png).format == "PNG"
