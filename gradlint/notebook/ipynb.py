"""The `.ipynb` file: read and validated with `json` and nbformat, written back by splicing.

Reading: `json.loads`, then nbformat's validator against the nbformat 4 schema. Invalid JSON, another
major version or a schema violation is a `NotebookError` whose message says what and where; the caller
reports it (E902) and never writes the file.

Writing: nbformat's writer cannot keep the bytes. Measured on the 7 notebooks of the pinned repositories
(minGPT, nanoGPT, open_clip, Lightning): `nbformat.writes(nbformat.reads(text))` differs from the file
for all 7. It drops `metadata.orig_nbformat` (VS Code writes it) and re-indents and re-sorts the keys of
Colab's files (2-space indent, `nbformat` first) from the first line on. So a fix keeps the file's text
and replaces only the `source` value of each changed cell, written in the file's own style (its
indentation, separators, newline and ASCII escaping); the cell's unchanged lines keep their exact JSON
text. `_Scanner` finds where each cell's `source` value lies: a few lines over text that `json` has
already accepted. After splicing, the new file is parsed again and must equal the old one with only
those sources replaced; anything else is an error and nothing is written.
"""

from __future__ import annotations

import difflib
import json
import re
import warnings
from dataclasses import dataclass
from typing import Mapping, Optional

_WS = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_SCALAR = re.compile(r"[^,\]}\s]+")
_NEWLINE = re.compile(r"\r\n|\n|\r")


class NotebookError(Exception):
    """Not a notebook gradlint can read (not JSON, not nbformat 4, not valid under its schema)."""


@dataclass(frozen=True)
class CellJson:
    kind: str  # "code", "markdown" or "raw"
    source: str  # the lines joined
    span: tuple[int, int]  # where the `source` value lies in the file's text
    items: tuple[tuple[int, int], ...]  # where each line's string lies, when the value is a list
    key_indent: str  # the whitespace before the line's `"source"` key


@dataclass(frozen=True)
class Notebook:
    text: str
    cells: tuple[CellJson, ...]

    @property
    def code_sources(self) -> list[Optional[str]]:
        """Each cell's source, None for the cells that are not code."""
        return [cell.source if cell.kind == "code" else None for cell in self.cells]

    def with_sources(self, sources: Mapping[int, str]) -> str:
        """The file with the `source` of cell `number` (1-based) replaced by `sources[number]`."""
        if not sources:
            return self.text
        style = _Style.of(self)
        out, cursor = [], 0
        for number in sorted(sources):
            cell = self.cells[number - 1]
            out.append(self.text[cursor:cell.span[0]])
            out.append(style.source_value(self.text, cell, sources[number]))
            cursor = cell.span[1]
        out.append(self.text[cursor:])
        new = "".join(out)
        _check_only_sources_changed(self.text, new, sources)
        return new


def read_notebook(text: str) -> Notebook:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise NotebookError(f"not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})") from None
    except RecursionError:
        raise NotebookError("not valid JSON: nested too deeply") from None
    if not isinstance(data, dict) or "cells" not in data or "nbformat" not in data:
        raise NotebookError("not a Jupyter notebook (a JSON object with `cells` and `nbformat`)")
    if data.get("nbformat") != 4:
        raise NotebookError(f"nbformat {data.get('nbformat')!r} notebooks are not supported, only nbformat 4 "
                            "(convert it: `jupyter nbconvert --to notebook --nbformat 4`)")
    _validate(data)
    spans = _Scanner(text).source_spans()
    cells = []
    for index, cell in enumerate(data["cells"]):
        span, items, key_indent = spans[index]
        source = cell["source"]
        cells.append(CellJson(cell["cell_type"], source if isinstance(source, str) else "".join(source),
                              span, items, key_indent))
    return Notebook(text, tuple(cells))


def _validate(data: dict) -> None:
    import nbformat  # imported here: only a notebook pays for it (about 0.1 s)

    try:
        with warnings.catch_warnings():  # a 4.5 cell without an id: Jupyter opens it, so do we
            warnings.simplefilter("ignore")
            nbformat.validate(data)  # checks only: nbformat 5.10+ no longer repairs as it validates
    except nbformat.ValidationError as error:
        where = "/".join(str(part) for part in getattr(error, "absolute_path", ()))
        message = str(getattr(error, "message", error)).splitlines()[0]
        raise NotebookError(f"not a valid nbformat 4 notebook: {message}" + (f" (at {where})" if where else ""))\
            from None


