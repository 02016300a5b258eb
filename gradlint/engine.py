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
from .diagnostics import SAFE, Edit, Finding, Fix, Location
from .edits import apply_edits, diff_edits
from .noqa import NoqaDirectives, removal_edit, unused_codes
from .regions import Reduction, reduce_source
from .rule import FixPlan, Report, Rule
from .selection import FixPolicy
from .syntax import parses, python_syntax
from .walk import Dispatcher

EXTRA_FIX_ROUNDS = 3  # rounds beyond one per initial finding
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


def _python_syntax(text: str, path: str, units: Sequence[int] = (), *,
                   placement: bool = True) -> Union[ast.Module, Finding]:
    """`ast.parse(text)`, or the E999 finding CPython's refusal gives (see `syntax`): LibCST's native parser
    never sees what CPython refused."""
    return python_syntax(text, path, units, placement=placement)


class LibCSTCannotParse(Exception):
    """Valid Python (CPython parsed it) that LibCST's parser refuses: the file is not checked."""


def active_rules(text: str, rules: Sequence[type[Rule]]) -> list[type[Rule]]:
    return [rule for rule in rules if rule.may_match(text)]


@dataclass
class FileResult:
    findings: list[Finding]
    warnings: list[str]  # for stderr (`warning: ...`): an invalid noqa directive, say; the exit code stays


def _run_rules(module: cst.Module, path: str, rules: Sequence[type[Rule]], options: Options,
               partial: bool, rows: Optional[list] = None, tree: Optional[ast.Module] = None,
               text: Optional[str] = None, describe_row: DescribeRow = None) -> FileContext:
    ctx = FileContext(module, path, partial=partial, options=options, rows=rows, tree=tree, text=text,
                      describe_row=describe_row)
    # The whole file's `ast` tree when LibCST parsed only some regions: what the file declares elsewhere
    # (a class's bases and methods) can be read there without parsing it all again.
    ctx.outline = tree if partial else None
    enter, leave = ctx.walk_hooks()
    visitors = [enter, *(rule(ctx) for rule in rules), leave]
    Dispatcher(visitors, ctx.enter_statement, ctx.leave_statement).walk(module)
    if any(not report.rule.reports_in_tests for report in ctx.reports):
        _drop_reports_in_tests(ctx)
    return ctx


def _drop_reports_in_tests(ctx: FileContext) -> None:
    """Drop the reports of rules that stay out of tests (`Rule.reports_in_tests`) made inside one."""
    from .testcode import TestRows
    from .wholefile import WholeFile

    tree = WholeFile.of(ctx).tree
    tests = TestRows(tree) if tree is not None else None
    if not tests:
        return
    positions = ctx.positions()
    ctx.reports = [report for report in ctx.reports if report.rule.reports_in_tests
                   or not tests.contains(ctx.file_row(positions[report.node].start.line))]


def _analyse(text: str, path: str, rules: Sequence[type[Rule]], options: Options,
             tree: Optional[ast.Module], *, reduce: bool = True, force_reduce: bool = False,
             describe_row: DescribeRow = None):
    """An _Analysis, or a syntax-error Finding if LibCST cannot parse the file."""
    import_row = imports_end_row(text, tree)
    if reduce and tree is not None:
        reduction = reduce_source(text, rules, tree=tree, force=force_reduce)
        if reduction is not None:
            rules = reduction.rules  # a rule whose triggers match no one region cannot report anything
            if not rules:
                module = cst.Module(body=[])
                return _Analysis(module, FileContext(module, path, partial=True, options=options), "", 0, [])
        reduced_import_row = reduction.reduced_row(import_row) if reduction and import_row else 0
        if reduction is not None and reduction.text is not None and reduced_import_row is not None:
            try:
                module = cst.parse_module(reduction.text)
                ctx = _run_rules(module, path, rules, options, partial=True, rows=reduction.rows, tree=tree,
                                 text=text, describe_row=describe_row)
                return _Analysis(module, ctx, reduction.text, reduced_import_row, reduction.rows)
            except (FullModuleRequired, cst.ParserSyntaxError):
                pass  # parse the whole file below
    try:
        module = cst.parse_module(text)
    except (cst.ParserSyntaxError, ValueError) as error:  # CPython parsed it: a limit of LibCST's parser
        detail = error.message.rstrip(".") if isinstance(error, cst.ParserSyntaxError) else str(error)
        raise LibCSTCannotParse(f"LibCST cannot parse this file, which Python accepts: {detail}") from None
    ctx = _run_rules(module, path, rules, options, partial=False, tree=tree, text=text, describe_row=describe_row)
    return _Analysis(module, ctx, text, import_row)


