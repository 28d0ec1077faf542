"""Expand command-line inputs (files, folders, `-` for stdin) into image paths."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from camid.errors import InputError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm", ".gif"}
)


def parse_extensions(spec: str | None) -> frozenset[str]:
    """Turn `jpg,png` (or `.jpg .png`) into a set of lower-case extensions with dots."""
    if not spec:
        return IMAGE_EXTENSIONS
    parts = [p.strip().lower() for p in spec.replace(" ", ",").split(",") if p.strip()]
    return frozenset(p if p.startswith(".") else f".{p}" for p in parts)


def _walk(folder: Path, recursive: bool, extensions: frozenset[str]) -> Iterable[Path]:
    if not recursive:
        for entry in sorted(folder.iterdir()):
            if (
                entry.is_file()
                and not entry.name.startswith(".")
                and (entry.suffix.lower() in extensions)
            ):
                yield entry
        return
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = Path(root) / name
            if p.suffix.lower() in extensions:
                yield p


def expand_inputs(
    items: Sequence[str | Path],
    *,
    recursive: bool = False,
    extensions: frozenset[str] = IMAGE_EXTENSIONS,
    stdin: TextIO | None = None,
) -> tuple[list[Path], list[InputError]]:
    """Resolve files, folders and `-` into (paths, errors); order is stable, no duplicates.

    Files named explicitly are kept whatever their extension (the loader decides); folders
    yield files with the given extensions, recursing with `recursive`.
    """
    paths: list[Path] = []
    errors: list[InputError] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve() if p.exists() else p
        if key not in seen:
            seen.add(key)
            paths.append(p)

    for item in items:
        if str(item) == "-":
            stream = stdin if stdin is not None else sys.stdin
            for line in stream:
                line = line.strip()
                if line:
                    _expand_one(Path(line), recursive, extensions, add, errors)
            continue
        _expand_one(Path(item), recursive, extensions, add, errors)
    return paths, errors


def _expand_one(p, recursive, extensions, add, errors) -> None:
    if p.is_dir():
        try:
            found = list(_walk(p, recursive, extensions))
        except PermissionError:
            errors.append(InputError(p, "permission denied while listing the folder"))
            return
        if not found:
            hint = "" if recursive else " (use -r to look in sub-folders)"
            errors.append(InputError(p, f"folder has no image files{hint}"))
        for f in found:
            add(f)
    elif p.exists():
        add(p)
    else:
        errors.append(InputError(p, "no such file or folder"))
