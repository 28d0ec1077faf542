"""One self-contained HTML page for a bias-check report (plots and thumbnails inline)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from camid.io.atomic import write_text_atomic

COLOURS = {"PASS": "#1a7f37", "INFO": "#0969da", "WARN": "#b58100", "FAIL": "#cf222e"}
VERDICT_COLOURS = {
    "CLEAN": "#1a7f37",
    "SIGNAL_UNEXPLOITED": "#0969da",
    "CONFOUNDED": "#cf222e",
    "INFLATED": "#cf222e",
    "INCONCLUSIVE": "#b58100",
}
CSS = " ".join(
    [
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:24px auto;",
        "padding:0 16px;color:#1f2328;line-height:1.45}",
        "h1{font-size:1.6em;margin-bottom:4px}",
        "h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}",
        ".verdict{display:inline-block;color:#fff;padding:6px 14px;border-radius:6px;",
        "font-weight:700;font-size:1.2em}",
        ".muted{color:#59636e}.status{font-weight:700}",
        "table{border-collapse:collapse;margin:8px 0}",
        "td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}",
        "th{background:#f6f8fa}",
        ".explain{background:#f6f8fa;border-left:4px solid #0969da;padding:8px 12px;margin:12px 0}",
        "img.plot{max-width:100%;border:1px solid #d0d7de}",
        ".thumbs{display:flex;flex-wrap:wrap;gap:10px}.thumb{width:170px;font-size:.8em}",
        ".thumb img{width:170px;border:1px solid #d0d7de}",
    ]
)


def _fig_png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heat_table_png(counts: np.ndarray, rows: list[str], cols: list[str], tied: set, title: str):
    """The camera x label counts as a heat table (share of each camera's rows)."""
    plt = _plt()
    c = np.asarray(counts, dtype=float)
    share = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(cols), 0.9 + 0.45 * len(rows)))
    ax.imshow(share, cmap="Reds", vmin=0, vmax=1, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(cols)):
            mark = " *" if (rows[i], cols[j]) in tied else ""
            ax.text(
                j,
                i,
                f"{int(c[i, j])}{mark}",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.6 else "black",
                fontsize=10,
            )
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("label")
    ax.set_title(title, fontsize=10)
    return _fig_png(fig)


