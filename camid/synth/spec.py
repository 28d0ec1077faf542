"""Camera specifications for the synthetic pipeline: presets, TOML/JSON spec files, devices.

A *camera model* fixes the processing chain (optics, CFA layout, demosaicing, colour, tone,
denoising, sharpening, JPEG tables, EXIF strings). A *device* is one physical unit of a model:
it shares the chain but has its own sensor (PRNU, dark-signal and column patterns, small gain
and noise differences), all derived deterministically from the model's ``sensor_seed``.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from camid.errors import InputError, UsageError

CFA_PATTERNS = ("RGGB", "BGGR", "GRBG", "GBRG")
DEMOSAIC_METHODS = ("bilinear", "mhc", "gradient")
SUBSAMPLINGS = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
TONE_CURVES = ("srgb", "gamma2.2", "gamma2.4")


def stable_seed(*parts: object) -> int:
    """A 32-bit seed from strings/ints that is stable across processes and Python versions."""
    text = "\x1f".join(str(p) for p in parts)
    return zlib.crc32(text.encode("utf-8")) & 0xFFFFFFFF


@dataclass(frozen=True)
class CameraSpec:
    """One camera model: its processing chain and how many devices (units) of it exist."""

    id: str
    make: str
    model: str
    software: str
    devices: int = 2
    sensor_seed: int = 0
    # optics
    lens_blur: float = 0.6  # Gaussian PSF sigma in pixels
    vignetting: float = 0.25  # relative light loss in the corners
    # sensor
    cfa: str = "RGGB"
    sensor_matrix: tuple[float, ...] = (0.62, 0.30, 0.08, 0.14, 0.72, 0.14, 0.04, 0.26, 0.70)
    full_well: float = 6000.0  # electrons at clipping, base ISO
    read_noise: float = 3.0  # electrons rms
    dark_noise: float = 0.8  # DSNU: per-pixel fixed offset, electrons rms
    column_noise: float = 0.4  # per-column fixed offset, electrons rms
    prnu_std: float = 0.01  # relative photo-response non-uniformity
    bit_depth: int = 10
    base_iso: int = 50
    max_gain: float = 8.0  # highest analogue gain auto-ISO uses
    # processing
    demosaic: str = "bilinear"
    ae_target: float = 0.18  # metered mid-grey in linear light
    awb_white_patch: float = 0.3  # 0 = grey world, 1 = white patch
    awb_strength: float = 0.9  # 1 = full adaptation to the estimated illuminant
    awb_warmth: float = 0.0  # preference shift in mired (positive = warmer rendering)
    saturation: float = 1.1
    ccm_error: float = 0.02  # size of the model's colour-calibration deviation
    tone: str = "srgb"
    contrast: float = 0.2  # S-curve strength, 0..0.5
    denoise_luma: float = 0.3  # 0..1 blend toward an edge-aware smoothed luma
    denoise_chroma: float = 1.0  # Gaussian sigma of chroma smoothing in pixels
    sharpen_amount: float = 0.5
    sharpen_radius: float = 1.0
    # file
    jpeg_quality: int = 92
    jpeg_chroma_quality: int | None = None
    jpeg_table_tilt: float = 0.0  # custom tables: extra coarsening of high frequencies
    subsampling: str = "4:2:0"
    orientation_mismatch: float = 0.0  # share of images tagged rotated while pixels are not

    @property
    def name(self) -> str:
        """The camera name as written in manifests: EXIF 'Make Model'."""
        from camid.io.exif import camera_name

        return camera_name(self.make, self.model) or f"{self.make} {self.model}"

    def device_name(self, device: int) -> str:
        """Short device label, e.g. 'A1' for the first unit of camera A."""
        return f"{self.id}{device + 1}"

    def validate(self) -> CameraSpec:
        """Check option values; raise UsageError naming the bad field."""

        def bad(what: str) -> UsageError:
            return UsageError(f"camera {self.id!r}: {what}")

        if not self.id or not self.id.isidentifier():
            raise bad("id must be a short identifier such as 'A'")
        if self.cfa not in CFA_PATTERNS:
            raise bad(f"cfa must be one of {', '.join(CFA_PATTERNS)}")
        if self.demosaic not in DEMOSAIC_METHODS:
            raise bad(f"demosaic must be one of {', '.join(DEMOSAIC_METHODS)}")
        if self.subsampling not in SUBSAMPLINGS:
            raise bad(f"subsampling must be one of {', '.join(SUBSAMPLINGS)}")
        if self.tone not in TONE_CURVES:
            raise bad(f"tone must be one of {', '.join(TONE_CURVES)}")
        if not 1 <= self.devices <= 64:
            raise bad("devices must be 1..64")
        if not 1 <= self.jpeg_quality <= 100:
            raise bad("jpeg_quality must be 1..100")
        if self.jpeg_chroma_quality is not None and not 1 <= self.jpeg_chroma_quality <= 100:
            raise bad("jpeg_chroma_quality must be 1..100")
        if len(self.sensor_matrix) != 9:
            raise bad("sensor_matrix needs 9 numbers (3x3, row-major)")
        if not 8 <= self.bit_depth <= 16:
            raise bad("bit_depth must be 8..16")
        for fname in (
            "lens_blur",
            "vignetting",
            "read_noise",
            "dark_noise",
            "column_noise",
            "prnu_std",
            "denoise_luma",
            "denoise_chroma",
            "sharpen_amount",
            "orientation_mismatch",
            "contrast",
            "ccm_error",
        ):
            if getattr(self, fname) < 0:
                raise bad(f"{fname} must be >= 0")
        if self.full_well <= 0 or self.ae_target <= 0 or self.sharpen_radius <= 0:
            raise bad("full_well, ae_target and sharpen_radius must be > 0")
        if not 0 <= self.orientation_mismatch <= 1 or not 0 <= self.denoise_luma <= 1:
            raise bad("orientation_mismatch and denoise_luma must be within 0..1")
        return self


@dataclass(frozen=True)
class SynthSpec:
    """The set of cameras a synthetic dataset is shot with."""

    cameras: tuple[CameraSpec, ...]
    name: str = "default"

    def camera(self, key: str) -> CameraSpec:
        """Look a camera up by id ('A') or by its 'Make Model' name."""
        for cam in self.cameras:
            if key in (cam.id, cam.name):
                return cam
        raise UsageError(f"no camera {key!r} in spec {self.name!r}")


def _preset_cameras() -> tuple[CameraSpec, ...]:
    # Five made-up phone models. Traits overlap on purpose (two share a CFA layout, three
    # use 4:2:0 at similar qualities, two use the same demosaicing family), so no single
    # trait separates all models; the combination does, as with real phones.
    return (
        CameraSpec(
            id="A",
            make="Corvana",
            model="Vela 11",
            software="VelaOS 4.2.1",
            sensor_seed=1101,
            lens_blur=0.55,
            vignetting=0.30,
            cfa="RGGB",
            sensor_matrix=(0.60, 0.31, 0.09, 0.13, 0.74, 0.13, 0.05, 0.24, 0.71),
            full_well=5200,
            read_noise=2.6,
            bit_depth=10,
            base_iso=40,
            demosaic="mhc",
            ae_target=0.18,
            awb_white_patch=0.35,
            awb_strength=0.92,
            awb_warmth=8,
            saturation=1.12,
            ccm_error=0.02,
            tone="srgb",
            contrast=0.22,
            denoise_luma=0.35,
            denoise_chroma=1.2,
            sharpen_amount=0.7,
            sharpen_radius=0.8,
            jpeg_quality=93,
            subsampling="4:2:0",
            orientation_mismatch=0.1,
        ),
        CameraSpec(
            id="B",
            make="Hollis Mobile",
            model="HM-X3",
            software="X3_V2.10.05",
            sensor_seed=2207,
            lens_blur=0.65,
            vignetting=0.22,
            cfa="BGGR",
            sensor_matrix=(0.58, 0.33, 0.09, 0.15, 0.70, 0.15, 0.06, 0.27, 0.67),
            full_well=4600,
            read_noise=3.1,
            bit_depth=10,
            base_iso=50,
            demosaic="gradient",
            ae_target=0.17,
            awb_white_patch=0.25,
            awb_strength=0.88,
            awb_warmth=-6,
            saturation=1.16,
            ccm_error=0.025,
            tone="srgb",
            contrast=0.26,
            denoise_luma=0.55,
            denoise_chroma=1.6,
            sharpen_amount=0.45,
            sharpen_radius=1.0,
            jpeg_quality=90,
            subsampling="4:2:0",
            jpeg_table_tilt=0.15,
            orientation_mismatch=0.0,
        ),
        CameraSpec(
            id="C",
            make="Sanvik",
            model="Nimbus S8",
            software="S8-OS 13.0.2",
            sensor_seed=3313,
            lens_blur=0.50,
            vignetting=0.35,
            cfa="GRBG",
            sensor_matrix=(0.63, 0.29, 0.08, 0.12, 0.75, 0.13, 0.04, 0.23, 0.73),
            full_well=6400,
            read_noise=2.2,
            bit_depth=12,
            base_iso=50,
            demosaic="mhc",
            ae_target=0.185,
            awb_white_patch=0.45,
            awb_strength=0.95,
            awb_warmth=12,
            saturation=1.08,
            ccm_error=0.02,
            tone="gamma2.2",
            contrast=0.18,
            denoise_luma=0.2,
            denoise_chroma=0.8,
            sharpen_amount=0.9,
            sharpen_radius=0.7,
            jpeg_quality=95,
            subsampling="4:2:2",
            orientation_mismatch=0.05,
        ),
        CameraSpec(
            id="D",
            make="Orbitek",
            model="Redline 9T",
            software="RedlineUI 9.1.0",
            sensor_seed=4421,
            lens_blur=0.70,
            vignetting=0.28,
            cfa="RGGB",
            sensor_matrix=(0.59, 0.32, 0.09, 0.14, 0.71, 0.15, 0.05, 0.25, 0.70),
            full_well=4800,
            read_noise=3.4,
            bit_depth=10,
            base_iso=64,
            demosaic="gradient",
            ae_target=0.175,
            awb_white_patch=0.3,
            awb_strength=0.9,
            awb_warmth=0,
            saturation=1.2,
            ccm_error=0.03,
            tone="srgb",
            contrast=0.3,
            denoise_luma=0.45,
            denoise_chroma=1.4,
            sharpen_amount=0.6,
            sharpen_radius=1.2,
            jpeg_quality=92,
            jpeg_chroma_quality=89,
            subsampling="4:2:0",
            orientation_mismatch=0.15,
        ),
        CameraSpec(
            id="E",
            make="Veyra",
            model="V27 Pro",
            software="Veyra Camera 7.0.19",
            sensor_seed=5527,
            lens_blur=0.60,
            vignetting=0.25,
            cfa="GBRG",
            sensor_matrix=(0.61, 0.30, 0.09, 0.13, 0.73, 0.14, 0.05, 0.25, 0.70),
            full_well=5000,
            read_noise=2.9,
            bit_depth=10,
            base_iso=50,
            demosaic="bilinear",
            ae_target=0.18,
            awb_white_patch=0.4,
            awb_strength=0.9,
            awb_warmth=4,
            saturation=1.14,
            ccm_error=0.02,
            tone="gamma2.4",
            contrast=0.2,
            denoise_luma=0.6,
            denoise_chroma=2.0,
            sharpen_amount=0.55,
            sharpen_radius=0.9,
            jpeg_quality=88,
            subsampling="4:2:0",
            jpeg_table_tilt=0.08,
            orientation_mismatch=0.0,
        ),
    )


def default_spec() -> SynthSpec:
    """The built-in preset: five phone models A..E with two devices each."""
    return SynthSpec(cameras=_preset_cameras(), name="default")


_FIELDS = {f.name: f for f in dataclasses.fields(CameraSpec)}


def _camera_from_dict(d: dict[str, Any], where: str, index: int) -> CameraSpec:
    base: dict[str, Any] = {}
    preset = d.get("preset")
    if preset is not None:
        try:
            base = dataclasses.asdict(default_spec().camera(str(preset)))
        except UsageError as exc:
            raise InputError(where, f"camera {index + 1}: unknown preset {preset!r}") from exc
    unknown = sorted(set(d) - set(_FIELDS) - {"preset"})
    if unknown:
        raise InputError(where, f"camera {index + 1}: unknown field(s) {', '.join(unknown)}")
    merged = {**base, **{k: v for k, v in d.items() if k != "preset"}}
    for key in ("id", "make", "model"):
        if key not in merged:
            raise InputError(where, f"camera {index + 1}: missing field {key!r}")
    renamed = preset is not None and any(merged[k] != base.get(k) for k in ("id", "make", "model"))
    if "software" not in d and (preset is None or renamed):
        merged["software"] = f"{merged['model']} firmware 1.0"
    if "sensor_seed" not in d and (preset is None or renamed):
        merged["sensor_seed"] = stable_seed(merged["id"], merged["make"], merged["model"])
    if "sensor_matrix" in merged:
        merged["sensor_matrix"] = tuple(float(v) for v in merged["sensor_matrix"])
    try:
        cam = CameraSpec(**merged)
    except TypeError as exc:
        raise InputError(where, f"camera {index + 1}: {exc}") from exc
    try:
        return cam.validate()
    except UsageError as exc:
        raise InputError(where, str(exc)) from exc


def spec_from_dict(data: dict[str, Any], where: str = "<spec>") -> SynthSpec:
    """Build a spec from parsed TOML/JSON: ``{"name": ..., "camera": [{...}, ...]}``."""
    cams = data.get("camera", data.get("cameras"))
    if not isinstance(cams, list) or not cams:
        raise InputError(where, "spec needs a non-empty [[camera]] list")
    cameras = tuple(_camera_from_dict(dict(c), where, i) for i, c in enumerate(cams))
    ids = [c.id for c in cameras]
    if len(set(ids)) != len(ids):
        raise InputError(where, "camera ids must be unique")
    names = [c.name for c in cameras]
    if len(set(names)) != len(names):
        raise InputError(where, "camera make/model names must be unique")
    return SynthSpec(cameras=cameras, name=str(data.get("name", Path(where).stem)))


def load_spec(path: str | Path) -> SynthSpec:
    """Read a camera spec from a .toml or .json file."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise InputError(p, f"cannot read spec ({exc.strerror or exc})") from exc
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(p, f"not a valid spec file ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(p, "spec must be a table/object at the top level")
    return spec_from_dict(data, str(p))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v), ensure_ascii=False)


