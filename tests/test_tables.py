"""Tables that fit a terminal: widths, per-column policies, key/value lists, every command
rendered at COLUMNS=80 and 100 (no line wider, no cell over two lines)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from camid.cli import main
from camid.report.output import Output, layout_table, table_width

try:
    from tests.conftest import write_jpeg
    from tests.test_prnu_oracle import make_camera, shoot
    from tests.test_train_fakes import shared_model
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    from conftest import write_jpeg
    from test_prnu_oracle import make_camera, shoot
    from test_train_fakes import shared_model

WIDTHS = (80, 100)
LONG_DIR = "evidence/" + "/".join(["case-2026-0042-seized-phone-extraction"] * 3)


def _records(n: int = 3) -> list[dict]:
    return [
        {
            "path": f"/media/{LONG_DIR}/IMG_{i:04d}.jpg",
            "camera": "Hollis Mobile HM-X3 Pro Max Ultra",
            "probability": 0.904 + i / 1000,
            "decision": "inconclusive",
            "reason": "weak evidence: best match 'Hollis Mobile HM-X3' has p = 0.904, 0.006 "
            "below the model's threshold 0.91; 100% of 64 views vote for it",
            "sha256": f"{i:x}" * 64,
            "pce": 57.25,
            "p_value": 2.0e-14,
        }
        for i in range(n)
    ]


def check_fits(text: str, width: int, n_records: int) -> list[str]:
    """Assert the table fits: no line wider than `width`, at most two lines per record
    (plus title, two header lines and the rule); returns the lines."""
    lines = [line for line in text.split("\n") if line.strip()]
    assert lines, "no table printed"
    too_wide = [line for line in lines if len(line) > width]
    assert not too_wide, f"lines wider than {width}: {too_wide}"
    assert len(lines) <= 4 + 2 * n_records, text
    return lines


@pytest.mark.parametrize("width", WIDTHS)
def test_table_fits_width_with_policies(width, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    out, err = io.StringIO(), io.StringIO()
    recs = _records()
    Output("table", stdout=out, stderr=err).emit(recs, title="identification " * 10)
    lines = check_fits(out.getvalue(), width, len(recs))
    text = out.getvalue()
    assert "IMG_0000.jpg" in text  # the path is shortened from the left: the name stays
    assert "…" in text
    assert "0" * 64 not in text  # hashes short in tables
    assert ("0" * 12 + "…") in text or "sha256" in err.getvalue()
    assert "0.905" in text  # numbers are never cut
    assert lines[0].strip().endswith("…")  # a long title is cut, not wrapped


def test_dropped_columns_are_named_and_json_keeps_everything(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    out, err = io.StringIO(), io.StringIO()
    Output("table", stdout=out, stderr=err).emit(_records(2))
    check_fits(out.getvalue(), 40, 2)
    assert "leaves out" in err.getvalue() and "p_value" in err.getvalue()
    js = io.StringIO()
    Output("json", stdout=js).emit(_records(2))
    assert json.loads(js.getvalue())[0]["sha256"] == "0" * 64


def test_width_follows_columns_when_piped(monkeypatch):
    monkeypatch.setenv("COLUMNS", "87")
    assert table_width(io.StringIO()) == 87
    monkeypatch.delenv("COLUMNS")
    assert table_width(io.StringIO()) >= 20


def test_headers_break_after_underscores_and_empty_columns_hide():
    recs = [{"log10_p_value": -13.7, "open_set_unknown_rate": 0.5, "crop_note": None}] * 2
    lay = layout_table(recs, ["log10_p_value", "open_set_unknown_rate", "crop_note"], 24)
    assert lay.columns == ["log10_p_value", "open_set_unknown_rate"]
    assert sum(lay.widths) + 2 <= 24
    out = io.StringIO()
    Output("table", stdout=out).emit(recs)
    assert "crop_note" not in out.getvalue()


@pytest.mark.parametrize("width", WIDTHS)
def test_one_record_is_a_key_value_list(width, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    out = io.StringIO()
    obj = {"name": "m", "sha256": "ab" * 32, "calibration": {"unknown_threshold": 0.91},
           "classes": ["Canon EOS 5D"] * 20, "path": f"/x/{LONG_DIR}/m.safetensors"}  # fmt: skip
    Output("table", stdout=out).emit_object(obj, title="m")
    lines = check_fits(out.getvalue(), width, 6)
    assert any(line.startswith("calibration.unknown_threshold") for line in lines)
    assert "ab" * 20 in out.getvalue().replace("\n", "").replace(" ", "")  # whole hash


# ----------------------------------------------------------------------------- commands


def _run_table(capsys, monkeypatch, width: int, args: list[str]) -> tuple[int, str, str]:
    monkeypatch.setenv("COLUMNS", str(width))
    capsys.readouterr()
    rc = main([*args, "-f", "table"])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def prnu_files(tmp_path_factory):
    """Two photos and a fingerprint of their device (small frames, deep folders)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("tables") / LONG_DIR
    root.mkdir(parents=True)
    cam = make_camera("T", (128, 160), seed=5, strength=0.008)
    flats = []
    for i in range(6):
        p = root / f"flat_{i}.jpg"
        Image.fromarray(shoot(cam, 10 + i, flat=True, quality=None)).save(p, quality=92)
        flats.append(str(p))
    photos = []
    for i in range(2):
        p = root / f"photo_{i}.jpg"
        write_jpeg(p, shoot(cam, 50 + i, quality=None), make="Hollis", model="Mobile HM-X3")
        photos.append(str(p))
    fp = root.parent / "device-with-a-long-name.fp.safetensors"
    assert main(["prnu", "fingerprint", *flats, "-o", str(fp), "-n", "T" * 30, "-q", "--json"]) == 0
    return photos, str(fp)


