"""Pseudo-cameras: infer which images share a camera from their pixels alone.

For datasets whose EXIF is stripped and whose files are PNG or re-saved JPEG, the camera
column that a bias audit needs is missing. This module clusters the images by *model-level*
camera traces that survive in the pixels:

- ``jpeg_lattice``: how strongly the luma 8x8 block DCT sits on each candidate quantisation
  step (the encoder's table, read from pixels by `camid.models.traces.JpegLattice`); it
  survives a lossless (PNG) copy and is replaced by a re-save;
- ``residual``: statistics of a high-pass noise residual per colour channel (noise floor,
  kurtosis) and the correlation of the residual between channels (demosaicing, chroma
  denoising and subsampling couple the channels in a model-specific way);
- ``cfa``: the residual energy on each of the four 2x2 sub-lattices per channel (demosaicing
  leaves interpolated sites smoother than measured ones, in the layout of the colour filter).

PRNU (the device fingerprint) is not used: it needs large, aligned, unresized images, and the
groups sought here are camera models, which is what a dataset bias usually follows.

Features are standardised (median / MAD), each family is weighted equally, reduced by PCA
and clustered by Ward's agglomerative method; the number of clusters is the one with the best
mean silhouette, accepted only when that silhouette clearly beats what the same clustering
scores on a featureless Gaussian cloud of the same spread (continuous variation such as scene
content gives one elongated mode, which any clustering can still cut) and when the grouping
is stable across bootstrap subsamples (adjusted Rand index). Otherwise one group is returned
and, when the traces themselves are faint (small or resized images), the result says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from camid.engine.shard import ShardGroup
from camid.errors import InputError
from camid.io.image import load_image

Progress = Callable[[Iterable[Any], int, str], Iterable[Any]]

MIN_SIDE = 64
"""Images with a shorter side than this carry too few 8x8 blocks and CFA sites to compare."""
CROP = 256
"""Features are measured on a central crop of at most CROP x CROP pixels (grid-aligned)."""
MIN_IMAGES = 6
"""Fewer readable images than this are not clustered (one group, weak)."""
FIT_MAX = 2000
"""Clustering is fitted on at most this many images; the rest join the nearest centroid."""
SIL_MIN = 0.25
"""Lowest mean silhouette accepted for a split into cameras."""
NULL_MARGIN = 0.10
"""How far the silhouette must stand above the best one of the no-group Gaussian null."""
NULL_RUNS = 4
STAB_RUNS = 6
STAB_FRACTION = 0.8
STAB_MIN = 0.6
"""Mean adjusted Rand index across subsample re-runs below which a split is not trusted."""
PCA_VARIANCE = 0.9
PCA_MAX = 10
LATTICE_WEAK = 0.15
"""Median lattice strength below which images carry no JPEG lattice worth the name."""
FAMILIES = ("jpeg_lattice", "residual", "cfa")
PER_FEATURE = {"jpeg_lattice": False, "residual": True, "cfa": False}
"""Whether a family is scaled feature by feature (mixed quantities) or as a whole."""
LATTICE_EPS = 0.2
TILE = 16
GRID_SIDE = 128
"""Side of the central crop on which the JPEG grid offset is looked for."""


@dataclass
class PseudoCameras:
    """Cameras inferred from pixel traces for images without camera metadata."""

    labels: list[str | None]
    k: int
    weak: bool
    reason: str
    clusters: list[dict] = field(default_factory=list)
    stability: float = 0.0
    features: list[str] = field(default_factory=list)
    silhouette: float = 0.0
    null_silhouette: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (labels in input order)."""
        return {
            "labels": list(self.labels),
            "k": self.k,
            "weak": self.weak,
            "reason": self.reason,
            "clusters": [dict(c) for c in self.clusters],
            "stability": round(float(self.stability), 4),
            "features": list(self.features),
            "silhouette": round(float(self.silhouette), 4),
            "null_silhouette": round(float(self.null_silhouette), 4),
            "errors": dict(self.errors),
        }


# ----------------------------------------------------------------------------- statistics


