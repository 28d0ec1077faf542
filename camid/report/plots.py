"""PNG figures: training curves, confusion matrices, probe accuracies and adversarial
perturbations (matplotlib, Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from camid.io.atomic import atomic_write


def training_curve(
    history: Sequence[dict],
    path: Path,
    title: str = "",
    best_epoch: int | None = None,
    manipulated: bool = False,
) -> Path:
    """Loss and accuracy per epoch (train and validation) as a two-panel PNG: whole-number
    epoch ticks, the best epoch marked, and a note on what the training accuracy measures
    (random crops, manipulated copies when `manipulated`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ep = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(ep, [h.get("train_loss") for h in history], "o-", label="train (crops)")
    if history and "val_loss" in history[0]:
        ax1.plot(ep, [h.get("val_loss") for h in history], "s-", label="validation (patches)")
    ax1.set_ylabel("cross-entropy loss")
    crops = "random, manipulated crops" if manipulated else "random crops"
    ax2.plot(ep, [h.get("train_accuracy") for h in history], "o-", label=f"train ({crops})")
    if history and "val_accuracy" in history[0]:
        ax2.plot(
            ep, [h.get("val_patch_accuracy") for h in history], "s-", label="validation (patches)"
        )
        ax2.plot(ep, [h.get("val_accuracy") for h in history], "^-", label="validation (photos)")
    ax2.set_ylabel("accuracy")
    ax2.set_ylim(0, 1.05)
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    if best_epoch is not None:
        ax2.plot([], [], color="grey", linestyle="--", label=f"best epoch ({best_epoch}): kept")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8, loc="best")
    note = (
        "Training accuracy is measured on the " + crops + " the network learns from, "
        "so it can sit below validation accuracy (whole photos, unaltered): not a bug."
    )
    fig.text(0.5, 0.01, note, ha="center", va="bottom", fontsize=8, color="dimgrey")
    fig.subplots_adjust(bottom=0.2)
    return _save(fig, path, title, rect=(0, 0.06, 1, 1))


def _fit_name(name: str, width: int = 22) -> str:
    """A tick label of at most two lines of about `width` characters, cut with '…'."""
    name = str(name)
    if len(name) <= width:
        return name
    cut = name.rfind(" ", 0, width + 1)
    first, rest = (name[:cut], name[cut + 1 :]) if cut > 0 else (name[:width], name[width:])
    if len(rest) > width:
        rest = rest[: width - 1] + "…"
    return f"{first}\n{rest}"


def confusion_figure(
    matrix: np.ndarray,
    classes: Sequence[str],
    predicted: Sequence[str],
    path: Path,
    title: str = "",
) -> Path:
    """A confusion matrix (true rows x predicted columns, an 'unknown' column when given)
    as a PNG: cells coloured by the share of the true camera's photos, with their counts,
    and a labelled colour bar. Long camera names wrap over two lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=float)
    norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    rows = [_fit_name(c) for c in classes]
    cols = [_fit_name(c) for c in predicted]
    longest = max((len(line) for c in [*rows, *cols] for line in c.split("\n")), default=4)
    n = max(len(rows), len(cols))
    size = max(5.5, 0.6 * n + 0.1 * longest + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size * 0.9))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j]:
                ax.text(
                    j,
                    i,
                    f"{int(m[i, j])}",
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=9,
                )
    if len(predicted) == len(classes) + 1:  # the open-set column: set it apart
        ax.axvline(len(classes) - 0.5, color="black", linewidth=1.5)
    ax.set_xlabel("predicted camera")
    ax.set_ylabel("true camera")
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true camera's photos (cell numbers: counts)")
    return _save(fig, path, title)


def _save(fig, path: Path, title: str, rect: tuple[float, ...] | None = None) -> Path:
    """Title, lay out and write a figure atomically as PNG, then free it."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=rect)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def adversarial_figure(
    pixels: np.ndarray, perturbed: np.ndarray, path: Path, epsilon: int, title: str = ""
) -> Path:
    """Seed 000 Fig. 5: the image, its perturbation amplified (+-epsilon levels mapped to the
    full range, mid-grey = no change) and the perturbed image, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    delta = perturbed.astype(np.float64) - pixels.astype(np.float64)
    amplified = np.clip(0.5 + delta / (2.0 * max(1, epsilon)), 0.0, 1.0)
    h, w = pixels.shape[:2]
    fig, axes = plt.subplots(1, 3, figsize=(3 * min(4.0, 2.0 + w / 160), 2.0 + h / 160))
    panels = [
        (pixels, "image"),
        (amplified, f"perturbation x{255 / (2 * max(1, epsilon)):.0f} (+-{epsilon}/255)"),
        (perturbed, "perturbed image"),
    ]
    for ax, (img, label) in zip(axes, panels, strict=True):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    return _save(fig, path, title)


def probe_bars(rows: Sequence[dict], path: Path, chance: float = 0.0, title: str = "") -> Path:
    """Test accuracy per probe (bars), the baseline (dashed) and chance (dotted), as a PNG;
    `rows` carry probe, accuracy and baseline_accuracy (ProbeReport.rows())."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [str(r["probe"]) for r in rows]
    accs = [r.get("accuracy") if r.get("accuracy") is not None else 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 2.5, 3.6))
    colours = ["#4c72b0" if n == "baseline" else "#dd8452" for n in names]
    bars = ax.bar(range(len(rows)), accs, color=colours)
    for b, r in zip(bars, rows, strict=True):
        acc = r.get("accuracy")
        label = "-" if acc is None else f"{acc:.2f}"
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 0.01, label, ha="center",
                va="bottom", fontsize=8)  # fmt: skip
    base = next((r.get("baseline_accuracy") for r in rows if r.get("baseline_accuracy")), None)
    if base is not None:
        ax.axhline(base, ls="--", color="#4c72b0", lw=1, label=f"baseline {base:.2f}")
    if chance:
        ax.axhline(chance, ls=":", color="grey", lw=1, label=f"chance {chance:.2f}")
    ax.set_xticks(range(len(rows)), names)
    ax.set_ylabel("test accuracy (adversarial: after attack)")
    ax.set_ylim(0, 1.1)
    if base is not None or chance:
        ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path, title)
