"""`camid prnu residual|fingerprint|match|matrix` end to end on synthetic JPEG cameras."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from camid.cli import main

try:
    from tests.test_prnu_oracle import make_camera, shoot
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    from test_prnu_oracle import make_camera, shoot

SHAPE = (128, 160)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small images: one intra-op thread is faster on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Folders of flat frames and evidence photos for two devices of one model (JPEG q90)."""
    root = tmp_path_factory.mktemp("prnu_cli")
    cams = {
        "A": make_camera("A", SHAPE, seed=21, strength=0.007, model_seed=3),
        "B": make_camera("B", SHAPE, seed=22, strength=0.007, model_seed=3),
    }
    out = {"root": root}
    for name, cam in cams.items():
        flat = root / f"flat_{name}" / "sub"
        flat.mkdir(parents=True)
        for i in range(6):
            Image.fromarray(shoot(cam, 10 + i, flat=True, quality=None)).save(
                flat / f"f{i}.jpg", quality=90
            )
        photos = []
        for i in range(2):
            p = root / "evidence" / f"{name}_{i}.jpg"
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(shoot(cam, 300 + i, quality=None)).save(p, quality=90)
            photos.append(p)
        out[name] = photos
        out[f"flat_{name}"] = flat.parent
    return out


@pytest.fixture(scope="module")
def fps(shots):
    """Fingerprint files of both devices made through the CLI."""
    torch.set_num_threads(1)
    files = {}
    for name in ("A", "B"):
        f = shots["root"] / f"{name}.fp.safetensors"
        rc = main(["prnu", "fingerprint", str(shots[f"flat_{name}"]), "-r", "-o", str(f),
                   "--device-name", name, "--json", "-q"])  # fmt: skip
        assert rc == 0
        files[name] = f
    return files


def run_json(capsys, args):
    """Run the CLI, return (exit code, parsed stdout, stderr)."""
    capsys.readouterr()
    rc = main(args)
    cap = capsys.readouterr()
    return rc, (json.loads(cap.out) if cap.out.strip() else None), cap.err


def test_fingerprint_command(fps, capsys, shots):
    """The fingerprint file carries the device name, count, size and a verifiable hash."""
    from camid.prnu.store import load_fingerprint

    fp = load_fingerprint(fps["A"])
    assert fp.device_name == "A" and fp.image_count == 6 and fp.shape == SHAPE
    assert len(fp.images) == 6 and all(len(i["sha256"]) == 64 for i in fp.images)
    rc, data, err = run_json(
        capsys,
        ["prnu", "fingerprint", str(shots["flat_A"]), "-r", "-n", "A2",
         "-o", str(shots["root"] / "A2.fp.safetensors"), "--json"],
    )  # fmt: skip
    assert rc == 0
    rec = data[0]
    assert rec["device_name"] == "A2" and rec["image_count"] == 6
    assert rec["width"] == SHAPE[1] and rec["height"] == SHAPE[0]
    assert len(rec["fingerprint_sha256"]) == 64 and rec["camid_version"]
    assert "only 6 image(s)" in err


def test_match_same_device(fps, shots, capsys):
    """Each evidence photo matches its own device and not the other (same model)."""
    photos = [str(p) for p in shots["A"] + shots["B"]]
    rc, data, _ = run_json(
        capsys,
        ["prnu", "match", *photos, "-F", str(fps["A"]), "-F", str(fps["B"]), "--json"],
    )
    assert rc == 0
    assert len(data) == 8
    for rec in data:
        same = rec["path"].split("/")[-1][0] == rec["fingerprint"]
        assert (rec["decision"] == "match") == same, rec
        assert (rec["pce"] > 60) == same
        assert len(rec["sha256"]) == 64 and len(rec["fingerprint_sha256"]) == 64
        assert rec["rotation"] == "rot0" and rec["camid_version"]
        assert 0.0 <= rec["p_value"] <= 1.0


def test_match_no_match_exit_code(fps, shots, capsys):
    """A photo that matches no fingerprint: exit 1, or 0 with --no-match-ok."""
    args = ["prnu", "match", str(shots["B"][0]), "-F", str(fps["A"]), "--json"]
    rc, data, err = run_json(capsys, args)
    assert rc == 1 and data[0]["decision"] == "no match"
    assert "matched no fingerprint" in err
    rc, _, _ = run_json(capsys, [*args, "--no-match-ok"])
    assert rc == 0


def test_match_rotated_photo(fps, shots, capsys, tmp_path):
    """A photo whose pixels are stored rotated is matched by trying orientations."""
    img = np.asarray(Image.open(shots["A"][0]))
    rotated = tmp_path / "rotated.png"
    Image.fromarray(np.ascontiguousarray(np.rot90(img, 3))).save(rotated)
    rc, data, _ = run_json(capsys, ["prnu", "match", str(rotated), "-F", str(fps["A"]), "--json"])
    assert rc == 0 and data[0]["rotation"] == "rot270" and data[0]["pce"] > 60


