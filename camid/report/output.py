"""The output layer: data to stdout in one chosen format, everything human to stderr.

Commands build records (plain dicts with snake_case keys) and hand them to an `Output`;
they never print. Formats: table (rich, for people), json (an array), csv, ndjson (one
object per line, streamed as records arrive).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from rich.console import Console
from rich.markup import escape as escape_markup
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

T = TypeVar("T")


class Format(str, Enum):
    """Shapes of the data written to stdout."""

    auto = "auto"
    table = "table"
    json = "json"
    csv = "csv"
    ndjson = "ndjson"


MACHINE_FORMATS = {"json", "csv", "ndjson"}


def to_jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, Paths, dataclasses and NaN into JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


# Characters a terminal may act on: C0 and C1 controls, DEL, and the Unicode bidirectional
# overrides/isolates and marks that reorder how the rest of a line is shown.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# What json.dumps(ensure_ascii=False) leaves raw of those (it escapes only C0 controls).
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _u_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` with every control character shown as a JSON-style escape (ESC -> \\u001b),
    so text from evidence can never drive a terminal. Markup is not interpreted anywhere
    it is shown; `keep_newlines` leaves line breaks of messages alone."""
    if keep_newlines:
        return "\n".join(_CONTROL.sub(_u_escape, part) for part in text.split("\n"))
    return _CONTROL.sub(_u_escape, text)


def spreadsheet_safe(text: str) -> str:
    """A text cell that a spreadsheet will not run as a formula: a leading =, +, -, @, tab
    or CR gets a single quote in front (OWASP's CSV-injection advice)."""
    return "'" + text if text.startswith(_SPREADSHEET_TRIGGERS) else text


def dumps(value: Any, indent: int | None = 2) -> str:
    """JSON text of any camid result (terminal control characters always escaped)."""
    text = json.dumps(to_jsonable(value), indent=indent, ensure_ascii=False)
    # those characters can only occur inside JSON strings, where an escape is equivalent
    return _JSON_UNSAFE.sub(_u_escape, text)


