"""Benchmark of sharded runs: `camid identify` and `camid prnu match`, 1 vs 2 processes.

On one synthetic camera set (JPEG photos of 10 devices, a tiny model trained for one
epoch, one device's PRNU fingerprint) each command runs as: one process with one torch
thread; one process with two threads; two independent processes (`--shard 1/2` and
`--shard 2/2` started together, one thread each); and `torchrun --nproc_per_node 2` (gloo,
one thread each). It prints wall time (process start-up included), images/s, the speed-up
over the one-thread process, the machine's load average, and checks that the shards'
ndjson concatenated and the torchrun ndjson both equal the single-process output. CPU
seconds (user + system of the processes, start-up included) say what sharding costs
whatever else the machine is doing.

    python benchmarks/bench_shard.py [--work DIR] [--per-device 10] [--size 256x192]
        [--only identify|prnu] [--no-two-threads]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _env(home: Path, threads: int) -> dict:
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "CAMID_HOME": str(home),
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": path,
    }


def _camid(args: list[str], env: dict, launcher: list[str] | None = None) -> subprocess.Popen:
    cmd = [sys.executable, *(launcher or []), "-m", "camid", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait(procs: list[subprocess.Popen]) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode not in (0, 1):
            raise SystemExit(f"camid failed ({p.returncode}): {err[-2000:]}")
        outs.append(out)
    return outs


def measure(name: str, args: list[str], n: int, home: Path, two_threads: bool = True) -> dict:
    """Wall time of the four ways of running `args` over n photos (ndjson compared)."""
    args = [*args, "-f", "ndjson", "--device", "cpu"]
    runs: dict[str, dict] = {}
    ref = None

    def timed(label: str, procs_fn) -> None:
        nonlocal ref
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        outs = _wait(procs_fn())
        wall = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        text = "".join(outs)
        if ref is None:
            ref = text
        runs[label] = {
            "seconds": round(wall, 2),
            "images_per_s": round(n / wall, 2),
            "cpu_seconds": round(cpu, 2),
            "same_output": text == ref,
        }

    timed("1 process, 1 thread", lambda: [_camid(args, _env(home, 1))])
    if two_threads:
        timed("1 process, 2 threads", lambda: [_camid(args, _env(home, 2))])
    timed(
        "2 processes (--shard 1/2, 2/2)",
        lambda: [_camid([*args, "--shard", f"{k}/2"], _env(home, 1)) for k in (1, 2)],
    )
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    timed("torchrun, 2 ranks (gloo)", lambda: [_camid(args, _env(home, 1), torchrun)])
    base = runs["1 process, 1 thread"]["seconds"]
    for r in runs.values():
        r["speedup"] = round(base / r["seconds"], 2)
    return {"command": name, "photos": n, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--per-device", type=int, default=10)
    ap.add_argument("--size", default="256x192", help="photo size WxH")
    ap.add_argument("--only", choices=["identify", "prnu"], default=None)
    ap.add_argument("--no-two-threads", action="store_true", help="skip 1 process x 2 threads")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="bench_shard_"))
    w, h = (int(x) for x in a.size.lower().split("x"))

    import torch

    from camid.data.manifest import read_manifest
    from camid.engine.train import TrainConfig, train
    from camid.synth import make_camera_dataset

    torch.set_num_threads(2)
    load_before = [round(x, 1) for x in os.getloadavg()]
    home = work / "home"
    manifest = make_camera_dataset(
        work / "data", per_device=a.per_device, flat_per_device=4, size=(w, h), workers=1
    )
    rows = read_manifest(manifest)
    train(
        TrainConfig(name="bench", arch="patchnet_hp_tiny", patch=32, patches_per_image=8,
                    batch_size=64, epochs=1, manipulate=False, d4=False, overwrite=True),
        rows,
        home=home,
    )  # fmt: skip
    flats = read_manifest(manifest.parent / "flatfield.csv")
    device = flats[0].device
    fp = work / "dev.fp.safetensors"
    subprocess.run(
        [sys.executable, "-m", "camid", "prnu", "fingerprint", "-o", str(fp), "-n", "dev",
         "-q", "--json", *[str(r.path) for r in flats if r.device == device]],
        env=_env(home, 2), check=True, capture_output=True,
    )  # fmt: skip
    photos = [str(r.path) for r in rows]
    n = len(photos)
    results = []
    if a.only in (None, "identify"):
        args = ["identify", *photos, "--model", "bench", "--workers", "0"]
        results.append(measure("identify", args, n, home, not a.no_two_threads))
    if a.only in (None, "prnu"):
        args = ["prnu", "match", *photos, "-F", str(fp), "--no-match-ok"]
        results.append(measure("prnu match", args, n, home, not a.no_two_threads))
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
                "python": platform.python_version(),
                "torch": torch.__version__,
                "photo_size": f"{w}x{h}",
                "load_average_before": load_before,
                "load_average_after": [round(x, 1) for x in os.getloadavg()],
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
