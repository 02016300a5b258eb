"""Each finding's fix as text edits, for every finding of a file at once, in time linear in the file.

Rewriting the module once per finding and diffing it costs the file's size per finding: 10 000 findings
in a 4 MB file never finish. Instead every fix is applied in one rewrite, the rewritten module's
positions are read once, and each replaced node's new text is cut out where it landed: its edit is the
old node's span and that text (trimmed of what both share). Imports a fix needs are an insertion after
the import block, as `apply_plans` makes it.

The result is checked: the edits of all fixes together must give exactly the text of the one rewrite.
A plan these edits cannot express (two fixes touching the same node, a removed node, a rewrite that
changes text outside the nodes it replaces) is computed alone, the old way.
"""

from __future__ import annotations

import bisect
import re
from typing import Callable, Optional, Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from .diagnostics import Edit, Location
from .edits import apply_edits, diff_edits

_ROW = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_NEWLINE = re.compile(r"\r\n?|\n")


class _Apply(cst.CSTTransformer):
    def __init__(self, changes: dict) -> None:
        super().__init__()
        self._changes = changes

    def on_leave(self, original_node, updated_node):
        entry = self._changes.get(id(original_node))
        if entry is not None and entry[0] is original_node:
            return entry[1]
        return updated_node


class _Text:
    """Offsets <-> (row, column) for one text, rows as LibCST and Python count them."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0, *(m.end() for m in _NEWLINE.finditer(text))]

    def offset(self, line: int, column0: int) -> int:
        return self.starts[line - 1] + column0

    def location(self, offset: int) -> Location:
        row = bisect.bisect_right(self.starts, offset) - 1
        return Location(row + 1, offset - self.starts[row] + 1)


def _span(positions, node) -> Optional[tuple[int, int, int, int]]:
    if isinstance(node, cst.FlattenSentinel):
        spans = [positions.get(n) for n in node.nodes]
        if not spans or any(s is None for s in spans):
            return None
        return spans[0].start.line, spans[0].start.column, spans[-1].end.line, spans[-1].end.column
    if not isinstance(node, cst.CSTNode):
        return None  # a removal: no text to cut out
    span = positions.get(node)
    return None if span is None else (span.start.line, span.start.column, span.end.line, span.end.column)


def _trimmed(old: str, a: int, b: int, new: str) -> tuple[int, int, str]:
    """The edit turning old[a:b] into `new`, less the characters both ends share."""
    head = 0
    while a + head < b and head < len(new) and old[a + head] == new[head]:
        head += 1
    tail = 0
    while b - tail > a + head and len(new) - tail > head and old[b - tail - 1] == new[len(new) - tail - 1]:
        tail += 1
    return a + head, b - tail, new[head:len(new) - tail]


def import_edit(old: _Text, import_row: int, lines: Sequence[str], present: set) -> Optional[tuple[int, str]]:
    """(offset, text) that inserts `lines` (those not in the file yet) after row `import_row`."""
    new = [line for line in dict.fromkeys(lines) if line not in present]
    if not new:
        return None
    rows = _ROW.findall(old.text)
    newline = next((r[len(r.rstrip("\r\n")):] for r in rows if r.endswith(("\n", "\r"))), "\n")
    offset = sum(len(r) for r in rows[:import_row])
    prefix = newline if 0 < import_row <= len(rows) and not rows[import_row - 1].endswith(("\n", "\r")) else ""
    return offset, prefix + "".join(line + newline for line in new)


def plan_edits(module: cst.Module, positions, source: str, plans: Sequence, import_row: int,
               expected: Callable[[Sequence], str], alone: Callable) -> list:
    """The edits of each plan (a tuple, in `source`'s coordinates), or whatever `alone(plan)` gives for a
    plan that is computed by itself. `expected(plans, code)` is the text of applying `plans` together, given
    `code`, the module they rewrote (what is left is adding their imports)."""
    old = _Text(source)
    results: list = [None] * len(plans)
    spans: list[tuple[int, int, int, int]] = []  # (start, end, plan index, change index)
    solo: set[int] = set()
    for i, plan in enumerate(plans):
        for j, (original, replacement) in enumerate(plan.changes.values()):
            span = positions.get(original)
            if span is None or _span_kind_unsupported(replacement):
                solo.add(i)
                continue
            spans.append((old.offset(span.start.line, span.start.column), old.offset(span.end.line, span.end.column), i, j))
    spans.sort()
    for (_, end, i, _), (start, _, k, _) in zip(spans, spans[1:]):
        if start < end and i != k:  # two fixes touch the same text: each is computed alone
            solo.update((i, k))
    together = [i for i in range(len(plans)) if i not in solo]
    if together and not _together(module, positions, old, plans, together, import_row, expected, results):
        solo.update(together)
    for i in solo:
        results[i] = alone(plans[i])
    return results


def _span_kind_unsupported(replacement) -> bool:
    return not isinstance(replacement, (cst.CSTNode, cst.FlattenSentinel))


def _together(module, positions, old: _Text, plans, together: list, import_row: int, expected,
              results: list) -> bool:
    changes: dict = {}
    for i in together:
        changes.update(plans[i].changes)
    try:
        rewritten = module.visit(_Apply(changes))
        new_positions = MetadataWrapper(rewritten, unsafe_skip_copy=True).resolve(PositionProvider)
        new = _Text(rewritten.code)
    except Exception:
        return False
    items = []  # (old start, old end, new start, new end, plan index) of every replaced node
    for i in together:
        for original, replacement in plans[i].changes.values():
            span, was = _span(new_positions, replacement), positions[original]
            if span is None:
                return False
            items.append((old.offset(was.start.line, was.start.column), old.offset(was.end.line, was.end.column),
                          new.offset(span[0], span[1]), new.offset(span[2], span[3]), i))
    items.sort()
    per_plan: dict[int, list[Edit]] = {i: [] for i in together}
    for group in _same_rows(old, items):
        if len({item[4] for item in group}) == 1:
            per_plan[group[0][4]].extend(_row_edits(old, new, group))
        else:  # fixes of several findings on one row: each change on its own
            for a, b, c, d, i in group:
                start, end, content = _trimmed(old.text, a, b, new.text[c:d])
                if start != end or content:
                    per_plan[i].append(Edit(content, old.location(start), old.location(end)))
    present = {row.strip() for row in _ROW.findall(old.text)}
    code_edits: list[Edit] = []
    for i in together:
        edits = per_plan[i]
        code_edits.extend(edits)
        insertion = import_edit(old, import_row, plans[i].imports, present)
        if insertion is not None:
            edits = [*edits, Edit(insertion[1], old.location(insertion[0]), old.location(insertion[0]))]
        results[i] = tuple(sorted(edits, key=lambda e: (e.location.row, e.location.column)))
    all_imports = [line for i in together for line in plans[i].imports]
    insertion = import_edit(old, import_row, all_imports, present)
    if insertion is not None:
        code_edits.append(Edit(insertion[1], old.location(insertion[0]), old.location(insertion[0])))
    try:
        return apply_edits(old.text, code_edits) == expected([plans[i] for i in together], new.text)
    except ValueError:
        return False


def _same_rows(old: _Text, items: list) -> list[list]:
    """Items (sorted) grouped so that no two groups share a row of the old text."""
    groups: list[list] = []
    last_row = 0
    for item in items:
        first, last = old.location(item[0]).row, old.location(item[1]).row
        if groups and first <= last_row:
            groups[-1].append(item)
            last_row = max(last_row, last)
        else:
            groups.append([item])
            last_row = last
    return groups


def _row_edits(old: _Text, new: _Text, group: list) -> list[Edit]:
    """One fix's edits within whole rows, as a line diff of those rows gives them."""
    a, b = min(i[0] for i in group), max(i[1] for i in group)
    c, d = min(i[2] for i in group), max(i[3] for i in group)
    first_row = old.location(a).row
    old_start, old_end = old.starts[first_row - 1], _row_end(old, b)
    # Whole rows on both sides: a replaced node's own parentheses lie outside its span, and may move
    # into (or out of) the replacement, but they stay on its rows.
    new_start, new_end = new.starts[new.location(c).row - 1], _row_end(new, d)
    out = []
    for e in diff_edits(old.text[old_start:old_end], new.text[new_start:new_end]):
        out.append(Edit(e.content, Location(e.location.row + first_row - 1, e.location.column),
                        Location(e.end_location.row + first_row - 1, e.end_location.column)))
    return out


def _row_end(text: _Text, offset: int) -> int:
    row = bisect.bisect_right(text.starts, offset)  # index of the next row's start
    return text.starts[row] if row < len(text.starts) else len(text.text)