@pytest.mark.parametrize("width", WIDTHS)
def test_commands_fit(width, prnu_files, capsys, monkeypatch, tmp_path):
    photos, fp = prnu_files
    cases = [
        (["exif", *photos], 2),
        (["prnu", "match", *photos, "-F", fp, "--threads", "1"], 2),
        (["prnu", "matrix", *photos, "-F", fp, "--threads", "1"], 2),
        (["prnu", "matrix", *photos, "-F", fp, "--threads", "1", "--summary"], 20),
        (["prnu", "residual", *photos, "--threads", "1"], 2),
        (["models", "archs"], 20),
        (["models", "show", "patchnet_tiny"], 10),
        (["info"], 20),
    ]
    for args, n in cases:
        rc, out, err = _run_table(capsys, monkeypatch, width, args)
        assert rc in (0, 1), (args, err)
        check_fits(out, width, n)
    rc, out, _ = _run_table(capsys, monkeypatch, width, ["exif", *photos])
    assert "photo_0.jpg" in out and "…" in out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return shared_model(tmp_path_factory.getbasetemp())


@pytest.mark.parametrize("width", WIDTHS)
def test_model_commands_fit(width, trained, capsys, monkeypatch):
    home, csv = trained
    monkeypatch.setenv("CAMID_HOME", str(home))
    photos = sorted(str(p) for p in (csv.parent / "images").glob("*.jpg"))[::10]
    cases = [
        (["identify", *photos, "-m", "fk3", "--workers", "0"], len(photos)),
        (["evaluate", "fk3", str(csv), "--manipulations", "none", "--workers", "0"], 8),
        (["models", "list"], 1),
        (["models", "show", "fk3"], 120),
        (["dataset", "summary", str(csv)], 6),
    ]
    for args, n in cases:
        rc, out, err = _run_table(capsys, monkeypatch, width, args)
        assert rc == 0, (args, err)
        for part in out.split("\n\n"):  # evaluate prints several tables
            if part.strip():
                check_fits(part, width, n)


