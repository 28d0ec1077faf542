"""Synthetic benchmark datasets: the bottle batch-code task and a camera-identification set.

Every image has its own seed derived from (dataset seed, kind, camera, device, index), so
output is byte-identical for the same arguments whatever the number of worker processes.
Camera *devices* (their sensors) are fixed by the spec, not by the dataset seed: two
datasets with different seeds are shot with the same physical cameras.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import numpy as np

from camid.data.manifest import write_manifest
from camid.errors import AlreadyExistsError, UsageError
from camid.io.atomic import write_bytes_atomic, write_text_atomic
from camid.synth.pipeline import simulate
from camid.synth.scenes import PRINTERS, bottle_scene, flat_field_scene, natural_scene
from camid.synth.spec import SynthSpec, default_spec, spec_to_toml, stable_seed

T = TypeVar("T")
Progress = Callable[[Iterable[T], int], Iterable[T]]

LABELS = ("maker1", "maker2")  # bottle manufacturers; maker<i> uses PRINTERS[i-1]
DEFAULT_BOTTLE_SIZE = (384, 384)
DEFAULT_CAMERA_SIZE = (384, 288)
FLAT_EV = 1.3  # flat fields: exposure compensation for bright but unsaturated frames
_PARALLEL_MIN = 48  # fewer images than this are rendered in-process


@dataclass(frozen=True)
class _Job:
    kind: str  # natural | flat | bottle
    camera: int  # index into spec.cameras
    device: int
    seed: int
    shape: tuple[int, int]  # (height, width)
    printer: int
    when: str
    rel_path: str
    file_format: str = "jpeg"


def _render(job: _Job, spec: SynthSpec) -> bytes:
    cam = spec.cameras[job.camera]
    scene_rng = np.random.default_rng([job.seed, 0])
    cam_rng = np.random.default_rng([job.seed, 1])
    ev = 0.0
    if job.kind == "natural":
        scene = natural_scene(job.shape, scene_rng)
    elif job.kind == "flat":
        scene = flat_field_scene(job.shape, scene_rng)
        ev = FLAT_EV
    else:
        scene, _ = bottle_scene(job.shape, scene_rng, PRINTERS[job.printer])
    if job.file_format != "jpeg":
        from camid.synth.files import simulate_file

        return simulate_file(
            scene,
            cam,
            job.device,
            cam_rng,
            file_format=job.file_format,
            exposure_ev=ev,
            datetime_original=job.when,
            serial=cam.device_name(job.device),
        )
    _, data = simulate(scene, cam, job.device, cam_rng, exposure_ev=ev, datetime_original=job.when)
    return data


def _render_star(args: tuple[_Job, SynthSpec]) -> bytes:
    return _render(*args)


def _render_all(
    jobs: list[_Job], spec: SynthSpec, workers: int | None
) -> Iterator[tuple[_Job, bytes]]:
    n = workers if workers is not None else min(2, os.cpu_count() or 1)
    if n <= 1 or len(jobs) < _PARALLEL_MIN:
        for job in jobs:
            yield job, _render(job, spec)
        return
    # spawn: safe beside torch/OpenMP threads in the parent; results come back in order
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx) as pool:
        chunk = max(1, min(8, len(jobs) // (4 * n)))
        yield from zip(
            jobs, pool.map(_render_star, [(j, spec) for j in jobs], chunksize=chunk), strict=True
        )


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    w, h = int(size[0]), int(size[1])
    if not (32 <= w <= 12000 and 32 <= h <= 12000):
        raise UsageError(f"image size {w}x{h} out of range (32..12000 pixels per side)")
    return h, w


def _base_time(seed: int) -> datetime:
    return datetime(2022, 3, 1, 9, 0, 0) + timedelta(days=stable_seed("day", seed) % 600)


def _when(base: datetime, order: int, seed: int) -> str:
    return (base + timedelta(seconds=order * 211 + seed % 180)).strftime("%Y:%m:%d %H:%M:%S")


def _prepare_out(out_dir: str | Path, manifests: list[str], overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    existing = [m for m in manifests if (out / m).exists()]
    if existing and not overwrite:
        raise AlreadyExistsError(f"{out / existing[0]} already exists")
    (out / "images").mkdir(parents=True, exist_ok=True)
    return out


def _write_meta(out: Path, spec: SynthSpec, meta: dict) -> None:
    write_text_atomic(out / "spec.toml", spec_to_toml(spec))
    write_text_atomic(out / "synth.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")


def _progress(jobs_iter: Iterator[T], total: int, progress: Progress | None) -> Iterable[T]:
    return progress(jobs_iter, total) if progress is not None else jobs_iter


def disjoint_roles(spec: SynthSpec) -> tuple[list[str], list[str], list[str]]:
    """Camera ids (label-1 cameras, label-2 cameras, unseen) of the Disjoint setting.

    Five cameras A..E give ([A, B], [C, D], [E]) as in the paper; with fewer cameras each
    group shrinks (at least one camera per label; two cameras are needed).
    """
    ids = [c.id for c in spec.cameras]
    if len(ids) < 2:
        raise UsageError("the bottle benchmark needs at least 2 cameras in the spec")
    k = max(1, min(2, len(ids) // 2))
    return ids[:k], ids[k : 2 * k], ids[2 * k :]


def make_bottles_dataset(
    out_dir: str | Path,
    *,
    spec: SynthSpec | None = None,
    per_device: int = 20,
    size: tuple[int, int] = DEFAULT_BOTTLE_SIZE,
    seed: int = 0,
    test_fraction: float = 0.1,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Write the bottle batch-code benchmark; return {'balanced'|'partial'|'disjoint': csv}.

    `per_device` images per device and label; `size` is (width, height). All three
    manifests share one test split, balanced over camera x label (`test_fraction` of each
    cell). Balanced trains on every other image; Partial only on the first two cameras;
    Disjoint on label 1 from the first two cameras and label 2 from the next two.
    """
    spec = spec or default_spec()
    if per_device < 1:
        raise UsageError("at least 1 image per device and label is needed")
    if not 0.0 < test_fraction < 1.0:
        raise UsageError("test fraction must be between 0 and 1")
    shape = _check_size(size)
    g1, g2, unseen = disjoint_roles(spec)
    names = {"balanced": "balanced.csv", "partial": "partial.csv", "disjoint": "disjoint.csv"}
    out = _prepare_out(out_dir, list(names.values()), overwrite)
    base = _base_time(seed)
    jobs: list[_Job] = []
    for ci, cam in enumerate(spec.cameras):
        for dev in range(cam.devices):
            for li in range(len(LABELS)):
                for k in range(per_device):
                    s = stable_seed("bottle", seed, cam.id, dev, li, k)
                    name = f"{cam.device_name(dev)}_{s:08x}.jpg"
                    jobs.append(
                        _Job(
                            "bottle",
                            ci,
                            dev,
                            s,
                            shape,
                            li,
                            _when(base, len(jobs), s),
                            f"images/{name}",
                        )
                    )
    rows = []
    for job, data in _progress(_render_all(jobs, spec, workers), len(jobs), progress):
        write_bytes_atomic(out / job.rel_path, data)
        cam = spec.cameras[job.camera]
        rows.append(
            {
                "path": out / job.rel_path,
                "label": LABELS[job.printer],
                "camera": cam.name,
                "device": cam.device_name(job.device),
                "split": "train",
                "_id": cam.id,
            }
        )
    # one test split, balanced over camera x label
    cells: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        cells.setdefault((r["_id"], r["label"]), []).append(i)
    n_test = max(1, int(round(test_fraction * min(len(v) for v in cells.values()))))
    pick_rng = np.random.default_rng(stable_seed("test-split", seed))
    for key in sorted(cells):
        members = cells[key]
        if n_test >= len(members):
            raise UsageError("too few images per camera and label for a test split")
        for i in pick_rng.choice(len(members), n_test, replace=False):
            rows[members[int(i)]]["split"] = "test"
    rows.sort(key=lambda r: str(r["path"]))

    def keep(r: dict, setting: str) -> bool:
        if r["split"] == "test" or setting == "balanced":
            return True
        if setting == "partial":
            return r["_id"] in g1
        return (r["label"] == LABELS[0] and r["_id"] in g1) or (
            r["label"] == LABELS[1] and r["_id"] in g2
        )

    paths = {}
    for setting, fname in names.items():
        sel = [{k: v for k, v in r.items() if k != "_id"} for r in rows if keep(r, setting)]
        paths[setting] = write_manifest(sel, out / fname)
    _write_meta(
        out,
        spec,
        {
            "kind": "bottles",
            "seed": seed,
            "size": [shape[1], shape[0]],
            "per_device": per_device,
            "test_per_cell": n_test,
            "labels": {LABELS[i]: PRINTERS[i].name for i in range(len(LABELS))},
            "cameras": {c.id: c.name for c in spec.cameras},
            "settings": {
                "balanced": "all cameras, labels balanced per camera",
                "partial": f"train only on cameras {', '.join(g1)}; no camera/label correlation",
                "disjoint": (
                    f"{LABELS[0]} only from {', '.join(g1)}; {LABELS[1]} only from "
                    f"{', '.join(g2)}; unseen in training: {', '.join(unseen) or '-'}"
                ),
            },
        },
    )
    return paths


