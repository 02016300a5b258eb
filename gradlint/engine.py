"""Check and fix one source text: prefilter, parse once, run every rule in one walk, fix to a fixpoint.

The engine knows nothing about any one rule. It imports libcst, so only the cold path loads it.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider

from .context import FileContext, FullModuleRequired
from .diagnostics import SYNTAX_ERROR, Finding, Fix, Location, file_error
from .edits import diff_edits
from .noqa import NoqaMap
from .regions import reduce_source
from .rule import FixPlan, Report, Rule
from .walk import Dispatcher

MAX_FIX_ROUNDS = 10
Options = Mapping[str, Mapping[str, Any]]


class FixBrokeCode(Exception):
    """A rewrite produced code that does not parse; nothing is written."""


class _ImportTracker:
    def __init__(self, ctx: FileContext) -> None:
        self.visit_Import = self.visit_ImportFrom = ctx.visit_import


def _run_rules(module: cst.Module, path: str, rules: Sequence[type[Rule]], options: Options,
               partial: bool) -> FileContext:
    ctx = FileContext(module, path, partial=partial, options=options)
    visitors = [_ImportTracker(ctx), *(rule(ctx) for rule in rules)]
    Dispatcher(visitors, ctx.enter_statement, ctx.leave_statement).walk(module)
    if partial and any(r.fix is not None for r in ctx.reports):
        # Fix edits (imports added at the top, say) are computed on the real file, not the reduced one.
        raise FullModuleRequired()
    return ctx


def _syntax_error(path: str, error: Exception) -> Finding:
    if isinstance(error, cst.ParserSyntaxError):
        message = error.message.rstrip(".")
        return file_error(SYNTAX_ERROR, path, f"SyntaxError: {message}", error.editor_line,
                          error.editor_column)
    return file_error(SYNTAX_ERROR, path, f"SyntaxError: {type(error).__name__}: {error}")


def _analyse(text: str, path: str, rules: Sequence[type[Rule]], options: Options, *,
             reduce: bool = True, force_reduce: bool = False):
    """(module, context, source text the module came from), or a syntax-error Finding."""
    if reduce:
        reduced = reduce_source(text, lambda region: any(r.may_match(region) for r in rules),
                                force=force_reduce)
        if reduced is not None:
            try:
                module = cst.parse_module(reduced)
                return module, _run_rules(module, path, rules, options, partial=True), reduced
            except (FullModuleRequired, cst.ParserSyntaxError):
                pass  # parse the whole file below
    try:
        module = cst.parse_module(text)
    except (cst.ParserSyntaxError, RecursionError, ValueError) as error:
        return _syntax_error(path, error)
    return module, _run_rules(module, path, rules, options, partial=False), text


def active_rules(text: str, rules: Sequence[type[Rule]]) -> list[type[Rule]]:
    return [rule for rule in rules if rule.may_match(text)]


def lint_text(text: str, path: str, rules: Sequence[type[Rule]], options: Options = {}, *,
              reduce: bool = True, force_reduce: bool = False) -> list[Finding]:
    rules = active_rules(text, rules)
    if not rules:
        return []
    analysed = _analyse(text, path, rules, options, reduce=reduce, force_reduce=force_reduce)
    if isinstance(analysed, Finding):
        return [analysed]
    module, ctx, source = analysed
    return [finding for finding, _ in _findings(module, ctx, source, path)]


def _findings(module: cst.Module, ctx: FileContext, source: str, path: str) -> list[tuple[Finding, Report]]:
    """Each unsuppressed report as a Finding, beside the report it came from."""
    if not ctx.reports:
        return []
    positions = MetadataWrapper(module, unsafe_skip_copy=True).resolve(PositionProvider)
    noqa = NoqaMap(source)
    findings = []
    for report in ctx.reports:
        span = positions[report.node]
        rows = [span.start.line]
        if report.statement is not None:
            stmt = positions[report.statement]
            rows.append(stmt.start.line)
            if isinstance(report.statement, cst.SimpleStatementLine):
                rows.append(stmt.end.line)
        if noqa.suppresses(report.rule.code, rows):
            continue
        findings.append((Finding(
            code=report.rule.code, message=report.message, filename=path,
            location=Location(span.start.line, span.start.column + 1),
            end_location=Location(span.end.line, span.end.column + 1),
            fix=_fix_of(module, source, report), rule_name=report.rule.name,
            noqa_rows=tuple(sorted(set(rows)))), report))
    return findings


def _fix_of(module: cst.Module, source: str, report: Report) -> Optional[Fix]:
    plan = report.fix
    if plan is None:
        return None
    try:
        after = apply_plans(module, [plan]).code
        _assert_parses(after)
    except Exception:  # a rewrite we cannot apply is reported without a fix, never applied
        return None
    edits = diff_edits(source, after)
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


def _is_import_line(stmt: cst.CSTNode) -> bool:
    return isinstance(stmt, cst.SimpleStatementLine) and all(
        isinstance(s, (cst.Import, cst.ImportFrom)) for s in stmt.body)


def _is_docstring(stmt: cst.CSTNode) -> bool:
    return (isinstance(stmt, cst.SimpleStatementLine) and len(stmt.body) == 1
            and isinstance(stmt.body[0], cst.Expr)
            and isinstance(stmt.body[0].value, (cst.SimpleString, cst.ConcatenatedString)))


def _add_imports(module: cst.Module, lines: Sequence[str]) -> cst.Module:
    present = {module.code_for_node(s).strip() for s in module.body if _is_import_line(s)}
    new = [cst.parse_statement(line + "\n") for line in lines if line not in present]
    if not new:
        return module
    body = list(module.body)
    index = 0
    # After the leading docstring and import block, so that the import runs before any module code.
    for i, stmt in enumerate(body):
        if _is_import_line(stmt) or (i == 0 and _is_docstring(stmt)):
            index = i + 1
        else:
            break
    return module.with_changes(body=[*body[:index], *new, *body[index:]])


def apply_plans(module: cst.Module, plans: Sequence[FixPlan]) -> cst.Module:
    changes: dict = {}
    imports: list[str] = []
    for plan in plans:
        for key, value in plan.changes.items():
            changes.setdefault(key, value)
        imports.extend(plan.imports)
    updated = module.visit(_Apply(changes))
    return _add_imports(updated, list(dict.fromkeys(imports)))


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


def fix_text(text: str, path: str, rules: Sequence[type[Rule]], options: Options = {}, *,
             unsafe: bool = False) -> FixOutcome:
    """Apply fixes, re-parse, repeat until nothing changes (at most MAX_FIX_ROUNDS rounds)."""
    rules_here = active_rules(text, rules)
    original_count = None
    current = text
    for _ in range(MAX_FIX_ROUNDS):
        analysed = _analyse(current, path, rules_here, options, reduce=False)
        if isinstance(analysed, Finding):
            return FixOutcome(current, 0, [analysed])
        module, ctx, _ = analysed
        findings = _findings(module, ctx, current, path)
        if original_count is None:
            original_count = len(findings)
        plans = [report.fix for finding, report in findings if finding.fixable(unsafe)]
        if not plans:
            break
        after = apply_plans(module, plans).code
        if after == current:
            break
        _assert_parses(after)
        current = after
        rules_here = active_rules(current, rules)
    remaining = lint_text(current, path, rules, options, reduce=False)
    return FixOutcome(current, max(0, (original_count or 0) - len(remaining)), remaining)


def with_filename(findings: Sequence[Finding], filename: str) -> list[Finding]:
    return [replace(f, filename=filename) for f in findings]
