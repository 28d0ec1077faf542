"""Scene radiance generators: natural-like content, flat fields, and bottle batch codes.

Scenes are HxWx3 float32 *linear* radiance in a camera-independent RGB space (relative
units; the camera's auto exposure decides the absolute level). Content is random per image
and independent of the camera that will photograph it.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from camid.synth.color import illuminant_rgb
from camid.synth.font import CHARSET, GLYPH_H, line_width, text_dots

# --- building blocks ---------------------------------------------------------------------


def fractal_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Zero-mean, unit-std noise with a 1/f^beta power spectrum (beta 2 ~ natural images)."""
    h, w = shape
    white = rng.standard_normal((h, w), dtype=np.float32)
    spec = np.fft.rfft2(white)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy * fy + fx * fx)
    f[0, 0] = 1.0
    spec *= (f ** (-beta / 2.0)).astype(np.float32)
    spec[0, 0] = 0.0
    out = np.fft.irfft2(spec, s=(h, w)).astype(np.float32)
    out /= max(float(out.std()), 1e-8)
    return out


def _random_reflectance(rng: np.random.Generator, sat_scale: float = 1.0) -> np.ndarray:
    """A plausible surface colour (linear RGB reflectance), mostly muted as in nature."""
    hue = rng.random()
    sat = min(1.0, rng.beta(1.3, 2.8) * sat_scale)
    val = float(np.clip(np.exp(rng.normal(np.log(0.45), 0.5)), 0.04, 0.95))
    rgb = np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32)
    return np.power(rgb, 2.2)


