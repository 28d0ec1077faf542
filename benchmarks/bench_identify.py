"""Benchmark of camid train / identify on the default synthetic camera set.

Prints: training time and validation accuracy, closed-set accuracy on the held-out test
images (and on manipulated copies), the "unknown" rate for photos of two cameras the model
never saw, for two more unseen cameras whose JPEG tables equal known cameras' and for the
known test photos, and identify's end-to-end images/s next to the bare model forward rate
on the same batch size, with their ratio.

    python benchmarks/bench_identify.py [--work DIR] [--time-budget 280] [--arch tracenet]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from camid.data.augment import parse_manipulations
from camid.data.dataset import load_dataset
from camid.engine.data import extract_views
from camid.engine.predict import (
    OpenSetRule,
    Predictor,
    aggregate,
    decision_logits,
    default_view_spec,
)
from camid.engine.train import TrainConfig, train
from camid.identify import Identifier
from camid.identify.evaluate import DEFAULT_MANIPULATIONS, evaluate
from camid.io.image import load_image
from camid.models.store import load_model

# Two cameras outside the default set (same simulator, other processing chains).
OUTSIDERS = {
    "name": "outsiders",
    "camera": [
        {
            "preset": "A",
            "id": "F",
            "make": "Lumetra",
            "model": "Q5",
            "sensor_seed": 6601,
            "demosaic": "bilinear",
            "cfa": "BGGR",
            "jpeg_quality": 85,
            "sharpen_amount": 0.3,
            "denoise_luma": 0.1,
        },
        {
            "preset": "C",
            "id": "G",
            "make": "Pexon",
            "model": "Aero 2",
            "sensor_seed": 7702,
            "demosaic": "gradient",
            "cfa": "GBRG",
            "jpeg_quality": 97,
            "subsampling": "4:4:4",
            "sharpen_amount": 1.2,
        },
    ],
}

# Two more outside cameras whose JPEG encoders use exactly the tables of known cameras
# (A's quality 93; D's 92 with chroma 89), so only the pixel traces can tell them apart:
# the hard open-set case (many real cameras share standard tables).
SHARED_TABLES = {
    "name": "shared-tables",
    "camera": [
        {
            "preset": "B",
            "id": "H",
            "make": "Quorra",
            "model": "Q1",
            "sensor_seed": 8801,
            "demosaic": "bilinear",
            "cfa": "GBRG",
            "jpeg_quality": 93,
            "jpeg_table_tilt": 0.0,
            "sharpen_amount": 1.0,
        },
        {
            "preset": "E",
            "id": "I",
            "make": "Talon",
            "model": "T9",
            "sensor_seed": 9902,
            "demosaic": "mhc",
            "cfa": "BGGR",
            "jpeg_quality": 92,
            "jpeg_chroma_quality": 89,
            "jpeg_table_tilt": 0.0,
            "tone": "srgb",
        },
    ],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="folder for data and models")
    ap.add_argument("--time-budget", type=float, default=280.0)
    ap.add_argument("--arch", default="tracenet")
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32, help="training crops per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--patches-per-image", type=int, default=16)
    ap.add_argument("--no-manipulate", action="store_true", help="train without manipulations")
    ap.add_argument("--infer-batch", type=int, default=128, help="views per forward pass")
    ap.add_argument("--per-device", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (best of)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    from camid.synth import make_camera_dataset, spec_from_dict

    work = args.work or Path(tempfile.mkdtemp(prefix="camid-bench-"))
    home = work / "home"
    os.environ["CAMID_HOME"] = str(home)
    fig: dict = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads",
        "load_avg_start": os.getloadavg()[0],
    }
    t0 = time.perf_counter()
    known_csv = work / "known" / "cameras.csv"
    if not known_csv.is_file():
        make_camera_dataset(
            work / "known", per_device=args.per_device, flat_per_device=0, seed=args.seed
        )

    def outside_set(folder: str, spec: dict, seed: int) -> Path:
        """Photos of cameras outside the model (written once per work folder)."""
        csv = work / folder / "cameras.csv"
        if not csv.is_file():
            make_camera_dataset(
                work / folder,
                spec=spec_from_dict(spec),
                per_device=max(4, args.per_device // 2),
                flat_per_device=0,
                seed=seed,
            )
        return csv

    out_csv = outside_set("outsiders", OUTSIDERS, args.seed + 1)
    shared_csv = outside_set("shared-tables", SHARED_TABLES, args.seed + 2)
    fig["synth_seconds"] = round(time.perf_counter() - t0, 1)
    ds = load_dataset(known_csv)
    outsiders = load_dataset(out_csv).samples
    test = [s for s in ds.samples if s.split == "test"]

    t0 = time.perf_counter()
    res = train(
        TrainConfig(
            name="bench",
            arch=args.arch,
            patch=args.patch,
            epochs=1000,
            batch_size=args.batch_size,
            lr=args.lr,
            time_budget=args.time_budget,
            patches_per_image=args.patches_per_image,
            manipulate=not args.no_manipulate,
            seed=args.seed,
            overwrite=True,
        ),
        ds.samples,
        progress=lambda ev: (
            print(
                f"  epoch {ev['epoch']}: loss {ev['train_loss']:.3f} val acc "
                f"{ev.get('val_accuracy', float('nan')):.3f} ({ev['seconds']:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
            if ev["event"] == "epoch"
            else None
        ),
    )
    fig["train_wall_seconds"] = round(time.perf_counter() - t0, 1)
    fig["train_seconds"] = round(res.card.metrics["seconds"], 1)
    fig["epochs"] = res.card.metrics["epochs_run"]
    fig["train_images"] = res.card.metrics["train_images"]
    fig["val_accuracy"] = res.card.metrics.get("val_accuracy")
    fig["temperature"] = res.card.calibration.get("temperature")

    model, card = load_model("bench")
    dev = torch.device("cpu")
    views = default_view_spec(card)
    rule = OpenSetRule.from_card(card)
    ident = Identifier(
        model, card, dev, views=views, rule=rule, batch_size=args.infer_batch, workers=args.workers
    )

    def run(samples):
        t = time.perf_counter()
        recs = [r for r in ident.identify([s.path for s in samples])]
        return recs, time.perf_counter() - t

    recs, _ = run(test)
    truth = [s.camera for s in test]
    fig["test_images"] = len(test)
    pairs = list(zip(recs, truth, strict=True))
    fig["test_accuracy"] = float(np.mean([r.top[0]["camera"] == t for r, t in pairs]))
    fig["known_unknown_rate"] = float(np.mean([r.decision == "unknown" for r in recs]))
    decided = [r.camera == t for r, t in pairs if r.decision == "known"]
    fig["known_accuracy_when_decided"] = float(np.mean(decided)) if decided else None
    # the same views aggregated by geometric mean instead of the mean of probabilities
    geo = []
    for i, _p, _m, lg in ident.logits_stream([s.path for s in test]):
        agg = aggregate(decision_logits(lg), ident.temperature, "geometric")
        geo.append(card.classes[agg.top] == truth[i])
    fig["test_accuracy_geometric"] = float(np.mean(geo))
    orecs, _ = run(outsiders)
    fig["outsider_images"] = len(outsiders)
    fig["outsider_unknown_rate"] = float(np.mean([r.decision == "unknown" for r in orecs]))
    shared = load_dataset(shared_csv).samples
    srecs, _ = run(shared)
    fig["shared_table_images"] = len(shared)
    fig["shared_table_unknown_rate"] = float(np.mean([r.decision == "unknown" for r in srecs]))
    fig["unknown_threshold"] = rule.threshold
    fig["support_thresholds"] = rule.support

    # accuracy on manipulated copies of the test photos (camid evaluate's default set)
    rep = evaluate(ident, test, conditions=parse_manipulations(DEFAULT_MANIPULATIONS))
    fig["manipulated_accuracy"] = {
        c.condition: round(c.accuracy, 3) for c in rep.conditions
    }

    # throughput: identify end to end vs the bare forward pass on the same views and batch
    # size, interleaved and best-of-N so that load from other processes hits both alike
    bench = (test * 3)[: max(60, len(test))]
    pre = [extract_views(load_image(s.path).pixels, views) for s in bench]
    allv = np.concatenate(pre)
    pred = Predictor(model, card, dev, batch_size=args.infer_batch)
    pred.forward(allv[: args.infer_batch])  # warm-up
    e2e, fwd = [], []
    for _ in range(args.repeats):
        e2e.append(run(bench)[1])
        t = time.perf_counter()
        pred.forward(allv)
        fwd.append(time.perf_counter() - t)
    dt_e2e, dt_fwd = min(e2e), min(fwd)
    fig["throughput_images"] = len(bench)
    fig["views_per_image"] = len(allv) / len(bench)
    fig["infer_batch"] = args.infer_batch
    fig["identify_images_per_s"] = round(len(bench) / dt_e2e, 2)
    fig["forward_images_per_s"] = round(len(bench) / dt_fwd, 2)
    fig["ratio"] = round(dt_fwd / dt_e2e, 3)
    fig["ratio_runs"] = [round(f / e, 3) for f, e in zip(fwd, e2e, strict=True)]
    fig["load_avg_end"] = os.getloadavg()[0]
    for k, v in fig.items():
        print(f"{k}: {v}")
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
