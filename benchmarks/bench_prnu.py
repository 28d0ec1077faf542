"""PRNU speed benchmark: camid's torch residual vs a plain NumPy/SciPy/PyWavelets baseline.

The baseline is the test oracle in tests/test_prnu_oracle.py: the reference algorithm
(sigma 5, PyWavelets' symmetric padding, float64 Wiener filtering) written straight from its
description, run on the same images in the same environment. camid runs in compat mode
(same results: correlation with the baseline is printed) and in its default mode.

Each measurement runs in a fresh subprocess so its peak memory (ru_maxrss growth over the
process after imports and image loading) is its own. Run from the repository root:

    python benchmarks/bench_prnu.py                  # 1024^2 and 10 MP residuals, fp+matrix
    python benchmarks/bench_prnu.py --quick          # 512^2 only, small fp+matrix
    python benchmarks/bench_prnu.py --threads 2      # torch intra-op threads (default 1,2)

Not a test: nothing here asserts; it prints a table of figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

SIZES = {"1024x1024": (1024, 1024), "10MP (3648x2736)": (2736, 3648), "512x512": (512, 512)}


def _rss_kib() -> int:
    """Current resident set size of this process in KiB (Linux /proc)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _worker(kind: str, image_path: str, repeats: int, threads: int, batch: int, conn) -> None:
    """Time one implementation on one image in a fresh process; send results back."""
    import torch

    torch.set_num_threads(threads)
    img = np.load(image_path)
    if kind == "baseline":
        from test_prnu_oracle import oracle_residual

        def run():
            return oracle_residual(img, sigma=5.0)
    else:
        from camid.prnu.residual import ResidualParams, extract_residual, extract_residuals

        params = ResidualParams(compat=(kind == "camid-compat"))
        if batch > 1:
            stack = np.stack([img] * batch)

            def run():
                return extract_residuals(stack, params)[0].numpy()
        else:

            def run():
                return extract_residual(img, params)

    before = _rss_kib()
    times = []
    out = None
    for _ in range(repeats + 1):  # the first run is a warm-up
        t0 = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    conn.send(
        {
            "times": times[1:],
            "peak_mib": max(0, peak - before) / 1024,
            "residual": np.asarray(out, dtype=np.float32),
        }
    )
    conn.close()