def _coverage(d: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (negative inside), edge `width` px."""
    return np.clip(0.5 - d / max(width, 1e-3), 0.0, 1.0)


def _rotated(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, ang: float):
    c, s = math.cos(ang), math.sin(ang)
    dx, dy = xx - cx, yy - cy
    return c * dx + s * dy, -s * dx + c * dy


# --- natural scenes ----------------------------------------------------------------------


def _shape_distance(
    kind: str, u: np.ndarray, v: np.ndarray, a: float, b: float, rng: np.random.Generator
) -> np.ndarray:
    if kind == "ellipse":
        r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        return (r - 1.0) * min(a, b)
    if kind == "rect":
        return np.maximum(np.abs(u) - a, np.abs(v) - b)
    if kind == "polygon":  # convex polygon with vertices on the ellipse (a, b)
        n = int(rng.integers(3, 7))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        vx, vy = (a * np.cos(t)).tolist(), (b * np.sin(t)).tolist()
        d = np.full(u.shape, -np.inf, dtype=np.float32)
        for i in range(n):
            ex, ey = vx[(i + 1) % n] - vx[i], vy[(i + 1) % n] - vy[i]
            norm = max(float(np.hypot(ex, ey)), 1e-6)
            nx, ny = ey / norm, -ex / norm  # outward for counter-clockwise vertices
            d = np.maximum(d, (u - vx[i]) * nx + (v - vy[i]) * ny)
        return d
    # blob: ellipse with a wobbly outline
    un, vn = u / a, v / b
    r = np.sqrt(un * un + vn * vn)
    z = (un + 1j * vn) / np.maximum(r, 1e-6)  # e^(i theta)
    zk = z * z
    wob = np.ones_like(r)
    for k in range(2, 6):
        coef = complex(rng.normal(0, 0.18 / k) * np.exp(1j * rng.uniform(0, 2 * np.pi)))
        wob += (coef * zk).imag.astype(np.float32)
        zk = zk * z
    return (r - wob) * min(a, b)


def natural_scene(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random natural-like scene: lit background, textured objects, edges, highlights."""
    h, w = int(shape[0]), int(shape[1])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    size = float(max(h, w))
    fields = [fractal_noise(rng, (h, w), beta) for beta in (1.4, 2.0, 2.7)]
    grain = ndimage.gaussian_filter(rng.standard_normal((h, w), dtype=np.float32), 0.7)
    grain /= max(float(grain.std()), 1e-6)

    def texture(sl: tuple[slice, slice]) -> np.ndarray:
        wts = [
            float(v)
            for v in rng.normal(0, 1, 4) * np.array([0.25, 0.3, 0.3, 0.12]) * rng.uniform(0.2, 1.2)
        ]
        t = wts[0] * fields[0][sl] + wts[1] * fields[1][sl] + wts[2] * fields[2][sl]
        t = t + wts[3] * grain[sl]
        if rng.random() < 0.25:  # stripes / fabric / bark
            ang = rng.uniform(0, np.pi)
            period = rng.uniform(3.0, 0.08 * size + 4.0)
            ph = math.cos(ang) * xx[sl] + math.sin(ang) * yy[sl]
            t = t + rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * ph / period)
        return np.exp(np.clip(t, -3, 3)).astype(np.float32)

    full = (slice(0, h), slice(0, w))
    # background: two colours blended along a direction, textured
    c1, c2 = _random_reflectance(rng), _random_reflectance(rng)
    ang = rng.uniform(0, 2 * np.pi)
    ramp = (math.cos(ang) * (xx - w / 2) + math.sin(ang) * (yy - h / 2)) / size + 0.5
    ramp = np.clip(ramp + 0.15 * fields[2], 0, 1)[..., None]
    img = (c1 * (1 - ramp) + c2 * ramp) * texture(full)[..., None]
    if rng.random() < 0.4:  # a horizon: bright, smooth sky above a wavy line
        sky = _random_reflectance(rng, 0.5) * rng.uniform(1.5, 4.0)
        line = h * rng.uniform(0.2, 0.6) + 0.05 * h * fields[2][0:1, :]
        sky_cov = _coverage(yy - line, rng.uniform(0.6, 2.0))[..., None]
        sky_tex = 1.0 + 0.04 * fields[2][..., None]
        img = img * (1 - sky_cov) + sky * sky_tex * sky_cov
    # objects
    for _ in range(int(rng.integers(3, 14))):
        kind = str(rng.choice(["ellipse", "rect", "polygon", "blob"]))
        a = size * rng.uniform(0.03, 0.3)
        b = a * rng.uniform(0.3, 1.0)
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        r = int(max(a, b) * 1.6) + 4
        y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r)
        x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r)
        if y1 <= y0 or x1 <= x0:
            continue
        sl = (slice(y0, y1), slice(x0, x1))
        u, v = _rotated(xx[sl], yy[sl], cx, cy, rng.uniform(0, np.pi))
        d = _shape_distance(kind, u, v, a, b, rng)
        edge = rng.uniform(0.4, 1.2) if rng.random() < 0.75 else rng.uniform(1.5, 6.0)
        cov = _coverage(d, edge)[..., None]
        colour = _random_reflectance(rng)
        shade = 1.0 + rng.uniform(-0.5, 0.5) * (u / max(a, 1.0))[..., None] * 0.5
        obj = colour * texture(sl)[..., None] * np.clip(shade, 0.3, 1.7)
        if rng.random() < 0.3:  # a cast shadow beside the object
            sd = _shape_distance("ellipse", u - a * 0.3, v + b * 0.4, a * 1.1, b * 1.1, rng)
            shadow = 1.0 - rng.uniform(0.3, 0.6) * _coverage(sd, size * 0.02)[..., None]
            img[sl] *= shadow
        img[sl] = img[sl] * (1 - cov) + obj * cov
    # thin lines (wires, twigs, cracks)
    for _ in range(int(rng.integers(0, 5))):
        ang = rng.uniform(0, np.pi)
        px, py = rng.uniform(0, w), rng.uniform(0, h)
        dist = np.abs(-math.sin(ang) * (xx - px) + math.cos(ang) * (yy - py))
        cov = _coverage(dist - rng.uniform(0.3, 1.5), 0.8)[..., None]
        img = img * (1 - cov) + _random_reflectance(rng) * cov
    # lighting: colour temperature, directional falloff, specular highlights
    light = illuminant_rgb(rng.uniform(2800, 7500))
    tint = np.exp(rng.normal(0, 0.03, 3)).astype(np.float32)
    lang = rng.uniform(0, 2 * np.pi)
    fall = 1.0 + rng.uniform(0, 0.6) * ((math.cos(lang) * xx + math.sin(lang) * yy) / size - 0.5)
    img = img * (light * tint) * np.clip(fall, 0.4, 1.6)[..., None]
    for _ in range(int(rng.poisson(1.5))):
        hx, hy = rng.uniform(0, w), rng.uniform(0, h)
        rad = size * rng.uniform(0.003, 0.02)
        amp = rng.uniform(0.5, 3.0)
        r = int(4 * rad) + 2
        y0, y1 = max(0, int(hy) - r), min(h, int(hy) + r)
        x0, x1 = max(0, int(hx) - r), min(w, int(hx) + r)
        if y1 <= y0 or x1 <= x0:
            continue
        sl = (slice(y0, y1), slice(x0, x1))
        spot = np.exp(-((xx[sl] - hx) ** 2 + (yy[sl] - hy) ** 2) / (2 * rad * rad))
        img[sl] += amp * spot[..., None] * light
    return np.maximum(img, 0.0).astype(np.float32) * float(np.exp(rng.normal(0, 0.7)))


