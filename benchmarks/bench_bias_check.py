"""Benchmark of camid bias-check.

Prints: stage 0 (`--quick`) time on a 10,000-row manifest with a camera column; stage 0
time when the cameras come from EXIF (files copied from a small bottle set); and, with
`--full`, the full run (stage 0 + probe + training + test predictions) on each manifest of
`camid synth bottles` defaults: wall time, peak RSS (the largest of the child processes so
far: getrusage cannot separate them), verdict and exit code.

    python benchmarks/bench_bias_check.py [--work DIR] [--exif-images 2000] [--full]
        [--time-budget 60] [--arch tracenet]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from camid.audit.bias import BiasOptions, run_bias_check
from camid.data.manifest import read_manifest
from camid.synth import make_bottles_dataset


def stage0_manifest(work: Path, n: int = 10_000, seed: int = 0) -> dict:
    """Stage 0 on n rows (20 cameras x 5 labels, mildly associated); no pixels read."""
    rng = np.random.default_rng(seed)
    path = work / "rows10k.csv"
    cams = [f"cam{i:02d}" for i in range(20)]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "camera", "split"])
        for i in range(n):
            c = int(rng.integers(20))
            lab = c % 5 if rng.random() < 0.3 else int(rng.integers(5))
            w.writerow(
                [
                    f"img/{i:05d}.jpg",
                    f"label{lab}",
                    cams[c],
                    "test" if rng.random() < 0.1 else "train",
                ]
            )
    t = time.perf_counter()
    r = run_bias_check(path, BiasOptions(quick=True))
    return {"rows": n, "seconds": round(time.perf_counter() - t, 3), "verdict": r.verdict}


def stage0_exif(work: Path, n: int) -> dict:
    """Stage 0 with cameras read from EXIF Make+Model of n JPEG files."""
    src = make_bottles_dataset(work / "tiny", per_device=4, size=(64, 64), workers=1)
    rows = read_manifest(src["disjoint"])
    folder = work / "exif"
    folder.mkdir(exist_ok=True)
    path = work / "exif.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        for i in range(n):
            s = rows[i % len(rows)]
            dst = folder / f"{i:05d}.jpg"
            shutil.copyfile(s.path, dst)
            w.writerow([f"exif/{dst.name}", s.label, s.split])
    t = time.perf_counter()
    r = run_bias_check(path, BiasOptions(quick=True))
    dt = time.perf_counter() - t
    return {
        "images": n,
        "seconds": round(dt, 3),
        "per_10k_s": round(dt * 10_000 / n, 2),
        "camera_source": r.camera_source.kind,
        "verdict": r.verdict,
    }


def full_runs(work: Path, time_budget: float, arch: str) -> list[dict]:
    """The default command on each synth bottles manifest, in a child process."""
    root = work / "bottles"
    if not (root / "disjoint.csv").exists():
        make_bottles_dataset(root)
    out = []
    for setting in ("disjoint", "balanced", "partial"):
        cmd = [
            sys.executable,
            "-m",
            "camid",
            "bias-check",
            str(root / f"{setting}.csv"),
            "--json",
            "--time-budget",
            str(time_budget),
            "--arch",
            arch,
            "--html",
            str(work / f"{setting}.html"),
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        dt = time.perf_counter() - t
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        rep = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
        sc = rep.get("shortcut") or {}
        checks = {c["name"]: c["status"] for c in rep.get("checks", [])}
        out.append(
            {
                "setting": setting,
                "exit": proc.returncode,
                "verdict": rep.get("verdict"),
                "seconds": round(dt, 1),
                "peak_rss_mb_max_so_far": round(max(rss, before) / 1024, 0),
                "test_accuracy": sc.get("accuracy"),
                "follow_rate": (sc.get("follow") or {}).get("follow_rate"),
                "probe_recoverability": ((sc.get("probe") or {}).get("overall") or {}).get(
                    "recoverability"
                ),
                "train_seconds": (sc.get("training") or {}).get("seconds"),
                "checks": checks,
                "stderr_tail": proc.stderr[-300:] if proc.returncode not in (0, 1) else "",
            }
        )
    return out


def main() -> None:
    """Run the benchmarks and print one JSON object."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--exif-images", type=int, default=2000)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--time-budget", type=float, default=60.0)
    ap.add_argument("--arch", default="tracenet")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-bias-"))
    work.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "stage0_manifest": stage0_manifest(work),
        "stage0_exif": stage0_exif(work, args.exif_images),
    }
    if args.full:
        result["full"] = full_runs(work, args.time_budget, args.arch)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
