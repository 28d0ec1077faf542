"""`camid reproduce`: the paper's experiments end to end on tiny synthetic sets (seconds-long
trainings), the report files, and the reading of each figure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from camid.audit.probes import ProbeReport, ProbeResult
from camid.audit.reproduce import (
    HIGH,
    PAPER_FIGURES,
    _probe_rows,
    run_reproduce,
    split_budget,
)
from camid.cli import main
from camid.errors import UsageError

TINY = dict(
    bottles_per_device=4,
    cameras_per_device=4,
    bottle_size=(128, 128),
    camera_size=(160, 128),
    attack_images=2,
    heatmap_cells=2,
)


def _check_rows(rows: list[dict], keys: set[str]) -> None:
    assert {r["key"] for r in rows} == keys
    for r in rows:
        fig = r["figure"]
        assert (fig is not None and 0.0 <= fig <= 1.0) or r["why"], r
        assert r["reproduced"] in (True, False, None)
        assert r["why"]
        assert r["paper_figure"] == PAPER_FIGURES[r["key"]][1]


@pytest.mark.slow
def test_default_run_writes_every_row_and_both_reports(tmp_path: Path) -> None:
    steps: list[str] = []
    rep = run_reproduce(
        tmp_path / "out",
        budget_minutes=0.3,
        seed=1,
        progress=lambda ev: ev.get("event") == "step" and steps.append(ev["step"]),
        **TINY,
    )
    out = tmp_path / "out"
    assert rep.synthetic and (out / "data" / "bottles" / "disjoint.csv").is_file()
    assert (out / "data" / "cameras" / "cameras.csv").is_file()
    assert steps[0] == "building the synthetic datasets" and len(steps) == 7
    data = json.loads((out / "report.json").read_text())
    _check_rows(data["rows"], set(PAPER_FIGURES))
    assert [r.key for r in rep.rows] == list(PAPER_FIGURES)  # paper order
    assert rep.train_seconds_each == pytest.approx(split_budget(0.3), abs=0.1)
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for where, quoted in PAPER_FIGURES.values():
        assert quoted in md and where in md
        assert quoted.replace("'", "&#x27;").replace(">", "&gt;") in page
    for name in ("probes", "heatmap", "lr-check"):
        assert Path(rep.figures[name]).is_file()
        assert f"({Path(rep.figures[name]).name})" in md
    assert page.count("data:image/png;base64,") == len(rep.figures) >= 3
    assert f"{rep.reproduced} of {len(rep.rows)} findings reproduced" in md
    # every trained probe model says how far it trained (epochs, stop reason, seconds)
    trained = [n for n in rep.notes if n.startswith("probe ")]
    assert [n.split(":")[0] for n in trained] == [
        f"probe {p}" for p in ("baseline", "binary", "colour", "grey", "crop32")
    ]
    assert all(" epochs (stopped: " in n and n.endswith(" s") for n in trained)


@pytest.mark.slow
def test_cli_on_a_user_dataset_with_label_and_camera(tmp_path: Path, capsys) -> None:
    from camid.synth import make_bottles_dataset

    csv = make_bottles_dataset(tmp_path / "b", per_device=4, size=(128, 128))["balanced"]
    rc = main(["reproduce", str(csv), "-o", str(tmp_path / "r"), "--budget", "0.2", "--json"])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dataset"] == str(csv) and not data["synthetic"]
    keys = set(PAPER_FIGURES) - {"partial", "disjoint"}
    _check_rows(data["rows"], keys)
    assert data["rows"][1]["experiment"] == "label classification on the dataset"
    assert (tmp_path / "r" / "report.html").is_file()
    assert not (tmp_path / "r" / "data").exists()  # the user's data is not copied or rebuilt


def test_bad_budget_and_missing_dataset_are_one_line_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(UsageError):
        split_budget(0)
    assert main(["reproduce", "-o", str(tmp_path / "o"), "--budget", "0"]) == 2
    rc = main(["reproduce", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc in (2, 3) and "nope.csv" in err and "Traceback" not in err


def test_cli_bad_synthetic_size_is_a_usage_error(tmp_path: Path, capsys) -> None:
    rc = main(["reproduce", "-o", str(tmp_path / "o"), "--camera-size", "20x10"])
    err = capsys.readouterr().err
    assert rc == 2 and "20x10" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "data").exists()


@pytest.mark.slow
def test_cli_builds_the_synthetic_sets_at_the_given_sizes(tmp_path: Path, capsys) -> None:
    from PIL import Image

    args = ["reproduce", "-o", str(tmp_path / "r"), "--budget", "0.2", "--json",
            "--bottle-size", "96", "--camera-size", "160x128", "--bottles-per-device", "3",
            "--cameras-per-device", "4"]  # fmt: skip
    assert main(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["synthetic"] and len(data["rows"]) == len(PAPER_FIGURES)
    cams = sorted((tmp_path / "r" / "data" / "cameras" / "images").glob("*.jpg"))
    bottles = sorted((tmp_path / "r" / "data" / "bottles").rglob("*.jpg"))
    assert len(cams) == 5 * 2 * 4 and len(bottles) == 5 * 2 * 2 * 3
    with Image.open(cams[0]) as a, Image.open(bottles[0]) as b:
        assert a.size == (160, 128) and b.size == (96, 96)


def _probe_report(base: float, **acc: float) -> ProbeReport:
    results = [ProbeResult("baseline", base, base, 20, 1.0)]
    results += [ProbeResult(p, a, base, 20, 1.0) for p, a in acc.items()]
    return ProbeReport("camera", "tracenet", list("ABCDE"), 1.0, 60, 20, "", 0.2, results)


def test_probe_findings_read_against_the_baseline_and_chance() -> None:
    rows = {r.key: r for r in _probe_rows(_probe_report(1.0, binary=0.25, colour=0.9,
                                                        grey=0.5, crop32=0.7))}  # fmt: skip
    assert rows["table1"].reproduced is True
    assert rows["binary"].reproduced is True  # normalised 0.06: destroyed
    assert rows["colour"].reproduced is True  # 0.875 >= KEPT
    assert rows["grey"].reproduced is False  # 0.375: colour mattered
    assert rows["crop32"].reproduced is True  # 0.625 >= 0.5
    weak = {r.key: r for r in _probe_rows(_probe_report(HIGH - 0.2, binary=0.2))}
    assert weak["table1"].reproduced is False
    assert weak["binary"].reproduced is None and "not high" in weak["binary"].why
