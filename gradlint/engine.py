"""Check and fix one source text: prefilter, parse once, run every rule in one walk, fix to a fixpoint.

The engine knows nothing about any one rule. It imports libcst, so only the cold path loads it.

Per file: Python's own parser checks the syntax (a tenth of LibCST's cost, and it gives every file a
syntax check, as ruff does); rules whose triggers do not match are dropped; if none is left we are done.
Otherwise LibCST parses the regions that match (see `regions`), one walk runs every rule, and reports
become findings with positions, noqa filtering and fix edits.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import libcst as cst

from .context import FileContext, FullModuleRequired
from .diagnostics import SYNTAX_ERROR, Edit, Finding, Fix, Location, file_error
from .edits import diff_edits
from .noqa import NoqaMap
from .regions import Reduction, reduce_source
from .rule import FixPlan, Report, Rule
from .walk import Dispatcher

MAX_FIX_ROUNDS = 10
Options = Mapping[str, Mapping[str, Any]]
NO_OPTIONS: Options = MappingProxyType({})
DescribeRow = Optional[Callable[[int], str]]  # how messages name a row ("cell 3, line 2"); None: "line N"
# Which findings get their fix's edits: all (True), none (False), or those that start in rows (first, last).
Edits = Union[bool, tuple]


class FixBrokeCode(Exception):
    """A rewrite produced code that does not parse; nothing is written."""


@dataclass
class _Analysis:
    module: cst.Module
    ctx: FileContext
    source: str  # the text LibCST parsed: the file, or the file with irrelevant regions dropped
    import_row: int  # fixes insert imports after this row of `source`
    rows: Optional[list] = None  # row of `source` -> row of the file; None when `source` is the file

    def file_row(self, row: int) -> int:
        mapped = self.ctx.file_row(row)
        if mapped == 0:
            raise FullModuleRequired()  # an edit on a dropped line: see the whole file instead
        return mapped


def syntax_tree(text: str, path: str) -> Union[ast.Module, Finding, None]:
    """`ast.parse(text)`; None for syntax newer than this Python that LibCST reads; else an E999 Finding."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(text, filename=path)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        try:
            cst.parse_module(text)
            return None
        except Exception:
            pass
        if isinstance(error, SyntaxError):
            return file_error(SYNTAX_ERROR, path, f"SyntaxError: {error.msg}", error.lineno or 1,
                              error.offset or 1)
        return file_error(SYNTAX_ERROR, path, f"SyntaxError: {error}")


def active_rules(text: str, rules: Sequence[type[Rule]]) -> list[type[Rule]]:
    return [rule for rule in rules if rule.may_match(text)]


class _ImportTracker:
    def __init__(self, ctx: FileContext) -> None:
        self.visit_Import = self.visit_ImportFrom = ctx.visit_import


def _run_rules(module: cst.Module, path: str, rules: Sequence[type[Rule]], options: Options,
               partial: bool, rows: Optional[list] = None, describe_row: DescribeRow = None) -> FileContext:
    ctx = FileContext(module, path, partial=partial, options=options, rows=rows, describe_row=describe_row)
    visitors = [_ImportTracker(ctx), *(rule(ctx) for rule in rules)]
    Dispatcher(visitors, ctx.enter_statement, ctx.leave_statement).walk(module)
    return ctx


def _analyse(text: str, path: str, rules: Sequence[type[Rule]], options: Options,
             tree: Optional[ast.Module], *, reduce: bool = True, force_reduce: bool = False,
             describe_row: DescribeRow = None):
    """An _Analysis, or a syntax-error Finding if LibCST cannot parse the file."""
    import_row = imports_end_row(text, tree)
    if reduce and tree is not None:
        reduction = reduce_source(text, rules, tree=tree, force=force_reduce)
        reduced_import_row = reduction.reduced_row(import_row) if reduction and import_row else 0
        if reduction is not None and reduced_import_row is not None:
            try:
                module = cst.parse_module(reduction.text)
                ctx = _run_rules(module, path, rules, options, partial=True, rows=reduction.rows,
                                 describe_row=describe_row)
                return _Analysis(module, ctx, reduction.text, reduced_import_row, reduction.rows)
            except (FullModuleRequired, cst.ParserSyntaxError):
                pass  # parse the whole file below
    try:
        module = cst.parse_module(text)
    except (cst.ParserSyntaxError, RecursionError, ValueError) as error:
        if isinstance(error, cst.ParserSyntaxError):
            return file_error(SYNTAX_ERROR, path, f"SyntaxError: {error.message.rstrip('.')}",
                              error.editor_line, error.editor_column)
        return file_error(SYNTAX_ERROR, path, f"SyntaxError: {type(error).__name__}: {error}")
    ctx = _run_rules(module, path, rules, options, partial=False, describe_row=describe_row)
    return _Analysis(module, ctx, text, import_row)


