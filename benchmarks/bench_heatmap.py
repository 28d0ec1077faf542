"""Benchmark of `camid heatmap` on a 12 MP photo with the default network (tracenet).

Times `camera_map` (cut every 64-px window on the 8-px grid, classify in batches, soft-max)
at stride = window on a 4000x3000 photo against the named baseline, a bare forward pass of
the same network over the same windows cut beforehand (ratio = bare / heatmap time; 1.0 means
the map costs nothing beyond the network), and the PRNU splice map of a 4000x3000 photo with
the default 128-px windows at stride 16 (residual + map). The network's weights are
untrained (speed does not depend on them); the model card is the one `camid train` writes.

    python benchmarks/bench_heatmap.py [--threads N] [--device cpu] [--stride 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from camid.audit.heatmap import camera_map
from camid.engine.predict import Predictor
from camid.models.registry import get_arch, get_model
from camid.models.store import ModelCard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default="tracenet")
    ap.add_argument("--stride", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--skip-prnu", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, size=(args.height, args.width, 3), dtype=np.uint8)
    size = get_arch(args.arch).input_size
    torch.manual_seed(0)
    net = get_model(args.arch, 5).eval()
    card = ModelCard(
        name="bench",
        arch=args.arch,
        classes=[f"cam{i}" for i in range(5)],
        input_size=size,
        task="camera",
        mean=[0.5] * 3,
        std=[0.5] * 3,
    )
    dev = torch.device(args.device)
    pred = Predictor(net, card, dev, batch_size=args.batch_size)
    camera_map(pred, photo[:256, :256])  # warm-up
    t = time.perf_counter()
    cm = camera_map(pred, photo, stride=args.stride)
    cnn_s = time.perf_counter() - t
    views = cm.probs.shape[0] * cm.probs.shape[1]
    # baseline: the bare network on the same windows, cut beforehand (no map bookkeeping)
    from camid.engine.data import sliding_views

    cut, _ = sliding_views(photo, cm.geometry.window, cm.geometry.stride)
    t = time.perf_counter()
    pred.forward(cut)
    bare_s = time.perf_counter() - t
    result = {
        "photo": f"{args.width}x{args.height}",
        "arch": args.arch,
        "window": cm.geometry.window,
        "stride": cm.geometry.stride,
        "grid": list(cm.probs.shape[:2]),
        "views": views,
        "cnn_seconds": round(cnn_s, 2),
        "views_per_s": round(views / cnn_s, 1),
        "bare_forward_seconds": round(bare_s, 2),
        "ratio_bare_over_heatmap": round(bare_s / cnn_s, 2),
        "device": str(dev),
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    if not args.skip_prnu:
        from camid.prnu.fingerprint import Fingerprint
        from camid.prnu.localize import splice_map
        from camid.prnu.residual import ResidualParams

        k = (rng.standard_normal((args.height, args.width)) * 0.01).astype(np.float32)
        fp = Fingerprint(k=k, device_name="bench", image_count=1, params=ResidualParams())
        t = time.perf_counter()
        m = splice_map(photo, fp, device=dev)
        result["prnu_seconds"] = round(time.perf_counter() - t, 2)
        result["prnu_grid"] = list(m.shape)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
