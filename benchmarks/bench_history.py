"""History-finding benchmark: re-saved, resampled and cropped detection on synthetic cameras.

Two synthetic camera sets are rendered (`camid synth cameras`, seeds --tune-seed and
--report-seed; originals are camera JPEGs with per-model tables, qualities ~88-95). From each
original, real files are written: JPEG re-saves at Q90/80/70 (Pillow), resized x0.5/0.8/1.5
(bicubic) saved as JPEG Q90 and as PNG, cropped by (3, 5) saved as PNG and as JPEG Q90, and
chains of standard-table JPEGs (first Q75/85/95, then Q70/90/80) to check the first-quality
estimate against a known answer. Each file is loaded as identify loads it and analysed with
`camid.identify.history.analyse_history`.

Thresholds are picked on the tuning seed only (the smallest score giving <= --alarm false
alarms among that seed's negatives) and the rates are reported on the other seed, both at
the thresholds picked here and at the module's constants. Run from the repository root:

    python benchmarks/bench_history.py                  # 8 photos per device, 384x288
    python benchmarks/bench_history.py --per-device 4   # quicker

Not a test: nothing here asserts; it prints figures.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from camid.identify import history as H  # noqa: E402
from camid.io.exif import parse_jpeg_qtables  # noqa: E402
from camid.io.image import load_image, read_file_bytes  # noqa: E402
from camid.synth.datasets import make_camera_dataset  # noqa: E402

CHAINS = ((75, 70), (85, 70), (95, 80), (75, 90), (85, 90))
"""(first, second) standard-table JPEG qualities for the first-quality check."""


def _save(pixels: np.ndarray, path: Path, quality: int | None = None) -> Path:
    kw = {"quality": int(quality)} if quality is not None else {}
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, **kw)
    return path


def _resize(pixels: np.ndarray, factor: float) -> np.ndarray:
    h, w = pixels.shape[:2]
    size = (round(w * factor), round(h * factor))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC))


def variants(src: Path, work: Path) -> dict[str, Path]:
    """Condition name -> a real file made from the original `src`."""
    px = np.asarray(Image.open(src).convert("RGB"))
    stem = src.stem
    out = {"original": src}
    for q in (90, 80, 70):
        out[f"jpeg{q}"] = _save(px, work / f"{stem}_q{q}.jpg", q)
    for r in (0.5, 0.8, 1.5):
        rp = _resize(px, r)
        out[f"resize{r}-jpeg90"] = _save(rp, work / f"{stem}_r{r}.jpg", 90)
        out[f"resize{r}-png"] = _save(rp, work / f"{stem}_r{r}.png")
    out["crop35-png"] = _save(px[3:, 5:], work / f"{stem}_c.png")
    out["crop35-jpeg90"] = _save(px[3:, 5:], work / f"{stem}_c.jpg", 90)
    for q1, q2 in CHAINS:
        first = work / f"{stem}_s{q1}.jpg"
        _save(px, first, q1)
        once = np.asarray(Image.open(first).convert("RGB"))
        out[f"q{q1}>q{q2}"] = _save(once, work / f"{stem}_s{q1}_{q2}.jpg", q2)
    return out


def analyse(path: Path) -> H.History:
    """Load like identify does and analyse."""
    raw = read_file_bytes(path)
    img = load_image(path, data=raw)
    return H.analyse_history(img.pixels, raw, img.codec)


def collect(root: Path, seed: int, per_device: int, size: tuple[int, int]) -> dict:
    """{condition: [(History, camera quality)]} for one seed's set."""
    data = root / f"seed{seed}"
    make_camera_dataset(
        data, per_device=per_device, flat_per_device=0, size=size, seed=seed, workers=1
    )
    work = root / f"work{seed}"
    work.mkdir()
    rows: dict[str, list] = {}
    for src in sorted((data / "images").glob("*.jpg")):
        cam_q = H._nearest_quality(parse_jpeg_qtables(src.read_bytes())[0])
        for name, path in variants(src, work).items():
            rows.setdefault(name, []).append((analyse(path), cam_q))
    return rows


def pick(neg: list[float], alarm: float) -> float:
    """Smallest threshold with at most `alarm` of `neg` above it."""
    s = np.sort(np.asarray(neg, dtype=float))
    k = int(np.floor(alarm * len(s)))  # how many may exceed
    return float(s[len(s) - 1 - k]) if len(s) else 0.0


def scores(rows: dict, cond: str, which: str) -> list[float]:
    return [getattr(h, which).score or 0.0 for h, _ in rows[cond]]


