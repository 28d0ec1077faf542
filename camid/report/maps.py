"""Heatmap images: a window-grid map drawn on the photo's pixel grid, as a bare PNG (no axes,
no margins, the image's aspect) and as an overlay on the photo with a colour bar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from camid.io.atomic import atomic_write

BARE_MAX_SIDE = 2048
"""The bare PNG keeps the photo's size up to this many pixels on its long side (then scaled
down, aspect kept): a 12 MP map at full size would be a 36 MB image of a 60 x 46 grid."""


@dataclass(frozen=True)
class GridGeometry:
    """Where the cells of a map lie on the photo: window (i, j) has its top-left corner at
    (origin_y + i*stride, origin_x + j*stride) and is `window` pixels wide."""

    height: int
    width: int
    window: int
    stride: int
    origin: tuple[int, int] = (0, 0)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {
            "image_height": self.height,
            "image_width": self.width,
            "window": self.window,
            "stride": self.stride,
            "origin": list(self.origin),
        }


def grid_to_pixels(
    values: np.ndarray, geo: GridGeometry, height: int | None = None, width: int | None = None
) -> np.ndarray:
    """A (rows, cols) map on a (height, width) pixel grid (default the photo's size).

    Each window paints the stride x stride cell around its centre (with stride = window,
    the window itself); pixels no cell covers (the margins) are NaN. Nearest neighbour:
    no interpolation invents values between windows.
    """
    vals = np.asarray(values, dtype=np.float64)
    rows, cols = vals.shape
    h, w = height or geo.height, width or geo.width
    sy, sx = geo.height / h, geo.width / w

    def index(n_out: int, scale: float, origin: int, count: int) -> np.ndarray:
        centre = (np.arange(n_out) + 0.5) * scale  # pixel centres in photo coordinates
        first = origin + geo.window / 2.0 - geo.stride / 2.0
        idx = np.floor((centre - first) / geo.stride).astype(np.int64)
        return np.where((idx >= 0) & (idx < count), idx, -1)

    iy = index(h, sy, geo.origin[0], rows)
    ix = index(w, sx, geo.origin[1], cols)
    out = vals[np.clip(iy, 0, rows - 1)][:, np.clip(ix, 0, cols - 1)]
    out[iy < 0, :] = np.nan
    out[:, ix < 0] = np.nan
    return out


def _bare_size(geo: GridGeometry, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(geo.height, geo.width))
    return max(1, round(geo.height * scale)), max(1, round(geo.width * scale))


def bare_png(
    values: np.ndarray,
    geo: GridGeometry,
    path: Path,
    *,
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "viridis",
    max_side: int = BARE_MAX_SIDE,
) -> Path:
    """The map alone at the photo's aspect: one pixel per photo pixel (up to `max_side`),
    colours from `cmap` over [vmin, vmax], uncovered margins transparent. Written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps
    from PIL import Image

    h, w = _bare_size(geo, max_side)
    px = grid_to_pixels(values, geo, h, w)
    span = (vmax - vmin) or 1.0
    rgba = colormaps[cmap](np.clip((np.nan_to_num(px, nan=vmin) - vmin) / span, 0, 1), bytes=True)
    rgba[np.isnan(px), 3] = 0
    with atomic_write(path) as tmp:
        Image.fromarray(rgba, "RGBA").save(tmp, format="PNG")
    return path


def overlay_png(
    photo: np.ndarray,
    values: np.ndarray,
    geo: GridGeometry,
    path: Path,
    *,
    label: str,
    title: str = "",
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "viridis",
    alpha: float = 0.55,
    contour: np.ndarray | None = None,
    max_side: int = 1600,
) -> Path:
    """The map over the photo (both shown at most `max_side` px) with a labelled colour bar;
    `contour` (a bool grid like `values`) is outlined in red (e.g. a splice mask)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = max(1, int(np.ceil(max(photo.shape[:2]) / max_side)))
    shown = photo[::step, ::step]
    h, w = shown.shape[:2]
    px = grid_to_pixels(values, geo, h, w)
    fig_w = 7.5
    fig, ax = plt.subplots(figsize=(fig_w, fig_w * h / w * 0.92 + 0.6))
    ax.imshow(shown, extent=(0, geo.width, geo.height, 0), interpolation="nearest")
    im = ax.imshow(
        np.ma.masked_invalid(px),
        extent=(0, geo.width, geo.height, 0),
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        alpha=alpha,
        interpolation="nearest",
    )
    if contour is not None and np.any(contour):
        m = grid_to_pixels(np.asarray(contour, dtype=float), geo, h, w)
        xs = (np.arange(w) + 0.5) * geo.width / w
        ys = (np.arange(h) + 0.5) * geo.height / h
        ax.contour(xs, ys, np.nan_to_num(m), levels=[0.5], colors="red", linewidths=1.2)
    ax.set_xlim(0, geo.width)
    ax.set_ylim(geo.height, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    cb.set_label(label)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def save_map(
    out_dir: Path,
    stem: str,
    values: np.ndarray,
    geo: GridGeometry,
    sidecar: dict,
    *,
    photo: np.ndarray | None = None,
    label: str = "",
    title: str = "",
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "viridis",
    contour: np.ndarray | None = None,
    arrays: dict[str, np.ndarray] | None = None,
) -> list[Path]:
    """Write a map's files into `out_dir` (all atomic) and return their paths:
    `<stem>.npy` (the raw grid), `<stem>.json` (geometry + `sidecar` + file list),
    `<stem>.png` (bare map), `<stem>.overlay.png` (with `photo`), and `<stem>.<key>.npy`
    for each extra array."""
    from camid.report.output import dumps

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def npy(path: Path, arr: np.ndarray) -> None:
        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(arr))
        files.append(path)

    npy(out_dir / f"{stem}.npy", values)
    for key, arr in (arrays or {}).items():
        npy(out_dir / f"{stem}.{key}.npy", arr)
    files.append(bare_png(values, geo, out_dir / f"{stem}.png", vmin=vmin, vmax=vmax, cmap=cmap))
    if photo is not None:
        files.append(
            overlay_png(
                photo,
                values,
                geo,
                out_dir / f"{stem}.overlay.png",
                label=label,
                title=title,
                vmin=vmin,
                vmax=vmax,
                cmap=cmap,
                contour=contour,
            )
        )
    meta = {
        **sidecar,
        "grid": {**geo.to_dict(), "rows": int(values.shape[0]), "cols": int(values.shape[1])},
        "colour_range": [vmin, vmax],
        "files": [str(p) for p in files] + [str(out_dir / f"{stem}.json")],
    }
    from camid.io.atomic import write_text_atomic

    write_text_atomic(out_dir / f"{stem}.json", dumps(meta) + "\n")
    files.append(out_dir / f"{stem}.json")
    return files


def grid_figure(
    values: np.ndarray,
    path: Path,
    *,
    label: str,
    title: str = "",
    vmin: float = 0.0,
    vmax: float = 1.0,
    cmap: str = "viridis",
) -> Path:
    """A small grid (e.g. accuracy by position over a dataset) with its values written in
    the cells and a colour bar; NaN cells left blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from camid.report.plots import _save

    vals = np.asarray(values, dtype=float)
    rows, cols = vals.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * cols, 0.6 + 0.6 * rows))
    im = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=vmin, vmax=vmax)
    for i in range(rows):
        for j in range(cols):
            if np.isfinite(vals[i, j]):
                v = (vals[i, j] - vmin) / ((vmax - vmin) or 1.0)
                ax.text(j, i, f"{vals[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="black" if v > 0.6 else "white")  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).set_label(label)
    return _save(fig, path, title)