def test_bad_file_in_batch(fps, shots, capsys, tmp_path):
    """An unreadable file gets a one-line error, the batch goes on, exit 3 at the end."""
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image\n")
    rc, data, err = run_json(
        capsys,
        ["prnu", "match", str(bad), str(shots["A"][0]), "-F", str(fps["A"]), "--json"],
    )
    assert rc == 3
    assert len(data) == 1 and data[0]["decision"] == "match"
    lines = [ln for ln in err.splitlines() if "broken.jpg" in ln]
    assert len(lines) == 1 and lines[0].startswith("Error:")
    assert "Traceback" not in err


def test_tampered_fingerprint_refused(fps, shots, capsys, tmp_path):
    """A modified fingerprint file is refused with exit 3 and a one-line message."""
    data = bytearray(fps["A"].read_bytes())
    data[-100] ^= 0x40
    bad = tmp_path / "tampered.fp.safetensors"
    bad.write_bytes(bytes(data))
    rc, out, err = run_json(capsys, ["prnu", "match", str(shots["A"][0]), "-F", str(bad)])
    assert rc == 3 and out is None
    assert "hash mismatch" in err and "Traceback" not in err


def test_matrix_with_manifest(fps, shots, capsys, tmp_path):
    """Ground truth from a manifest's device column: AUC 1, EER 0, top-1 1."""
    manifest = tmp_path / "m.csv"
    rows = ["path,label,camera,device,split"]
    for name in ("A", "B"):
        rows += [f"{p},,Acme X,{name}," for p in shots[name]]
    manifest.write_text("\n".join(rows) + "\n")
    scores = tmp_path / "scores.csv"
    rc, data, _ = run_json(
        capsys,
        ["prnu", "matrix", "-F", str(fps["A"]), "-F", str(fps["B"]), "--manifest",
         str(manifest), "--summary", "--scores-csv", str(scores), "--json"],
    )  # fmt: skip
    assert rc == 0
    s = data[0]
    assert s["auc"] == 1.0 and s["eer"] == 0.0 and s["top1"] == 1.0
    assert s["positives"] == 4 and s["negatives"] == 4 and s["fpr_at_threshold"] == 0.0
    lines = scores.read_text().splitlines()
    assert lines[0] == "path,sha256,device,A,B" and len(lines) == 5
    rc, data, err = run_json(
        capsys,
        ["prnu", "matrix", *[str(p) for p in shots["A"]], "-F", str(fps["A"]), "-F",
         str(fps["B"]), "--manifest", str(manifest), "--json"],
    )  # fmt: skip
    assert rc == 0 and len(data) == 4
    assert {r["same_device"] for r in data} == {True, False}
    assert "AUC 1.0000" in err


def test_residual_command(shots, capsys, tmp_path):
    """Residuals are written as safetensors next to a record per photo."""
    from safetensors.numpy import load_file

    rc, data, _ = run_json(
        capsys,
        ["prnu", "residual", str(shots["A"][0]), "-o", str(tmp_path), "--compat", "--json",
         "--device", "cpu", "--threads", "1"],
    )  # fmt: skip
    assert rc == 0
    rec = data[0]
    assert rec["params"]["sigma"] == 5.0 and rec["params"]["compat"] is True
    arr = load_file(rec["output"])["residual"]
    assert arr.shape == SHAPE and arr.dtype == np.float32
    assert rec["residual_std"] == pytest.approx(float(arr.std()), rel=1e-4)


def test_fingerprint_skips_other_sizes(shots, capsys, tmp_path):
    """A frame of another size is reported and skipped; the fingerprint is still written."""
    odd = tmp_path / "odd.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8) + 128).save(odd)
    out = tmp_path / "x.fp.safetensors"
    flats = sorted(str(p) for p in shots["flat_A"].rglob("*.jpg"))
    rc, data, err = run_json(
        capsys, ["prnu", "fingerprint", *flats[:3], str(odd), "-o", str(out), "--json"]
    )
    assert rc == 3 and out.exists()
    assert data[0]["image_count"] == 3 and data[0]["device_name"] == "x"
    assert "odd.jpg" in err and "differs" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prnu", "fingerprint", "x.jpg"], "give --output FILE or --device-name NAME"),
        (["prnu", "match", "x.jpg"], "give at least one --fingerprint FILE"),
        (["prnu", "match", "x.jpg", "-F", "y", "--rotations", "sideways"],
         "--rotations must be one of auto, all, none, not 'sideways'"),
        (["prnu", "residual", "x.jpg", "--sigma", "-1"], "sigma must be positive"),
    ],
)
def test_usage_errors(args, message, capsys):
    """Missing or impossible options exit 2 with a message that says what to fix."""
    rc = main(args)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"Error: {message}" or message in err
