"""ruff's default (`full`) shape: each finding with a frame of the code around it and its fix as a diff.

```
GL001 [*] Division by a norm with no eps guard: ...
 --> model.py:5:12
  |
4 | def embed(x):
5 |     return x / x.norm(dim=-1, keepdim=True)
  |            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  |
help: Use F.normalize(..., eps=1e-6)
  |
4 | def embed(x):
  -     return x / x.norm(dim=-1, keepdim=True)
5 +     return F.normalize(x, dim=-1, eps=1e-6)
  |
```

The frame shows two lines of context either side (blank ones at its ends left out), the diff one line
around each change, numbered as in the fixed file, as ruff does. Tabs are shown as four spaces in the
frame; characters that would drive the terminal are shown as symbols.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Optional

from ..diagnostics import SAFE, Finding
from ..edits import apply_edits
from . import Report, position
from .concise import header
from .summary import summary_lines
from .terminal import Style, printable

CONTEXT = 2  # lines of code shown above and below a finding
DIFF_WINDOW = 3  # lines around the edits that the diff is computed over
DIFF_CONTEXT = 1  # unchanged lines shown around each change
UNSAFE_NOTE = "This is an unsafe fix and may change runtime behavior"

_ROW = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_NONPRINTING = str.maketrans({"\x07": "␇", "\x08": "␈", "\x1b": "␛", "\x7f": "␡"})


def _rows(text: str) -> list[str]:
    """The file's rows with their line endings (\\n, \\r\\n or \\r, as Python counts rows)."""
    return _ROW.findall(text)


def _shown(line: str) -> str:
    return line.rstrip("\r\n").replace("\t", "    ").translate(_NONPRINTING)


def _display_column(line: str, column: int) -> int:
    """The 0-based screen column of the 1-based character column `column` once tabs are four spaces."""
    before = line[: max(0, column - 1)]
    return len(before) + 3 * before.count("\t")


class _Sources:
    """Each file's text, read once; None for a file that cannot be read any more. A notebook's finding
    is shown in its cell's source, whose rows its locations count."""

    def __init__(self, cwd: Path, texts: Optional[dict] = None) -> None:
        self.cwd = cwd
        self._texts: dict[str, Optional[str]] = dict(texts or {})
        self._cells: dict[str, list] = {}

    def text(self, filename: str, cell: Optional[int] = None) -> Optional[str]:
        if filename not in self._texts:
            from ..fsio import SourceError, read_source

            try:
                self._texts[filename] = read_source(self.cwd / filename).text
            except SourceError:
                self._texts[filename] = None
        text = self._texts[filename]
        if cell is None or text is None:
            return text
        if filename not in self._cells:
            from ..notebook import NotebookError, read_notebook

            try:
                self._cells[filename] = [c.source for c in read_notebook(text).cells]
            except NotebookError:
                self._cells[filename] = []
        cells = self._cells[filename]
        return cells[cell - 1] if 0 < cell <= len(cells) else None


def _frame(f: Finding, rows: list[str], style: Style) -> tuple[int, list[str]]:
    """(gutter width, the code around the finding with its span marked: `^^^`, or `_^ ... |_^` over lines)."""
    first, last = f.location.row, max(f.end_location.row, f.location.row)
    if first > len(rows):
        return 1, []
    last = min(last, len(rows))
    multiline = last > first
    start = max(1, first - CONTEXT)
    end = min(len(rows), last + CONTEXT)
    while start < first and not rows[start - 1].strip():
        start += 1
    while end > last and not rows[end - 1].strip():
        end -= 1
    width = len(str(end))
    gutter = style.blue(" " * width + " |")
    start_col = _display_column(rows[first - 1], f.location.column)
    lines = [gutter]
    for row in range(start, end + 1):
        code = _shown(rows[row - 1])
        if multiline:  # a margin where the span's left edge is drawn
            code = ("| " if first < row <= last else "  ") + code
        lines.append(f"{style.blue(f'{row:>{width}} |')} {code}".rstrip())
        if row == first and not multiline:
            end_col = (_display_column(rows[row - 1], f.end_location.column) if f.end_location.row == row
                       else len(_shown(rows[row - 1])))
            lines.append(f"{gutter} {' ' * start_col}{style.red('^' * max(1, end_col - start_col))}")
        elif row == first:
            lines.append(f"{gutter}  {style.red('_' * (start_col + 1) + '^')}")
        elif row == last and multiline:
            last_col = max(0, _display_column(rows[row - 1], f.end_location.column) - 1)
            lines.append(f"{gutter} {style.red('|' + '_' * (last_col + 1) + '^')}")
    lines.append(gutter)
    return width, lines


