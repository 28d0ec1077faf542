"""--shard K/N and torchrun ranks: the pieces add up to the single-process output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from camid.cli import main
from camid.engine.shard import Shard, parse_shard
from tests.test_train_fakes import shared_model

try:
    from tests.test_prnu_oracle import make_camera, shoot
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    from test_prnu_oracle import make_camera, shoot

TIMING = ("seconds", "elapsed", "images_per_s")


def _rows(text: str) -> list[str]:
    """ndjson lines with timing fields dropped (each line re-serialised as it was)."""
    lines = []
    for line in text.splitlines():
        rec = json.loads(line)
        for k in TIMING:
            rec.pop(k, None)
        lines.append(json.dumps(rec, ensure_ascii=False))
    return lines


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ----------------------------------------------------------------------------- unit


def test_parse_shard_is_one_based_and_validated() -> None:
    assert parse_shard("1/2") == Shard(0, 2)
    assert parse_shard(" 4 / 4 ") == Shard(3, 4)
    assert parse_shard(None) is None and parse_shard("") is None
    assert str(parse_shard("2/3")) == "2/3"
    for bad in ("0/2", "3/2", "1/0", "a/b", "1", "1/2/3", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


@pytest.mark.parametrize("n", [0, 1, 5, 7, 10, 101])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 8])
def test_shards_are_contiguous_disjoint_and_cover_the_input(n: int, count: int) -> None:
    items = list(range(n))
    parts = [Shard(k, count).take(items) for k in range(count)]
    assert [x for part in parts for x in part] == items  # concatenated in order = all
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_bad_shard_is_a_one_line_usage_error(capsys, tmp_path: Path) -> None:
    photo = tmp_path / "a.png"
    Image.new("RGB", (64, 64)).save(photo)
    rc, out, err = _run(capsys, "prnu", "residual", str(photo), "--shard", "3/2", "--json")
    assert rc == 2 and out == ""
    assert "--shard" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ----------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def prnu_set(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A fingerprint of device A (4 flat frames) and 5 evidence photos (3 of A, 2 of B)."""
    root = tmp_path_factory.mktemp("shard_prnu")
    shape = (96, 128)
    cams = {n: make_camera(n, shape, seed=s, strength=0.008) for n, s in (("A", 31), ("B", 32))}
    flat = root / "flat"
    flat.mkdir()
    for i in range(4):
        Image.fromarray(shoot(cams["A"], 10 + i, flat=True, quality=None)).save(
            flat / f"f{i}.jpg", quality=92
        )
    evidence = root / "evidence"
    evidence.mkdir()
    for i, name in enumerate("AABAB"):
        Image.fromarray(shoot(cams[name], 300 + i, quality=None)).save(
            evidence / f"e{i}_{name}.jpg", quality=92
        )
    (evidence / "broken.jpg").write_bytes(b"not a jpeg")  # a bad input inside a shard
    fp = root / "A.fp.safetensors"
    torch.set_num_threads(1)
    assert main(["prnu", "fingerprint", str(flat), "-o", str(fp), "-n", "A", "--json", "-q"]) == 0
    return {"root": root, "fp": fp, "evidence": evidence}