def test_unreadable_inputs_counted_once(tmp_path, capsys):
    """One counter for every command: 8 files, 2 bad -> '2 input(s) of 8'."""
    for i in range(6):
        write_jpeg(tmp_path / f"ok{i}.jpg", np.full((40, 40, 3), 100 + i, np.uint8))
    (tmp_path / "bad1.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "bad2.jpg").write_bytes(b"")
    for args in (["exif", str(tmp_path)], ["prnu", "residual", str(tmp_path), "--threads", "1"]):
        capsys.readouterr()
        assert main([*args, "--json"]) == 3
        assert "2 input(s) of 8 could not be read" in capsys.readouterr().err


def test_layout_cells_fit_their_columns():
    lay = layout_table(_records(1), ["path", "reason"], 40)
    for row in lay.rows:
        for cell, w in zip(row, lay.widths, strict=True):
            assert all(len(line) <= w for line in cell)
    assert all(len(cell) <= 2 for row in lay.rows for cell in row)


# ----------------------------------------------------------------------------- PRNU outcome


def test_prnu_outcomes_and_thresholds_in_the_record():
    from camid.prnu.match import MatchResult, outcome_of, p_value_from_pce

    assert [outcome_of(x) for x in (61.0, 60.0, 57.0, 25.5, 25.0, 3.0, -4.0)] == [
        "match", "inconclusive", "inconclusive", "inconclusive", "no match", "no match",
        "no match",
    ]  # fmt: skip
    assert outcome_of(30.0, threshold=20.0) == "match"
    assert outcome_of(15.0, threshold=20.0) == "no match"  # no band under a low threshold
    p, _ = p_value_from_pce(57.0)
    r = MatchResult("A", 57.0, 0.02, p, -13.7, decision=False)
    rec = r.to_record()
    assert rec["outcome"] == "inconclusive" and rec["decision"] == "no match"
    assert rec["threshold"] == 60.0 and rec["inconclusive_above"] == 25.0
    assert p < 1e-12  # a tiny p-value now sits next to 'inconclusive', not 'no match'


def test_prnu_match_exit_code_counts_inconclusive(prnu_files, capsys):
    """A photo of the device under a threshold set above its PCE: inconclusive, exit 1;
    with the threshold under its PCE: match, exit 0."""
    photos, fp = prnu_files
    capsys.readouterr()
    assert main(["prnu", "match", photos[0], "-F", fp, "--threads", "1", "--json"]) == 0
    pce = json.loads(capsys.readouterr().out)[0]["pce"]
    assert pce > 60
    rc = main(["prnu", "match", photos[0], "-F", fp, "--threads", "1", "--json",
               "--threshold", str(pce + 1)])  # fmt: skip
    cap = capsys.readouterr()
    assert rc == 1
    assert json.loads(cap.out)[0]["outcome"] == "inconclusive"
    assert "1 inconclusive" in cap.err


def test_identify_says_which_unknown_threshold(trained, capsys, monkeypatch):
    """The table title and the reason name the threshold and where it came from."""
    home, csv = trained
    monkeypatch.setenv("CAMID_HOME", str(home))
    photo = str(sorted((csv.parent / "images").glob("*.jpg"))[0])
    card_t = None
    cases = (([], "the model's calibrated value"),
             (["--unknown-threshold", "0.999"], "--unknown-threshold"))  # fmt: skip
    for extra, words in cases:
        rc, out, err = _run_table(
            capsys, monkeypatch, 100, ["identify", photo, "-m", "fk3", *extra]
        )
        assert rc == 0 and words in out.replace("\n", " ") + err
        capsys.readouterr()
        main(["identify", photo, "-m", "fk3", "--json", *extra])
        rec = json.loads(capsys.readouterr().out)[0]
        if not extra:
            card_t = rec
    assert card_t is not None
    assert "0.999" in rec["reason"] and "below the given threshold" in rec["reason"]


@pytest.mark.parametrize("width", WIDTHS)
def test_bias_check_summary_fits_and_keeps_names_plain(width, tmp_path, monkeypatch, capsys):
    """bias-check's summary goes through the output layer: no line wider than the terminal,
    and a dataset or camera name with markup in it is printed as written."""
    from camid.data.manifest import write_manifest

    monkeypatch.setenv("COLUMNS", str(width))
    rows = []
    for cam, label in [("[bold]Cam A[/bold]", "x"), ("Cam B", "y")]:
        for k in range(6):
            img = write_jpeg(tmp_path / f"{cam[-5:].strip('[]/')}{label}{k}.jpg")
            rows.append({"path": img, "label": label, "camera": cam})
    csv_path = write_manifest(rows, tmp_path / "[/bold]leaky.csv")
    rc = main(["bias-check", str(csv_path), "--quick", "-f", "table"])
    out = capsys.readouterr().out
    assert rc == 1  # every camera under one label: confounded
    assert all(len(line) <= width for line in out.splitlines()), out
    assert "[/bold]leaky.csv" in out and "[bold]Cam A[/bold]" in out
