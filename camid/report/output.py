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
import os
import re
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from rich import box
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
        """Print one result object: JSON as an object, a table as a key/value list (nested
        fields flattened to dotted names, values cut to fit the width)."""
        if self.fmt in ("json",):
            self.stdout.write(dumps(obj) + "\n")
        elif self.fmt == "ndjson":
            self.record(obj)
        elif self.fmt == "csv":
            self._render([obj], None, title)
        else:
            width = table_width(self.stdout)
            self._print_table(layout_fields(to_jsonable(obj), width), title, width)

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
        width = table_width(self.stdout)
        layout = layout_table(records, cols, width)
        if layout.dropped:
            self.info(
                f"the table leaves out {', '.join(layout.dropped)} to fit {width} columns "
                "(the JSON and CSV formats carry every field)"
            )
        self._print_table(layout, title, width)

    def _print_table(self, layout: TableLayout, title: str | None, width: int) -> None:
        # every title, header and cell is a rich Text: plain text, never markup or emoji codes
        table = Table(
            title=Text(_cut(printable(title), width)) if title else None,
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            padding=(0, 1, 0, 0),
            header_style="bold",
        )
        for name, w in zip(layout.columns, layout.widths, strict=True):
            header = "\n".join(_wrap_header(printable(name), w))
            table.add_column(Text(header), width=w, no_wrap=True, overflow="ellipsis")
        for row in layout.rows:
            table.add_row(*[Text("\n".join(lines)) for lines in row])
        console = Console(
            file=self.stdout, highlight=False, soft_wrap=False, width=width, emoji=False
        )
        console.print(table)


# ----------------------------------------------------------------------------- table layout
# Tables are for a person scanning results at a terminal 80-100 columns wide; the full
# record always stays in JSON/CSV. Each column gets a policy from its name (and values):
#   hash    sha256-like: the first 12 hex digits and '…'
#   path    paths: shortened from the left ('…/photos/IMG_0001.jpg'), one line
#   text    reasons and notes: wrapped over at most two lines, cut with '…'
#   name    other text (cameras, devices, dates): at most two lines, cut with '…'
#   number  numbers and flags: never cut (floats already compact: 4 significant digits)

HASH_DIGITS = 12
GAP = 2
"""Characters between two columns (one of padding, one of the separator)."""
MAX_LINES = 2
SOFT_TEXT_WIDTH = 24
"""Reasons and notes keep this much until other columns have given up what they can."""
MIN_WIDTH = {"hash": 9, "path": 12, "text": 12, "name": 8}
SHRINK_STAGES = (
    ("text", "soft"), ("number", "min"), ("path", "soft"), ("name", "half"), ("path", "min"),
    ("text", "min"), ("name", "min"), ("hash", "min"),
)  # fmt: skip
"""Who gives up width first: long text to a readable width, then paths (from the left, the
file name stays) before a name wraps, then everything to its minimum."""
DEFAULT_WIDTH = 100
"""Table width when neither COLUMNS nor a terminal says otherwise."""

COLUMN_POLICIES: dict[str, str] = {
    **dict.fromkeys(
        ("path", "output", "file", "source", "root", "plot", "dataset", "fingerprint_file",
         "camid_home", "torch_hub_checkpoints", "model_file", "checkpoint"),
        "path",
    ),
    **dict.fromkeys(
        ("reason", "note", "notes", "crop_note", "exif_note", "contradiction", "top", "traces",
         "prnu", "detail", "description", "message", "warning", "warnings", "result", "help",
         "finding", "flag", "summary", "history"),
        "text",
    ),
}  # fmt: skip
"""Column name -> policy; commands (and new ones) may add their own names here."""


def column_policy(name: str, values: Sequence[Any] = ()) -> str:
    """The display policy of a column: hash, path, text, name or number (see above)."""
    key = str(name).lower()
    if key in COLUMN_POLICIES:
        return COLUMN_POLICIES[key]
    if key == "sha256" or key.endswith(("_sha256", "_hash")):
        return "hash"
    if key.endswith(("_path", "_file", "_dir", "_folder")):
        return "path"
    if key.endswith(("_note", "_reason", "_notes")):
        return "text"
    present = [v for v in values if v is not None and v != ""]
    if present and all(isinstance(v, int | float | np.integer | np.floating) for v in present):
        return "number"
    return "name"