def _cell(value: Any, csv_cell: bool = False) -> str:
    """One value as plain, printable text; numbers stay numbers (also in CSV)."""
    value = to_jsonable(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        return _JSON_UNSAFE.sub(_u_escape, text)
    text = printable(str(value))
    return spreadsheet_safe(text) if csv_cell else text


class Output:
    """Where a command's data and messages go, decided once from the CLI options."""

    def __init__(
        self,
        fmt: str | Format = Format.auto,
        quiet: int = 0,
        stdout: Any = None,
        stderr: Any = None,
    ) -> None:
        self.stdout = stdout if stdout is not None else sys.stdout
        self.stderr = stderr if stderr is not None else sys.stderr
        fmt = fmt.value if isinstance(fmt, Format) else str(fmt)
        if fmt == "auto":
            fmt = "table" if _isatty(self.stdout) else "json"
        self.fmt = fmt
        self.quiet = quiet
        self.err_console = Console(file=self.stderr, highlight=False, soft_wrap=True, emoji=False)
        self._buffer: list[dict] = []
        self.errors: list[str] = []

    # -- messages (stderr) --------------------------------------------------------------
    @property
    def machine(self) -> bool:
        """True when stdout carries a machine-readable format."""
        return self.fmt in MACHINE_FORMATS

    def info(self, msg: str) -> None:
        """An informational line on stderr (hidden by -q)."""
        if self.quiet < 1:
            self.err_console.print(Text(printable(msg, keep_newlines=True)))

    def warn(self, msg: str) -> None:
        """A warning on stderr (hidden by -qq)."""
        if self.quiet < 2:
            self.err_console.print(Text(f"Warning: {printable(msg, True)}", style="yellow"))

    def error(self, msg: str) -> None:
        """An error line on stderr; always shown and remembered for the exit code."""
        self.errors.append(msg)
        self.err_console.print(Text(f"Error: {printable(msg, True)}", style="red"))

    def route_warnings(self) -> None:
        """Send Python warnings (from Pillow, numpy, torch ...) to `warn` as one line each,
        for the rest of the process, instead of Python's two-line form with source code."""

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            text = " ".join(str(message).split())
            try:
                self.warn(text)
            except (OSError, ValueError):  # this Output's stream is gone (an in-process rerun)
                print(f"Warning: {printable(text)}", file=sys.__stderr__)

        warnings.showwarning = show

    # -- progress -----------------------------------------------------------------------
    @property
    def show_progress(self) -> bool:
        """Bars only for people: stderr is a terminal and the data format is a table."""
        return not self.machine and self.quiet < 1 and _isatty(self.stderr)

    def progress(
        self, iterable: Iterable[T], total: int | None = None, description: str = ""
    ) -> Iterator[T]:
        """Iterate with a rich progress bar on stderr when appropriate."""
        if not self.show_progress:
            yield from iterable
            return
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        with self.progress_bar() as bar:
            task = bar.add_task(escape_markup(printable(description)), total=total)
            for item in iterable:
                yield item
                bar.advance(task)

    def progress_bar(self) -> Progress:
        """A rich Progress on stderr (disabled when bars are off) for custom loops."""
        return Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.err_console,
            transient=True,
            disable=not self.show_progress,
        )

    # -- data (stdout) ------------------------------------------------------------------
    def record(self, rec: dict) -> None:
        """Add one result; ndjson prints it at once, other formats wait for `finish`."""
        if self.fmt == "ndjson":
            self.stdout.write(dumps(rec, indent=None) + "\n")
            self.stdout.flush()
        else:
            self._buffer.append(rec)

    def finish(self, columns: Sequence[str] | None = None, title: str | None = None) -> None:
        """Print the buffered records in the chosen format."""
        records, self._buffer = self._buffer, []
        if self.fmt == "ndjson":
            return
        self._render(records, columns, title)

    def emit(
        self,
        records: Sequence[dict],
        columns: Sequence[str] | None = None,
        title: str | None = None,
    ) -> None:
        """Print a complete list of records in the chosen format."""
        if self.fmt == "ndjson":
            for rec in records:
                self.record(rec)
            return
        self._render(list(records), columns, title)

    def emit_object(self, obj: dict, title: str | None = None) -> None:
        """Print one result object: JSON as an object, a table as key/value rows."""
        if self.fmt in ("json",):
            self.stdout.write(dumps(obj) + "\n")
        elif self.fmt == "ndjson":
            self.record(obj)
        elif self.fmt == "csv":
            self._render([obj], None, title)
        else:
            rows = [{"field": k, "value": v} for k, v in to_jsonable(obj).items()]
            self._render(rows, ["field", "value"], title)

    def _render(self, records: list[dict], columns: Sequence[str] | None, title: str | None):
        if self.fmt == "json":
            self.stdout.write(dumps(records) + "\n")
            return
        cols = list(columns) if columns else _columns(records)
        if self.fmt == "csv":
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow([spreadsheet_safe(printable(str(c))) for c in cols])
            for rec in records:
                writer.writerow([_cell(rec.get(c), csv_cell=True) for c in cols])
            self.stdout.write(buf.getvalue())
            return
        if not records:
            self.info("(no results)")
            return
        # every title, header and cell is a rich Text: plain text, never markup or emoji codes
        table = Table(
            title=Text(printable(title)) if title else None, show_lines=False, header_style="bold"
        )
        for c in cols:
            table.add_column(Text(printable(str(c))), overflow="fold")
        for rec in records:
            table.add_row(*[Text(_cell(rec.get(c))) for c in cols])
        width = None if _isatty(self.stdout) else 200
        console = Console(
            file=self.stdout, highlight=False, soft_wrap=False, width=width, emoji=False
        )
        console.print(table)


def _columns(records: Sequence[dict]) -> list[str]:
    cols: list[str] = []
    for rec in records:
        for k in rec:
            if k not in cols:
                cols.append(k)
    return cols


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