def lint_text(text: str, path: str, rules: Sequence[type[Rule]], options: Options = NO_OPTIONS, *,
              reduce: bool = True, force_reduce: bool = False, edits: Edits = True,
              describe_row: DescribeRow = None, units: Sequence[int] = ()) -> list[Finding]:
    """The file's findings (see `lint_file`)."""
    return lint_file(text, path, rules, options, reduce=reduce, force_reduce=force_reduce, edits=edits,
                     describe_row=describe_row, units=units).findings


def lint_file(text: str, path: str, rules: Sequence[type[Rule]], options: Options = NO_OPTIONS, *,
              reduce: bool = True, force_reduce: bool = False, edits: Edits = True,
              describe_row: DescribeRow = None, units: Sequence[int] = ()) -> FileResult:
    """The file's findings, and warnings about its noqa directives. `edits=False` leaves each fix's edits
    out (only its applicability and message): the text output needs no more, and each edit costs a
    rewrite of the module and a diff. `edits=(a, b)` computes them only for the findings that start on
    rows a to b (an editor's code actions). `describe_row` words a row in messages ("cell 3, line 2");
    `units` are the rows where a notebook's cells start (see `syntax.python_syntax`)."""
    if not active_rules(text, rules) and parses(text, path):
        return FileResult([], NoqaDirectives(text, path).warnings)  # no rule can report: the syntax is all
    tree = _python_syntax(text, path, units)
    if isinstance(tree, Finding):
        return FileResult([tree], [])
    directives = NoqaDirectives(text, path)
    return FileResult(_lint(text, path, rules, options, tree, directives, reduce, force_reduce, edits,
                            describe_row), directives.warnings)


def _lint(text, path, rules, options, tree, directives: NoqaDirectives, reduce, force_reduce, edits,
          describe_row: DescribeRow = None):
    enabled = rules
    rules = [rule for rule in active_rules(text, rules) if not directives.exempts(rule.code)]
    visiting = [rule for rule in rules if not rule.audits_noqa]
    found: list[Finding] = []
    if visiting:
        analysis = _analyse(text, path, visiting, options, tree, reduce=reduce, force_reduce=force_reduce,
                            describe_row=describe_row)
        if isinstance(analysis, Finding):
            return [analysis]
        try:
            found = [finding for finding, _ in _findings(analysis, path, directives, edits)]
        except FullModuleRequired:
            directives.forget_uses()  # the whole file is checked again
            analysis = _analyse(text, path, visiting, options, tree, reduce=False, describe_row=describe_row)
            found = [finding for finding, _ in _findings(analysis, path, directives, edits)]
    audits = [finding for auditor in rules if auditor.audits_noqa
              for finding in _unused_noqa(auditor, directives, path, {rule.code for rule in enabled})]
    return sorted(found + audits, key=Finding.sort_key) if audits else found


def lint_reduction(reduction: Reduction, text: str, tree: ast.Module, path: str, rules: Sequence[type[Rule]],
                   options: Options, import_row: int, directives: NoqaDirectives, *, edits: Edits = True,
                   describe_row: DescribeRow = None) -> list[Finding]:
    """The findings of one partial parse of `text` (see `regions.region_reductions`), in the file's rows.

    `tree` is the whole file's `ast`, `import_row` the reduced row after which fixes add imports, and
    `rules` must hold no noqa auditor (its verdict needs every region). Raises `FullModuleRequired` when a
    rule needs the whole file, `libcst.ParserSyntaxError` when the reduction does not parse."""
    module = cst.parse_module(reduction.text)
    ctx = _run_rules(module, path, rules, options, partial=True, rows=reduction.rows, tree=tree, text=text,
                     describe_row=describe_row)
    analysis = _Analysis(module, ctx, reduction.text, import_row, reduction.rows)
    return [finding for finding, _ in _findings(analysis, path, directives, edits)]


def _unused_noqa(auditor: type[Rule], directives: NoqaDirectives, path: str, enabled: set) -> list[Finding]:
    """`auditor`'s findings: the codes of line directives that silenced nothing, each with the edit that
    drops them (removing a comment never changes what the code does: a safe fix)."""
    from .registry import every_rule

    known = {rule.code for rule in every_rule()}
    findings = []
    for directive in directives.lines.values():
        unused = unused_codes(directive, known, enabled)
        if not unused:
            continue
        fix = Fix(SAFE, auditor.fix_message, (removal_edit(directive, unused.kept),))
        findings.append(Finding(
            code=auditor.code, message=auditor.message(unused.describe()), filename=path,
            location=Location(directive.row, directive.column),
            end_location=Location(directive.row, directive.end_column), fix=fix, rule_name=auditor.name,
            noqa_rows=(directive.row,)))
    return findings