def camera_bars_png(per_camera: list[dict], labels: list[str]) -> str:
    """Per test camera: predicted-label shares as stacked bars, accuracy as a marker."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(per_camera) + 2), 3.8))
    x = np.arange(len(per_camera))
    bottom = np.zeros(len(per_camera))
    cmap = plt.get_cmap("tab10")
    for k, lab in enumerate(labels):
        share = np.array([r["predicted"].get(lab, 0) / max(r["n"], 1) for r in per_camera])
        ax.bar(x, share, bottom=bottom, color=cmap(k % 10), label=f"predicted {lab}", width=0.6)
        bottom += share
    acc = [r["accuracy"] for r in per_camera]
    ax.plot(x, acc, "kD", markersize=8, label="accuracy")
    names = [
        r["camera"]
        + ("" if r["seen_in_training"] else "\n(unseen)")
        + (f"\ntrain: {r['training_label']}" if r.get("training_label") else "")
        for r in per_camera
    ]
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of the camera's test images")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title("test predictions per camera (seed 000, Fig. 3)", fontsize=10)
    return _fig_png(fig)


def confusion_png(cm: list[list[int]], classes: list[str], title: str) -> str:
    """A row-normalised confusion matrix."""
    plt = _plt()
    m = np.asarray(cm, dtype=float)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.5 + 0.8 * len(classes), 1.2 + 0.6 * len(classes)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j,
                i,
                int(m[i, j]),
                ha="center",
                va="center",
                color="white" if norm[i, j] > 0.6 else "black",
                fontsize=9,
            )
    short = [c if len(c) <= 14 else c[:13] + "." for c in classes]
    ax.set_xticks(range(len(classes)), short, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), short, fontsize=8)
    ax.set_xlabel("predicted camera")
    ax.set_ylabel("true camera")
    ax.set_title(title, fontsize=10)
    return _fig_png(fig)


def curve_png(history: list[dict]) -> str:
    """Training loss and accuracy per epoch."""
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 2.8))
    a1.plot(ep, [h.get("train_loss") for h in history], "o-", label="train")
    a1.plot(ep, [h.get("val_loss") for h in history], "s-", label="validation")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend(fontsize=8)
    a2.plot(ep, [h.get("train_accuracy") for h in history], "o-", label="train (patches)")
    a2.plot(ep, [h.get("val_accuracy") for h in history], "s-", label="validation (images)")
    a2.set_ylim(0, 1.02)
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy")
    a2.legend(fontsize=8)
    return _fig_png(fig)


def thumbnail_b64(path: str, side: int = 170) -> str | None:
    """A small JPEG of an image, base64 (None if it cannot be read)."""
    from camid.errors import InputError
    from camid.io.image import load_image

    try:
        from PIL import Image

        px = load_image(path).pixels
    except (InputError, OSError):
        return None
    img = Image.fromarray(px)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def _e(x: Any) -> str:
    return html.escape(str(x))


def _img(b64: str, alt: str) -> str:
    return f'<img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{b64}">'


def render_html(report: Any) -> str:
    """The whole page as a string."""
    d = report.to_dict()
    a = report.association
    sc = report.shortcut
    vc = VERDICT_COLOURS.get(report.verdict, "#59636e")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>camid bias-check: {_e(report.verdict)}</title><style>{CSS}</style></head><body>",
        f"<h1>Camera bias check: {_e(Path(report.dataset).name)}</h1>",
        f"<p class='muted'>{_e(report.dataset)} &middot; camid {_e(d['camid_version'])} &middot; "
        f"seed {report.seed} &middot; stage {_e(report.stage)} &middot; {report.seconds:.0f} s</p>",
        f"<p><span class='verdict' style='background:{vc}'>{_e(report.verdict)}</span> "
        f"&nbsp;<b>{_e(report.status)}</b>: {_e(report.verdict_text)}</p>",
        "<div class='explain'>A model trained on photos can learn to recognise <i>which camera</i> "
        "took a photo from invisible traces (compression, noise, colour processing). If the "
        "labels of a dataset line up with the cameras, the model can score well by recognising "
        "the camera instead of the thing it should learn, and it fails on photos from new "
        "cameras. This report measures whether that can happen (the data), and whether it "
        "does (a model trained on the data).</div>",
        f"<p>{report.n_images} images, {len(report.labels)} labels "
        f"({_e(', '.join(report.labels))}), {len(report.cameras)} cameras from "
        f"{_e(report.camera_source.description)}.</p>",
        "<h2>Checks</h2><table><tr><th>status</th><th>check</th><th>finding</th></tr>",
    ]
    for c in report.checks:
        col = COLOURS.get(c.status, "#59636e")
        parts.append(
            f"<tr><td class='status' style='color:{col}'>{_e(c.status)}</td>"
            f"<td>{_e(c.name)}</td><td>{_e(c.summary)}</td></tr>"
        )
    parts.append("</table>")
    if a is not None and a.stats is not None:
        t = a.stats.table
        tied = {(c.camera, c.label) for c in a.tied}
        scope = "training rows" if a.scope == "train" else "all rows"
        parts += [
            "<h2>1. Does the camera predict the label in the data?</h2>",
            f"<p>Images per camera and label ({scope}). Dark cells hold most of a camera's "
            "images; <b>*</b> marks a label significantly tied to that camera (adjusted "
            f"residual above {a.residual_threshold:.2f}).</p>",
            _img(
                heat_table_png(t.counts, t.rows, t.cols, tied, f"camera x label ({scope})"),
                "camera x label table",
            ),
            f"<p>Predicting the label from the camera alone (out of fold) is right "
            f"{a.stats.baseline.accuracy:.0%} of the time, against "
            f"{a.stats.baseline.majority_share:.0%} for always guessing the commonest label: "
            f"<b>gain {a.stats.baseline.gain:.2f}</b> (0 = the camera tells nothing, 1 = it "
            f"gives every label). Bias-corrected Cramér's V {a.stats.cramers_v:.2f}, "
            f"Theil's U {a.stats.theils_u_label_given_camera:.2f} ({_e(a.stats.test.method)} "
            f"p = {_p(a.stats.test.p_value)}).</p>",
        ]
    if sc is not None:
        probe = sc.probe or {}
        parts.append("<h2>2. Can the camera be read from the pixels?</h2>")
        o = probe.get("overall")
        if o and o.get("confusion"):
            parts += [
                f"<p>A simple classifier on forensic traces ({_e(probe.get('method', ''))}) "
                f"recognises the camera with balanced accuracy {o['balanced_accuracy']:.2f} "
                f"(chance {1 / len(o['classes']):.2f}). When this is high and the camera "
                "predicts the label, the shortcut is available to any model.</p>",
                _img(
                    confusion_png(o["confusion"], o["classes"], "camera probe (out of fold)"),
                    "probe confusion",
                ),
            ]
        parts += [
            "<h2>3. Does a trained model take the shortcut?</h2>",
            f"<p>A {_e(sc.training.get('arch'))} label classifier was trained for "
            f"{sc.training.get('seconds', 0):.0f} s ({_e(sc.training.get('stopped'))}) and tested "
            f"on {sc.n_test} images ({_e(sc.test_source)}): accuracy "
            f"{(sc.accuracy or 0):.2f}. If it follows the camera, each camera's bar is one colour "
            "(the label its camera had in training) whatever the true label.</p>",
        ]
        if sc.per_camera and sc.prediction_table:
            parts.append(
                _img(
                    camera_bars_png(sc.per_camera, sc.prediction_table["labels"]),
                    "per-camera predictions",
                )
            )
        hist = sc.training.get("history") or []
        if hist:
            parts += ["<p>Training curve:</p>", _img(curve_png(hist), "training curve")]
        if sc.examples:
            parts.append(
                "<h3>Images that give the camera away</h3><p>Test images whose camera was tied "
                "to another label in training, predicted as that camera's label:</p>"
                "<div class='thumbs'>"
            )
            for ex in sc.examples:
                b64 = thumbnail_b64(ex["path"])
                img = f"<img src='data:image/jpeg;base64,{b64}'>" if b64 else "(unreadable)"
                parts.append(
                    f"<div class='thumb'>{img}<br><b>{_e(Path(ex['path']).name)}</b><br>"
                    f"camera {_e(ex['camera'])}<br>true {_e(ex['label'])}, predicted "
                    f"<b>{_e(ex['predicted'])}</b></div>"
                )
            parts.append("</div>")
    parts += [
        "<h2>What this proves and what it does not</h2><ul>",
        "<li>A high camera-only gain proves the metadata let a model use the camera as a "
        "proxy for the label; it does not prove a model does.</li>",
        "<li>The trained model is a small stand-in trained briefly; a different model may use "
        "the camera more or less. The per-camera table shows what <i>this</i> model did.</li>",
        "<li>Pseudo-cameras are groups of images with similar traces, not proven devices.</li>",
        "<li>Fix: <code>camid bias-check DATASET --write-split DIR</code> writes a "
        "camera-balanced and a camera-disjoint split.</li></ul>",
    ]
    if report.notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f"<li>{_e(n)}</li>" for n in report.notes]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: Any, path: str | Path) -> Path:
    """Render and write the page atomically."""
    return write_text_atomic(path, render_html(report))
