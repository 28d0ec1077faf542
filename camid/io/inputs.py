"""Expand command-line inputs (files, folders, `-` for stdin) into image paths."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO

from camid.errors import InputError
from camid.io.formats import HEIF_EXTENSIONS, RAW_EXTENSIONS

IMAGE_EXTENSIONS: frozenset[str] = (
    frozenset(
        {".jpg", ".jpeg", ".jpe", ".png", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm", ".gif"}
    )
    | HEIF_EXTENSIONS
    | RAW_EXTENSIONS
)


def parse_extensions(spec: str | None) -> frozenset[str]:
    """Turn `jpg,png` (or `.jpg .png`) into a set of lower-case extensions with dots."""
    if not spec:
        return IMAGE_EXTENSIONS
    parts = [p.strip().lower() for p in spec.replace(" ", ",").split(",") if p.strip()]
    return frozenset(p if p.startswith(".") else f".{p}" for p in parts)


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """Words for what a file that is not a regular one is ("a FIFO (named pipe)", ...)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    for test, words in _KINDS:
        if test(mode):
            return words
    return "not a plain file"


def _regular(p: Path) -> str | None:
    """None for a regular file (symlinks followed), else why it is not one."""
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return "no such file (dangling link)"
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    return f"not a regular file: {file_kind(mode)}"


def _walk(
    folder: Path, recursive: bool, extensions: frozenset[str], errors: list[InputError]
) -> Iterable[Path]:
    """Regular files with the extensions; matching entries that are not (a FIFO, a device,
    a socket) become errors, folders are entered only with `recursive`."""
    if recursive:
        entries = []
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            entries.extend(Path(root) / name for name in sorted(files))
    else:
        entries = [e for e in sorted(folder.iterdir()) if not e.is_dir()]
    for p in entries:
        if p.name.startswith(".") or p.suffix.lower() not in extensions:
            continue
        reason = _regular(p)
        if reason is None:
            yield p
        else:
            errors.append(InputError(p, reason))


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
        walk_errors: list[InputError] = []
        try:
            found = list(_walk(p, recursive, extensions, walk_errors))
        except PermissionError:
            errors.append(InputError(p, "permission denied while listing the folder"))
            return
        errors.extend(walk_errors)
        if not found and not walk_errors:
            hint = "" if recursive else " (use -r to look in sub-folders)"
            errors.append(InputError(p, f"folder has no image files{hint}"))
        for f in found:
            add(f)
    elif p.exists():
        reason = _regular(p)
        if reason is None:
            add(p)
        else:
            errors.append(InputError(p, reason))
    else:
        errors.append(InputError(p, "no such file or folder"))