def rate(vals: list[float], thr: float) -> str:
    v = np.asarray(vals)
    return f"{(v > thr).mean():.2f} ({int((v > thr).sum())}/{len(v)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-device", type=int, default=8)
    ap.add_argument("--size", default="384x288")
    ap.add_argument("--tune-seed", type=int, default=1)
    ap.add_argument("--report-seed", type=int, default=2)
    ap.add_argument(
        "--alarm", type=float, default=0.02, help="false-alarm share allowed when tuning (0: max)"
    )
    ap.add_argument("--scores", help="also write every score to this JSON file")
    a = ap.parse_args()
    w, h = (int(x) for x in a.size.lower().split("x"))
    print(f"machine: {platform.processor() or platform.machine()}, python {sys.version.split()[0]}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tune = collect(Path(tmp), a.tune_seed, a.per_device, (w, h))
        rep = collect(Path(tmp), a.report_seed, a.per_device, (w, h))
    n_files = sum(len(v) for v in tune.values()) + sum(len(v) for v in rep.values())
    print(f"{n_files} files analysed in {time.perf_counter() - t0:.0f} s (incl. rendering)")

    plain = ["original", "jpeg90", "jpeg80", "jpeg70"]
    resized = [c for c in tune if c.startswith("resize")]
    thr_dq = pick(scores(tune, "original", "resaved"), a.alarm)
    thr_rs = pick(sum((scores(tune, c, "resampled") for c in plain), []), a.alarm)
    print(f"\nthresholds picked on seed {a.tune_seed} (<= {a.alarm:.0%} alarms on its negatives):")
    print(f"  resaved {thr_dq:.4f} (module: {H.DQ_THRESHOLD}), "
          f"resampled {thr_rs:.2f} (module: {H.RESAMPLE_THRESHOLD})")  # fmt: skip
    if a.scores:
        dump = {
            name: {
                c: [[hh.resaved.score, hh.resampled.score] for hh, _ in v] for c, v in rows.items()
            }
            for name, rows in (("tune", tune), ("report", rep))
        }
        Path(a.scores).write_text(json.dumps(dump))

    print(f"\nreport seed {a.report_seed}: detection rate (at picked | at module thresholds)")
    print(f"{'condition':<20} {'resaved':>26} {'resampled':>26} {'cropped':>26}")
    for cond in rep:
        cells = []
        for which, thr, mod in (
            ("resaved", thr_dq, H.DQ_THRESHOLD),
            ("resampled", thr_rs, H.RESAMPLE_THRESHOLD),
        ):
            vals = [getattr(hh, which).score for hh, _ in rep[cond]]
            if any(v is None for v in vals):
                cells.append("n/a")
                continue
            cells.append(f"{rate(vals, thr)} | {rate(vals, mod)}")
        cr = [hh.cropped for hh, _ in rep[cond]]
        if all(c.score is None for c in cr):
            cells.append("not looked for (JPEG)")
        else:
            cells.append(f"{np.mean([bool(c.detected) for c in cr]):.2f} (grid search)")
        print(f"{cond:<20} {cells[0]:>26} {cells[1]:>26} {cells[2]:>26}")

    print("\nfirst-quality estimate on the report seed (detected copies, module thresholds):")
    for cond in rep:
        if cond.startswith("jpeg") or ">" in cond:
            est, truth = [], []
            for hh, cam_q in rep[cond]:
                if hh.resaved.detected and hh.resaved.estimate is not None:
                    est.append(hh.resaved.estimate)
                    truth.append(int(cond[1:3]) if ">" in cond else cam_q)
            if not est:
                print(f"  {cond:<10} no estimates")
                continue
            err = np.abs(np.asarray(est) - np.asarray(truth))
            print(
                f"  {cond:<10} n={len(est):>3}  median |error| {np.median(err):4.1f}  "
                f"within 5: {(err <= 5).mean():.2f}  (truth: "
                f"{'first quality' if '>' in cond else 'camera table ~IJG quality'})"
            )

    print("\nresampling factor estimates on the report seed (detected, module threshold):")
    for cond in resized:
        est = [hh.resampled.estimate for hh, _ in rep[cond] if hh.resampled.detected]
        if est:
            vals, counts = np.unique(np.round(est, 2), return_counts=True)
            top = ", ".join(
                f"x{v:g} ({c})"
                for v, c in sorted(zip(vals, counts, strict=True), key=lambda t: -t[1])[:3]
            )
            print(f"  {cond:<16} {top}")
        else:
            print(f"  {cond:<16} none detected")

    big = np.asarray(Image.new("RGB", (4000, 3000)))
    rng = np.random.default_rng(0)
    big = np.clip(big + rng.normal(128, 40, big.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="JPEG", quality=85)
    px = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        H.analyse_history(px, buf.getvalue(), "JPEG")
        ts.append(time.perf_counter() - t)
    print(f"\ntime per 12 MP JPEG (4000x3000, decoded): {min(ts):.3f} s (best of 3, one process)")


if __name__ == "__main__":
    main()