def flat_field_scene(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A flat-field frame (white wall / diffuser): smooth, near-uniform, slightly tinted.

    The lens adds the vignetting; the scene itself has only a faint large-scale gradient.
    """
    h, w = int(shape[0]), int(shape[1])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.8 * np.exp(rng.normal(0, 0.02, 3)).astype(np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    grad = 1.0 + rng.uniform(0, 0.03) * (
        math.cos(ang) * (xx / w - 0.5) + math.sin(ang) * (yy / h - 0.5)
    )
    lowf = 1.0 + 0.01 * ndimage.zoom(rng.standard_normal((3, 3)), (h / 3, w / 3), order=3)[:h, :w]
    light = illuminant_rgb(rng.uniform(4800, 6800))
    return (base * light * (grad * lowf)[..., None]).astype(np.float32)


# --- bottle batch codes ------------------------------------------------------------------


@dataclass(frozen=True)
class PrinterSpec:
    """An industrial ink-jet coder: how its dots look. Distances in units of the dot pitch."""

    name: str
    dot_diameter: float  # dot width / vertical pitch
    dot_aspect: float  # dot height / width
    pitch_x: float  # horizontal pitch / vertical pitch
    edge: float = 0.12  # edge softness (ink spread), in pitch units
    jitter: float = 0.04  # per-dot placement error (std), pitch units


# Two coders that differ only subtly: the second lays slightly narrower, taller dots a few
# percent further apart horizontally. Ink area per dot is about the same, so the codes are
# equally dark; per-image scale varies more than the dot sizes differ.
PRINTERS = (
    PrinterSpec(name="printer1", dot_diameter=0.80, dot_aspect=1.00, pitch_x=1.00),
    PrinterSpec(name="printer2", dot_diameter=0.72, dot_aspect=1.25, pitch_x=1.06),
)

_PLASTICS = (  # linear reflectance of common bottle plastics
    (0.78, 0.78, 0.74),  # natural white HDPE
    (0.70, 0.74, 0.80),  # cool white
    (0.35, 0.50, 0.72),  # light blue
    (0.75, 0.52, 0.60),  # pink
    (0.55, 0.70, 0.50),  # pale green
    (0.80, 0.66, 0.40),  # cream / amber
    (0.62, 0.60, 0.66),  # light grey-violet
)


def random_batch_code(rng: np.random.Generator) -> tuple[str, str]:
    """Two lines of random characters, as printed batch/lot codes."""
    n1, n2 = int(rng.integers(6, 9)), int(rng.integers(6, 9))
    pick = rng.integers(0, len(CHARSET), n1 + n2)
    chars = "".join(CHARSET[i] for i in pick)
    return chars[:n1], chars[n1:]


def bottle_scene(
    shape: tuple[int, int],
    rng: np.random.Generator,
    printer: PrinterSpec,
    text: tuple[str, str] | None = None,
) -> tuple[np.ndarray, tuple[str, str]]:
    """The underside of a plastic bottle, cropped tightly around a two-line dot-matrix code.

    Returns (scene, (line1, line2)). The printer decides only the dot geometry; text,
    position, scale, rotation, plastic colour, texture and light are random per image.
    """
    h, w = int(shape[0]), int(shape[1])
    lines = text or random_batch_code(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    size = float(max(h, w))
    # moulded plastic: colour, fine grain, concentric rings around the gate, a parting seam
    colour = np.array(_PLASTICS[int(rng.integers(len(_PLASTICS)))], dtype=np.float32)
    colour = colour * np.exp(rng.normal(0, 0.05, 3)).astype(np.float32)
    grain = 0.03 * fractal_noise(rng, (h, w), 1.2) + 0.05 * fractal_noise(rng, (h, w), 2.6)
    gx, gy = rng.uniform(-0.3, 1.3) * w, rng.uniform(-0.3, 1.3) * h
    r = np.hypot(xx - gx, yy - gy)
    period = size * rng.uniform(0.04, 0.12)
    rings = rng.uniform(0.0, 0.04) * np.sin(2 * np.pi * r / period + rng.uniform(0, 6.3))
    ang = rng.uniform(0, np.pi)
    sd = -math.sin(ang) * (xx - rng.uniform(0, w)) + math.cos(ang) * (yy - rng.uniform(0, h))
    seam = rng.uniform(-0.1, 0.12) * np.exp(-0.5 * (sd / rng.uniform(0.8, 2.0)) ** 2)
    surface = np.exp(grain + rings + seam)
    # lamp: broad gradient and a soft specular sheen
    lang = rng.uniform(0, 2 * np.pi)
    fall = 1.0 + rng.uniform(0.05, 0.35) * (
        (math.cos(lang) * xx + math.sin(lang) * yy) / size - 0.5
    )
    hx, hy = rng.uniform(0, w), rng.uniform(0, h)
    sheen = rng.uniform(0.0, 0.35) * np.exp(
        -((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (size * rng.uniform(0.1, 0.3)) ** 2)
    )
    # the code: layout in printer grid units, then to pixels
    cols = max(line_width(lines[0]), line_width(lines[1]))
    rows = 2 * GLYPH_H + 3  # two lines and a gap of three dot rows
    fill = rng.uniform(0.72, 0.88)  # cropped tightly around the code
    pitch = min(fill * w / (cols * printer.pitch_x), 0.8 * h / rows)
    rot = math.radians(rng.normal(0, 2.5))
    # off-centre by up to 8% of the frame, but the whole code stays inside it
    room_x = max(0.0, (w - (cols + 2) * pitch * printer.pitch_x) / 2)
    room_y = max(0.0, (h - (rows + 2) * pitch) / 2)
    cx = w / 2 + rng.uniform(-1, 1) * min(0.08 * w, room_x)
    cy = h / 2 + rng.uniform(-1, 1) * min(0.08 * h, room_y)
    cr, sr = math.cos(rot), math.sin(rot)
    half_w = printer.dot_diameter * pitch / 2
    half_h = half_w * printer.dot_aspect
    soft = printer.edge * pitch
    reach = int(np.ceil(max(half_w, half_h) + 2 * soft + 2))
    grid = []  # (x, y) of every dot in printer units
    for li, line in enumerate(lines):
        lw = line_width(line)
        for row, col in text_dots(line):
            grid.append(
                ((col - lw / 2 + 0.5) * printer.pitch_x, row + li * (GLYPH_H + 3) - rows / 2 + 0.5)
            )
    g = np.array(grid, dtype=np.float64).reshape(-1, 2)
    n = len(g)
    present = rng.random(n) >= 0.01  # an occasional missing drop
    g = g + rng.normal(0, printer.jitter, (n, 2))  # placement error
    scale = 1.0 + rng.normal(0, 0.04, n)  # drop size variation
    density = rng.uniform(0.88, 1.0, n)
    px = cx + pitch * (cr * g[:, 0] - sr * g[:, 1])
    py = cy + pitch * (sr * g[:, 0] + cr * g[:, 1])
    # render all dots at once on small patches around them, then paste with max()
    off = np.arange(-reach, reach + 1, dtype=np.float64)
    y0 = np.floor(py).astype(np.int64)
    x0 = np.floor(px).astype(np.int64)
    dv = (y0[:, None, None] + off[None, :, None]) - py[:, None, None]
    du = (x0[:, None, None] + off[None, None, :]) - px[:, None, None]
    u = cr * du + sr * dv
    v = -sr * du + cr * dv
    s3 = scale[:, None, None]
    rr = np.sqrt((u / (half_w * s3)) ** 2 + (v / (half_h * s3)) ** 2)
    cov = _coverage(((rr - 1.0) * half_w * s3).astype(np.float32), soft) * density[
        :, None, None
    ].astype(np.float32)
    size_p = 2 * reach + 1
    ink_pad = np.zeros((h + 2 * size_p, w + 2 * size_p), dtype=np.float32)
    for k in np.nonzero(present)[0]:
        ys, xs = int(y0[k]) - reach + size_p, int(x0[k]) - reach + size_p
        if not (0 <= ys <= h + size_p and 0 <= xs <= w + size_p):
            continue
        sl = ink_pad[ys : ys + size_p, xs : xs + size_p]
        np.maximum(sl, cov[k], out=sl)
    ink = ink_pad[size_p : size_p + h, size_p : size_p + w]
    absorb = np.array([0.86, 0.87, 0.84], dtype=np.float32) * rng.uniform(0.92, 1.0)
    refl = colour * surface[..., None] * (1.0 - absorb * ink[..., None])
    light = illuminant_rgb(rng.normal(4600, 150))  # the same lamp room for every shot
    img = refl * light * fall[..., None] + sheen[..., None] * light
    return np.maximum(img, 0.0).astype(np.float32), (lines[0], lines[1])