def lint_text(text: str, path: str, rules: Sequence[type[Rule]], options: Options = NO_OPTIONS, *,
              reduce: bool = True, force_reduce: bool = False, edits: Edits = True,
              describe_row: DescribeRow = None) -> list[Finding]:
    """The file's findings. `edits=False` leaves each fix's edits out (only its applicability and message):
    the text output needs no more, and each edit costs a rewrite of the module and a diff. `edits=(a, b)`
    computes them only for the findings that start on rows a to b (an editor's code actions)."""
    tree = syntax_tree(text, path)
    if isinstance(tree, Finding):
        return [tree]
    rules = active_rules(text, rules)
    if not rules:
        return []
    analysis = _analyse(text, path, rules, options, tree, reduce=reduce, force_reduce=force_reduce,
                        describe_row=describe_row)
    if isinstance(analysis, Finding):
        return [analysis]
    try:
        return [finding for finding, _ in _findings(analysis, path, edits)]
    except FullModuleRequired:
        analysis = _analyse(text, path, rules, options, tree, reduce=False, describe_row=describe_row)
        return [finding for finding, _ in _findings(analysis, path, edits)]


def lint_reduction(reduction: Reduction, path: str, rules: Sequence[type[Rule]], options: Options,
                   import_row: int, *, edits: Edits = True, describe_row: DescribeRow = None) -> list[Finding]:
    """The findings of one partial parse (see `regions.region_reductions`), in the file's rows.

    `import_row` is the reduced row after which fixes add imports. Raises `FullModuleRequired` when a
    rule needs the whole file, `libcst.ParserSyntaxError` when the reduction does not parse."""
    module = cst.parse_module(reduction.text)
    ctx = _run_rules(module, path, rules, options, partial=True, rows=reduction.rows, describe_row=describe_row)
    analysis = _Analysis(module, ctx, reduction.text, import_row, reduction.rows)
    return [finding for finding, _ in _findings(analysis, path, edits)]


def _findings(analysis: _Analysis, path: str, edits: Edits = True) -> list[tuple[Finding, Report]]:
    """Each unsuppressed report as a Finding (rows of the file), beside the report it came from.

    `edits=False` skips computing each fix's edits (a whole-module rewrite and a diff apiece): `fix_text`
    applies the plans themselves."""
    ctx = analysis.ctx
    if not ctx.reports:
        return []
    positions = ctx.positions()
    noqa = NoqaMap(analysis.source)
    row = analysis.file_row
    findings = []
    for report in ctx.reports:
        span = positions[report.node]
        rows = [span.start.line]
        if report.statement is not None:
            statement = positions[report.statement]
            rows.append(statement.start.line)
            if isinstance(report.statement, cst.SimpleStatementLine):
                rows.append(statement.end.line)
        if noqa.suppresses(report.rule.code, rows):
            continue
        if edits is True or edits and edits[0] <= row(span.start.line) <= edits[1]:
            fix = _fix_of(analysis, report.fix)
        else:
            fix = Fix(report.fix.applicability, report.fix.message) if report.fix is not None else None
        findings.append((Finding(
            code=report.rule.code, message=report.message, filename=path,
            location=Location(row(span.start.line), span.start.column + 1),
            end_location=Location(row(span.end.line), span.end.column + 1),
            fix=fix, rule_name=report.rule.name,
            noqa_rows=tuple(sorted({row(r) for r in rows}))), report))
    return findings