def _findings(analysis: _Analysis, path: str, directives: NoqaDirectives,
              edits: Edits = True) -> list[tuple[Finding, Report]]:
    """Each unsuppressed report as a Finding (rows of the file), beside the report it came from.

    `edits=False` skips computing each fix's edits (one rewrite of the module for all of them): `fix_text`
    applies the plans themselves; `edits=(first, last)` computes them for the reports that start there."""
    ctx = analysis.ctx
    if not ctx.reports:
        return []
    positions = ctx.positions()
    row = analysis.file_row
    findings = []
    kept = [report for report in ctx.reports if not _suppressed(report, positions, directives, row)]
    wanted = [edits is True or bool(edits) and edits[0] <= row(positions[r.node].start.line) <= edits[1]
              for r in kept]
    fixes = _fixes(analysis, [r.fix if want else None for r, want in zip(kept, wanted)]) if any(wanted) else None
    for index, report in enumerate(kept):
        span = positions[report.node]
        rows = _statement_rows(report, positions)
        if fixes is not None and wanted[index]:
            fix = fixes[index]
        else:
            fix = Fix(report.fix.applicability, report.fix.message) if report.fix is not None else None
        findings.append((Finding(
            code=report.rule.code, message=report.message, filename=path,
            location=Location(row(span.start.line), span.start.column + 1),
            end_location=Location(row(span.end.line), span.end.column + 1),
            fix=fix, rule_name=report.rule.name,
            noqa_rows=tuple(sorted({row(r) for r in rows}))), report))
    return findings


def _statement_rows(report: Report, positions) -> list[int]:
    rows = [positions[report.node].start.line]
    if report.statement is not None:
        statement = positions[report.statement]
        rows.append(statement.start.line)
        if isinstance(report.statement, cst.SimpleStatementLine):
            rows.append(statement.end.line)
    return rows


def _suppressed(report: Report, positions, directives: NoqaDirectives, row) -> bool:
    return directives.suppresses(report.rule.code, [row(r) for r in _statement_rows(report, positions)])


def _fixes(analysis: _Analysis, plans: Sequence[Optional[FixPlan]]) -> list[Optional[Fix]]:
    """Every report's Fix with its edits, from one rewrite of the module (see `fix_edits`)."""
    from .fix_edits import plan_edits

    present = [i for i, plan in enumerate(plans) if plan is not None]
    if not present:
        return [None] * len(plans)
    if analysis.module.code != analysis.source:  # LibCST lost text: no edits may be derived from it
        return [Fix(p.applicability, p.message) if p is not None else None for p in plans]
    edits = plan_edits(
        analysis.module, analysis.ctx.positions(), analysis.source, [plans[i] for i in present],
        analysis.import_row,
        expected=lambda together, code: _insert_imports(code, analysis.import_row,
                                                        [line for plan in together for line in plan.imports]),
        alone=lambda plan: _fix_of(analysis, plan))
    out: list[Optional[Fix]] = [None] * len(plans)
    for i, plan_result in zip(present, edits):
        if isinstance(plan_result, Fix) or plan_result is None:
            out[i] = plan_result  # computed alone
        elif plan_result:
            out[i] = Fix(plans[i].applicability, plans[i].message, tuple(
                Edit(e.content, Location(analysis.file_row(e.location.row), e.location.column),
                     Location(analysis.file_row(e.end_location.row), e.end_location.column)) for e in plan_result))
    return out


def _fix_of(analysis: _Analysis, plan: Optional[FixPlan]) -> Optional[Fix]:
    if plan is None or not keeps_comments(plan):
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
    """Replaces nodes, innermost first: a replacement built around an original node that holds a fix of
    its own (`inner.clamp(...)` around an einsum whose operand is fixed too) gets the fixed node, so that
    nested findings are all fixed in one pass."""

    def __init__(self, changes: dict) -> None:
        super().__init__()
        self._changes = changes
        self._done: dict = {}  # id(original node) -> (original node, what it became)

    def on_leave(self, original_node, updated_node):
        entry = self._changes.get(id(original_node))
        if entry is None or entry[0] is not original_node:
            return updated_node
        replacement = entry[1]
        if self._done:
            replacement = _Substitute(self._done).into(replacement)
        self._done[id(original_node)] = (original_node, replacement)
        return replacement


