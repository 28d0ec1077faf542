"""CSV manifests: `path,label,camera,device,split` (extra columns are kept)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from camid.errors import InputError
from camid.io.atomic import write_text_atomic

MANIFEST_COLUMNS = ("path", "label", "camera", "device", "split")


@dataclass
class Sample:
    """One image of a dataset and what is known about it."""

    path: Path
    label: str | None = None
    camera: str | None = None
    device: str | None = None
    split: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def to_record(self) -> dict:
        """A flat dict for output."""
        rec = {
            "path": str(self.path),
            "label": self.label,
            "camera": self.camera,
            "device": self.device,
            "split": self.split,
        }
        rec.update(self.extra)
        return rec


def _blank(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def read_manifest(path: str | Path) -> list[Sample]:
    """Read a manifest CSV; relative paths are taken relative to the CSV's folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise InputError(p, "no such manifest file") from exc
    except UnicodeDecodeError as exc:
        raise InputError(p, "manifest is not UTF-8 text") from exc
    except OSError as exc:
        raise InputError(p, f"cannot read manifest ({exc.strerror or exc})") from exc
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "path" not in fields:
        raise InputError(p, "manifest has no 'path' column (expected path,label,camera[,split])")
    reader.fieldnames = fields
    base = p.parent
    samples: list[Sample] = []
    for line_no, row in enumerate(reader, start=2):
        raw = _blank(row.get("path"))
        if raw is None:
            raise InputError(p, f"line {line_no}: empty path")
        img = Path(raw)
        if not img.is_absolute():
            img = base / img
        extra = {
            k: (v or "").strip()
            for k, v in row.items()
            if k not in MANIFEST_COLUMNS and k is not None
        }
        samples.append(
            Sample(
                path=img,
                label=_blank(row.get("label")),
                camera=_blank(row.get("camera")),
                device=_blank(row.get("device")),
                split=_blank(row.get("split")),
                extra=extra,
            )
        )
    return samples


def write_manifest(rows: Iterable[dict | Sample], path: str | Path) -> Path:
    """Write a manifest atomically; paths under the CSV's folder are stored relative to it.

    Every path in `rows` means what it means to Python: a relative one is relative to the
    working directory (as `read_manifest` returns them), never to the CSV. Paths outside the
    CSV's folder are stored absolute, so the manifest reads back to the same files from any
    working directory.
    """
    p = Path(path)
    base = p.parent.resolve()
    records = [r.to_record() if isinstance(r, Sample) else dict(r) for r in rows]
    extra_cols: list[str] = []
    for r in records:
        for k in r:
            if k not in MANIFEST_COLUMNS and k not in extra_cols:
                extra_cols.append(k)
    cols = list(MANIFEST_COLUMNS) + extra_cols
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for r in records:
        img = Path(os.path.abspath(Path(str(r["path"]))))
        try:
            rel = img.relative_to(base)
        except ValueError:
            try:
                rel = img.resolve().relative_to(base)
            except ValueError:
                rel = img
        values = [rel.as_posix()] + ["" if r.get(c) is None else str(r.get(c)) for c in cols[1:]]
        writer.writerow(values)
    return write_text_atomic(p, buf.getvalue())