def measure(kind: str, image_path: str, repeats: int, threads: int, batch: int = 1) -> dict:
    """Run `_worker` in a spawned subprocess and collect its figures."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(kind, image_path, repeats, threads, batch, child))
    proc.start()
    child.close()
    res = parent.recv()
    proc.join()
    return res


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation in float64."""
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def bench_residuals(
    sizes: list[str], repeats: int, thread_counts: list[int], tmp: Path
) -> list[dict]:
    """Residual timings per size: baseline vs camid (compat, default, batched) per thread count."""
    from test_prnu_oracle import make_camera, shoot

    rows = []
    for label in sizes:
        shape = SIZES[label]
        img = shoot(make_camera("bench", shape, seed=1), seed=2)
        path = tmp / f"{label.split()[0]}.npy"
        np.save(path, img)
        mp_ = shape[0] * shape[1] / 1e6
        reps_base = max(1, repeats if mp_ < 2 else repeats // 2)
        base = measure("baseline", str(path), reps_base, 1)
        for threads in thread_counts:
            comp = measure("camid-compat", str(path), repeats, threads)
            dflt = measure("camid-default", str(path), repeats, threads)
            batch = 4 if mp_ < 2 else 1
            bat = measure("camid-compat", str(path), max(1, repeats // 2), threads, batch=batch)
            tb, tc, td = (statistics.median(r["times"]) for r in (base, comp, dflt))
            rows.append(
                {
                    "size": label,
                    "threads": threads,
                    "megapixels": round(mp_, 2),
                    "baseline_s": tb,
                    "camid_compat_s": tc,
                    "camid_default_s": td,
                    "speedup_compat": tb / tc,
                    "speedup_default": tb / td,
                    "best_speedup_compat": min(base["times"]) / min(comp["times"]),
                    "camid_images_per_s": 1 / tc,
                    "camid_batched_images_per_s": batch / statistics.median(bat["times"]),
                    "batch": batch,
                    "baseline_peak_mib": base["peak_mib"],
                    "camid_peak_mib": comp["peak_mib"],
                    "corr_compat_vs_baseline": corr(comp["residual"], base["residual"]),
                    "corr_default_vs_baseline": corr(dflt["residual"], base["residual"]),
                }
            )
            print_row(rows[-1])
    return rows


def print_row(r: dict) -> None:
    """One size's figures, human-readable."""
    print(
        f"{r['size']:>18} torch threads {r['threads']}: baseline {r['baseline_s']:.3f} s | "
        f"camid compat "
        f"{r['camid_compat_s']:.3f} s ({r['speedup_compat']:.1f}x, best-of "
        f"{r['best_speedup_compat']:.1f}x) | default {r['camid_default_s']:.3f} s "
        f"({r['speedup_default']:.1f}x) | {r['camid_images_per_s']:.2f} img/s, batch "
        f"{r['batch']}: {r['camid_batched_images_per_s']:.2f} img/s | peak MiB baseline "
        f"{r['baseline_peak_mib']:.0f} camid {r['camid_peak_mib']:.0f} | corr compat "
        f"{r['corr_compat_vs_baseline']:.7f} default {r['corr_default_vs_baseline']:.4f}",
        flush=True,
    )


def bench_fingerprint_matrix(devices: int, photos: int, shape: tuple[int, int]) -> dict:
    """Fingerprints of `devices` cameras from `photos` flat frames, then a devices x all-photos
    PCE matrix of `photos` natural photos per device (camid default mode)."""
    import torch
    from test_prnu_oracle import make_camera, shoot

    from camid.prnu import FingerprintAccumulator, FingerprintBank, residual_and_grey, summarize

    cams = [make_camera(f"d{i}", shape, seed=100 + i, model_seed=i // 2) for i in range(devices)]
    flats = [[shoot(c, 10 + j, flat=True) for j in range(photos)] for c in cams]
    evid = [[shoot(c, 500 + j) for j in range(photos)] for c in cams]
    t0 = time.perf_counter()
    fps = []
    for c, frames in zip(cams, flats, strict=True):
        acc = FingerprintAccumulator()
        for f in frames:
            acc.add(f)
        fps.append(acc.finish(c.name))
    t_fp = time.perf_counter() - t0
    bank = FingerprintBank(fps)
    t0 = time.perf_counter()
    cols, labels = [], []
    t_corr = 0.0
    for c, imgs in zip(cams, evid, strict=True):
        for img in imgs:
            w, g = residual_and_grey(img)
            t1 = time.perf_counter()
            cols.append([r.pce for r in bank.score(w, g)])
            t_corr += time.perf_counter() - t1
            labels.append(c.name)
    t_mat = time.perf_counter() - t0
    m = np.asarray(cols).T
    s = summarize(m, [c.name for c in cams], labels)
    n_img = devices * photos
    out = {
        "devices": devices,
        "photos_per_device": photos,
        "size": f"{shape[1]}x{shape[0]}",
        "fingerprint_s": t_fp,
        "fingerprint_images_per_s": n_img / t_fp,
        "matrix_s": t_mat,
        "matrix_correlation_s": t_corr,
        "pairs": m.size,
        "auc": s.auc,
        "eer": s.eer,
        "top1": s.top1,
        "min_same_pce": float(
            min(
                m[i, j] for j, lab in enumerate(labels) for i, c in enumerate(cams) if c.name == lab
            )
        ),
        "max_diff_pce": float(
            max(
                m[i, j] for j, lab in enumerate(labels) for i, c in enumerate(cams) if c.name != lab
            )
        ),
        "threads": torch.get_num_threads(),
    }
    print(
        f"fingerprints: {devices} devices x {photos} flat frames ({out['size']}) in "
        f"{t_fp:.1f} s ({out['fingerprint_images_per_s']:.2f} img/s); matrix {devices} x "
        f"{n_img} in {t_mat:.1f} s (residuals + scoring; scoring alone {t_corr:.2f} s); "
        f"AUC {s.auc:.4f} EER {s.eer:.4f} top-1 {s.top1:.3f}; same-device PCE >= "
        f"{out['min_same_pce']:.0f}, different-device PCE <= {out['max_diff_pce']:.1f}",
        flush=True,
    )
    return out


def main() -> None:
    """Parse options, run the benchmarks, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--omp-wait",
        choices=["passive", "active", "inherit"],
        default="passive",
        help="OMP_WAIT_POLICY for torch's threads (passive: idle threads sleep, which keeps "
        "2 threads usable on a shared machine; inherit: leave the environment alone)",
    )
    ap.add_argument("--quick", action="store_true", help="512^2 only and a small matrix")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    ap.add_argument(
        "--threads",
        default="1,2",
        help="comma-separated torch intra-op thread counts to measure camid with (default 1,2)",
    )
    ap.add_argument("--skip-matrix", action="store_true")
    ap.add_argument(
        "--sizes",
        default="1024,10mp",
        help="residual sizes to time: comma-separated from 512, 1024, 10mp",
    )
    ap.add_argument("--fp-size", type=int, default=1024, help="side of fingerprint/matrix images")
    args = ap.parse_args()
    if args.omp_wait != "inherit":  # before torch starts its thread pool (workers inherit it)
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait.upper()

    import torch

    thread_counts = [int(t) for t in str(args.threads).split(",") if t.strip()]
    torch.set_num_threads(max(thread_counts))
    load = os.getloadavg()
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPU(s), {platform.processor() or ''} "
        f"torch {torch.__version__}, cuda: {torch.cuda.is_available()}, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}; "
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    names = {"512": "512x512", "1024": "1024x1024", "10mp": "10MP (3648x2736)"}
    sizes = ["512x512"] if args.quick else [names[k.strip()] for k in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        bench_residuals(sizes, args.repeats, thread_counts, Path(tmp))
    if not args.skip_matrix:
        torch.set_num_threads(max(1, min(thread_counts)))
        if args.quick:
            bench_fingerprint_matrix(3, 4, (256, 256))
        else:
            bench_fingerprint_matrix(6, 16, (args.fp_size, args.fp_size))
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
