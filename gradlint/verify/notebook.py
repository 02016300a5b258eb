"""`gradlint verify nb.ipynb`: the notebook's code cells run in order as one script, as a kernel runs them.

The script is `gradlint.notebook.notebook_script`: IPython lines (`%time`, `!pip list`) become `pass` and
a cell under a non-Python cell magic (`%%bash`) is left out; `dropped_notes` says which. The harness runs
the notebook's own path as the script with that text served in its place (the import hook's sources), so
that its folder is first on `sys.path` and every frame, site and traceback names the notebook; `in_cells`
then turns the script's rows back into cells ("nb.ipynb, cell 3, line 2"). The patched run serves the
script of the fixed notebook: the same fixes `gradlint fix nb.ipynb` writes into the cells.

Torch-free: runs in the parent process.
"""

from __future__ import annotations

import difflib
import re

from gradlint.notebook import CellModule, is_notebook, notebook_script

__all__ = ["cell_diff", "dropped_notes", "in_cells", "is_notebook", "script_of"]


def script_of(path: str) -> CellModule:
    """The script a kernel would run for the notebook at `path`. Raises `NotebookError` (not a valid
    nbformat 4 notebook) or `OSError`/`UnicodeDecodeError` (not readable)."""
    with open(path, encoding="utf-8") as f:
        return notebook_script(f.read())


def dropped_notes(script: CellModule) -> list[str]:
    """One line per notebook line that the run leaves out, and why."""
    notes = []
    for dropped in script.dropped:
        if dropped.whole_cell:
            first = dropped.text.splitlines()[0] if dropped.text else ""
            notes.append(f"cell {dropped.cell}: `{first}` cell not run (not Python)")
        else:
            notes.append(f"cell {dropped.cell}, line {dropped.row}: `{dropped.text.strip()}` not run (IPython)")
    return notes


def in_cells(value, real: str, script: CellModule):
    """`value` (a run's record, or part of one) with every site in the notebook's script located in its cell:
    `{"file": real, "line": 37}` gets `"cell": 3, "line": 2` (its `context` lines too, those of the same
    cell), and a traceback's `File "real", line 37` reads `File "real", cell 3, line 2`."""
    if isinstance(value, list):
        return [in_cells(v, real, script) for v in value]
    if isinstance(value, str):
        return _traceback_in_cells(value, real, script)
    if not isinstance(value, dict):
        return value
    out = {k: in_cells(v, real, script) for k, v in value.items()}
    line = value.get("line")
    if value.get("file") == real and isinstance(line, int) and not isinstance(line, bool) and line > 0:
        cell, row = script.locate(line)
        out["cell"], out["line"] = cell, row
        if isinstance(value.get("context"), list):
            out["context"] = [dict(entry, line=script.locate(entry["line"])[1]) for entry in value["context"]
                              if isinstance(entry, dict) and isinstance(entry.get("line"), int)
                              and script.locate(entry["line"])[0] == cell]
    return out


def _traceback_in_cells(text: str, real: str, script: CellModule) -> str:
    if real not in text:
        return text

    def cell_line(match: re.Match) -> str:
        cell, row = script.locate(int(match.group(1)))
        return f'File "{real}", cell {cell}, line {row}'

    return re.sub(rf'File "{re.escape(real)}", line (\d+)', cell_line, text)


def cell_diff(shown: str, before: CellModule, after: CellModule) -> str:
    """A unified diff per changed code cell, each headed `a/nb.ipynb (cell 3)`."""
    old = {cell.number: cell.source for cell in before.cells}
    new = {cell.number: cell.source for cell in after.cells}
    parts = []
    for number in sorted(set(old) | set(new)):
        a, b = old.get(number, ""), new.get(number, "")
        if a == b:
            continue
        parts.append("".join(difflib.unified_diff(
            _lines(a), _lines(b), f"a/{shown} (cell {number})", f"b/{shown} (cell {number})")))
    return "".join(parts)


def _lines(source: str) -> list[str]:
    lines = source.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines

