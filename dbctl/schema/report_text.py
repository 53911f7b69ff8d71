"""`dbctl report`'s human form: one titled table per section (dbctl.schema.report's data).

A cell is one line whatever the data holds: control characters are shown as escapes (a table named
"line\nbreak", an escape sequence in an application name), and columns are measured in terminal cells with
wcwidth (East Asian wide characters take two, combining marks none). Long texts are cut; --json has them
whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from wcwidth import wcswidth, wcwidth

from dbctl.schema.report import SECTIONS

CELL_CHARS = 80


def _escaped(text: str) -> str:
    """Control characters (a table named "line\nbreak", an escape sequence) as visible escapes, so a cell is
    one line and cannot drive the terminal."""
    return "".join(
        ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}"
        for ch in text
    )


def _width(text: str) -> int:
    """Terminal columns (wcwidth: East Asian wide characters take two, combining marks none)."""
    return max(wcswidth(text), 0)


def _cut(text: str, columns: int) -> str:
    """text, cut with … to at most `columns` terminal columns."""
    if _width(text) <= columns:
        return text
    out, used = [], 0
    for ch in text:
        w = max(wcwidth(ch), 0)
        if used + w > columns - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    # A table stays readable in a terminal: long texts (queries, messages) are cut; --json has them whole.
    return _cut(_escaped(str(value)), CELL_CHARS)


def _pad(text: str, columns: int) -> str:
    return text + " " * (columns - _width(text))


def table(rows: Sequence[Mapping[str, object]]) -> str:
    """Aligned columns (in terminal columns) with a header line; `(none)` for no rows."""
    if not rows:
        return "(none)"
    columns = list(rows[0])
    cells = [[_cell(c) for c in columns], *([_cell(r.get(c)) for c in columns] for r in rows)]
    widths = [max(_width(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(_pad(v, w) for v, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(report: Mapping[str, Any]) -> str:
    out: list[str] = []
    for key in SECTIONS:
        value = report[key]
        out.append(f"== {key} ==")
        if isinstance(value, list):
            out.append(table(value))
        elif "error" in value:
            out.append(f"error: {value['error']}")
        else:
            for label, inner in value.items():
                if isinstance(inner, list):
                    out.append(f"{label}:")
                    out.append(table(inner))
                elif inner not in ("", None):
                    out.append(f"{label}: {_cell(inner)}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
