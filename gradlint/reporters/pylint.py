"""pylint's parseable shape, as ruff writes it: `path:row: [CODE] message`.

A notebook's rows are its cells', not the `.ipynb` file's: as ruff does, such a finding gets row 1, a
clear fallback, and the message starts with where it is (`cell 3:2:5`)."""

from __future__ import annotations

from . import Report, position
from .terminal import printable


def _line(f) -> str:
    if f.cell is None:
        return f"{printable(f.filename)}:{f.location.row}: [{f.code}] {printable(f.message)}"
    return f"{printable(f.filename)}:1: [{f.code}] {position(f)}: {printable(f.message)}"


def render(report: Report) -> str:
    return "\n".join(_line(f) for f in report.findings)