class _Scanner:
    """Where each cell's `source` value lies in a JSON text that `json.loads` has accepted."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _ws(self, i: int) -> int:
        return _WS.match(self.text, i).end()

    def _string(self, i: int) -> tuple[str, int]:
        end = _STRING.match(self.text, i).end()
        return json.loads(self.text[i:end]), end

    def _skip(self, i: int) -> int:
        """The end of the value that starts at `i`."""
        char = self.text[i]
        if char == '"':
            return _STRING.match(self.text, i).end()
        if char not in "[{":
            return _SCALAR.match(self.text, i).end()
        depth = 0
        for match in _TOKEN.finditer(self.text, i):
            token = match.group()
            if token in "[{":
                depth += 1
            elif token in "]}":
                depth -= 1
                if depth == 0:
                    return match.end()
        raise NotebookError("not valid JSON")  # unreachable after json.loads

    def _members(self, i: int):
        """(key, value start, value end, key start) of the object at `i`."""
        i = self._ws(i + 1)
        while self.text[i] != "}":
            key_start = i
            key, i = self._string(i)
            i = self._ws(self._ws(i) + 1)  # the colon
            end = self._skip(i)
            yield key, i, end, key_start
            i = self._ws(end)
            if self.text[i] == ",":
                i = self._ws(i + 1)

    def _elements(self, i: int):
        """(start, end) of each element of the array at `i`."""
        i = self._ws(i + 1)
        while self.text[i] != "]":
            end = self._skip(i)
            yield i, end
            i = self._ws(end)
            if self.text[i] == ",":
                i = self._ws(i + 1)

    def source_spans(self) -> list:
        start = self._ws(0)
        cells_span = None
        for key, value_start, _, _ in self._members(start):
            if key == "cells":
                cells_span = value_start  # the last one wins, as in json.loads
        spans = []
        for cell_start, _ in self._elements(cells_span):
            found = None
            for key, value_start, value_end, key_start in self._members(cell_start):
                if key == "source":
                    items = ()
                    if self.text[value_start] == "[":
                        items = tuple(self._elements(value_start))
                    line_start = self.text.rfind("\n", 0, key_start) + 1
                    indent = self.text[line_start:key_start]
                    found = ((value_start, value_end), items, indent if not indent.strip() else "")
            spans.append(found)
        return spans


@dataclass(frozen=True)
class _Style:
    """How this file writes a list of source lines."""

    ascii_only: bool
    newline: str
    indent_unit: str  # "" for a file on one line
    sample: Optional[tuple[str, str, str]]  # (after `[`, between items, before `]`) of a cell in the file

    @classmethod
    def of(cls, notebook: Notebook) -> "_Style":
        text = notebook.text
        newline_match = _NEWLINE.search(text)
        newline = newline_match.group() if newline_match else "\n"
        second_line = text[newline_match.end():] if newline_match else ""
        unit = second_line[:len(second_line) - len(second_line.lstrip(" \t"))]
        sample = next((_layout_of(text, cell) for cell in notebook.cells if len(cell.items) >= 2), None)
        return cls(text.isascii() and _escapes_non_ascii(text), newline, unit, sample)

    def _dump(self, line: str) -> str:
        return json.dumps(line, ensure_ascii=self.ascii_only)

    def source_value(self, text: str, cell: CellJson, source: str) -> str:
        if not cell.items and text[cell.span[0]] == '"':
            return self._dump(source)  # the file keeps this cell's source as one string
        lines = source.splitlines(keepends=True)  # how nbformat splits sources
        if not lines:
            return "[]"
        old_lines = [json.loads(text[s:e]) for s, e in cell.items]
        kept = {}  # new line -> the JSON text of the same old line
        for block in difflib.SequenceMatcher(None, old_lines, lines, autojunk=False).get_matching_blocks():
            for k in range(block.size):
                start, end = cell.items[block.a + k]
                kept[block.b + k] = text[start:end]
        items = [kept.get(j) or self._dump(line) for j, line in enumerate(lines)]
        opening, between, closing = self._layout(text, cell)
        return "[" + opening + between.join(items) + closing + "]"

    def _layout(self, text: str, cell: CellJson) -> tuple[str, str, str]:
        """(after `[`, between items, before `]`): the cell's own, else another cell's (all sources sit
        at the same depth), else built from the file's indentation."""
        if len(cell.items) >= 2:
            return _layout_of(text, cell)
        if self.sample is not None:
            return self.sample
        if len(cell.items) == 1:
            opening = text[cell.span[0] + 1:cell.items[0][0]]
            return opening, "," + (opening or " "), text[cell.items[0][1]:cell.span[1] - 1]
        if not self.indent_unit:
            return "", ", ", ""
        inner = self.newline + cell.key_indent + self.indent_unit
        return inner, "," + inner, self.newline + cell.key_indent


def _layout_of(text: str, cell: CellJson) -> tuple[str, str, str]:
    (_, first_end), (second_start, _) = cell.items[0], cell.items[1]
    return (text[cell.span[0] + 1:cell.items[0][0]], text[first_end:second_start],
            text[cell.items[-1][1]:cell.span[1] - 1])


def _escapes_non_ascii(text: str) -> bool:
    """Whether the file writes non-ASCII characters as \\u escapes (json.dumps' default)."""
    return re.search(r"(?<!\\)\\u(?!00[0-7])[0-9a-fA-F]{4}", text) is not None


def _check_only_sources_changed(old: str, new: str, sources: Mapping[int, str]) -> None:
    before, after = json.loads(old), json.loads(new)
    for number, source in sources.items():
        cell = before["cells"][number - 1]
        got = after["cells"][number - 1]["source"]
        if (got if isinstance(got, str) else "".join(got)) != source:
            raise NotebookError(f"internal error: cell {number} was not written as fixed; file left as it was")
        cell["source"] = after["cells"][number - 1]["source"]
    if before != after:
        raise NotebookError("internal error: writing the fix would change more than the cells' source; "
                            "file left as it was")