def adjusted_rand_index(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Adjusted Rand index of two labelings of the same items (1 = same partition, ~0 = chance).

    Hubert & Arabie's correction of the Rand index for chance, from the contingency table.
    Two labelings that each put everything in one group (or each item alone) agree fully: 1.
    """
    if len(a) != len(b):
        raise ValueError(f"labelings differ in length ({len(a)} vs {len(b)})")
    n = len(a)
    if n < 2:
        return 1.0
    _, ia = np.unique(np.asarray(a, dtype=object).astype(str), return_inverse=True)
    _, ib = np.unique(np.asarray(b, dtype=object).astype(str), return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.float64)
    np.add.at(table, (ia, ib), 1.0)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) / 2.0).sum())

    index = pairs(table)
    sa, sb = pairs(table.sum(1)), pairs(table.sum(0))
    total = n * (n - 1) / 2.0
    expected = sa * sb / total
    top = (sa + sb) / 2.0
    if top == expected:  # both trivial partitions of the same kind
        return 1.0
    return float((index - expected) / (top - expected))


def _pairwise(x: np.ndarray) -> np.ndarray:
    sq = (x * x).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * x @ x.T
    return np.sqrt(np.maximum(d2, 0.0))


def silhouette_samples(dist: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-item silhouette from a full distance matrix (0 for members of singletons)."""
    ids = np.unique(labels)
    n = len(labels)
    if len(ids) < 2:
        return np.zeros(n)
    onehot = (labels[:, None] == ids[None, :]).astype(np.float64)
    sizes = onehot.sum(0)
    sums = dist @ onehot  # (n, k) summed distance to each cluster
    own = np.searchsorted(ids, labels)
    own_size = sizes[own]
    a = sums[np.arange(n), own] / np.maximum(own_size - 1, 1)
    mean_other = sums / sizes[None, :]
    mean_other[np.arange(n), own] = np.inf
    b = mean_other.min(1)
    s = (b - a) / np.maximum(np.maximum(a, b), 1e-12)
    s[own_size <= 1] = 0.0
    return s


# ----------------------------------------------------------------------------- features


_LATTICE = None


def _lattice_module():
    global _LATTICE
    if _LATTICE is None:
        from camid.models.traces import JpegLattice

        # mean 0, std 1/255: the module then takes plain 0..255 pixel values
        _LATTICE = JpegLattice(mean=0.0, std=1.0 / 255.0).eval()
    return _LATTICE


def _box3(p: np.ndarray) -> np.ndarray:
    """Mean of the 4 direct neighbours (edge-replicated) of each pixel of (C, H, W)."""
    q = np.pad(p, ((0, 0), (1, 1), (1, 1)), mode="edge")
    return (q[:, :-2, 1:-1] + q[:, 2:, 1:-1] + q[:, 1:-1, :-2] + q[:, 1:-1, 2:]) / 4.0


def lattice_profile(scores: np.ndarray, n_steps: int) -> np.ndarray:
    """Content-free quantisation profile from `JpegLattice` scores (steps x 63 frequencies).

    A frequency's score for step q is about p0 + (1 - p0) m_q, with p0 the share of blocks
    whose coefficient is zero (they score 1 at every step, however textured the scene) and
    m_q the lattice match of the others. Subtracting the median over steps and dividing by
    1 - median leaves m_q: ~1 on steps that divide the encoder's step, ~0 elsewhere. The
    LATTICE_EPS floor fades out frequencies that are almost always zero (no evidence).
    """
    s = scores.reshape(n_steps, -1)
    base = np.median(s, axis=0, keepdims=True)
    return ((s - base) / (1.0 - base + LATTICE_EPS)).ravel()


def _tiles(r: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (C, tiles, TILE, TILE) non-overlapping tiles."""
    c, h, w = r.shape
    th, tw = h // TILE, w // TILE
    t = r[:, : th * TILE, : tw * TILE].reshape(c, th, TILE, tw, TILE)
    return t.transpose(0, 1, 3, 2, 4).reshape(c, th * tw, TILE, TILE)


def image_features(pixels: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Trace features of one HxWx3 uint8 image: {family: vector} and strength indicators."""
    import torch

    from camid.models.traces import DEFAULT_STEPS, GRID_FREQS, GRID_STEPS, detect_jpeg_grid

    h, w = pixels.shape[:2]
    dy, dx = detect_jpeg_grid(pixels, side=GRID_SIDE)
    side_h = min(CROP, (h - dy) // 8 * 8)
    side_w = min(CROP, (w - dx) // 8 * 8)
    y0 = dy + ((h - dy - side_h) // 2) // 8 * 8
    x0 = dx + ((w - dx - side_w) // 2) // 8 * 8
    crop = np.asarray(pixels[y0 : y0 + side_h, x0 : x0 + side_w], dtype=np.float32)
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None]
        scores = _lattice_module()(t)[0].numpy().astype(np.float64)
    lattice = lattice_profile(scores, len(DEFAULT_STEPS))
    # lattice strength as traces.lattice_strength defines it (best step of a few low
    # frequencies), read from the scores already computed
    grid = scores.reshape(len(DEFAULT_STEPS), -1)
    rows = [DEFAULT_STEPS.index(q) for q in GRID_STEPS]
    strength = float(grid[rows][:, [f - 1 for f in GRID_FREQS]].max(axis=0).mean())

    # residual and CFA: a crop that starts on an even row and column of the stored image
    ch, cw = min(CROP, h) // TILE * TILE, min(CROP, w) // TILE * TILE
    cy, cx = (h - ch) // 4 * 2, (w - cw) // 4 * 2
    planes = np.asarray(pixels[cy : cy + ch, cx : cx + cw], dtype=np.float64).transpose(2, 0, 1)
    tiles = _tiles(planes - _box3(planes))  # (3, T, TILE, TILE) high-pass residual
    sub = np.stack(
        [(tiles[:, :, i::2, j::2] ** 2).mean((2, 3)) for i in (0, 1) for j in (0, 1)], axis=-1
    )  # (3, T, 4) energy per 2x2 sub-lattice
    energy = sub.mean(-1)  # (3, T)
    busy = energy[1] > np.percentile(energy[1], 25)  # skip flat / clipped tiles
    cfa = np.median(np.log(sub[:, busy] / (energy[:, busy, None] + 1e-9) + 1e-6), axis=1)
    flat = tiles.reshape(3, tiles.shape[1], -1)
    flat = flat - flat.mean(-1, keepdims=True)
    sd = np.sqrt((flat**2).mean(-1)) + 1e-9
    corr = [
        np.median(((flat[a] * flat[b]).mean(-1) / (sd[a] * sd[b]))[busy])
        for a, b in ((0, 1), (0, 2), (1, 2))
    ]
    floor = np.log(np.percentile(energy, 10, axis=1) + 1e-3)  # noise floor per channel
    residual = np.array([*corr, floor[0] - floor[1], floor[2] - floor[1]])
    families = {"jpeg_lattice": lattice, "residual": residual, "cfa": cfa.ravel()}
    return families, {"lattice": float(strength), "cfa": float(np.abs(cfa).max(1).mean())}


# ----------------------------------------------------------------------------- clustering


def _standardise(x: np.ndarray, per_feature: bool) -> np.ndarray:
    """Centre on the median; scale per feature (MAD) or by the family's overall spread.

    Families of like quantities (lattice profile, CFA log-ratios) keep their relative scales,
    so a feature that barely varies (no evidence) stays small instead of being blown up to
    unit variance; mixed families are scaled feature by feature.
    """
    med = np.median(x, axis=0)
    z = x - med
    if per_feature:
        mad = np.median(np.abs(z), axis=0) * 1.4826
        scale = np.where(mad > 1e-9, mad, x.std(axis=0))
        keep = scale > 1e-9
        z = z[:, keep] / scale[keep]
        return np.clip(z, -8.0, 8.0)  # one odd image must not dominate a direction
    total = float(np.sqrt((z**2).sum(1).mean()))
    return z / total if total > 1e-12 else z[:, :0]


def _embed(blocks: list[np.ndarray], per_feature: list[bool]) -> np.ndarray:
    """Standardise each family, weight families equally, reduce by PCA (numpy SVD)."""
    parts = []
    for b, pf in zip(blocks, per_feature, strict=True):
        z = _standardise(b, pf)
        if z.shape[1]:
            parts.append(z / np.sqrt(z.shape[1]) if pf else z)
    if not parts:
        return np.zeros((blocks[0].shape[0], 1))
    x = np.concatenate(parts, axis=1)
    x = x - x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    var = s**2
    if var.sum() <= 1e-18:
        return np.zeros((x.shape[0], 1))
    cum = np.cumsum(var) / var.sum()
    m = int(min(PCA_MAX, max(1, np.searchsorted(cum, PCA_VARIANCE) + 1), len(s)))
    return u[:, :m] * s[:m]


def _ward(x: np.ndarray, ks: Iterable[int]) -> dict[int, np.ndarray]:
    from scipy.cluster.hierarchy import fcluster, linkage

    tree = linkage(x, method="ward")
    return {k: fcluster(tree, t=k, criterion="maxclust") - 1 for k in ks}


def _best_split(x: np.ndarray, max_k: int) -> tuple[int, float, np.ndarray, np.ndarray]:
    """(k, mean silhouette, labels, per-item silhouette) of the best Ward cut, k >= 2."""
    n = len(x)
    ks = range(2, max(2, min(max_k, n - 1)) + 1)
    dist = _pairwise(x)
    best = (2, -1.0, np.zeros(n, dtype=int), np.zeros(n))
    for k, lab in _ward(x, ks).items():
        if len(np.unique(lab)) < 2:
            continue
        s = silhouette_samples(dist, lab)
        if s.mean() > best[1] + 1e-9:
            best = (k, float(s.mean()), lab, s)
    return best


def _null_silhouette(x: np.ndarray, max_k: int, rng: np.random.Generator) -> float:
    """Best silhouette of Gaussian data with the embedding's spread and no groups.

    Continuous variation (scene content, exposure) gives elongated but single-mode clouds,
    which any clustering can still cut with a fair silhouette; groups of cameras must beat
    what the same cut scores on a featureless Gaussian of the same per-axis spread.
    """
    sd = x.std(axis=0)
    top = -1.0
    for _ in range(NULL_RUNS):
        top = max(top, _best_split(rng.standard_normal(x.shape) * sd, max_k)[1])
    return top


@dataclass
class _Fit:
    k: int
    silhouette: float
    labels: np.ndarray
    per_item: np.ndarray
    null: float
    stability: float

    @property
    def clear(self) -> bool:
        return self.silhouette >= max(SIL_MIN, self.null + NULL_MARGIN)

    @property
    def stable(self) -> bool:
        return self.stability >= STAB_MIN


def _assess(
    blocks: list[np.ndarray], per_feature: list[bool], max_k: int, rng: np.random.Generator
) -> _Fit:
    """Best Ward split of these families, its no-group null and its stability."""
    x = _embed(blocks, per_feature)
    k, sil, lab, per_item = _best_split(x, max_k)
    null = _null_silhouette(x, max_k, rng)
    stability = _stability(x, lab, k, rng)
    return _Fit(k, sil, lab, per_item, null, stability)


def _stability(x: np.ndarray, labels: np.ndarray, k: int, rng: np.random.Generator) -> float:
    """Mean ARI between the fitted labels and Ward re-fits on bootstrap subsamples."""
    n = len(x)
    m = max(k + 1, int(round(STAB_FRACTION * n)))
    scores = []
    for _ in range(STAB_RUNS):
        idx = np.sort(rng.choice(n, size=min(m, n), replace=False))
        lab = _ward(x[idx], [k])[k]
        scores.append(adjusted_rand_index(labels[idx], lab))
    return float(np.mean(scores)) if scores else 0.0


# ----------------------------------------------------------------------------- entry point


def _one_group(
    n_paths: int, ok: list[int], weak: bool, reason: str, features: list[str], errors: dict
) -> PseudoCameras:
    labels: list[str | None] = [None] * n_paths
    for i in ok:
        labels[i] = "cam1"
    clusters = [{"name": "cam1", "size": len(ok), "cohesion": None}] if ok else []
    return PseudoCameras(
        labels=labels,
        k=1,
        weak=weak,
        reason=reason,
        clusters=clusters,
        stability=1.0 if not weak else 0.0,
        features=features,
        errors=errors,
    )


@dataclass
class TraceRows:
    """The per-image pass of `infer_cameras` over some of its inputs (picklable, so that
    torchrun ranks can each read a block and gather the rows): indices of the readable
    images, their feature rows per family, lattice strengths, shorter sides, and errors."""

    ok: list[int] = field(default_factory=list)
    feats: dict[str, np.ndarray] = field(default_factory=dict)
    lattice: list[float] = field(default_factory=list)
    sides: list[int] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def join(parts: Sequence[TraceRows]) -> TraceRows:
        """Rows of consecutive blocks joined in order."""
        done = [p for p in parts if p.feats]
        return TraceRows(
            ok=[i for p in parts for i in p.ok],
            feats={f: np.concatenate([p.feats[f] for p in done]) for f in FAMILIES} if done else {},
            lattice=[x for p in parts for x in p.lattice],
            sides=[x for p in parts for x in p.sides],
            errors={k: v for p in parts for k, v in p.errors.items()},
        )


def trace_rows(
    paths: Sequence[str | Path], indices: Sequence[int], progress: Progress | None = None
) -> TraceRows:
    """Camera-trace features of `paths[i]` for each i in `indices` (the expensive pass)."""
    # rows are copied into arrays allocated once: keeping many small per-image arrays alive
    # between the large temporaries of feature extraction fragments the heap (GBs for 1,000)
    rows = TraceRows()
    items: Iterable[Any] = ((i, paths[i]) for i in indices)
    if progress is not None:
        items = progress(items, len(indices), "camera traces")
    for i, p in items:
        try:
            img = load_image(p)
        except InputError as exc:
            rows.errors[str(p)] = exc.reason
            continue
        h, w = img.pixels.shape[:2]
        if min(h, w) < 16:
            rows.errors[str(p)] = f"image is {w}x{h}, too small to read camera traces"
            continue
        fam, strength = image_features(img.pixels)
        if not rows.feats:
            rows.feats = {f: np.zeros((len(indices), len(fam[f]))) for f in FAMILIES}
        for name in FAMILIES:
            rows.feats[name][len(rows.ok)] = fam[name]
        del fam, img
        rows.lattice.append(strength["lattice"])
        rows.sides.append(min(h, w))
        rows.ok.append(i)
    rows.feats = {f: a[: len(rows.ok)] for f, a in rows.feats.items()}
    return rows


def infer_cameras(
    paths: Sequence[str | Path],
    *,
    seed: int = 0,
    max_k: int = 12,
    progress: Progress | None = None,
    group: ShardGroup | None = None,
) -> PseudoCameras:
    """Cluster images by camera traces read from their pixels into pseudo-cameras.

    Labels are "cam1".."camK" (cam1 the largest group) per input path, None for files that
    cannot be read (their one-line reasons are in `errors`). Deterministic for a seed.
    With a `group` of torchrun ranks, each rank reads a contiguous block of the images,
    rank 0 clusters the gathered rows and every rank gets its result (the same as one
    process's).
    """
    paths = list(paths)
    if group is not None and group.enabled:
        parts: list[TraceRows] = []
        block = group.rank_shard.bounds(len(paths))
        group.collect(trace_rows(paths, range(*block), progress), parts.append)
        res = _cluster(paths, TraceRows.join(parts), seed, max_k) if group.is_main else None
        return group.broadcast(res)
    return _cluster(paths, trace_rows(paths, range(len(paths)), progress), seed, max_k)


def _cluster(paths: list, rows: TraceRows, seed: int, max_k: int) -> PseudoCameras:
    """The statistics of `infer_cameras` on the rows of every image."""
    rng = np.random.default_rng(seed)
    feats, lat_strength, sides, ok, errors = (
        rows.feats, rows.lattice, rows.sides, rows.ok, rows.errors
    )  # fmt: skip
    n = len(ok)
    if n < MIN_IMAGES:
        why = f"only {n} readable image(s); at least {MIN_IMAGES} are needed to infer cameras"
        return _one_group(len(paths), ok, True, why, [], errors)
    lattice_med = float(np.median(lat_strength))
    side_med = float(np.median(sides))
    faint = []
    if side_med < MIN_SIDE:
        why = f"images are too small (median shorter side {side_med:.0f} px < {MIN_SIDE})"
        return _one_group(len(paths), ok, True, "camera traces too weak: " + why, [], errors)
    if lattice_med < LATTICE_WEAK:
        faint.append(f"no JPEG lattice in the pixels (median strength {lattice_med:.2f})")

    fit = np.arange(n)
    if n > FIT_MAX:
        fit = np.sort(rng.choice(n, size=FIT_MAX, replace=False))
    all_blocks = {f: feats[f][:n] for f in FAMILIES}
    blocks = {f: b[fit] for f, b in all_blocks.items()}
    max_k = max(2, int(max_k))
    # The lattice profile is the anchor: it means nothing where the pixels carry no lattice
    # (resized or never-compressed images), and the residual and CFA statistics also follow
    # scene content, so they may refine lattice groups but never form groups on their own.
    families = list(FAMILIES) if lattice_med >= LATTICE_WEAK else list(FAMILIES[1:])
    per_family = {f: _assess([blocks[f]], [PER_FEATURE[f]], max_k, rng) for f in families}
    candidates: dict[tuple[str, ...], _Fit] = {}
    lat = per_family.get("jpeg_lattice")
    if lat is not None and lat.clear and lat.stable:
        candidates[("jpeg_lattice",)] = lat
        support = [f for f in FAMILIES[1:] if per_family[f].clear and per_family[f].stable]
        if support:
            joint_f = ["jpeg_lattice", *support]
            joint = _assess(
                [blocks[f] for f in joint_f], [PER_FEATURE[f] for f in joint_f], max_k, rng
            )
            if joint.clear and joint.stable:
                candidates[tuple(joint_f)] = joint
    summary = ", ".join(
        f"{f} {r.silhouette:.2f}/{r.null:.2f}/{r.stability:.2f}" for f, r in per_family.items()
    )
    if not candidates:
        weak = bool(faint)
        if weak:
            reason = "camera traces too weak to infer cameras: " + "; ".join(faint)
        else:
            reason = (
                "the images share one camera-trace profile (one camera model, or one "
                "re-save of them all): no trace family splits them"
            )
        reason += f" (silhouette/null/stability: {summary})"
        res = _one_group(len(paths), ok, weak, reason, [], errors)
        best = max(per_family.values(), key=lambda r: r.silhouette - r.null)
        res.silhouette, res.null_silhouette = best.silhouette, best.null
        res.stability = 0.0 if weak else 1.0
        return res
    used_t, fitres = max(candidates.items(), key=lambda kv: kv[1].silhouette - kv[1].null)
    used = list(used_t)
    k, lab = fitres.k, fitres.labels
    x_all = _embed([all_blocks[f] for f in used], [PER_FEATURE[f] for f in used])
    x = x_all[fit]

    # assign every image (also those outside the fitted subsample) to the nearest centroid
    cents = np.stack([x[lab == c].mean(0) for c in range(k)])
    full = np.argmin(((x_all[:, None, :] - cents[None]) ** 2).sum(-1), axis=1)
    full[fit] = lab
    sizes = np.bincount(full, minlength=k)
    first = [int(np.flatnonzero(full == c)[0]) if sizes[c] else n for c in range(k)]
    order = sorted(range(k), key=lambda c: (-sizes[c], first[c]))
    name_of = {c: f"cam{j + 1}" for j, c in enumerate(order)}
    labels: list[str | None] = [None] * len(paths)
    for j, i in enumerate(ok):
        labels[i] = name_of[int(full[j])]
    fit_pos = {int(j): t for t, j in enumerate(fit)}
    clusters = []
    for c in order:
        members = [fit_pos[j] for j in np.flatnonzero(full == c) if j in fit_pos]
        coh = float(fitres.per_item[members].mean()) if members else 0.0
        clusters.append({"name": name_of[c], "size": int(sizes[c]), "cohesion": round(coh, 4)})
    reason = (
        f"{k} groups of images with shared camera traces ({', '.join(used)}); silhouette "
        f"{fitres.silhouette:.2f} (no-group null {fitres.null:.2f}), subsample ARI "
        f"{fitres.stability:.2f}"
    )
    if faint:
        reason += "; note: " + "; ".join(faint)
    return PseudoCameras(
        labels=labels,
        k=k,
        weak=False,
        reason=reason,
        clusters=clusters,
        stability=fitres.stability,
        features=used,
        silhouette=fitres.silhouette,
        null_silhouette=fitres.null,
        errors=errors,
    )
