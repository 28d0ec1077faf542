"""How camid train holds large photos: tiles (decode once) vs decoding every epoch.

Writes N camera-size JPEGs (default 24 x 12 MP, 4000x3000, 3 classes), then trains the
same small model for a few epochs twice through `camid.engine.train.train`: once with
`cache=False` (every photo decoded again each epoch: the behaviour before tiles) and once
with the automatic plan under a memory budget too small for whole photos (tiles). Prints
seconds per run and per epoch, and the ratio. Not a test: it prints figures.

    python benchmarks/bench_train_io.py [--photos 24] [--epochs 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import camid.engine.data as data_mod  # noqa: E402
from camid.data.manifest import Sample  # noqa: E402
from camid.engine.train import TrainConfig, train  # noqa: E402


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 120 + 60 * np.sin(x / (17 + seed % 5)) * np.cos(y / 23.0)
    img = np.stack([base, base * 0.9 + 10, base * 0.8 + 20], axis=2)
    img += rng.normal(0, 6, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=24)
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="camid-trainio-"))
    (work / "img").mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(args.photos):
        path = work / "img" / f"p{i:03d}.jpg"
        if not path.exists():
            Image.fromarray(_photo(args.height, args.width, i)).save(path, quality=90)
        cls = f"cam{i % 3}"
        samples.append(Sample(path=path, label=cls, camera=cls, device=None, split=None))
    print(
        f"machine: {platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.photos} photos {args.width}x{args.height}, "
        f"{args.epochs} epochs, load average {os.getloadavg()[0]:.2f}"
    )
    cfg = dict(arch="tracenet", epochs=args.epochs, patches_per_image=16, batch_size=32, seed=0)
    whole = args.width * args.height * 3 * args.photos
    budget = whole // 4  # whole photos do not fit; tiles do
    results = {}
    for mode in ("decode", "tiles"):
        if mode == "tiles":
            data_mod.DEFAULT_CACHE_BYTES = budget
        t0 = time.perf_counter()
        res = train(
            TrainConfig(name=f"io-{mode}", cache=False if mode == "decode" else None, **cfg),
            samples,
            home=work / f"home-{mode}",
        )
        dt = time.perf_counter() - t0
        per_epoch = [round(h["seconds"], 1) for h in res.history]
        results[mode] = dt
        print(f"{mode:>6}: {dt:.1f} s in all (epochs {per_epoch} s; includes the start)")
    print(f"ratio decode / tiles: {results['decode'] / results['tiles']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
