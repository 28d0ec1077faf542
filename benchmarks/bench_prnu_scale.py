"""PRNU at scale and on resized photos: matrix cost as fingerprints grow, and the scale search.

Part 1 (`--part matrix`): the cost of scoring photos against 1, 10, 100 fingerprints with
camid's FingerprintBank, against the pre-change bank (camid/prnu/match.py at `--baseline-rev`,
read from git) measured in the same run on the same residuals, for photos stored like the
fingerprint (landscape) and rotated by 90 degrees (portrait, all 8 orientations tried). The
fingerprints are synthetic: independent Gaussian noise planes of the photos' size (timing
only: the cost does not depend on their content); the photos are real residuals of synthetic
JPEG shots. Each configuration also checks that both banks give identical records.

Part 2 (`--part resize`): synthetic cameras (pairs of devices of one model), fingerprints
from original flat frames; evidence photos resized x0.5 / x0.8 (Pillow bicubic) and saved
as JPEG Q90 / Q70, plus x0.8 copies centre-cropped to 3/4 of their width (the grid search).
PCE and match rate of the right device with and without `search_scale`, and false matches
against the other devices' fingerprints.

    python benchmarks/bench_prnu_scale.py                 # both parts, CPU
    python benchmarks/bench_prnu_scale.py --part matrix --device cuda --size 1536x2048

Not a test: nothing here asserts; it prints the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

BASELINE_REV = "1ca3f16"
"""The commit before the batched-orientation bank (camid's main when this was written)."""


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def load_baseline(rev: str):
    """The FingerprintBank module of commit `rev`, imported from `git show` (None: no git)."""
    try:
        src = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:camid/prnu/match.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"no baseline: cannot read camid/prnu/match.py at {rev} ({exc})", flush=True)
        return None
    path = Path(tempfile.mkdtemp()) / "match_before.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("match_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["match_before"] = mod
    spec.loader.exec_module(mod)
    return mod


def bench_matrix(args, device) -> None:
    """Part 1: seconds per photo and per pair as the number of fingerprints grows."""
    import torch
    from test_prnu_oracle import make_camera, shoot

    from camid.prnu.fingerprint import Fingerprint
    from camid.prnu.match import FingerprintBank
    from camid.prnu.residual import ResidualParams, residual_and_grey

    h, w = args.shape
    old = load_baseline(args.baseline_rev)
    cam = make_camera("bench", (h, w), seed=1)
    t0 = time.perf_counter()
    shots = [shoot(cam, 900 + j) for j in range(args.photos)]
    landscape = [residual_and_grey(s, None, device) for s in shots]
    portrait = [(torch.rot90(a, 1).contiguous(), torch.rot90(b, 1).contiguous())
                for a, b in landscape]  # fmt: skip
    _sync(device)
    t_res = (time.perf_counter() - t0) / args.photos
    print(f"residual + grey per photo (not in the figures below): {t_res:.3f} s", flush=True)
    rng = np.random.default_rng(0)
    params = ResidualParams()
    all_fps = [
        Fingerprint(rng.standard_normal((h, w)).astype(np.float32) * 0.01, f"n{i}", 1, params)
        for i in range(max(args.fingerprints))
    ]
    rows = []
    for n_fp in args.fingerprints:
        fps = all_fps[:n_fp]
        for orient, photos in (("landscape", landscape), ("portrait", portrait)):
            figures = {}
            records = {}
            kinds = [("camid", FingerprintBank)]
            if old is not None and not (orient == "portrait" and n_fp > args.baseline_max_rot):
                kinds.append(("before", old.FingerprintBank))
            for kind, cls in kinds:
                bank = cls(fps, device)
                bank.score(*photos[0])  # warm-up: first-use costs (spectra, plans) are per run
                _sync(device)
                t0 = time.perf_counter()
                recs = []
                for r, g in photos:
                    recs.append([x.to_record() for x in bank.score(r, g)])
                _sync(device)
                figures[kind] = (time.perf_counter() - t0) / len(photos)
                records[kind] = recs
            same = records.get("before") == records["camid"] if "before" in records else None
            row = {
                "fingerprints": n_fp,
                "orientation": orient,
                "s_per_photo": figures["camid"],
                "ms_per_pair": 1000 * figures["camid"] / n_fp,
                "before_s_per_photo": figures.get("before"),
                "identical": same,
            }
            rows.append(row)
            before = (
                f"before {row['before_s_per_photo']:.3f} s/photo "
                f"({row['before_s_per_photo'] / row['s_per_photo']:.1f}x slower), "
                f"identical records: {same}"
                if row["before_s_per_photo"] is not None
                else "before: not run"
            )
            print(
                f"{n_fp:4d} fingerprints, {orient:9s}: {row['s_per_photo']:.4f} s/photo, "
                f"{row['ms_per_pair']:.2f} ms/pair | {before}",
                flush=True,
            )
    for orient in ("landscape", "portrait"):
        sub = [r for r in rows if r["orientation"] == orient]
        growth = ", ".join(
            f"x{b['fingerprints'] // a['fingerprints']} fingerprints -> "
            f"x{b['s_per_photo'] / a['s_per_photo']:.1f} time"
            for a, b in zip(sub, sub[1:], strict=False)
        )
        print(f"growth ({orient}): {growth}", flush=True)


