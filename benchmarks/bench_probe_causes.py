"""Why do the binary-mask and colour-jitter probes miss the paper on the synthetic cameras?

Controlled experiments behind docs/reproduce.md ("The two misses"): each variant trains the
probe recipe of `camid reproduce` (tracenet, camera target, `--seconds` of training, the
synthetic camera set of the default run: 12 photos per device at 256x192, its 30 test
photos) with one change, and prints the test accuracy beside the unprobed baseline, and
the accuracy of each evidence head alone (tracenet: combined, pixels, compression).

Binary masks (Table III):
  binary           camid's probe: local-mean threshold, window 15, offset 0
  binary_offset    the same with an offset (pixel white unless it is OFFSET levels darker than
                   its local mean): flat regions turn uniformly white, dark structures stay
  binary_blur      Gaussian blur (sigma 1.5) before the threshold: sensor-noise-scale texture
                   is smoothed away, shapes stay
  binary_flat      the mask kept only in the flatter half of the crop (the rest white)
  binary_textured  the mask kept only in the more textured half (the flat half white)
Colour jitter (Table IV):
  colour           camid's probe (brightness, contrast, saturation 0.5-1.5, hue +-0.1 turn);
                   tested on jittered views (camid) and on the clean photos (the paper's
                   protocol: jitter at training time)
  colour_hs        hue and saturation only (luma kept)
  colour_bc        brightness and contrast only (luma scaled)
  colour_noclip    brightness and contrast factors 0.5-1.0 only (no highlight clipping)
  colour_x2        camid's probe with twice the training (epochs or seconds)
  binary_x2        camid's binary probe with twice the training

    python benchmarks/bench_probe_causes.py [--epochs 3 | --epochs 0 --seconds 60]
                                            [--seeds 0] [--only a,b] [--json out.json]

A fixed number of epochs gives every variant the same compute on a contended machine (a
wall-clock budget does not).

Seeds change both the synthetic photos and the training; with several seeds the script
prints the mean and the spread (sample standard deviation) of each variant.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

from camid.data import augment
from camid.data.augment import BINARY_WINDOW, JITTER_HUE, JITTER_SATURATION, binarise, greyscale

OFFSET = 12  # levels; the synthetic photos' flat-region noise is about 5-8 levels rms


def _grey(px: np.ndarray) -> np.ndarray:
    return greyscale(px)[..., 0].astype(np.float64)


def _to_rgb(grey: np.ndarray) -> np.ndarray:
    g = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def binary_offset(px: np.ndarray, rng=None) -> np.ndarray:
    """White unless the grey value is more than OFFSET below its local mean."""
    g = _grey(px)
    mean = uniform_filter(g, BINARY_WINDOW, mode="mirror")
    return _to_rgb(np.where(g > mean - OFFSET, 255, 0))


def binary_blur(px: np.ndarray, rng=None) -> np.ndarray:
    """Local-mean threshold of a Gaussian-blurred (sigma 1.5) grey image."""
    return binarise(_to_rgb(gaussian_filter(_grey(px), 1.5)))


def _flat_mask(px: np.ndarray) -> np.ndarray:
    g = _grey(px)
    d = g - uniform_filter(g, BINARY_WINDOW, mode="mirror")
    local = uniform_filter(d * d, BINARY_WINDOW, mode="mirror")
    return local <= np.median(local)


def binary_flat(px: np.ndarray, rng=None) -> np.ndarray:
    """camid's mask in the flatter half of the crop; white elsewhere."""
    out = binarise(px)
    out[~_flat_mask(px)] = 255
    return out


def binary_textured(px: np.ndarray, rng=None) -> np.ndarray:
    """camid's mask in the more textured half of the crop; white elsewhere."""
    out = binarise(px)
    out[_flat_mask(px)] = 255
    return out


_LUMA = np.array([0.299, 0.587, 0.114])


