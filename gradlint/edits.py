"""Text edits: derived from a before/after pair, and applied back to a text.

A fix is computed as a LibCST rewrite; what reporters show (and JSON consumers apply) are the minimal
character ranges that changed, found by diffing the code before and after the rewrite.
"""

from __future__ import annotations

import bisect
import difflib
import re
from typing import Iterable

from .diagnostics import Edit, Location

_NEWLINE = re.compile(r"\r\n?|\n")


def _line_starts(text: str) -> list[int]:
    """Offsets where rows begin; rows end at \\n, \\r\\n or \\r, as Python and LibCST count them."""
    return [0, *(m.end() for m in _NEWLINE.finditer(text))]


def _location(starts: list[int], offset: int) -> Location:
    row = bisect.bisect_right(starts, offset) - 1
    return Location(row + 1, offset - starts[row] + 1)


def diff_edits(old: str, new: str) -> tuple[Edit, ...]:
    if old == new:
        return ()
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    # Fixes are local: match the untouched head and tail directly, diff only what lies between.
    head = 0
    while head < min(len(old_lines), len(new_lines)) and old_lines[head] == new_lines[head]:
        head += 1
    tail = 0
    while (tail < min(len(old_lines), len(new_lines)) - head
           and old_lines[-1 - tail] == new_lines[-1 - tail]):
        tail += 1
    old_starts = [0]
    for line in old_lines:
        old_starts.append(old_starts[-1] + len(line))
    new_starts = [0]
    for line in new_lines:
        new_starts.append(new_starts[-1] + len(line))
    row_starts = _line_starts(old)
    edits = []
    matcher = difflib.SequenceMatcher(None, old_lines[head:len(old_lines) - tail],
                                      new_lines[head:len(new_lines) - tail], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        i1, i2, j1, j2 = i1 + head, i2 + head, j1 + head, j2 + head
        a_start, a_end = old_starts[i1], old_starts[i2]
        b_start, b_end = new_starts[j1], new_starts[j2]
        # Trim what the changed lines still share, so an edit covers only the characters that change.
        while a_start < a_end and b_start < b_end and old[a_start] == new[b_start]:
            a_start += 1
            b_start += 1
        while a_end > a_start and b_end > b_start and old[a_end - 1] == new[b_end - 1]:
            a_end -= 1
            b_end -= 1
        edits.append(Edit(new[b_start:b_end], _location(row_starts, a_start), _location(row_starts, a_end)))
    return tuple(edits)


def offset_of(text: str, location: Location, starts: list[int] | None = None) -> int:
    starts = starts if starts is not None else _line_starts(text)
    return starts[location.row - 1] + location.column - 1


def apply_edits(text: str, edits: Iterable[Edit]) -> str:
    """Apply non-overlapping edits (as reported for one or several findings; duplicates applied once)."""
    starts = _line_starts(text)
    spans = sorted({(offset_of(text, e.location, starts), offset_of(text, e.end_location, starts), e.content)
                    for e in edits})
    out, cursor = [], 0
    for start, end, content in spans:
        if start < cursor:
            raise ValueError("overlapping edits")
        out.append(text[cursor:start])
        out.append(content)
        cursor = end
    out.append(text[cursor:])
    return "".join(out)