def _fix_of(analysis: _Analysis, plan: Optional[FixPlan]) -> Optional[Fix]:
    if plan is None:
        return None
    try:
        after = apply_plans(analysis.module, [plan], analysis.import_row)
    except Exception:  # a rewrite we cannot apply is reported without a fix, never applied
        return None
    # (`fix_text` re-parses what it writes: a rewrite that breaks the file is never written.)
    edits = tuple(Edit(e.content, Location(analysis.file_row(e.location.row), e.location.column),
                       Location(analysis.file_row(e.end_location.row), e.end_location.column))
                  for e in diff_edits(analysis.source, after))
    return Fix(plan.applicability, plan.message, edits) if edits else None


# -- applying fixes ---------------------------------------------------------------------------------

class _Apply(cst.CSTTransformer):
    def __init__(self, changes: dict) -> None:
        super().__init__()
        self._changes = changes

    def on_leave(self, original_node, updated_node):
        entry = self._changes.get(id(original_node))
        if entry is not None and entry[0] is original_node:
            return entry[1]
        return updated_node


_ROW = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")
_HEADER_COMMENT = re.compile(r"\s*(#.*)?$")


def imports_end_row(text: str, tree: Optional[ast.Module]) -> int:
    """The row after which a fix adds imports: after the module's docstring and leading import block.

    Taken from the original file, so that it is the same whether LibCST saw the whole file or the
    reduced one (where blanked statements could otherwise make the leading block look longer)."""
    if tree is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                tree = ast.parse(text)
            except (SyntaxError, ValueError):
                tree = ast.Module(body=[], type_ignores=[])
    body, row, index = tree.body, 0, 0
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        row, index = body[0].end_lineno or 0, 1
    while index < len(body) and isinstance(body[index], (ast.Import, ast.ImportFrom)):
        row, index = body[index].end_lineno or row, index + 1
    if row == 0:  # no docstring, no imports: after the header comments (shebang, coding, licence)
        for line in _ROW.findall(text):
            if not _HEADER_COMMENT.match(line):
                break
            row += 1
        first_code = body[0].lineno if body else row + 1
        row = min(row, first_code - 1)
    return row


def _insert_imports(code: str, row: int, lines: Sequence[str]) -> str:
    rows = _ROW.findall(code)
    present = {r.strip() for r in rows}
    new = [line for line in dict.fromkeys(lines) if line not in present]
    if not new:
        return code
    newline = next((r[len(r.rstrip("\r\n")):] for r in rows if r.endswith(("\n", "\r"))), "\n")
    if row > 0 and row <= len(rows) and not rows[row - 1].endswith(("\n", "\r")):
        rows[row - 1] += newline
    return "".join([*rows[:row], *(line + newline for line in new), *rows[row:]])


def apply_plans(module: cst.Module, plans: Sequence[FixPlan], import_row: int) -> str:
    changes: dict = {}
    imports: list[str] = []
    for plan in plans:
        for key, value in plan.changes.items():
            changes.setdefault(key, value)
        imports.extend(plan.imports)
    code = module.visit(_Apply(changes)).code if changes else module.code
    return _insert_imports(code, import_row, imports)


def _assert_parses(code: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(code)
    except SyntaxError as error:
        raise FixBrokeCode(str(error)) from error


@dataclass
class FixOutcome:
    text: str
    fixed: int  # findings removed by fixes
    remaining: list[Finding]


def fix_text(text: str, path: str, rules: Sequence[type[Rule]], options: Options = NO_OPTIONS, *,
             unsafe: bool = False, describe_row: DescribeRow = None) -> FixOutcome:
    """Apply fixes, re-parse, repeat until nothing changes (at most MAX_FIX_ROUNDS rounds)."""
    initial = lint_text(text, path, rules, options, describe_row=describe_row)
    current = text
    for _ in range(MAX_FIX_ROUNDS):
        tree = syntax_tree(current, path)
        if isinstance(tree, Finding):
            break
        analysis = _analyse(current, path, active_rules(current, rules), options, tree, reduce=False,
                            describe_row=describe_row)
        if isinstance(analysis, Finding):
            break
        plans = [report.fix for finding, report in _findings(analysis, path, edits=False)
                 if finding.fixable(unsafe)]
        if not plans:
            break
        after = apply_plans(analysis.module, plans, analysis.import_row)
        if after == current:
            break
        _assert_parses(after)
        current = after
    remaining = lint_text(current, path, rules, options, describe_row=describe_row) if current != text else initial
    return FixOutcome(current, max(0, len(initial) - len(remaining)), remaining)
