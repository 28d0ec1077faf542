"""Datasets from folders (EXIF or folder cameras) and manifests; `camid dataset summary`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from camid.cli import main
from camid.data.dataset import load_dataset, summarize
from camid.data.manifest import read_manifest, write_manifest
from camid.errors import InputError
from tests.conftest import write_jpeg


@pytest.fixture
def folder_dataset(tmp_path):
    root = tmp_path / "ds"
    for label, cams in {"cat": ["Acme A1", "Acme A1", "Zeta Z9"], "dog": ["Zeta Z9"] * 2}.items():
        (root / label).mkdir(parents=True)
        for i, cam in enumerate(cams):
            make, model = cam.split()
            write_jpeg(root / label / f"{i}.jpg", make=make, model=model)
    write_jpeg(root / "dog" / "noexif.jpg", exif=None)
    (root / ".hidden").mkdir()
    write_jpeg(root / ".hidden" / "x.jpg")
    return root


def test_folder_layout_with_exif_cameras(folder_dataset):
    ds = load_dataset(folder_dataset)
    assert ds.labels == ["cat", "dog"]
    assert ds.cameras == ["Acme A1", "Zeta Z9"]
    assert len(ds.samples) == 6  # hidden folder skipped
    assert [s.path.name for s in ds.missing_camera] == ["noexif.jpg"]
    summ = summarize(ds)
    assert summ["table"]["Acme A1"] == {"cat": 2}
    assert summ["table"]["Zeta Z9"] == {"cat": 1, "dog": 2}
    assert summ["table"]["(unknown)"] == {"dog": 1}
    assert any("EXIF" in n for n in ds.notes)


def test_folder_level_cameras(tmp_path):
    root = tmp_path / "ds"
    for label in ("a", "b"):
        for cam in ("cam1", "cam2"):
            (root / label / cam).mkdir(parents=True)
            write_jpeg(root / label / cam / "x.jpg", exif=None)
    ds = load_dataset(root, camera_level=1)
    assert ds.cameras == ["cam1", "cam2"] and not ds.missing_camera


def test_manifest_from_relative_paths_reads_back_the_same_files(tmp_path, monkeypatch):
    """Regression: relative paths were stored as-is and then read relative to the CSV's
    folder, doubling it (`camid-demo/camid-demo/...`), which broke the README's demo."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work" / "images").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    inside = write_jpeg(tmp_path / "work" / "images" / "a.jpg")
    outside = write_jpeg(tmp_path / "elsewhere" / "b.jpg")
    rows = [
        {"path": Path("work/images/a.jpg"), "label": "x"},
        {"path": "elsewhere/b.jpg", "label": "y"},
    ]
    m = write_manifest(rows, Path("work") / "m.csv")
    assert m.read_text().splitlines()[1].startswith("images/a.jpg,")
    for cwd in (tmp_path, tmp_path / "elsewhere", tmp_path / "work"):
        monkeypatch.chdir(cwd)
        samples = read_manifest(tmp_path / "work" / "m.csv")
        assert [s.path.resolve() for s in samples] == [inside, outside]
        assert all(s.path.is_file() for s in samples)
    # a manifest read with a relative path and written again elsewhere still reads back
    monkeypatch.chdir(tmp_path)
    again = write_manifest(read_manifest("work/m.csv"), Path("work") / "sub" / "m2.csv")
    assert [s.path.resolve() for s in read_manifest(again)] == [inside, outside]


def test_manifest_round_trip(tmp_path):
    imgs = [write_jpeg(tmp_path / f"{i}.jpg") for i in range(3)]
    rows = [
        {"path": imgs[0], "label": "x", "camera": "C1", "device": "d1", "split": "train"},
        {"path": imgs[1], "label": "y", "camera": "C2", "device": None, "split": "test"},
        {"path": imgs[2], "label": "y", "camera": None, "device": None, "split": None},
    ]
    m = write_manifest(rows, tmp_path / "m.csv")
    text = m.read_text().splitlines()
    assert text[0] == "path,label,camera,device,split"
    assert text[1].startswith("0.jpg,")  # stored relative to the manifest
    samples = read_manifest(m)
    assert [s.path for s in samples] == imgs
    assert samples[1].device is None and samples[1].split == "test"
    ds = load_dataset(m)
    # the row with no camera value falls back to EXIF
    assert ds.samples[2].camera == "Acme Snap 100"


def test_bad_manifests(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\nx.jpg,a\n")
    with pytest.raises(InputError, match="no 'path' column"):
        read_manifest(bad)
    with pytest.raises(InputError, match="no such"):
        load_dataset(tmp_path / "missing")


def test_summary_cli(folder_dataset, capsys):
    assert main(["dataset", "summary", str(folder_dataset), "--json"]) == 0
    out, err = capsys.readouterr()
    summ = json.loads(out)
    assert summ["n_images"] == 6 and summ["missing_camera"][0].endswith("noexif.jpg")
    assert "no camera information" in err
    assert main(["dataset", "summary", str(folder_dataset), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "camera,cat,dog,total"
    assert "Zeta Z9,1,2,3" in lines


def test_summary_warns_on_a_fully_confounded_set(tmp_path, capsys):
    """Every camera under one label: a warning naming the confound and bias-check, exit 0;
    a set where a camera spans labels, or the label is the camera, gets no warning."""
    root = tmp_path / "conf"
    for label, cam in {"cat": "Acme A1", "dog": "Zeta Z9"}.items():
        (root / label).mkdir(parents=True)
        for i in range(2):
            make, model = cam.split()
            write_jpeg(root / label / f"{i}.jpg", make=make, model=model)
    assert summarize(load_dataset(root))["confound"]["full"] is True
    capsys.readouterr()
    assert main(["dataset", "summary", str(root), "--json"]) == 0
    err = capsys.readouterr().err
    assert "fully confounded" in err and "camid bias-check" in err
    (root / "dog" / "x.jpg").write_bytes((root / "cat" / "0.jpg").read_bytes())  # Acme, dog
    assert summarize(load_dataset(root))["confound"]["full"] is False
    assert main(["dataset", "summary", str(root), "--json"]) == 0
    assert "confounded" not in capsys.readouterr().err
    rows = [
        {"path": str(root / "cat" / "0.jpg"), "label": "Acme A1", "camera": "Acme A1"},
        {"path": str(root / "dog" / "0.jpg"), "label": "Zeta Z9", "camera": "Zeta Z9"},
    ]
    csv = tmp_path / "cams.csv"
    csv.write_text(
        "path,label,camera\n" + "".join(f"{r['path']},{r['label']},{r['camera']}\n" for r in rows)
    )
    assert summarize(load_dataset(csv))["confound"]["full"] is False  # camera-ID set