def spec_to_toml(spec: SynthSpec) -> str:
    """Serialise a spec as TOML that `load_spec` reads back to an equal spec."""
    lines = [
        "# camid synth camera spec: one [[camera]] table per camera model.",
        "# Fields left out take the CameraSpec defaults; 'preset = \"A\"' starts from a preset.",
        f"name = {_toml_value(spec.name)}",
        "",
    ]
    for cam in spec.cameras:
        lines.append("[[camera]]")
        for k, v in dataclasses.asdict(cam).items():
            if v is None:
                continue
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True)
class DeviceSensor:
    """Per-unit sensor deviations of one device (the pattern itself: `device_prnu`)."""

    camera_id: str
    index: int
    seed: int
    prnu_std: float
    gains: tuple[float, float, float] = field(default=(1.0, 1.0, 1.0))
    read_noise: float = 3.0


def device_sensor(camera: CameraSpec, device: int) -> DeviceSensor:
    """The fixed sensor properties of unit `device` (0-based) of `camera`."""
    import numpy as np

    if not 0 <= device < camera.devices:
        raise UsageError(f"camera {camera.id!r} has devices 0..{camera.devices - 1}")
    seed = stable_seed("device", camera.sensor_seed, camera.id, device)
    rng = np.random.default_rng(seed)
    gains = tuple(float(g) for g in 1.0 + 0.01 * rng.standard_normal(3))
    return DeviceSensor(
        camera_id=camera.id,
        index=device,
        seed=seed,
        prnu_std=float(camera.prnu_std * (1.0 + 0.1 * rng.standard_normal())),
        gains=gains,  # type: ignore[arg-type]
        read_noise=float(camera.read_noise * (1.0 + 0.08 * rng.standard_normal())),
    )
