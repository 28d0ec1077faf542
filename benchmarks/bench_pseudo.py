"""Pseudo-camera benchmark: inference time and agreement with the true cameras.

Renders a synthetic camera set (`camid.synth.make_camera_dataset`: 5 camera models x 2
devices, natural scenes, 512x384 JPEGs by default) once, then times `infer_cameras` on:

- the JPEGs as the cameras wrote them,
- PNG copies without metadata (optional, `--png`),
- PNG copies resized by 0.5 with bicubic interpolation (optional, `--png`): expected weak.

Run from the repository root:

    python benchmarks/bench_pseudo.py                      # 1,000 images, 512x384
    python benchmarks/bench_pseudo.py --per-device 20      # 200 images, quick look
    python benchmarks/bench_pseudo.py --data /tmp/bp       # keep / reuse the rendered set

Not a test: nothing here asserts; it prints the figures.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _render(root: Path, per_device: int, size: tuple[int, int]) -> tuple[list[Path], list[str]]:
    from camid.synth import make_camera_dataset

    manifest = root / "cameras.csv"
    if not manifest.exists():
        t = time.perf_counter()
        make_camera_dataset(root, per_device=per_device, flat_per_device=0, size=size)
        print(f"rendered the set in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [root / r["path"] for r in rows], [r["camera"] for r in rows]


def _png_copies(paths: list[Path], out: Path, scale: float) -> list[Path]:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    res = []
    for p in paths:
        dst = out / (p.stem + ".png")
        if not dst.exists():
            with Image.open(p) as im:
                rgb = Image.frombytes("RGB", im.size, im.convert("RGB").tobytes())
            if scale != 1.0:
                w, h = rgb.size
                rgb = rgb.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
            tmp = dst.with_name(dst.stem + ".part.png")
            rgb.save(tmp)
            os.replace(tmp, dst)  # an interrupted run leaves no half-written copy
        res.append(dst)
    return res


def _run(name: str, paths: list[Path], truth: list[str], seed: int) -> None:
    from camid.audit.pseudo import adjusted_rand_index, infer_cameras

    t = time.perf_counter()
    res = infer_cameras(paths, seed=seed)
    dt = time.perf_counter() - t
    ari = adjusted_rand_index(truth, res.labels)
    print(
        f"{name:<22} n={len(paths):5d}  {dt:6.1f} s  ({1000 * dt / len(paths):5.1f} ms/img)  "
        f"k={res.k:2d}  weak={str(res.weak):5}  ARI={ari:.3f}  stability={res.stability:.2f}"
    )
    print(f"{'':<22} {res.reason}")
    table: dict[str, dict[str, int]] = {}
    for t, lab in zip(truth, res.labels, strict=True):
        row = table.setdefault(t, {})
        row[str(lab)] = row.get(str(lab), 0) + 1
    for t in sorted(table):
        cells = "  ".join(f"{lab}:{c}" for lab, c in sorted(table[t].items()))
        print(f"{'':<22}   {t:<22} {cells}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-device", type=int, default=100, help="images per device (x10)")
    ap.add_argument("--size", default="512x384", help="WxH of the rendered images")
    ap.add_argument("--data", type=Path, default=None, help="folder to keep the set in")
    ap.add_argument("--png", action="store_true", help="also PNG and resized PNG copies")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    import torch

    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp) / "cams"
        paths, truth = _render(root, args.per_device, (w, h))
        _run("JPEG (as shot)", paths, truth, args.seed)
        if args.png:
            _run("PNG copies", _png_copies(paths, root / "png", 1.0), truth, args.seed)
            half = _png_copies(paths, root / "half", 0.5)
            _run("PNG resized x0.5", half, truth, args.seed)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