@dataclasses.dataclass
class TableLayout:
    """Columns kept, their widths, and each row's cells as lines (at most two)."""

    columns: list[str]
    widths: list[int]
    rows: list[list[list[str]]]
    dropped: list[str]


def table_width(stream: Any = None) -> int:
    """Width for tables: $COLUMNS when set, else the terminal's (stdout's, then stderr's),
    else 100 - also when stdout is piped, so `-f table | less` looks like the terminal."""
    env = os.environ.get("COLUMNS", "").strip()
    if env.isdigit() and int(env) > 0:
        return max(int(env), 20)
    for s in (stream, sys.stdout, sys.stderr):
        try:
            if s is not None and s.isatty():
                return max(os.get_terminal_size(s.fileno()).columns, 20)
        except (AttributeError, ValueError, OSError):
            continue
    return DEFAULT_WIDTH


def layout_table(records: Sequence[dict], columns: Sequence[str], width: int) -> TableLayout:
    """Fit records into `width` characters: widths per column policy, cells cut to fit;
    columns that cannot fit at their minimum width are left out from the right."""
    raw = {c: [to_jsonable(rec.get(c)) for rec in records] for c in columns}
    # a column empty in every row says nothing at a glance (JSON/CSV still carry it)
    cols = [c for c in columns if any(v is not None and v != "" for v in raw[c])] or list(columns)
    policies = {c: column_policy(c, raw[c]) for c in cols}
    texts = {c: [_short_hash(_cell(v)) if policies[c] == "hash" else _cell(v) for v in raw[c]]
             for c in cols}  # fmt: skip
    natural = {c: max([len(printable(c)), *map(len, texts[c])]) for c in cols}
    minimum = {c: _min_width(printable(c), policies[c], texts[c], natural[c]) for c in cols}
    dropped: list[str] = []
    while len(cols) > 1 and sum(minimum[c] for c in cols) + GAP * (len(cols) - 1) > width:
        dropped.insert(0, cols.pop())
    widths = {c: natural[c] for c in cols}
    excess = sum(widths.values()) + GAP * (len(cols) - 1) - width
    # names first give up only what two lines hold without loss, paths then lose their left
    half = {
        c: max(minimum[c], -(-natural[c] // MAX_LINES), min(_longest_word(texts[c]), natural[c]))
        for c in cols
    }
    soft = {c: max(minimum[c], min(natural[c], SOFT_TEXT_WIDTH)) for c in cols}
    for group, floor in SHRINK_STAGES:
        members = [c for c in cols if policies[c] == group]
        limit = {"half": half, "soft": soft}.get(floor, minimum)
        while excess > 0:
            room = [c for c in members if widths[c] > limit[c]]
            if not room:
                break
            widest = max(room, key=lambda c: widths[c])
            widths[widest] -= 1
            excess -= 1
    if len(cols) == 1:  # a single column that is still too wide: cut it
        widths[cols[0]] = min(widths[cols[0]], width)
    rows = [[_fit(texts[c][i], widths[c], policies[c]) for c in cols] for i in range(len(records))]
    return TableLayout(cols, [widths[c] for c in cols], rows, dropped)


def flatten_fields(obj: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted name, value) pairs of a JSON-ready object; lists of plain values joined."""
    pairs: list[tuple[str, Any]] = []
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            pairs += flatten_fields(v, name + ".")
        elif isinstance(v, list) and all(not isinstance(x, dict | list) for x in v):
            pairs.append((name, ", ".join(_cell(x) for x in v)))
        else:
            pairs.append((name, v))
    return pairs


def layout_fields(obj: dict, width: int) -> TableLayout:
    """One record as a key/value list that fits `width`: each value follows the policy of
    its own field (a hash is shown whole when it fits in two lines)."""
    pairs = flatten_fields(obj)
    keys = [printable(k) for k, _ in pairs]
    key_w = min(max([5, *map(len, keys)]), max(12, width * 2 // 5))
    value_w = max(width - key_w - GAP, 8)
    rows = []
    for key, (name, value) in zip(keys, pairs, strict=True):
        policy = column_policy(name.rsplit(".", 1)[-1], [value])
        text = _cell(value)
        if policy == "hash" and len(text) > value_w * MAX_LINES:
            text = _short_hash(text)
        if policy in ("hash", "path") and len(text) <= value_w * MAX_LINES:
            lines = [text[i : i + value_w] for i in range(0, len(text), value_w)] or [""]
        else:
            lines = _fit(text, value_w, "text" if policy == "name" else policy)
        rows.append([_wrap_header(key, key_w), lines])
    return TableLayout(["field", "value"], [key_w, value_w], rows, [])


def _longest_word(texts: Sequence[str]) -> int:
    return max((len(w) for t in texts for w in re.split(r"(?<=[ _\-/.:,])", t)), default=0)


def _short_hash(text: str) -> str:
    return text[:HASH_DIGITS] + "…" if len(text) > HASH_DIGITS + 1 else text


def _header_lines(name: str, width: int) -> list[str]:
    """A header broken after underscores (never mid-word when avoidable)."""
    parts = re.findall(r"[^_. ]*[_. ]|[^_. ]+$", name) or [name]
    lines = [""]
    for part in parts:
        if lines[-1] and len(lines[-1]) + len(part.rstrip()) > width:
            lines.append("")
        lines[-1] += part
    return [line.rstrip() for line in lines]


def _wrap_header(name: str, width: int) -> list[str]:
    lines = _header_lines(name, width)
    if len(lines) > MAX_LINES or any(len(x) > width for x in lines):
        return _wrap(name, width, MAX_LINES)
    return lines


def _min_width(name: str, policy: str, texts: Sequence[str], natural: int) -> int:
    """Narrowest useful width: the header in two lines, numbers whole, others per policy."""
    header = len(name)
    while header > 1 and len(_header_lines(name, header - 1)) <= MAX_LINES:
        if any(len(x) > header - 1 for x in _header_lines(name, header - 1)):
            break
        header -= 1
    longest = max(map(len, texts), default=0)
    if policy == "number":
        return max(header, longest)
    if policy == "path":  # the file's own name stays visible (up to 24 characters)
        names = (len(t.replace("\\", "/").rsplit("/", 1)[-1]) + 1 for t in texts)
        return min(natural, max(header, MIN_WIDTH[policy], min(max(names, default=0), 24)))
    if policy == "name":  # whole words (up to 20 characters) stay whole
        return min(natural, max(header, MIN_WIDTH[policy], min(_longest_word(texts), 20)))
    return min(natural, max(header, MIN_WIDTH[policy]))


def _cut(text: str, width: int) -> str:
    """`text` in at most `width` characters, cut with '…'."""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _wrap(text: str, width: int, max_lines: int) -> list[str]:
    """Word-wrap (breaking after _-/.:, or mid-word when a word is too long) into at most
    `max_lines` lines, the last one cut with '…' when text is left over."""
    lines: list[str] = []
    rest = text
    while rest and len(lines) < max_lines:
        if len(rest) <= width:
            lines.append(rest)
            return lines
        if len(lines) == max_lines - 1:
            lines.append(_cut(rest, width))
            return lines
        cut = rest.rfind(" ", 0, width + 1)
        if cut <= 0:  # no space: break after a separator, else mid-word
            cut = max(rest.rfind(sep, 0, width) + 1 for sep in "_-/.:,")
            cut = cut if cut > width // 2 else width
        lines.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return lines or [""]


def _fit(text: str, width: int, policy: str, max_lines: int = MAX_LINES) -> list[str]:
    """A cell's lines under its column's policy."""
    if len(text) <= width:
        return [text]
    if policy == "path":
        return ["…" + text[-(width - 1) :] if width > 1 else "…"]
    if policy in ("hash", "number"):
        return [_cut(text, width)]
    return _wrap(text, width, max_lines)


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