def _jpeg(img, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def bench_resize(args, device) -> None:
    """Part 2: resized evidence with and without the scale search."""
    from PIL import Image
    from test_prnu_oracle import make_camera, shoot

    from camid.prnu.fingerprint import build_fingerprint
    from camid.prnu.match import FingerprintSet, corrected_threshold

    h, w = args.shape
    cams = [
        make_camera(f"d{i}", (h, w), seed=200 + i, model_seed=i // 2) for i in range(args.devices)
    ]
    t0 = time.perf_counter()
    fps = [
        build_fingerprint(
            [shoot(c, 10 + j, flat=True) for j in range(args.frames)], c.name, device=device
        )
        for c in cams
    ]
    print(
        f"{len(cams)} devices (pairs share a model), fingerprints from {args.frames} flat "
        f"{w}x{h} JPEG Q90 frames each in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    plain = FingerprintSet(fps, device)
    search = FingerprintSet(fps, device, search_scale=True)
    conditions = [(f, q, False) for f in (0.5, 0.8) for q in (90, 70)]
    conditions += [(0.8, 90, True), (0.8, 70, True)]
    for factor, quality, crop in conditions:
        same = {"plain": [], "search": []}
        other_max = {"plain": -1e9, "search": -1e9}
        false = {"plain": 0, "search": 0}
        pairs_other = 0
        thresholds = set()
        t_search = 0.0
        for ci, cam in enumerate(cams):
            for j in range(args.photos):
                arr = shoot(cam, 600 + j, quality=None)
                img = Image.fromarray(arr).resize(
                    (round(w * factor), round(h * factor)), Image.BICUBIC
                )
                if crop:  # a centre crop to 3/4 of the width: the size does not tell the factor
                    cw = img.width * 3 // 4
                    x0 = (img.width - cw) // 2
                    img = img.crop((x0, 0, x0 + cw, img.height))
                pix = _jpeg(img, quality)
                for kind, fs in (("plain", plain), ("search", search)):
                    t0 = time.perf_counter()
                    res = fs.score(pix)
                    if kind == "search":
                        t_search += time.perf_counter() - t0
                        thresholds.add(round(res[0].threshold, 2))
                    for fi, r in enumerate(res):
                        if fi == ci:
                            same[kind].append((r.pce, r.outcome))
                        else:
                            other_max[kind] = max(other_max[kind], r.pce)
                            false[kind] += r.outcome == "match"
                pairs_other += len(cams) - 1
        n = len(same["plain"])
        name = f"x{factor} Q{quality}" + (" crop w3/4" if crop else "")

        def desc(kind: str, same=same, false=false, other_max=other_max, n_other=pairs_other):
            pces = [p for p, _ in same[kind]]
            rate = sum(o == "match" for _, o in same[kind]) / len(pces)
            return (
                f"median PCE {statistics.median(pces):.1f} (min {min(pces):.1f}), match "
                f"{rate:.2f}, false matches {false[kind]}/{n_other} (max other-device PCE "
                f"{other_max[kind]:.1f})"
            )

        print(
            f"{name:17s} without search: {desc('plain')}\n{'':17s} with search:    "
            f"{desc('search')}; threshold {sorted(thresholds)}, "
            f"{1000 * t_search / (n * len(cams)):.0f} ms/pair",
            flush=True,
        )
    print(
        f"(corrected thresholds: 1 scale 60, 8 scales {corrected_threshold(60, 8):.1f})",
        flush=True,
    )


def main() -> None:
    """Parse options, run the parts, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["matrix", "resize", "both"], default="both")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--size", default="384x512", help="photo size HxW (default 384x512)")
    ap.add_argument("--fingerprints", default="1,10,100", help="fingerprint counts (part 1)")
    ap.add_argument("--photos", type=int, default=4, help="photos per configuration")
    ap.add_argument(
        "--baseline-rev", default=BASELINE_REV, help="git commit of the pre-change bank"
    )
    ap.add_argument(
        "--baseline-max-rot",
        type=int,
        default=100,
        help="largest fingerprint count for the slow baseline on rotated photos",
    )
    ap.add_argument("--devices", type=int, default=4, help="cameras in part 2 (even)")
    ap.add_argument("--frames", type=int, default=12, help="flat frames per fingerprint (part 2)")
    args = ap.parse_args()
    args.shape = tuple(int(v) for v in args.size.lower().split("x"))
    args.fingerprints = [int(v) for v in args.fingerprints.split(",")]

    import torch

    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(
        f"machine: {platform.machine()} {os.cpu_count()} CPU(s), GPU {gpu}, torch "
        f"{torch.__version__}, device {args.device}, {args.threads} thread(s), size "
        f"{args.size}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    if args.part in ("matrix", "both"):
        bench_matrix(args, args.device)
    if args.part in ("resize", "both"):
        bench_resize(args, args.device)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