class _Substitute(cst.CSTTransformer):
    def __init__(self, done: dict) -> None:
        super().__init__()
        self._done = done

    def into(self, replacement):
        if isinstance(replacement, cst.FlattenSentinel):
            return cst.FlattenSentinel([node.visit(self) for node in replacement.nodes])
        return replacement.visit(self) if isinstance(replacement, cst.CSTNode) else replacement

    def on_leave(self, original_node, updated_node):
        entry = self._done.get(id(original_node))
        if entry is not None and entry[0] is original_node and isinstance(entry[1], cst.CSTNode):
            return entry[1]
        return updated_node


def _comments(node) -> list[str]:
    """The comments inside a node (or the nodes of a FlattenSentinel), in order."""
    nodes = list(node.nodes) if isinstance(node, cst.FlattenSentinel) else \
        [node] if isinstance(node, cst.CSTNode) else []
    out = []
    while nodes:
        item = nodes.pop()
        if isinstance(item, cst.Comment):
            out.append(item.value)
        nodes.extend(item.children)
    return sorted(out)


def keeps_comments(plan: FixPlan) -> bool:
    """Whether every comment of the code a plan replaces is still in what replaces it."""
    for original, replacement in plan.changes.values():
        before = _comments(original)
        if not before:
            continue
        after = _comments(replacement)
        for comment in before:
            if comment not in after:
                return False
            after.remove(comment)
    return True


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
    # Only an import of the leading block makes ours redundant: one indented under `if TYPE_CHECKING:`
    # or `try:`, or further down the file, may not run before the code that needs it.
    present = {r.strip() for r in rows[:row] if not r[:1].isspace()}
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
    initial: list[Finding]


def fix_text(text: str, path: str, rules: Sequence[type[Rule]], options: Options = NO_OPTIONS, *,
             unsafe: bool = False, policy: Optional[FixPolicy] = None,
             rounds: Optional[int] = None, describe_row: DescribeRow = None,
             units: Sequence[int] = ()) -> FixOutcome:
    """Apply fixes, re-parse, repeat until nothing changes (or `rounds` times); then drop the noqa codes
    that silence nothing (GL100, when selected), which no rewrite changes. `policy`: the configuration's
    `unfixable` and fix-safety overrides, applied to every finding.

    Nested fixes are applied together (see `_Apply`), so one round usually suffices; a fix that makes a
    new finding needs another. Each round must fix something, so the rounds are bounded by the findings
    (and a few more for findings that fixes create)."""
    adjust = policy.adjust if policy is not None else (lambda finding: finding)
    initial = [adjust(f) for f in lint_text(text, path, rules, options, edits=False,
                                            describe_row=describe_row, units=units)]  # counted: no edits
    current = text
    for _ in range(rounds if rounds is not None else len(initial) + EXTRA_FIX_ROUNDS):
        # A fix may add import lines and move a notebook's cells down: `units` stay true of the text
        # judged first only, so a round does not judge where `__future__` imports stand again.
        tree = _python_syntax(current, path, units, placement=not units)
        if isinstance(tree, Finding):
            break
        directives = NoqaDirectives(current, path)
        visiting = [rule for rule in active_rules(current, rules)
                    if not rule.audits_noqa and not directives.exempts(rule.code)]
        if not visiting:
            break
        analysis = _analyse(current, path, visiting, options, tree, reduce=False, describe_row=describe_row)
        if isinstance(analysis, Finding):
            break
        plans = [report.fix for finding, report in _findings(analysis, path, directives, edits=False)
                 if adjust(finding).fixable(unsafe) and keeps_comments(report.fix)]
        if not plans:
            break
        after = apply_plans(analysis.module, plans, analysis.import_row)
        if after == current:
            break
        _assert_parses(after)
        current = after
    remaining = ([adjust(f) for f in lint_text(current, path, rules, options, describe_row=describe_row)]
                 if current != text else initial)
    noqa_edits = [edit for finding in remaining if finding.fixable(unsafe) and _is_audit(finding, rules)
                  for edit in finding.fix.edits]
    if noqa_edits:
        current = apply_edits(current, noqa_edits)
        _assert_parses(current)
        remaining = [adjust(f) for f in lint_text(current, path, rules, options, describe_row=describe_row)]
    return FixOutcome(current, max(0, len(initial) - len(remaining)), remaining, initial)


def _is_audit(finding: Finding, rules: Sequence[type[Rule]]) -> bool:
    return any(rule.audits_noqa and rule.code == finding.code for rule in rules)
