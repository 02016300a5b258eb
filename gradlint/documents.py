"""Check and fix one document's text, wherever it came from (a file, stdin, an editor's buffer).

The path only names the document: it picks the kind (`.ipynb` is a Jupyter notebook, anything else
Python source) and is the filename findings carry; nothing is read from it. A notebook's findings carry
their cell (`Finding.cell`), with rows counted in that cell; a notebook that cannot be read gets one E902
finding, and its fix leaves the text as it was.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import replace
from typing import Callable, Optional, Sequence

from .diagnostics import IO_ERROR, SYNTAX_ERROR, Finding, Fix, file_error
from .engine import NO_OPTIONS, FixBrokeCode, FixOutcome, Options, fix_text, lint_text
from .notebook import CellEditError, CellModule, NotebookError, is_notebook, read_notebook
from .rule import Rule
from .selection import FixPolicy

LintModule = Callable[[str, Callable[[int], str]], list]  # (module text, describe_row) -> findings


def lint_document(text: str, path: str, rules: Sequence[type[Rule]], options: Options = NO_OPTIONS, *,
                  edits: bool = True, policy: Optional[FixPolicy] = None) -> list[Finding]:
    """The findings of `text`, a Python source or (by `path`'s suffix) a notebook's JSON, with the
    configuration's fix `policy` applied."""
    if not is_notebook(path):
        found = lint_text(text, path, rules, options, edits=edits)
    else:
        try:
            notebook = read_notebook(text)
        except NotebookError as error:
            return [file_error(IO_ERROR, path, f"Failed to read {path}: {error}")]
        cells = CellModule.join(notebook.code_sources)
        found = lint_cells(cells, path, lambda module, describe_row: lint_text(
            module, path, rules, options, edits=edits, describe_row=describe_row, units=cells.starts))
    return [policy.adjust(f) for f in found] if policy else found


def fix_document(text: str, path: str, rules: Sequence[type[Rule]], options: Options = NO_OPTIONS, *,
                 unsafe: bool = False, policy: Optional[FixPolicy] = None, edits: bool = True) -> FixOutcome:
    """`text` with its fixes applied (a notebook: only the changed cells' `source`), and what remains.

    Raises `FixBrokeCode` when a fix cannot be applied cleanly; nothing should be written then."""
    if not is_notebook(path):
        return fix_text(text, path, rules, options, unsafe=unsafe, policy=policy or None)
    findings = lint_document(text, path, rules, options, edits=edits, policy=policy)
    if not any(f.fixable(unsafe) for f in findings) or any(f.is_file_error for f in findings):
        return FixOutcome(text, 0, findings, findings)
    notebook = read_notebook(text)
    module = CellModule.join(notebook.code_sources)
    outcome = fix_text(module.text, path, rules, options, unsafe=unsafe, policy=policy or None,
                       describe_row=module.describe, units=module.starts)
    try:
        fixed = notebook.with_sources(module.sources_after(outcome.text))
    except (CellEditError, NotebookError) as error:
        raise FixBrokeCode(str(error)) from None
    remaining = lint_document(fixed, path, rules, options, edits=edits, policy=policy) if fixed != text else findings
    return FixOutcome(fixed, max(0, len(findings) - len(remaining)), remaining, findings)


def lint_cells(module: CellModule, path: str, lint: LintModule) -> list[Finding]:
    """The findings of a notebook's code cells, each located in its cell; `lint(text, describe_row)`
    lints the joined module (`lint_text`, or the language server's warm linter).

    A kernel compiles each cell alone, so each cell must parse alone: a syntax error is reported in the
    cell that has it (joined, an unclosed bracket would show up in the next cell)."""
    errors = [error for error in (_cell_syntax(cell, path) for cell in module.cells) if error is not None]
    if errors:
        return errors
    return [_in_cell(finding, module) for finding in lint(module.text, module.describe)]


def _cell_syntax(cell, path: str) -> Optional[Finding]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(cell.text)
    except SyntaxError as error:
        finding = file_error(SYNTAX_ERROR, path, f"SyntaxError: {error.msg}", error.lineno or 1, error.offset or 1)
        return replace(finding, cell=cell.number)
    except (ValueError, RecursionError, MemoryError) as error:
        return replace(file_error(SYNTAX_ERROR, path, f"SyntaxError: {error}"), cell=cell.number)
    return None


def _in_cell(finding: Finding, module: CellModule) -> Finding:
    """A finding of the joined module, located in its cell."""
    cell, location = module.cell_location(finding.location)
    end_cell, end = module.cell_location(finding.end_location)
    fix = finding.fix
    if fix is not None and fix.edits:
        try:
            fix = Fix(fix.applicability, fix.message, tuple(module.cell_edits(fix.edits)))
        except CellEditError:
            fix = None  # shown without a fix: it cannot be written back into the cells
    return replace(finding, location=location, end_location=end if end_cell == cell else location, fix=fix,
                   noqa_rows=tuple(sorted({module.locate(row)[1] for row in finding.noqa_rows})), cell=cell)