def make_camera_dataset(
    out_dir: str | Path,
    *,
    spec: SynthSpec | None = None,
    per_device: int = 24,
    flat_per_device: int = 6,
    size: tuple[int, int] = DEFAULT_CAMERA_SIZE,
    seed: int = 0,
    test_fraction: float = 0.25,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    file_format: str = "jpeg",
    flat_format: str | None = None,
) -> Path:
    """Write a camera-identification set; return the path of its natural-image manifest.

    `cameras.csv`: natural images, label = camera, split train/test per device.
    `flatfield.csv`: flat-field frames per device (PRNU references), split 'train'.
    `size` is (width, height). `file_format` (jpeg, heic, dng) is the natural images'
    file type, `flat_format` the flat fields' (default: the same); a shot is the same
    exposure whatever its format.
    """
    from camid.synth.files import EXTENSIONS, FILE_FORMATS

    spec = spec or default_spec()
    flat_format = flat_format or file_format
    for f in (file_format, flat_format):
        if f not in FILE_FORMATS:
            raise UsageError(f"file format {f!r}: expected one of {', '.join(FILE_FORMATS)}")
    if per_device < 2:
        raise UsageError("at least 2 photos per device are needed (one train, one test)")
    if flat_per_device < 0:
        raise UsageError("the number of flat frames per device cannot be negative")
    if not 0.0 < test_fraction < 1.0:
        raise UsageError("test fraction must be between 0 and 1")
    shape = _check_size(size)
    out = _prepare_out(out_dir, ["cameras.csv", "flatfield.csv"], overwrite)
    base = _base_time(seed)
    jobs: list[_Job] = []
    for ci, cam in enumerate(spec.cameras):
        for dev in range(cam.devices):
            dname = cam.device_name(dev)
            for k in range(flat_per_device):
                s = stable_seed("flat", seed, cam.id, dev, k)
                jobs.append(
                    _Job(
                        "flat",
                        ci,
                        dev,
                        s,
                        shape,
                        0,
                        _when(base, len(jobs), s),
                        f"flat/{dname}_flat_{k + 1:03d}{EXTENSIONS[flat_format]}",
                        flat_format,
                    )
                )
            for k in range(per_device):
                s = stable_seed("natural", seed, cam.id, dev, k)
                jobs.append(
                    _Job(
                        "natural",
                        ci,
                        dev,
                        s,
                        shape,
                        0,
                        _when(base, len(jobs), s),
                        f"images/{dname}_{k + 1:04d}{EXTENSIONS[file_format]}",
                        file_format,
                    )
                )
    n_test = min(per_device - 1, max(1, int(round(test_fraction * per_device))))
    natural: list[dict] = []
    flats: list[dict] = []
    for job, data in _progress(_render_all(jobs, spec, workers), len(jobs), progress):
        write_bytes_atomic(out / job.rel_path, data)
        cam = spec.cameras[job.camera]
        row = {
            "path": out / job.rel_path,
            "label": cam.name,
            "camera": cam.name,
            "device": cam.device_name(job.device),
            "split": "train",
        }
        (flats if job.kind == "flat" else natural).append(row)
    by_dev: dict[str, list[dict]] = {}
    for r in natural:
        by_dev.setdefault(r["device"], []).append(r)
    pick_rng = np.random.default_rng(stable_seed("camera-split", seed))
    for dev in sorted(by_dev):
        for i in pick_rng.choice(len(by_dev[dev]), n_test, replace=False):
            by_dev[dev][int(i)]["split"] = "test"
    manifest = write_manifest(natural, out / "cameras.csv")
    write_manifest(flats, out / "flatfield.csv")
    _write_meta(
        out,
        spec,
        {
            "kind": "cameras",
            "seed": seed,
            "size": [shape[1], shape[0]],
            "per_device": per_device,
            "flat_per_device": flat_per_device,
            "test_per_device": n_test,
            "file_format": file_format,
            "flat_format": flat_format,
            "cameras": {c.id: c.name for c in spec.cameras},
            "devices": {c.device_name(d): c.name for c in spec.cameras for d in range(c.devices)},
        },
    )
    return manifest
