"""bias-check on real small bottle datasets: stage 0 figures against scipy, verdicts, exits."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from camid.audit.association import associate
from camid.audit.bias import BiasOptions, run_bias_check, write_splits
from camid.cli import main
from camid.data.manifest import read_manifest, write_manifest
from camid.synth import make_bottles_dataset


@pytest.fixture(scope="module")
def bottles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bottles")
    return make_bottles_dataset(root, per_device=4, size=(64, 64), workers=1)


def _train_table(path):
    rows = [r for r in read_manifest(path) if r.split != "test"]
    cams = sorted({r.camera for r in rows})
    labs = sorted({r.label for r in rows})
    t = np.zeros((len(cams), len(labs)), dtype=int)
    for r in rows:
        t[cams.index(r.camera), labs.index(r.label)] += 1
    return rows, t


def test_stage0_statistics_equal_scipy(bottles):
    rows, t = _train_table(bottles["disjoint"])
    a = associate(read_manifest(bottles["disjoint"]))
    st = a.stats
    assert a.scope == "train" and st.rows == len(rows)
    assert st.table.counts.tolist() == t.tolist()
    chi2, p, dof, exp = stats.chi2_contingency(t, correction=False)
    assert st.test.chi2 == pytest.approx(chi2)
    assert st.test.method == ("chi2" if exp.min() >= 5 else "fisher_monte_carlo")
    n, (r, k) = t.sum(), t.shape
    phi2 = max(0.0, chi2 / n - (k - 1) * (r - 1) / (n - 1))
    v = math.sqrt(phi2 / min(k - (k - 1) ** 2 / (n - 1) - 1, r - (r - 1) ** 2 / (n - 1) - 1))
    assert st.cramers_v == pytest.approx(v)
    pj = t / n
    mi = stats.entropy(pj.sum(1)) + stats.entropy(pj.sum(0)) - stats.entropy(pj.ravel())
    assert st.mutual_information_nats == pytest.approx(mi)
    assert st.theils_u_label_given_camera == pytest.approx(mi / stats.entropy(pj.sum(0)))
    # Disjoint: every training camera has one label; the unseen camera E is test-only
    assert st.baseline.gain == pytest.approx(1.0)
    assert {c["camera"] for c in a.single_label_cameras} == set(st.table.rows)
    assert len(a.split.only_test) == 1
    assert {(c.camera, c.label) for c in a.tied} == {
        (cam, st.table.cols[int(np.argmax(t[i]))]) for i, cam in enumerate(st.table.rows)
    }


@pytest.mark.parametrize(
    "setting, verdict, code",
    [("disjoint", "CONFOUNDED", 1), ("balanced", "CLEAN", 0), ("partial", "CLEAN", 0)],
)
def test_cli_quick_verdicts_and_exit_codes(bottles, capsys, setting, verdict, code):
    rc = main(["bias-check", str(bottles[setting]), "--quick", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == code
    assert report["schema_version"] == 1
    assert report["verdict"] == verdict
    assert report["status"] == ("FAIL" if code else "PASS")
    checks = {c["name"]: c for c in report["checks"]}
    gain = checks["camera_only_baseline"]["figures"]["gain"]
    assert (gain >= 0.3) == (setting == "disjoint")
    # same seed, same verdict and figures
    main(["bias-check", str(bottles[setting]), "--quick", "--json"])
    again = json.loads(capsys.readouterr().out)
    assert again["checks"] == report["checks"]


def test_fail_on_warn_and_thresholds(tmp_path, capsys):
    # a mild association (stage 0 reads no pixels, so the paths need not exist)
    cells = {
        ("A", "x"): 30,
        ("A", "y"): 10,
        ("B", "x"): 10,
        ("B", "y"): 30,
        ("C", "x"): 20,
        ("C", "y"): 20,
        ("D", "x"): 20,
        ("D", "y"): 20,
    }
    rows = [
        {"path": f"img/{c}{lab}{i}.jpg", "label": lab, "camera": c}
        for (c, lab), n in cells.items()
        for i in range(n)
    ]
    csv_path = write_manifest(rows, tmp_path / "mild.csv")
    report = run_bias_check(csv_path, BiasOptions(quick=True))
    gain = next(c for c in report.checks if c.name == "camera_only_baseline").figures["gain"]
    assert 0.1 < gain < 0.3
    assert report.association.tied and report.association.scope == "all"
    args = ["bias-check", str(csv_path), "--quick", "--json", "--gain-warn", str(gain - 0.01)]
    assert main(args) == 0  # WARN only: passes under the default --fail-on fail
    assert main([*args, "--fail-on", "warn"]) == 1
    assert main([*args, "--gain-fail", str(gain - 0.005)]) == 1
    capsys.readouterr()
    assert main(["bias-check", str(csv_path), "--quick", "--fail-on", "never"]) == 2


def test_cameras_from_exif_and_folder_level(tmp_path, bottles):
    manifest = read_manifest(bottles["disjoint"])
    # manifest without a camera column: EXIF Make+Model of the files
    no_cam = tmp_path / "nocam.csv"
    with open(no_cam, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        for s in manifest:
            w.writerow([s.path, s.label, s.split])
    r_exif = run_bias_check(no_cam, BiasOptions(quick=True))
    r_col = run_bias_check(bottles["disjoint"], BiasOptions(quick=True))
    assert r_exif.camera_source.kind == "exif" and r_col.camera_source.kind == "manifest"
    assert r_exif.cameras == r_col.cameras
    assert r_exif.verdict == r_col.verdict == "CONFOUNDED"
    # folder layout root/<label>/<camera>/file.jpg with --camera-level 1
    root = tmp_path / "tree"
    for s in manifest:
        d = root / s.label / s.device
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(s.path, d / s.path.name)
    r_dir = run_bias_check(root, BiasOptions(quick=True, camera_level=1))
    assert r_dir.camera_source.kind == "folder_level"
    assert len(r_dir.cameras) == len({s.device for s in manifest})
    assert r_dir.association.scope == "all"
    assert r_dir.status == "FAIL"


def test_write_split_removes_the_leak(tmp_path, bottles):
    report = run_bias_check(bottles["balanced"], BiasOptions(quick=True))
    written = write_splits(report, tmp_path / "splits", test_fraction=0.25, seed=0)
    bal = read_manifest(written["camera_balanced"]["path"])
    train = [s for s in bal if s.split == "train"]
    a = associate(bal)
    assert a.stats.baseline.gain <= 0 and a.stats.cramers_v == 0
    assert len(train) == written["camera_balanced"]["train"] > 0
    dis = read_manifest(written["camera_disjoint"]["path"])
    test_cams = {s.camera for s in dis if s.split == "test"}
    train_cams = {s.camera for s in dis if s.split != "test"}
    assert test_cams and not test_cams & train_cams
    assert {s.label for s in dis if s.split != "test"} == {"maker1", "maker2"}
    for s in bal + dis:
        assert s.path.exists()


def test_unreadable_manifest_is_an_input_error(tmp_path, capsys):
    assert main(["bias-check", str(tmp_path / "missing.csv"), "--quick"]) == 3
    assert "missing.csv" in capsys.readouterr().err


def _test_rows_and_assoc(path):
    samples = read_manifest(path)
    return [s for s in samples if s.split == "test"], associate(samples)


def test_predictions_that_follow_the_camera_fail(bottles):
    from camid.audit.bias import Thresholds
    from camid.audit.shortcut import analyse_predictions, shortcut_labels

    test, a = _test_rows_and_assoc(bottles["disjoint"])
    tied = shortcut_labels(a)
    assert len(tied) == 4  # A, B -> maker1; C, D -> maker2; E unseen
    cheat = [tied.get(s.camera, s.label) for s in test]
    th = Thresholds(min_camera_test_images=2)  # this tiny set has 2 test images per camera
    res = analyse_predictions(test, cheat, a, th, seed=0)
    follow = res["follow"]
    assert (
        follow["n_conflict"]
        == follow["n_follow"]
        == sum(s.camera in tied and tied[s.camera] != s.label for s in test)
    )
    assert follow["follow_rate"] == 1.0
    assert follow["accuracy_consistent"] == 1.0 and follow["accuracy_conflict"] == 0.0
    assert follow["drop_ci95"][0] == pytest.approx(1.0)
    assert res["exploited"]
    checks = {c.name: c for c in res["checks"]}
    assert checks["follows_camera"].status == "FAIL"
    # every tied camera predicts one label for two true labels: flagged
    flagged = {r["camera"] for r in res["per_camera"] if r["flags"]}
    assert flagged == set(tied)
    assert {e["camera"] for e in res["examples"]} <= set(tied)
    assert all(e["predicted"] != e["label"] for e in res["examples"])
    # the predicted-label x camera table adds up to the test rows
    assert sum(map(sum, res["prediction_table"]["counts"])) == len(test)
    # an honest model on the same data passes
    res = analyse_predictions(test, [s.label for s in test], a, Thresholds(), seed=0)
    assert not res["exploited"]
    assert {c.status for c in res["checks"]} == {"PASS"}


def test_balanced_predictions_have_no_conflicts(bottles):
    from camid.audit.bias import Thresholds
    from camid.audit.shortcut import analyse_predictions

    test, a = _test_rows_and_assoc(bottles["balanced"])
    rng = np.random.default_rng(0)
    noisy = [s.label if rng.random() < 0.8 else "maker1" for s in test]
    res = analyse_predictions(test, noisy, a, Thresholds(), seed=0)
    assert res["follow"]["follow_rate"] is None and not res["exploited"]
    assert res["accuracy"] == pytest.approx(
        np.mean([p == s.label for p, s in zip(noisy, test, strict=True)])
    )


def test_html_report_is_self_contained(tmp_path, bottles):
    from camid.audit.report_html import write_html

    report = run_bias_check(bottles["disjoint"], BiasOptions(quick=True))
    page = write_html(report, tmp_path / "r.html").read_text()
    assert "CONFOUNDED" in page and "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page


@pytest.mark.slow
def test_full_run_trains_and_reports(tmp_path, bottles, capsys, monkeypatch):
    monkeypatch.setenv("CAMID_HOME", str(tmp_path / "home"))
    html_path = tmp_path / "report.html"
    args = [
        "bias-check",
        str(bottles["disjoint"]),
        "--json",
        "--time-budget",
        "8",
        "--arch",
        "patchnet_tiny",
        "--html",
        str(html_path),
        "--device",
        "cpu",
    ]
    rc = main(args)
    report = json.loads(capsys.readouterr().out)
    assert rc == 1 and report["stage"] == "0+1"
    sc = report["shortcut"]
    assert sc["n_test"] == sum(s.split == "test" for s in read_manifest(bottles["disjoint"]))
    assert sc["probe"]["overall"]["balanced_accuracy"] > 0.5  # synthetic cameras differ
    assert {r["camera"] for r in sc["per_camera"]} == set(report["cameras"])
    assert sc["training"]["model_path"] is None  # nothing left in the registry
    assert not (tmp_path / "home" / "models").exists()
    assert "task_model" in {c["name"] for c in report["checks"]}
    assert html_path.read_text().count("data:image/png;base64,") >= 3
    # --save-model keeps the stand-in model in the camid home
    assert main([*args, "--save-model", "bias-task"]) == 1
    kept = json.loads(capsys.readouterr().out)["shortcut"]["training"]["model_path"]
    assert kept and Path(kept).is_file() and str(tmp_path / "home") in kept


@pytest.mark.parametrize(
    ("setting", "verdicts"),
    [("disjoint", {"CONFOUNDED"}), ("balanced", {"CLEAN", "SIGNAL_UNEXPLOITED"})],
)
def test_without_any_camera_information(tmp_path, bottles, setting, verdicts):
    """No camera column and no metadata (PNG copies): pseudo-cameras inferred from the
    pixels match the true cameras, and the status and exit code are those the real cameras
    give (groups found in the pixels also show the camera signal is present, so a clean
    Balanced set reads SIGNAL_UNEXPLOITED, as a full run with real cameras does)."""
    from PIL import Image

    from camid.audit.pseudo import adjusted_rand_index

    rows, truth = [], []
    for s in read_manifest(bottles[setting]):
        dst = tmp_path / f"{s.path.stem}.png"
        Image.open(s.path).save(dst)  # a PNG copy: no EXIF, no JPEG header
        rows.append({"path": dst, "label": s.label, "split": s.split})
        truth.append(s.camera)
    csv_path = write_manifest(rows, tmp_path / "nometa.csv")
    r = run_bias_check(csv_path, BiasOptions(quick=True))
    real = run_bias_check(bottles[setting], BiasOptions(quick=True))
    assert r.camera_source.kind == "pseudo" and not r.camera_source.weak
    assert r.verdict in verdicts and (r.status, r.exit_code("fail")) == (
        real.status,
        real.exit_code("fail"),
    )
    labels = r.camera_source.pseudo["labels"] if isinstance(r.camera_source.pseudo, dict) else (
        r.camera_source.pseudo.labels
    )
    assert adjusted_rand_index(truth, labels) >= 0.9


def test_cli_writes_split_and_cameras(tmp_path, bottles, capsys):
    out_dir, cams = tmp_path / "fix", tmp_path / "cams.csv"
    args = [
        "bias-check",
        str(bottles["disjoint"]),
        "--quick",
        "--json",
        "--write-split",
        str(out_dir),
        "--export-cameras",
        str(cams),
    ]
    assert main(args) == 1
    report = json.loads(capsys.readouterr().out)
    assert set(report["splits"]) == {"camera_balanced", "camera_disjoint"}
    exported = {str(s.path): s.camera for s in read_manifest(cams)}
    original = {str(s.path): s.camera for s in read_manifest(bottles["disjoint"])}
    assert exported == original
    # the balanced split no longer confounds: quick check on it passes
    assert (
        main(["bias-check", report["splits"]["camera_balanced"]["path"], "--quick", "--json"]) == 0
    )


def test_multiclass_follow_rate_and_control(tmp_path):
    """Three labels, three cameras each tied to one label, one untied camera."""
    from camid.audit.bias import Thresholds
    from camid.audit.shortcut import analyse_predictions

    rows = []
    for cam, lab in (("A", "x"), ("B", "y"), ("C", "z")):
        rows += [
            {"path": f"{cam}{i}.jpg", "label": lab, "camera": cam, "split": "train"}
            for i in range(30)
        ]
    rows += [
        {"path": f"D{i}.jpg", "label": "xyz"[i % 3], "camera": "D", "split": "train"}
        for i in range(30)
    ]
    test = [
        {"path": f"t{c}{lab}{i}.jpg", "label": lab, "camera": c, "split": "test"}
        for c in "ABCD"
        for lab in "xyz"
        for i in range(3)
    ]
    samples = read_manifest(write_manifest(rows + test, tmp_path / "m.csv"))
    a = associate(samples)
    test_s = [s for s in samples if s.split == "test"]
    tied = {"A": "x", "B": "y", "C": "z"}
    pred = [tied.get(s.camera, s.label) for s in test_s]
    res = analyse_predictions(test_s, pred, a, Thresholds(), seed=0)
    f = res["follow"]
    assert f["tied_cameras"] == tied
    assert f["n_conflict"] == f["n_follow"] == 3 * 2 * 3  # A, B, C: 2 other labels x 3 images
    assert f["control_rate"] == 0.0  # D's images are predicted right
    assert res["exploited"] and res["per_class"]["x"]["n"] == 12


def test_single_label_dataset_skips_training(tmp_path):
    rows = [{"path": f"{c}{i}.jpg", "label": "only", "camera": c} for c in "AB" for i in range(5)]
    report = run_bias_check(write_manifest(rows, tmp_path / "one.csv"), BiasOptions())
    assert report.stage == "0" and report.verdict == "CLEAN"
    assert any("stage 1 skipped" in n for n in report.notes)
    assert {c.name: c.status for c in report.checks}["association"] == "INFO"


def test_camera_balanced_resampling_removes_association(bottles):
    from camid.audit.shortcut import camera_balanced

    rows = read_manifest(bottles["partial"])
    cams = sorted({s.camera for s in rows})
    # confound: camera 0 keeps 2 of its maker2 training rows, camera 1 two of its maker1
    drop = {(cams[0], "maker2"), (cams[1], "maker1")}
    seen: dict = {}
    skewed = []
    for s in rows:
        key = (s.camera, s.label)
        if s.split != "test" and key in drop:
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 2:
                continue
        skewed.append(s)
    assert associate(skewed).stats.baseline.gain > 0.3
    bal = camera_balanced(skewed, seed=0)
    a = associate(bal)
    assert a.stats.cramers_v == 0 and a.stats.baseline.gain <= 0
    assert [s for s in bal if s.split == "test"] == [s for s in skewed if s.split == "test"]
    assert sum(s.split != "test" for s in bal) == 2 * 2 * 2
