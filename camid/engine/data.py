"""Feeding the networks: decoded-image stores, training patch sets, samplers, view grids.

Training items are whole images: one item yields `patches_per_image` augmented crops, so an
image is decoded at most once per epoch (or never again when the store caches pixels).
Randomness is keyed by (seed, epoch, slot) so a run is repeatable whatever the number of
loader workers or ranks, and a resumed run draws the same crops as an uninterrupted one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from camid.data.augment import apply_pixel_probe, d4
from camid.data.patches import (
    ALIGN,
    CropRecipe,
    crop,
    five_crop_positions,
    grid_positions,
    random_crop,
    region_bounds,
    region_view,
    training_crop,
)
from camid.io.image import load_image

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CACHE_BYTES = 1_500_000_000


class ImageStore:
    """Decoded pixels of a list of files: all in memory (cache) or decoded on demand."""

    def __init__(
        self,
        paths: Sequence[Path],
        cache: bool = False,
        decoded: dict[Path, np.ndarray] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.cache = cache
        held = decoded if cache and decoded else {}
        self._pixels: list[np.ndarray | None] = [held.get(p) for p in self.paths]
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.paths)

    def get(self, i: int) -> np.ndarray:
        """HxWx3 uint8 pixels of image i (InputError if unreadable)."""
        px = self._pixels[i]
        if px is not None:
            return px
        px = load_image(self.paths[i]).pixels
        if self.cache:
            with self._lock:
                self._pixels[i] = px
        return px

    def views(self, i: int, spec: ViewSpec) -> np.ndarray:
        """The inference/validation views of image i."""
        return extract_views(self.get(i), spec)

    def preload(self, progress: Callable[[Iterable[int]], Iterable[int]] | None = None) -> None:
        """Decode every image now (only with cache=True)."""
        if not self.cache:
            return
        idx: Iterable[int] = range(len(self.paths))
        for i in progress(idx) if progress else idx:
            self.get(i)


class ViewCache:
    """An ImageStore whose views (for one fixed ViewSpec) are kept after the first request,
    up to `limit_bytes`: validation sees the same views every epoch, so photos too large to
    cache whole are decoded once instead of once per epoch."""

    def __init__(self, store: ImageStore, spec: ViewSpec, limit_bytes: int = 500_000_000):
        self.store = store
        self.spec = spec
        self.limit = limit_bytes
        self.held = 0
        self._views: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.store)

    def views(self, i: int, spec: ViewSpec) -> np.ndarray:
        """Views of image i (cached for the store's own spec)."""
        if spec != self.spec:
            return self.store.views(i, spec)
        v = self._views.get(i)
        if v is None:
            v = self.store.views(i, spec)
            with self._lock:
                if self.held + v.nbytes <= self.limit:
                    self._views[i] = v
                    self.held += v.nbytes
        return v


class TileStore:
    """For photos too large to keep whole: each image is decoded once and `per_image`
    random `tile` x `tile` crops of it (corners on the JPEG/CFA grid, inside `region`) are
    kept; training crops are then drawn from the tiles.

    A 12 MP photo costs 36 MB decoded and ~0.2 s to decode on a CPU core; 16 tiles of
    256 px cost 3 MB. Without this, training on a folder of real photos would decode every
    photo once per epoch (often more CPU than the network itself).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        tile: int,
        per_image: int,
        region: str = "full",
        seed: int = 0,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.tile = int(tile)
        self.per_image = max(1, int(per_image))
        self.region = region
        self.seed = seed
        self._tiles: list[np.ndarray | None] = [None] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def _cut(self, i: int) -> np.ndarray:
        px = load_image(self.paths[i]).pixels
        rng = np.random.default_rng([self.seed, 104729, i])
        return np.stack(
            [random_crop(px, self.tile, rng, self.region) for _ in range(self.per_image)]
        )

    def tiles(self, i: int) -> np.ndarray:
        """(per_image, tile, tile, 3) uint8 tiles of image i (decoded on first use)."""
        t = self._tiles[i]
        if t is None:
            t = self._tiles[i] = self._cut(i)
        return t

    def sample(self, i: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """One random tile of image i, and the region to crop it in ('full')."""
        t = self.tiles(i)
        return t[int(rng.integers(len(t)))], "full"

    def preload(self, workers: int = 2, progress: Callable[[int], None] | None = None) -> None:
        """Decode every image once and keep its tiles (threads: decoding releases the GIL)."""
        for i, res in enumerate(prefetch_map(self._cut, range(len(self.paths)), workers)):
            if isinstance(res, Exception):
                raise res
            self._tiles[i] = res
            if progress:
                progress(i + 1)

    @property
    def nbytes(self) -> int:
        """Bytes held once preloaded."""
        return len(self.paths) * self.per_image * self.tile * self.tile * 3


def screen_images(
    paths: Sequence[Path], workers: int = 2, keep_bytes: int = DEFAULT_CACHE_BYTES
) -> tuple[dict[Path, Exception], dict[Path, np.ndarray]]:
    """Decode every image once: (the unreadable ones with their errors, decoded pixels).

    Pixels are kept while they total at most `keep_bytes` (then none are), so a set small
    enough to cache whole is not decoded twice (see ImageStore's `decoded`).
    """
    failed: dict[Path, Exception] = {}
    kept: dict[Path, np.ndarray] = {}
    held = 0
    keeping = keep_bytes > 0
    for p, res in zip(paths, prefetch_map(load_image, paths, workers), strict=True):
        if isinstance(res, Exception):
            failed[Path(p)] = res
        elif keeping:
            held += res.pixels.nbytes
            keeping = held <= keep_bytes
            if keeping:
                kept[Path(p)] = res.pixels
            else:
                kept.clear()
    return failed, kept


@dataclass(frozen=True)
class StorePlan:
    """How training images are held: 'cache' (whole, decoded once), 'tiles' (TileStore)
    or 'decode' (decoded again every epoch)."""

    mode: str
    tile: int = 0
    per_image: int = 0


def plan_store(
    paths: Sequence[Path],
    large: int,
    cache: bool | None = None,
    limit_bytes: int | None = None,
) -> StorePlan:
    """Choose how to hold the training images within `limit_bytes` of memory (default
    DEFAULT_CACHE_BYTES).

    `cache` True/False forces whole-image caching on/off (no tiles); None decides: whole
    images when they fit, else tiles of max(256, 2 x large) px, as many per image as fit
    the budget, up to 32 and up to half a whole image's bytes; fewer than 4 tiles per image
    means decoding every epoch instead.
    """
    limit = DEFAULT_CACHE_BYTES if limit_bytes is None else limit_bytes
    if cache is not None or not paths:
        return StorePlan("cache" if cache else "decode")
    first = load_image(paths[0]).pixels
    if first.nbytes * len(paths) <= limit:
        return StorePlan("cache")
    tile = max(256, 2 * int(large))
    if tile > min(first.shape[:2]):
        return StorePlan("decode")
    tile_bytes = tile * tile * 3
    per = min(32, limit // (len(paths) * tile_bytes), (first.nbytes // 2) // tile_bytes)
    if per < 4:
        return StorePlan("decode")
    return StorePlan("tiles", tile, per)


class BalancedSampler(Sampler):
    """Per-epoch image order; class-balanced (equal draws per class) or a plain shuffle.

    Yields (image_index, slot) pairs; slot numbers the draws of the epoch globally and keys
    the augmentation RNG. Under DDP each rank takes every world_size-th draw.
    """

    def __init__(
        self,
        labels: Sequence[int],
        *,
        balanced: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        draws: int | None = None,
    ) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.balanced = balanced
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        n = draws if draws is not None else len(self.labels)
        self.total = max(world_size, int(np.ceil(n / world_size)) * world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order is drawn next."""
        self.epoch = epoch

    def order(self) -> np.ndarray:
        """Image indices of the whole epoch (all ranks)."""
        rng = np.random.default_rng([self.seed, 7919, self.epoch])
        if not self.balanced:
            reps = int(np.ceil(self.total / max(1, len(self.labels))))
            base = np.concatenate([rng.permutation(len(self.labels)) for _ in range(reps)])
            return base[: self.total]
        classes = np.unique(self.labels)
        per = int(np.ceil(self.total / len(classes)))
        picks = []
        for c in classes:
            members = np.flatnonzero(self.labels == c)
            reps = int(np.ceil(per / len(members)))
            seq = np.concatenate([rng.permutation(members) for _ in range(reps)])[:per]
            picks.append(seq)
        allp = np.concatenate(picks)
        return allp[rng.permutation(len(allp))][: self.total]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.order()
        for slot in range(self.rank, self.total, self.world_size):
            yield int(order[slot]), slot

    def __len__(self) -> int:
        return self.total // self.world_size


class TrainPatches(Dataset):
    """Training items: (image_index, slot) -> `k` augmented crops of one image and labels."""

    def __init__(
        self,
        store: ImageStore | TileStore,
        labels: Sequence[int],
        recipe: CropRecipe,
        patches_per_image: int,
        seed: int,
    ) -> None:
        self.store = store
        self.labels = list(labels)
        self.recipe = recipe
        self.k = patches_per_image
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        idx, slot = item
        rng = np.random.default_rng([self.seed, self.epoch, slot])
        if isinstance(self.store, TileStore):
            crops = []
            for _ in range(self.k):
                tile, region = self.store.sample(idx, rng)
                crops.append(training_crop(tile, replace(self.recipe, region=region), rng))
            return np.stack(crops), np.full(self.k, self.labels[idx], dtype=np.int64)
        px = self.store.get(idx)
        crops = np.stack([training_crop(px, self.recipe, rng) for _ in range(self.k)])
        return crops, np.full(self.k, self.labels[idx], dtype=np.int64)


def collate_patches(
    batch: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack items into (N, 3, P, P) uint8 and (N,) int64 tensors."""
    x = np.concatenate([b[0] for b in batch])
    y = np.concatenate([b[1] for b in batch])
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y)


@dataclass(frozen=True)
class ViewSpec:
    """Which views of an image a model sees at inference and validation.

    mode "grid": a non-overlapping grid of `size` patches (at most `max_views`);
    mode "five": the 4 corners and the centre (seed 002). `d4` multiplies each view by the
    8 rotations/flips. `region` keeps every view inside part of the frame. `probe` names a
    pixel probe (camid.data.augment.PIXEL_PROBES) applied to every view, as it was to the
    training crops.
    """

    size: int
    mode: str = "grid"
    max_views: int = 64
    d4: bool = False
    region: str = "full"
    probe: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "size": self.size,
            "mode": self.mode,
            "max_views": self.max_views,
            "d4": self.d4,
            "region": self.region,
            "probe": self.probe,
        }


PROBE_VIEW_SEED = 20_231
"""Random pixel probes (colour jitter) draw view i's parameters from a generator keyed by
(this, i): the same image always gets the same views."""


def view_positions(height: int, width: int, spec: ViewSpec) -> list[tuple[int, int]]:
    """Top-left corners (in the whole frame) of the views `spec` takes from an HxW image."""
    y0, y1, x0, x1 = region_bounds(height, width, spec.region)
    h, w = y1 - y0, x1 - x0
    if spec.mode == "five":
        pos = five_crop_positions(h, w, spec.size)
    else:
        pos = grid_positions(h, w, spec.size, spec.max_views)
    return [(y0 + y, x0 + x) for y, x in pos]


def extract_views(pixels: np.ndarray, spec: ViewSpec) -> np.ndarray:
    """(V, size, size, 3) uint8 views of an image according to `spec`."""
    view = region_view(pixels, spec.region)
    y0, _, x0, _ = region_bounds(pixels.shape[0], pixels.shape[1], spec.region)
    pos = view_positions(pixels.shape[0], pixels.shape[1], spec)
    crops = [crop(view, y - y0, x - x0, spec.size) for y, x in pos]
    if spec.d4:
        crops = [d4(c, k) for c in crops for k in range(8)]
    crops = [np.ascontiguousarray(c) for c in crops]
    if spec.probe is not None:
        crops = [
            apply_pixel_probe(spec.probe, c, np.random.default_rng([PROBE_VIEW_SEED, i]))
            for i, c in enumerate(crops)
        ]
    return np.stack(crops)


def sliding_positions(
    height: int, width: int, size: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs): top-left corners of a sliding size x size window grid over an HxW frame.

    Corners lie on the 8-px JPEG/CFA grid (ALIGN): the stride must be a multiple of ALIGN
    and the grid is centred with its offset rounded down to a multiple of ALIGN. A frame
    smaller than the window gives one position (0) on that axis (the view is padded).
    """
    if stride < ALIGN or stride % ALIGN:
        raise ValueError(f"the stride must be a positive multiple of {ALIGN} px")

    def axis(n: int) -> np.ndarray:
        count = max(0, n - size) // stride + 1
        start = (max(0, n - size - (count - 1) * stride) // 2) // ALIGN * ALIGN
        return start + stride * np.arange(count, dtype=np.int64)

    return axis(height), axis(width)


def sliding_views(pixels: np.ndarray, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(views, boxes): every size x size view of a sliding grid (row-major) and its box
    (y0, x0, y1, x1) in the frame; see `sliding_positions`."""
    ys, xs = sliding_positions(pixels.shape[0], pixels.shape[1], size, stride)
    boxes = np.array([(y, x, y + size, x + size) for y in ys for x in xs], dtype=np.int64)
    views = np.stack(
        [np.ascontiguousarray(crop(pixels, int(y), int(x), size)) for y, x, _, _ in boxes]
    )
    return views, boxes


def to_input(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N,3,H,W) on any device -> normalised float32."""
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, 3, 1, 1)
    return (x.float().div_(255.0) - m) / s


def prefetch_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int = 1, lookahead: int = 4
) -> Iterator[R]:
    """`map(fn, items)` in order, computed ahead on threads (decoding overlaps compute).

    workers=0 computes inline. Exceptions raised by `fn` are returned, not raised, so one
    bad item never stops a batch: the caller checks `isinstance(result, Exception)`.
    """

    def safe(item: T) -> R:
        try:
            return fn(item)
        except Exception as exc:  # handed to the caller as a value
            return exc  # type: ignore[return-value]

    if workers <= 0:
        for item in items:
            yield safe(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="camid-load") as pool:
        pending: deque = deque()
        it = iter(items)
        for item in it:
            pending.append(pool.submit(safe, item))
            if len(pending) >= lookahead + workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
