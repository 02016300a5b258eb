"""ruff's concise shape: `path:row:col: CODE [*] message`, then a summary that says how to fix."""

from __future__ import annotations

from . import Report, position
from .summary import summary_lines
from .terminal import Style, printable


def header(f, report: Report, style: Style) -> str:
    """`CODE [*] message`: the code, the fix mark if the fix applies with these options, the message."""
    mark = f"{style.cyan('[*]')} " if f.fixable(report.unsafe_fixes) else ""
    code = f"{style.red(f.code)} " if f.code else ""
    return f"{code}{mark}{printable(f.message)}"


def location(f, style: Style) -> str:
    return f"{style.bold(printable(f.filename))}:{position(f)}"


def render(report: Report) -> str:
    style = Style(report.color)
    lines = []
    if report.lists_findings:
        lines = [f"{location(f, style)}: {header(f, report, style)}" for f in report.findings]
    if not report.quiet:
        lines.extend(summary_lines(report, style))
    return "\n".join(lines)