def _diff(f: Finding, rows: list[str], text: str, style: Style) -> list[str]:
    """The fix as ruff shows it: a line diff of the lines around the edits, numbered in the fixed file."""
    edits = f.fix.edits if f.fix is not None else ()
    if not edits:
        return []
    first = min(e.location.row for e in edits)
    last = max(e.end_location.row for e in edits)
    start = max(1, first - DIFF_WINDOW)
    end = min(len(rows), last + DIFF_WINDOW)
    try:
        after = apply_edits(text, edits)
    except (ValueError, IndexError):
        return []
    after_rows = _rows(after)
    old = rows[start - 1:end]
    # The window's lines after the fix: everything but the untouched tail past the window.
    new = after_rows[start - 1:len(after_rows) - (len(rows) - end)]
    groups = list(difflib.SequenceMatcher(None, old, new, autojunk=False).get_grouped_opcodes(DIFF_CONTEXT))
    if not groups:
        return []
    width = len(str(groups[-1][-1][4] + start - 1))
    gutter = style.blue(" " * width + " |")
    lines = [gutter]
    for index, group in enumerate(groups):
        if index:
            lines.append("-" * 80)
        for tag, i1, i2, j1, j2 in group:
            if tag in ("replace", "delete"):
                lines.extend(_diff_line(None, "-", line, width, style.red) for line in old[i1:i2])
            if tag in ("replace", "insert"):
                lines.extend(_diff_line(start + j, "+", new[j], width, style.green) for j in range(j1, j2))
            if tag == "equal":
                lines.extend(_diff_line(start + j, "|", new[j], width, lambda s: s) for j in range(j1, j2))
    lines.append(gutter)
    return lines


def _diff_line(number: Optional[int], sign: str, line: str, width: int, paint) -> str:
    label = " " * width if number is None else f"{number:<{width}}"
    code = line.rstrip("\r\n").translate(_NONPRINTING)
    sign_text = f"{label} {sign}"
    return f"{sign_text} {paint(code)}" if code else sign_text


def render_finding(f: Finding, report: Report, sources: _Sources, style: Style) -> list[str]:
    text = sources.text(f.filename, f.cell)
    rows = _rows(text) if text is not None else []
    width, frame = _frame(f, rows, style) if rows else (1, [])
    lines = [header(f, report, style),
             f"{' ' * width}{style.blue('-->')} {printable(f.filename)}:{position(f)}",
             *frame]
    if f.fix is not None:
        lines.append(f"{style.bold(style.cyan('help'))}: {printable(f.fix.message)}")
        diff = _diff(f, rows, text, style) if rows else []
        lines.extend(diff)
        if diff and f.fix.applicability != SAFE:
            lines.append(f"{style.bold(style.yellow('note'))}: {UNSAFE_NOTE}")
    return lines


def render(report: Report) -> str:
    style = Style(report.color)
    sources = _Sources(report.cwd, report.texts)
    lines: list[str] = []
    if report.lists_findings:
        for f in report.findings:
            lines.extend(render_finding(f, report, sources, style))
            lines.append("")
    if not report.quiet:
        lines.extend(summary_lines(report, style))
    return "\n".join(lines).rstrip("\n")
