"""`camid demo` end to end on a small synthetic set: every step runs for real."""

from __future__ import annotations

import json

from camid.cli import main


def test_demo_runs_every_step_and_summarises(tmp_path, capsys, monkeypatch):
    """As the README runs it: from the working directory, default (relative) output folder."""
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "camid-demo"
    rc = main(["demo", "--per-device", "6", "--size", "128x96", "--bottles-per-device", "4",
               "--train-seconds", "4", "--json"])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0, err[-2000:]
    rows = {r["step"]: r for r in json.loads(out)}
    assert list(rows) == [
        "synth", "prnu matrix", "evaluate", "identify", "heatmap", "lr-check", "bias-check",
        "total",
    ]  # fmt: skip
    assert "60 photos" in rows["synth"]["result"]
    # PRNU separates the 10 devices even at this small size
    auc = float(rows["prnu matrix"]["result"].split("AUC ")[1].split(",")[0])
    assert auc > 0.9
    assert "photos of the unseen Veyra V27 Pro called unknown" in rows["identify"]["result"]
    # the commands were shown to the user, data went to stdout only as the summary
    assert "$ camid synth cameras" in err and "$ camid train" in err
    assert (work / "fingerprints" / "A1.fp.safetensors").is_file()
    assert (work / "confusion.png").is_file()
    # the flagship: the Disjoint bottle split is flagged, the Balanced one is not
    assert "disjoint: CONFOUNDED (FAIL)" in rows["bias-check"]["result"]
    assert "balanced: CLEAN (PASS)" in rows["bias-check"]["result"]
    assert (work / "bias-check-disjoint.html").is_file()
    assert list((work / "heatmaps").glob("*.overlay.png"))
    assert (work / "lr-check" / "lr-check.png").is_file()
    assert "right halves" in rows["lr-check"]["result"]
