"""Linting the same document again and again (an editor's buffer), paying only for what changed.

`WarmLinter.lint` gives the findings `engine.lint_text` gives, but it keeps each region's results: the
file is split into the regions a rule could match (`regions.region_reductions`: each relevant function,
or the module's loose statements, with the imports, header and docstring), and a region whose reduced
text and row numbers are the same as last time is not parsed again. After a one-line edit, LibCST parses
the edited region alone; Python's own parser still reads the whole file (the syntax check).

Some verdicts need the whole module (`Rule.require_full_module`: where an optimizer was built, who calls
a routine); a region that asks for it is remembered as such, and the whole text is linted, as
`lint_text` would. That costs a full parse, so `lint_quick` does not pay it on every keystroke: for those
regions it gives the findings of the last whole-module lint of the document, moved to follow the lines
inserted or removed since (and dropped on the edited lines), and says that the result is not exact; the
caller runs `lint` once the user pauses (the language server does, and publishes again).

A region's findings may also depend on code outside it: what module-level statements bind (imports,
assignments that shadow them, classes and their bases) and the body of a module-level function the region
calls (GL001 follows a helper that returns a norm). A region's results are therefore kept under its own
text *and* the file's outline (every line outside a function body) and the text of the top-level functions
it calls by name: an edit inside one function body re-lints that region and its callers only.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Hashable, Optional, Sequence

import libcst as cst

from .context import FullModuleRequired
from .diagnostics import Finding, Location
from .engine import (
    NO_OPTIONS,
    Edits,
    Options,
    active_rules,
    imports_end_row,
    lint_reduction,
    lint_text,
)
from .noqa import NoqaDirectives
from .regions import region_reductions
from .rule import Rule
from .syntax import python_syntax

MAX_ENTRIES = 4096  # regions kept, over every document of the linter (a few MB at most)
MAX_DOCUMENTS = 64  # documents whose syntax tree is kept for the next edit
_WHOLE = "needs the whole module"


@dataclass
class _Whole:
    """The last whole-module lint of a document: its lines and findings."""

    lines: list
    findings: list


class _Syntax:
    """`ast.parse` of one document, again after an edit: only the top-level statements the edit touched
    are parsed (with as many blank lines before them as the file has, so their rows are the file's), and
    spliced between the untouched ones, which move by the rows the edit added. A chunk that does not parse
    alone, or an edit between two statements on one row, parses the whole text: it says where the error is.
    """

    def __init__(self) -> None:
        self._lines: Optional[list] = None
        self._tree: Optional[ast.Module] = None

    def parse(self, text: str, path: str, units: Sequence[int] = ()):
        lines = text.splitlines(keepends=True)
        tree = self._splice(lines) if self._tree is not None else None
        if tree is None:
            tree = python_syntax(text, path, units)
        self._lines, self._tree = (lines, tree) if isinstance(tree, ast.Module) else (None, None)
        return tree

    def _splice(self, lines: list) -> Optional[ast.Module]:
        old, body = self._lines, self._tree.body
        if lines == old:
            return self._tree
        head, tail = _same_ends(old, lines)
        first_changed, last_changed = head + 1, len(old) - tail  # rows of the old text
        starts = [min([s.lineno, *(d.lineno for d in getattr(s, "decorator_list", ()))]) for s in body]
        ends = [s.end_lineno or s.lineno for s in body]
        i = next((k for k, end in enumerate(ends) if end >= first_changed), len(body))
        j = next((k for k in range(len(body) - 1, -1, -1) if starts[k] <= last_changed), -1)
        j = max(j, i - 1)
        chunk_first = ends[i - 1] + 1 if i > 0 else 1
        chunk_last = starts[j + 1] - 1 if j + 1 < len(body) else len(old)
        if (i > 0 and i < len(body) and starts[i] <= ends[i - 1]) or \
                (j + 1 < len(body) and j >= 0 and starts[j + 1] <= ends[j]):
            return None  # statements sharing a row (`a = 1; b = 2`)
        delta = len(lines) - len(old)
        chunk = "\n" * (chunk_first - 1) + "".join(lines[chunk_first - 1:chunk_last + delta])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                parsed = ast.parse(chunk)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        after = body[j + 1:]
        if delta:
            for stmt in after:
                ast.increment_lineno(stmt, delta)
        return ast.Module(body=[*body[:i], *parsed.body, *after], type_ignores=[])


class WarmLinter:
    def __init__(self, rules: Sequence[type[Rule]], options: Options = NO_OPTIONS) -> None:
        self.rules = tuple(rules)
        self.options = options
        self._results: OrderedDict = OrderedDict()
        self._last_whole: dict[str, _Whole] = {}
        self._syntax: OrderedDict = OrderedDict()  # path -> _Syntax, for the last documents linted

    def lint(self, text: str, path: str, *, edits: Edits = False,
             describe_row: Optional[Callable[[int], str]] = None, describe_key: Hashable = None,
             units: Sequence[int] = ()) -> list[Finding]:
        """`lint_text(text, path, rules, options, edits=edits, describe_row=describe_row, units=units)`, from
        kept regions where it can. `describe_key` changes whenever `describe_row` or `units` would (a
        notebook's cell layout)."""
        return self._lint(text, path, edits, describe_row, describe_key, quick=False, units=units)[0]

    def lint_quick(self, text: str, path: str, *, describe_row: Optional[Callable[[int], str]] = None,
                   describe_key: Hashable = None, units: Sequence[int] = ()) -> tuple[list[Finding], bool]:
        """(findings, exact): as `lint`, without a whole-module parse when an earlier one can stand in."""
        return self._lint(text, path, False, describe_row, describe_key, quick=True, units=units)

    def _lint(self, text, path, edits, describe_row, describe_key, quick, units=()) -> tuple[list[Finding], bool]:
        tree = self._syntax_of(path).parse(text, path, units)
        if isinstance(tree, Finding):
            return [tree], True
        directives = NoqaDirectives(text, path)
        rules = [rule for rule in active_rules(text, self.rules) if not directives.exempts(rule.code)]
        if not rules:
            return [], True
        codes = tuple(rule.code for rule in rules)
        # Odd newlines give no regions; an unused-noqa audit (GL100) needs every region's verdicts at once.
        reductions = region_reductions(text, rules, tree=tree)
        if reductions is None or any(rule.audits_noqa for rule in rules):
            return self._whole(text, path, rules, codes, edits, describe_row, describe_key, units), True
        import_row = imports_end_row(text, tree)
        outline, functions = _outside_bodies(text, tree)
        findings: dict = {}
        needs_whole = []
        for reduction in reductions:
            reduced_import_row = reduction.reduced_row(import_row) if import_row else 0
            if reduced_import_row is None:
                return self._whole(text, path, rules, codes, edits, describe_row, describe_key, units), True
            # A region is small: where edits are asked for, all of its findings get theirs.
            region_edits = edits is True or (edits is not False and _overlaps(reduction, edits))
            key = (reduction.text, tuple(reduction.rows), reduced_import_row, codes, path, region_edits,
                   describe_key, outline, _callees(reduction.text, functions))
            found = self._get(key)
            if found is None:
                try:
                    found = lint_reduction(reduction, text, tree, path, rules, self.options, reduced_import_row,
                                           directives, edits=region_edits, describe_row=describe_row)
                except (FullModuleRequired, cst.ParserSyntaxError):
                    found = _WHOLE
                self._put(key, found)
            if found is _WHOLE:
                needs_whole.append(reduction)
                continue
            for finding in found:  # a finding outside every region (on an import) comes from each: once
                findings.setdefault(_identity(finding), finding)
        if needs_whole:
            last = self._last_whole.get(path)
            if quick and last is not None and last.lines != text.splitlines(keepends=True):
                stale = _moved(last, text.splitlines(keepends=True))
                for finding in stale:
                    if any(r.covers(finding.location.row) for r in needs_whole):
                        findings.setdefault(_identity(finding), finding)
                return sorted(findings.values(), key=Finding.sort_key), False
            return self._whole(text, path, rules, codes, edits, describe_row, describe_key, units), True
        return sorted(findings.values(), key=Finding.sort_key), True

    def _whole(self, text, path, rules, codes, edits, describe_row, describe_key, units=()) -> list[Finding]:
        key = ("whole", text, codes, path, edits, describe_key)
        found = self._get(key)
        if found is None:
            found = sorted(lint_text(text, path, rules, self.options, reduce=False, edits=edits,
                                     describe_row=describe_row, units=units), key=Finding.sort_key)
            self._put(key, found)
        if edits is False:
            self._last_whole[path] = _Whole(text.splitlines(keepends=True), found)
        return list(found)

    def _syntax_of(self, path: str) -> _Syntax:
        syntax = self._syntax.pop(path, None) or _Syntax()
        self._syntax[path] = syntax
        while len(self._syntax) > MAX_DOCUMENTS:
            self._syntax.popitem(last=False)
        return syntax

    def _get(self, key):
        found = self._results.get(key)
        if found is not None:
            self._results.move_to_end(key)
        return found

    def _put(self, key, findings) -> None:
        self._results[key] = findings
        while len(self._results) > MAX_ENTRIES:
            self._results.popitem(last=False)


def _identity(finding: Finding) -> tuple:
    return (finding.code, finding.location, finding.end_location, finding.message)


def _overlaps(reduction, rows: tuple) -> bool:
    return any(first <= rows[1] and rows[0] <= last for first, last in reduction.spans)


def _same_ends(old: list, new: list) -> tuple[int, int]:
    """How many lines the two texts share at their start, and then at their end."""
    head = 0
    while head < min(len(old), len(new)) and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < min(len(old), len(new)) - head and old[-1 - tail] == new[-1 - tail]:
        tail += 1
    return head, tail


def _moved(last: _Whole, lines: list) -> list[Finding]:
    """The findings of `last`, on the rows they have in `lines`; those on changed lines are dropped."""
    old = last.lines
    head, tail = _same_ends(old, lines)
    delta = len(lines) - len(old)

    def row(r: int) -> Optional[int]:
        if r <= head:
            return r
        if r > len(old) - tail:
            return r + delta
        return None

    out = []
    for finding in last.findings:
        start, end = row(finding.location.row), row(finding.end_location.row)
        if start is None or end is None:
            continue
        out.append(replace(finding, location=Location(start, finding.location.column),
                           end_location=Location(end, finding.end_location.column),
                           noqa_rows=tuple(r for r in map(row, finding.noqa_rows) if r is not None)))
    return out


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _outside_bodies(text: str, tree: ast.Module) -> tuple[str, dict]:
    """The file's outline (its lines outside every top-level function's and method's body, which is what
    a region can read of the rest of the file) and the source of each top-level function, by name."""
    lines = text.splitlines(keepends=True)
    hidden = bytearray(len(lines) + 2)
    functions: dict = {}
    for stmt in tree.body:
        defs = [stmt] if isinstance(stmt, _FUNCTIONS) else \
            [s for s in stmt.body if isinstance(s, _FUNCTIONS)] if isinstance(stmt, ast.ClassDef) else []
        for node in defs:
            first, last = node.body[0].lineno, node.end_lineno or node.lineno
            if first > node.lineno:  # a body on its own lines (not `def f(): return x`)
                hidden[first:last + 1] = b"\x01" * (last + 1 - first)
            if node is stmt:
                functions[node.name] = "".join(lines[node.lineno - 1:last])
    outline = "".join(line for row, line in enumerate(lines, start=1) if not hidden[row])
    return outline, functions


_CALLED_NAME = re.compile(r"(?<![\w.])(\w+)\s*\(")


def _callees(region_text: str, functions: dict) -> tuple:
    """The source of each top-level function that `region_text` calls by name (one scan of the region,
    whatever the number of functions: this runs on every keystroke)."""
    called = set(_CALLED_NAME.findall(region_text))
    return tuple(source for name, source in functions.items() if name in called)
