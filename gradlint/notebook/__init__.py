"""Jupyter notebooks: their code cells checked and fixed as one module, fixes written back into the JSON.

- `ipynb`: the `.ipynb` file, read with `json` and nbformat's validator, written back by replacing only
  the changed cells' `source` (everything else kept byte for byte);
- `magics`: IPython's own syntax (`%time`, `!pip`, `%%capture`, `obj?`) masked so that cells parse;
- `cells`: the code cells joined in order as one module, as a kernel runs them, with the map from the
  module's rows to (cell, row) and the way back from a fixed module to the cells' sources.

`gradlint.documents` checks and fixes a notebook's text with these; `notebook_script` gives the runtime
side (`gradlint verify`) the script a kernel would run and where each of its rows came from.
"""

from __future__ import annotations

from .cells import Cell, CellEditError, CellModule, Dropped
from .ipynb import Notebook, NotebookError, read_notebook

SUFFIX = ".ipynb"

__all__ = ["SUFFIX", "Cell", "CellEditError", "CellModule", "Dropped", "Notebook", "NotebookError",
           "is_notebook", "notebook_script", "read_notebook"]


def is_notebook(path: str) -> bool:
    return str(path).lower().endswith(SUFFIX)


def notebook_script(text: str) -> CellModule:
    """The notebook's code cells as one script, in order, as a kernel runs them.

    `.text` is the script: each IPython line (magic, shell command, help) is replaced by `pass` (or
    `x = None` for `x = !cmd`) on its own row, and a cell under a non-Python cell magic (`%%bash`) is
    left out; `.dropped` lists both, for a note. `.locate(row)` gives (cell number, row in the cell) for
    a row of the script; `.describe(row)` says it as "cell 3, line 2". Raises `NotebookError`."""
    return CellModule.join(read_notebook(text).code_sources)