@pytest.fixture(scope="module")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(camid home with the shared tiny model 'fk3', its photo folder)."""
    home, csv = shared_model(tmp_path_factory.getbasetemp())
    return home, csv.parent


# ----------------------------------------------------------------------------- --shard K/N


def _halves_equal_whole(capsys, args: list[str], n: int = 2) -> tuple[list[str], list[int]]:
    rc, whole, _ = _run(capsys, *args)
    parts, codes = [], []
    for k in range(1, n + 1):
        rck, out, _ = _run(capsys, *args, "--shard", f"{k}/{n}")
        parts += _rows(out)
        codes.append(rck)
    rows = _rows(whole)
    assert rows and parts == rows
    return rows, [rc, *codes]


def test_prnu_match_shards_concatenate_to_the_whole_run(capsys, prnu_set, tmp_path) -> None:
    args = ["prnu", "match", str(prnu_set["evidence"]), "-F", str(prnu_set["fp"]),
            "-f", "ndjson", "--device", "cpu", "--threads", "1"]  # fmt: skip
    rows, codes = _halves_equal_whole(capsys, args)
    assert len(rows) == 5  # 5 photos x 1 fingerprint; broken.jpg is an error, not a row
    assert [json.loads(r)["outcome"] for r in rows][:2] == ["match", "match"]
    assert codes[0] == 3  # broken.jpg: exit 3; only the shard that holds it says so
    assert sorted(codes[1:]) == [1, 3]
    _halves_equal_whole(capsys, args, n=3)


def test_prnu_residual_and_matrix_shards(capsys, prnu_set, tmp_path) -> None:
    ev = str(prnu_set["evidence"])
    args = ["prnu", "residual", ev, "-o", str(tmp_path / "res"), "-f", "ndjson",
            "--device", "cpu", "--threads", "1"]  # fmt: skip
    rows, _ = _halves_equal_whole(capsys, args)
    assert all(Path(json.loads(r)["output"]).is_file() for r in rows)
    margs = ["prnu", "matrix", ev, "-F", str(prnu_set["fp"]), "-f", "ndjson",
             "--device", "cpu", "--threads", "1"]  # fmt: skip
    rows, _ = _halves_equal_whole(capsys, margs)
    assert len(rows) == 5


def test_identify_shards_concatenate_to_the_whole_run(capsys, model_home, monkeypatch) -> None:
    home, data = model_home
    monkeypatch.setenv("CAMID_HOME", str(home))
    photos = sorted(data.rglob("*.jpg"))[:12]
    args = ["identify", *map(str, photos), "--model", "fk3", "-f", "ndjson",
            "--device", "cpu", "--workers", "0"]  # fmt: skip
    rows, codes = _halves_equal_whole(capsys, args, n=3)
    assert len(rows) == 12 and codes == [0, 0, 0, 0]
    assert [json.loads(r)["path"] for r in rows] == list(map(str, photos))


def test_missing_input_is_reported_by_shard_one_only(capsys, prnu_set, tmp_path) -> None:
    ev = sorted(str(p) for p in prnu_set["evidence"].glob("e*.jpg"))
    missing = str(tmp_path / "gone.jpg")
    base = ["prnu", "residual", missing, *ev, "-f", "ndjson", "--device", "cpu"]
    lists = []
    for k in (1, 2):
        fl = tmp_path / f"failed{k}.txt"
        rc, _, err = _run(capsys, *base, "--shard", f"{k}/2", "--failed-list", str(fl))
        lists.append(fl.read_text())
        assert (rc, "gone.jpg" in err) == ((3, True) if k == 1 else (0, False))
    assert lists == [f"{missing}\n", ""]


# ----------------------------------------------------------------------------- torchrun


def _torchrun(args: list[str], env: dict, nproc: int = 2) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node", str(nproc), "-m", "camid", *args]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _env(**extra: str) -> dict:
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(capsys, prnu_set, model_home, tmp_path) -> None:
    """identify, prnu match/residual/matrix under 2 gloo ranks == single-process ndjson."""
    home, data = model_home
    photos = list(map(str, sorted(data.rglob("*.jpg"))[:9]))
    ev, fp = str(prnu_set["evidence"]), str(prnu_set["fp"])
    jobs = {
        "identify": ["identify", *photos, "--model", "fk3", "--workers", "0"],
        "match": ["prnu", "match", ev, "-F", fp, "--threads", "1"],
        "matrix": ["prnu", "matrix", ev, "-F", fp, "--threads", "1"],
        "residual": ["prnu", "residual", ev, "-o", str(tmp_path / "r"), "--threads", "1"],
    }
    env = _env(CAMID_HOME=str(home))
    for name, args in jobs.items():
        args = [*args, "-f", "ndjson", "--device", "cpu"]
        single = subprocess.run([sys.executable, "-m", "camid", *args], env=env,
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        multi = _torchrun(args, env)
        assert _rows(multi.stdout) == _rows(single.stdout) and single.stdout, name
        # exit codes agree (torchrun itself reports any non-zero rank as a failure)
        assert (multi.returncode == 0) == (single.returncode == 0), (name, multi.stderr[-2000:])
        if single.returncode:
            assert f"exitcode  : {single.returncode}" in multi.stderr, name
        assert multi.stderr.count("broken.jpg") == single.stderr.count("broken.jpg"), name


def _drop_timing(value):
    if isinstance(value, dict):
        return {k: _drop_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [_drop_timing(v) for v in value]
    return value


@pytest.mark.slow
def test_torchrun_bias_check_feature_pass(tmp_path) -> None:
    """bias-check's pseudo-camera pass split over 2 gloo ranks == one process's report."""
    from camid.data.manifest import read_manifest, write_manifest
    from camid.synth import make_bottles_dataset

    sets = make_bottles_dataset(tmp_path / "b", per_device=4, size=(64, 64), workers=1)
    rows = []
    for s in read_manifest(sets["disjoint"]):
        dst = tmp_path / f"{s.path.stem}.png"
        Image.open(s.path).save(dst)  # a PNG copy: no EXIF, so cameras come from the pixels
        rows.append({"path": dst, "label": s.label, "split": s.split})
    csv_path = write_manifest(rows, tmp_path / "nometa.csv")
    args = ["bias-check", str(csv_path), "--quick", "--json", "--device", "cpu",
            "--export-cameras", str(tmp_path / "cams.csv")]  # fmt: skip
    env = _env(CAMID_HOME=str(tmp_path / "home"))
    single = subprocess.run([sys.executable, "-m", "camid", *args], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    single_cams = (tmp_path / "cams.csv").read_text()
    (tmp_path / "cams.csv").unlink()
    multi = _torchrun(args, env)
    report = json.loads(single.stdout)
    assert report["camera_source"]["kind"] == "pseudo", report["camera_source"]
    assert _drop_timing(json.loads(multi.stdout)) == _drop_timing(report)
    assert (tmp_path / "cams.csv").read_text() == single_cams  # written once, by rank 0
    assert (multi.returncode == 0) == (single.returncode == 0)


def test_trace_rows_of_blocks_join_to_the_whole_pass(prnu_set) -> None:
    """The pseudo-camera feature pass over two blocks, joined, is the pass over all."""
    import numpy as np

    from camid.audit.pseudo import FAMILIES, TraceRows, trace_rows

    paths = sorted(prnu_set["evidence"].iterdir())  # 5 photos and broken.jpg
    whole = trace_rows(paths, range(len(paths)))
    cut = Shard(0, 2).bounds(len(paths))[1]
    joined = TraceRows.join([trace_rows(paths, range(cut)), trace_rows(paths, range(cut, 6))])
    assert joined.ok == whole.ok and len(whole.ok) == 5
    assert list(joined.errors) == list(whole.errors) == [str(prnu_set["evidence"] / "broken.jpg")]
    assert joined.lattice == whole.lattice and joined.sides == whole.sides
    for f in FAMILIES:
        assert np.array_equal(joined.feats[f], whole.feats[f]) and len(whole.feats[f]) == 5


def test_bias_check_stage_one_under_torchrun_is_a_usage_error(capsys, monkeypatch, tmp_path):
    """Stage 1 is not split over ranks: a one-line usage error before any group is joined."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    rc, out, err = _run(capsys, "bias-check", str(tmp_path), "--json")
    assert rc == 2 and out == "" and "--quick" in err and "Traceback" not in err