def _hue_sat(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    s = rng.uniform(1 - JITTER_SATURATION, 1 + JITTER_SATURATION)
    theta = 2 * np.pi * rng.uniform(-JITTER_HUE, JITTER_HUE)
    grey = (x @ _LUMA)[..., None]
    x = np.clip(grey + (x - grey) * s, 0, 255)
    yiq = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    c, si = np.cos(theta), np.sin(theta)
    m = np.linalg.inv(yiq) @ np.array([[1, 0, 0], [0, c, -si], [0, si, c]]) @ yiq
    return x @ m.T


def _bright_contrast(x: np.ndarray, rng: np.random.Generator, lo: float, hi: float):
    b, c = rng.uniform(lo, hi), rng.uniform(lo, hi)
    x = np.clip(x * b, 0, 255)
    mean = (x @ _LUMA).mean()
    return np.clip((x - mean) * c + mean, 0, 255)


def colour_hs(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hue and saturation jitter only."""
    x = _hue_sat(px.astype(np.float64), rng)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def colour_bc(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness and contrast jitter only (0.5-1.5)."""
    x = _bright_contrast(px.astype(np.float64), rng, 0.5, 1.5)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def colour_noclip(px: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness and contrast 0.5-1.0 (nothing pushed into clipping), then hue/saturation."""
    x = _hue_sat(_bright_contrast(px.astype(np.float64), rng, 0.5, 1.0), rng)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


VARIANT_FNS = {
    "binary_offset": binary_offset,
    "binary_blur": binary_blur,
    "binary_flat": binary_flat,
    "binary_textured": binary_textured,
    "colour_hs": colour_hs,
    "colour_bc": colour_bc,
    "colour_noclip": colour_noclip,
}
# name -> (pixel probe, budget factor, also test on clean photos)
VARIANTS = {
    "baseline": (None, 1.0, False),
    "binary": ("binary", 1.0, False),
    "binary_offset": ("binary_offset", 1.0, False),
    "colour": ("colour", 1.0, True),
    "colour_hs": ("colour_hs", 1.0, False),
    "colour_bc": ("colour_bc", 1.0, True),
    "binary_blur": ("binary_blur", 1.0, False),
    "binary_flat": ("binary_flat", 1.0, False),
    "binary_textured": ("binary_textured", 1.0, False),
    "colour_noclip": ("colour_noclip", 1.0, True),
    "colour_x2": ("colour", 2.0, True),
    "binary_x2": ("binary", 2.0, False),
}


def head_accuracies(ident, test_rows) -> dict[str, float]:
    """Test accuracy of each evidence head of the model (tracenet: combined, pixels,
    compression): view probabilities averaged per image, argmax against the camera."""
    from camid.engine.data import extract_views
    from camid.io.image import load_image
    from camid.models.registry import head_names

    heads = head_names(ident.predictor.model) or ("combined",)
    classes = list(ident.card.classes)
    hits = {h: 0 for h in heads}
    for row in test_rows:
        logits = ident.predictor.forward(extract_views(load_image(row.path).pixels, ident.views))
        if logits.ndim == 2:
            logits = logits[:, None, :]
        z = logits - logits.max(axis=2, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=2, keepdims=True)
        for k, h in enumerate(heads):
            hits[h] += classes[int(p[:, k].mean(0).argmax())] == row.camera
    return {h: round(n / len(test_rows), 3) for h, n in hits.items()}


def run_variant(name, train_rows, test_rows, home, epochs, seconds, seed, arch):
    """Train one variant for `epochs` epochs (or, when 0, `seconds` of wall clock); the
    budget factor multiplies either. {accuracy, accuracy_clean?, seconds, epochs, stopped}."""
    from camid.engine.train import TrainConfig, train
    from camid.identify.evaluate import evaluate
    from camid.identify.identifier import Identifier

    probe, factor, clean = VARIANTS[name]
    cfg = TrainConfig(
        name=f"causes-{name}", arch=arch, target="camera", seed=seed, device="cpu", probe=probe,
        epochs=int(round(epochs * factor)) or None,
        time_budget=None if epochs else seconds * factor,
    )  # fmt: skip
    t0 = time.perf_counter()
    res = train(cfg, train_rows, home=home)
    out = {"seconds": round(time.perf_counter() - t0, 1), "stopped": res.stopped,
           "epochs": res.card.metrics.get("epochs_run")}  # fmt: skip
    ident = Identifier.from_model(cfg.name, device="cpu", home=home, workers=1)
    out["accuracy"] = evaluate(ident, test_rows, conditions=[None]).conditions[0].accuracy
    out["heads"] = head_accuracies(ident, test_rows)
    if clean:
        ident.views = dataclasses.replace(ident.views, probe=None)
        out["accuracy_clean"] = evaluate(ident, test_rows, conditions=[None]).conditions[0].accuracy
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="epochs per variant (0: --seconds)")
    ap.add_argument("--seconds", type=float, default=60.0, help="wall-clock training seconds")
    ap.add_argument("--seeds", default="0", help="comma-separated seeds (data and training)")
    ap.add_argument("--only", default="", help="comma-separated variants (default: all)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unprobed baseline")
    ap.add_argument("--arch", default="tracenet")
    ap.add_argument("--per-device", type=int, default=12)
    ap.add_argument("--json", default="", help="also write the results to this JSON file")
    args = ap.parse_args()
    augment.PIXEL_PROBES.update(VARIANT_FNS)  # this process only: the experiment's variants
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    if "baseline" not in names and not args.no_baseline:
        names.insert(0, "baseline")
    from camid.audit.probes import probe_split
    from camid.data.dataset import load_dataset
    from camid.synth import make_camera_dataset

    seeds = [int(s) for s in args.seeds.split(",")]
    per = f"{args.epochs} epochs" if args.epochs else f"{args.seconds:g} s"
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; {args.arch}, {per} per training")  # fmt: skip
    results: dict[str, list[dict]] = {n: [] for n in names}
    for seed in seeds:
        with tempfile.TemporaryDirectory(prefix="camid-causes-") as tmp:
            csv = make_camera_dataset(
                Path(tmp) / "cams", per_device=args.per_device, flat_per_device=0,
                size=(256, 192), seed=seed, overwrite=True,
            )  # fmt: skip
            samples = [s for s in load_dataset(csv).samples if s.camera]
            train_rows, test_rows, _ = probe_split(samples, "camera", 0.25, seed)
            for n in names:
                r = run_variant(n, train_rows, test_rows, Path(tmp) / "home", args.epochs,
                                args.seconds, seed, args.arch)  # fmt: skip
                r["seed"] = seed
                results[n].append(r)
                clean = r.get("accuracy_clean")
                print(f"seed {seed} {n:16s} acc {r['accuracy']:.3f}"
                      + (f"  clean-test {clean:.3f}" if clean is not None else "")
                      + "  heads " + " ".join(f"{k} {v:.2f}" for k, v in r["heads"].items())
                      + f"  ({r['epochs']} epochs, {r['seconds']:.0f} s, stop {r['stopped']})",
                      flush=True)  # fmt: skip
    print(f"\n{'variant':16s} {'mean':>6s} {'sd':>6s} {'clean':>6s}  per seed  (n_test "
          f"{len(test_rows)}, chance 0.200)")  # fmt: skip
    for n, rs in results.items():
        accs = [r["accuracy"] for r in rs]
        sd = statistics.stdev(accs) if len(accs) > 1 else float("nan")
        cl = [r["accuracy_clean"] for r in rs if "accuracy_clean" in r]
        cls = f"{statistics.mean(cl):6.3f}" if cl else f"{'-':>6s}"
        print(
            f"{n:16s} {statistics.mean(accs):6.3f} {sd:6.3f} {cls}  "
            + " ".join(f"{a:.2f}" for a in accs)
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
