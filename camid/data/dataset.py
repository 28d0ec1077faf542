"""Datasets from a folder layout (`root/<label>/...`) or a CSV manifest."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from camid.data.manifest import Sample, read_manifest
from camid.errors import InputError, UsageError
from camid.io.exif import quick_camera
from camid.io.inputs import IMAGE_EXTENSIONS, expand_inputs


@dataclass
class Dataset:
    """Samples plus what was inferred about them and from where."""

    root: Path
    samples: list[Sample]
    source: str
    notes: list[str] = field(default_factory=list)
    camera_from: dict[str, int] = field(default_factory=dict)
    """How many samples got their camera from each source: column, folder, exif."""

    @property
    def labels(self) -> list[str]:
        """Sorted distinct labels."""
        return sorted({s.label for s in self.samples if s.label is not None})

    @property
    def cameras(self) -> list[str]:
        """Sorted distinct cameras."""
        return sorted({s.camera for s in self.samples if s.camera is not None})

    @property
    def missing_camera(self) -> list[Sample]:
        """Samples whose camera is unknown."""
        return [s for s in self.samples if s.camera is None]

    @property
    def missing_label(self) -> list[Sample]:
        """Samples without a label."""
        return [s for s in self.samples if s.label is None]

    def split(self, name: str) -> list[Sample]:
        """Samples of one split (e.g. 'train', 'test')."""
        return [s for s in self.samples if s.split == name]

    def crosstab(self) -> dict[str, dict[str, int]]:
        """Camera x label counts (camera None shown as '(unknown)')."""
        counts = Counter((s.camera or "(unknown)", s.label or "(none)") for s in self.samples)
        table: dict[str, dict[str, int]] = {}
        for (cam, lab), n in sorted(counts.items()):
            table.setdefault(cam, {})[lab] = n
        return table


def load_dataset(
    source: str | Path,
    *,
    label_level: int = 0,
    camera_level: int | None = None,
    extensions: frozenset[str] = IMAGE_EXTENSIONS,
    progress: Callable[[str, int, int], None] | None = None,
) -> Dataset:
    """Load a dataset from a manifest CSV or a folder tree.

    Folder layout: the label is the folder `label_level` levels below the root
    (0 = `root/<label>/...`); the camera comes from folder level `camera_level` when given,
    else from each file's EXIF Make+Model.
    """
    src = Path(source)
    if src.is_file():
        if src.suffix.lower() != ".csv":
            raise UsageError(f"{src}: a dataset is a folder or a .csv manifest")
        samples = read_manifest(src)
        notes = [f"read {len(samples)} rows from manifest {src.name}"]
        no_cam = [s for s in samples if s.camera is None]
        for k, s in enumerate(no_cam, start=1):
            s.camera = quick_camera(s.path)
            if progress is not None and (k % 100 == 0 or k == len(no_cam)):
                progress("EXIF cameras", k, len(no_cam))
        if no_cam:
            notes.append(f"{len(no_cam)} rows had no camera column value: EXIF Make+Model used")
        counts = {
            "column": len(samples) - len(no_cam),
            "exif": sum(s.camera is not None for s in no_cam),
        }
        return Dataset(src.parent, samples, "manifest", notes, counts)
    if not src.is_dir():
        raise InputError(src, "no such folder or manifest")
    paths, errors = expand_inputs([src], recursive=True, extensions=extensions)
    if errors and not paths:
        raise InputError(src, "folder has no image files")
    samples = []
    depth_short = 0
    for p in paths:
        parts = p.relative_to(src).parts[:-1]
        label = parts[label_level] if len(parts) > label_level else None
        if camera_level is not None:
            camera = parts[camera_level] if len(parts) > camera_level else None
            if camera is None:
                depth_short += 1
        else:
            camera = quick_camera(p)
        samples.append(Sample(path=p, label=label, camera=camera))
    known = sum(s.camera is not None for s in samples)
    counts = {"folder" if camera_level is not None else "exif": known}
    notes = [f"found {len(samples)} images under {src}"]
    notes.append(
        f"label = folder level {label_level} below the root"
        + ("" if label_level == 0 else " (root/<...>/<label>)")
    )
    if camera_level is not None:
        notes.append(f"camera = folder level {camera_level}")
        if depth_short:
            notes.append(f"{depth_short} files sit too shallow for the camera level")
    else:
        notes.append("camera = EXIF Make + Model of each file")
    return Dataset(src, samples, "folder", notes, counts)


def summarize(ds: Dataset) -> dict:
    """Counts for `camid dataset summary`: camera x label table, totals, missing info."""
    table = ds.crosstab()
    labels = sorted({lab for row in table.values() for lab in row})
    splits = Counter(s.split for s in ds.samples if s.split)
    return {
        "root": str(ds.root),
        "source": ds.source,
        "n_images": len(ds.samples),
        "labels": labels,
        "cameras": sorted(table),
        "table": table,
        "splits": dict(splits),
        "missing_camera": [str(s.path) for s in ds.missing_camera],
        "missing_label": [str(s.path) for s in ds.missing_label],
        "notes": ds.notes,
        "confound": camera_label_confound(ds),
    }


def camera_label_confound(ds: Dataset) -> dict:
    """Whether the camera alone tells the label: every camera (with camera information)
    appears under one label only, there are two or more labels, and the label is not the
    camera itself (a camera-identification set is not confounded with itself).

    Returns {"full": bool, "cameras": n, "single_label_cameras": k, "labels": m}; `full`
    means a model can score perfectly by recognising cameras instead of the labelled
    content."""
    per_camera: dict[str, set[str]] = {}
    for s in ds.samples:
        if s.camera is not None and s.label is not None:
            per_camera.setdefault(s.camera, set()).add(s.label)
    labels = {lab for labs in per_camera.values() for lab in labs}
    single = sum(len(labs) == 1 for labs in per_camera.values())
    label_is_camera = all(
        s.label == s.camera for s in ds.samples if s.camera is not None and s.label is not None
    )
    full = bool(per_camera) and len(labels) >= 2 and single == len(per_camera)
    return {
        "full": full and not label_is_camera,
        "cameras": len(per_camera),
        "single_label_cameras": single,
        "labels": len(labels),
    }
