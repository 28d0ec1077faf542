"""Synthetic camera pipeline and benchmark datasets with known cameras, devices and labels.

Typical use::

    from camid.synth import make_camera_dataset, make_bottles_dataset, simulate, default_spec
    manifest = make_camera_dataset(tmp_path, per_device=4, size=(128, 96))
    manifests = make_bottles_dataset(tmp_path / "bottles", per_device=4)  # {'balanced': ...}

See docs/synth.md for what each stage simulates.
"""

from __future__ import annotations

from camid.synth.datasets import (
    LABELS,
    disjoint_roles,
    make_bottles_dataset,
    make_camera_dataset,
)
from camid.synth.pipeline import simulate, simulate_stages
from camid.synth.scenes import (
    PRINTERS,
    PrinterSpec,
    bottle_scene,
    flat_field_scene,
    natural_scene,
    random_batch_code,
)
from camid.synth.sensor import device_dark_pattern, device_prnu
from camid.synth.spec import (
    CameraSpec,
    SynthSpec,
    default_spec,
    load_spec,
    spec_from_dict,
    spec_to_toml,
)

__all__ = [
    "LABELS",
    "PRINTERS",
    "CameraSpec",
    "PrinterSpec",
    "SynthSpec",
    "bottle_scene",
    "default_spec",
    "device_dark_pattern",
    "device_prnu",
    "disjoint_roles",
    "flat_field_scene",
    "load_spec",
    "make_bottles_dataset",
    "make_camera_dataset",
    "natural_scene",
    "random_batch_code",
    "simulate",
    "simulate_stages",
    "spec_from_dict",
    "spec_to_toml",
]
