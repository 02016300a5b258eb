"""pylint's parseable shape, as ruff writes it: `path:row: [CODE] message`."""

from __future__ import annotations

from . import Report
from .terminal import printable


def render(report: Report) -> str:
    return "\n".join(f"{printable(f.filename)}:{f.location.row}: [{f.code}] {printable(f.message)}"
                     for f in report.findings)
