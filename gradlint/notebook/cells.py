"""A notebook's code cells as one Python module, as a kernel runs them, and the way back.

`CellModule.join` puts the code cells one after the other (IPython lines masked, see `magics`), each
ending with a newline, and remembers where each starts, so a row of the module maps to (cell, row). The
cell numbers are 1-based positions among all the notebook's cells (markdown ones too), as ruff numbers
them and as a user counts them on screen.

`CellModule.sources_after` takes the module after a fix and gives each changed cell's new source: the
fix's character edits are found by diffing the module before and after, each edit is given to the cell
it falls in and applied to that cell's original text. An edit that touches a masked IPython line or
spans two cells is refused (`CellEditError`); nothing is written then.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

from ..diagnostics import Edit, Location
from ..edits import apply_edits, diff_edits
from .magics import mask_cell

_ROWS = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_IMPORT = re.compile(r"\s*(import|from)\s")


class CellEditError(Exception):
    """A fix cannot be written back into the cells (it crosses cells or touches an IPython line)."""


@dataclass(frozen=True)
class Cell:
    number: int  # 1-based position among all the notebook's cells
    source: str  # as the notebook holds it
    text: str  # as it stands in the module: IPython lines masked, ending with a newline (unless empty)
    masked_rows: frozenset  # rows of the cell (1-based) holding IPython lines
    first_row: int  # the module's row where the cell starts
    rows: int  # how many rows it takes in the module


@dataclass(frozen=True)
class Dropped:
    """A line of the notebook that is not in the module as it is written: an IPython magic, shell
    command or help request (masked), or a whole cell under a non-Python cell magic."""

    cell: int
    row: int  # 1-based row in the cell (1 for a whole cell)
    text: str
    whole_cell: bool = False


@dataclass(frozen=True)
class CellModule:
    text: str
    cells: tuple[Cell, ...]
    dropped: tuple[Dropped, ...] = ()
    _starts: list = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def join(cls, sources: Sequence[Optional[str]]) -> "CellModule":
        """The module of the code cells; `sources[i]` is cell i + 1's source, None for a markdown or raw
        cell."""
        cells, dropped, parts = [], [], []
        row = 1
        for number, source in enumerate(sources, start=1):
            if source is None:
                continue
            masked = mask_cell(source)
            if not masked.python:
                dropped.append(Dropped(number, 1, source, whole_cell=True))
                continue
            lines = _ROWS.findall(source)
            dropped.extend(Dropped(number, r, lines[r - 1].rstrip("\r\n")) for r in sorted(masked.rows))
            text = masked.text
            if not text:
                continue  # an empty cell holds nothing and takes no row
            if not text.endswith(("\n", "\r")):
                text += "\n"
            count = len(_ROWS.findall(text))
            cells.append(Cell(number, source, text, masked.rows, row, count))
            parts.append(text)
            row += count
        module = cls("".join(parts), tuple(cells), tuple(dropped))
        module._starts.extend(cell.first_row for cell in cells)
        return module

    # -- positions ----------------------------------------------------------------------------------
    @property
    def starts(self) -> tuple:
        """The module's row where each cell starts (each cell is compiled on its own)."""
        return tuple(self._starts)

    @property
    def layout(self) -> tuple:
        """Changes whenever a row of the module would be named differently (`describe`)."""
        return tuple((cell.number, cell.first_row) for cell in self.cells)

    def cell_at(self, row: int) -> Cell:
        """The cell that holds the module's `row` (past the end: the last cell)."""
        index = max(0, bisect.bisect_right(self._starts, row) - 1)
        return self.cells[index]

    def locate(self, row: int) -> tuple[int, int]:
        """(cell number, row in the cell) for a row of the module."""
        if not self.cells:
            return (1, row)
        cell = self.cell_at(row)
        return cell.number, row - cell.first_row + 1

    def describe(self, row: int) -> str:
        """How a message names a row of the module: "cell 3, line 2"."""
        cell, cell_row = self.locate(row)
        return f"cell {cell}, line {cell_row}"

    def cell_location(self, location: Location) -> tuple[int, Location]:
        cell, row = self.locate(location.row)
        return cell, Location(row, location.column)

    # -- the way back -------------------------------------------------------------------------------
    def cell_edit(self, edit: Edit) -> Edit:
        """An edit of the module as an edit of one cell (its `cell` set, rows counted in the cell)."""
        cell = self._owner(edit)
        start = Location(edit.location.row - cell.first_row + 1, edit.location.column)
        end = Location(edit.end_location.row - cell.first_row + 1, edit.end_location.column)
        if any((start.row, start.column) < (row + 1, 1) and (end.row, end.column) > (row, 1)
               for row in cell.masked_rows):
            raise CellEditError(f"a fix would change an IPython line of cell {cell.number}")
        return Edit(edit.content, start, end, cell=cell.number)

    def cell_edits(self, edits: Sequence[Edit]) -> list[Edit]:
        """Edits of the module as edits of cells (`cell` set, rows counted in the cell); see `_owner`.

        An edit that adds imports at the top of a cell and changes its first line (a diff merges the
        two) is split first, so that the imports go where the imports are."""
        out = []
        for edit in edits:
            for part in self._split_leading_imports(edit):
                out.append(self.cell_edit(part))
        return out

    def sources_after(self, fixed: str) -> dict[int, str]:
        """Cell number -> new source, for the cells that `fixed` (this module after a fix) changes."""
        per_cell: dict[int, list[Edit]] = {}
        for cell_edit in self.cell_edits(diff_edits(self.text, fixed)):
            per_cell.setdefault(cell_edit.cell, []).append(cell_edit)
        out = {}
        for cell in self.cells:
            edits = per_cell.get(cell.number)
            if not edits:
                continue
            added_newline = not cell.source.endswith(("\n", "\r"))
            new = apply_edits(cell.source + ("\n" if added_newline else ""), edits)
            if added_newline and new.endswith("\n"):
                new = new[:-1]
            if new != cell.source:
                out[cell.number] = new
        return out

    def _owner(self, edit: Edit) -> Cell:
        """The cell an edit belongs to. An insertion where one cell ends and the next begins goes to the
        next one (code inserted before its first statement), unless it only adds imports, which go to
        the end of the cell before (where the imports are)."""
        start, end = edit.location, edit.end_location
        cell = self.cell_at(start.row)
        at_boundary = start == end and start.column == 1 and start.row == cell.first_row
        if at_boundary and cell is not self.cells[0] and _only_imports(edit.content):
            return self.cells[self.cells.index(cell) - 1]
        last_row = cell.first_row + cell.rows - 1
        if end.row > last_row and not (end.row == last_row + 1 and end.column == 1):
            raise CellEditError(f"a fix spans cell {cell.number} and the cell after it")
        return cell


    def _split_leading_imports(self, edit: Edit) -> list[Edit]:
        start = edit.location
        if start.column != 1 or start == edit.end_location or self.cell_at(start.row).first_row != start.row:
            return [edit]
        lines = edit.content.splitlines(keepends=True)
        count = 0
        while count < len(lines) and lines[count].endswith("\n") and _IMPORT.match(lines[count]):
            count += 1
        if count == 0 or count == len(lines):
            return [edit]
        imports = "".join(lines[:count])
        return [Edit(imports, start, start), Edit(edit.content[len(imports):], start, edit.end_location)]


def _only_imports(content: str) -> bool:
    lines = [line for line in content.splitlines() if line.strip()]
    return bool(lines) and all(_IMPORT.match(line) for line in lines)
