"""Parse only what can hold a finding.

A file that passes the text prefilter usually passes it because of one function among dozens. LibCST's
parse costs about ten times Python's own (stdlib ``ast``), so we let ``ast`` find the exact line spans of
the file's *regions* and keep only the regions whose text matches a rule's triggers, plus every import,
the header comments and the docstring. Each run of dropped lines becomes one empty line, and
``Reduction.rows`` maps every row of the reduced text back to its row in the file: kept lines are
byte-for-byte the file's, so columns, ``# noqa`` comments and edits carry over once rows are mapped.

Regions: each top-level function; each function in a top-level class; all other module-level statements
together (a script's flow runs through them); all other statements of a class together. A region is
matched together with the file's import statements, so that `from torch.linalg import norm as n` lets
the triggers see what `n(x)` calls. A rule with `callee_triggers` (GL001: `x / helper(x)`) also matches a
region that meets its first groups and calls (by name, in the text) a top-level function that meets the
others: the rule then decides from what the name is bound to. Triggers are searched once in the whole text; a region matches a
rule when each of the rule's trigger groups matches on one of its rows (or the imports' rows).

A rule none of whose regions match (its trigger groups matching in different routines, say) is not run on
the file, and a file where no rule has a matching region is not parsed at all: by the triggers' contract
nothing can be reported there.

A rule whose verdict depends on code outside the region of its finding (every call site of a helper,
say) asks for the full module, and the engine parses it again (``Rule.require_full_module``).
"""

from __future__ import annotations

import ast
import re
import warnings
from bisect import bisect_left
from dataclasses import dataclass
from typing import Optional, Sequence

from .triggers import scan

_ODD_NEWLINES = re.compile(r"\r(?!\n)|[\x0c\x0b\x1c\x1d\x1e\x85\u2028\u2029]")
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
# Above this share of kept lines, a second, smaller parse is not worth the ast parse it costs.
WORTH_IT = 0.6


def _span(node: ast.stmt) -> tuple[int, int]:
    start = node.lineno
    for deco in getattr(node, "decorator_list", ()):
        start = min(start, deco.lineno)
    return start, node.end_lineno or node.lineno


def _imports(node: ast.stmt) -> bool:
    """Whether `node` binds module-level names by import (`try: import apex`, `if TYPE_CHECKING: ...`).

    Walks statement bodies only: an expression holds no import, a function's imports are its own."""
    stack = [node]
    while stack:
        stmt = stack.pop()
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            return True
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            value = getattr(stmt, field, None)
            if isinstance(value, list):
                stack.extend(value)
    return False


@dataclass(frozen=True)
class Reduction:
    text: Optional[str]  # None: parse the whole file (when `rules` is not empty)
    rows: list  # rows[i] is the file's row of reduced row i + 1; 0 for a separator standing for dropped lines
    rules: tuple = ()  # the rules with a region to look at: no other can report anything in the file
    spans: tuple = ()  # `region_reductions`: the region's own rows, as (first, last) pairs

    def covers(self, row: int) -> bool:
        return any(first <= row <= last for first, last in self.spans)

    def reduced_row(self, row: int) -> Optional[int]:
        """The reduced row showing the file's `row`, or None if it was dropped."""
        return self._inverse.get(row)

    @property
    def _inverse(self) -> dict:
        inverse = self.__dict__.get("_inverse_cache")
        if inverse is None:
            inverse = {orig: i + 1 for i, orig in enumerate(self.rows) if orig}
            object.__setattr__(self, "_inverse_cache", inverse)
        return inverse


class _Relevance:
    """Which rows each trigger group of each rule matches on, to answer 'can this region hold a finding?'"""

    def __init__(self, text: str, rules: Sequence, line_starts: list[int], import_spans, tree,
                 functions: Sequence[ast.stmt] = ()) -> None:
        self.matched: set = set()  # indices of the rules that some region matched
        self._filters = [rule.region_filter for rule in rules]
        self._tree = tree
        self._text = text
        self._rules = []
        found = scan(text)
        for rule in rules:
            groups = []
            for group in rule.compiled_triggers():
                offsets = sorted({m.start() for p in group if found.search(p) for m in p.finditer(text)})
                rows = sorted({bisect_left(line_starts, o + 1) for o in offsets})  # 1-based row
                groups.append((rows, self._hits(rows, import_spans)))
            callee = rule.callee_triggers
            calls: list = []  # rows that call a module-level function meeting the groups from `callee` on
            if callee:
                names = [f.name for f in functions
                         if all(in_imports or self._hits(rows, [_span(f)]) for rows, in_imports in groups[callee:])]
                if names:
                    pattern = re.compile(r"(?<![\w.])(?:%s)\s*\(" % "|".join(map(re.escape, names)))
                    calls = sorted({bisect_left(line_starts, m.start() + 1) for m in pattern.finditer(text)})
            self._rules.append((groups, callee, calls))

    @staticmethod
    def _hits(rows: list[int], spans) -> bool:
        for start, end in spans:
            i = bisect_left(rows, start)
            if i < len(rows) and rows[i] <= end:
                return True
        return False

    def __call__(self, spans, nodes) -> bool:
        """Whether a rule's triggers match the region at `spans`, and its `region_filter` its `nodes`."""
        found = False
        for index, (groups, callee, calls) in enumerate(self._rules):
            if index in self.matched and found:
                continue
            hit = [in_imports or self._hits(rows, spans) for rows, in_imports in groups]
            if not all(hit) and not (calls and all(hit[:callee]) and self._hits(calls, spans)):
                continue
            if not self._filters[index](nodes, self._tree, self._text):
                continue
            self.matched.add(index)
            found = True
        return found


@dataclass
class _Plan:
    """What to keep of a file: `always` (imports, header comments, docstring) and each relevant region's
    spans (a region inside a class brings the class's header along)."""

    lines: list
    always: list
    regions: list  # [[(start, end), ...], ...]: rows, 1-based, inclusive
    matched: tuple = ()  # the rules some region matched (no other can report anything in the file)

    def reduction(self, spans, own: tuple = ()) -> Reduction:
        """The lines in `spans`; each run of other lines becomes one empty line (row 0)."""
        out, rows = [], []
        cursor = 1  # the first row not yet placed
        for first, last in _merged(spans, len(self.lines)):
            if first > cursor:
                out.append("")
                rows.append(0)
            out.extend(self.lines[first - 1:last])
            rows.extend(range(first, last + 1))
            cursor = last + 1
        if cursor <= len(self.lines):
            out.append("")
            rows.append(0)
        return Reduction("\n".join(out), rows, self.matched, own)

    def kept_rows(self, spans) -> int:
        return len({row for s, e in spans for row in range(s, e + 1)})


def _merged(spans, count: int) -> list:
    """Sorted, non-overlapping (first, last) row ranges covering `spans`, within rows 1 to `count`."""
    merged: list = []
    for first, last in sorted((max(1, s), min(count, e)) for s, e in spans):
        if first > last:
            continue
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return merged


def _plan(text: str, rules: Sequence, tree: Optional[ast.Module]) -> Optional[_Plan]:
    if _ODD_NEWLINES.search(text):
        return None  # ast and LibCST could number lines differently; parse it all
    if tree is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None  # let LibCST report the error (or parse syntax newer than this Python)
    lines = text.split("\n")
    line_starts = [0]
    for line in lines[:-1]:
        line_starts.append(line_starts[-1] + len(line) + 1)
    import_spans = [_span(s) for s in tree.body if _imports(s)]
    relevant = _Relevance(text, rules, line_starts, import_spans, tree,
                          [s for s in tree.body if isinstance(s, _FUNCTIONS)])
    always: list = []
    regions: list = []

    def keep_block(body: list, loose_spans_out: list, header: list) -> bool:
        """Collect the relevant functions of `body` as regions; its other statements as one region.

        A statement's span reaches up to the end of the one before it: the blank lines and comments in
        between stay with it, so fixes that insert above a statement see the same lines either way."""
        kept = False
        previous_end = None
        for stmt in body:
            start, end = _span(stmt)
            span = (previous_end + 1 if previous_end is not None else start, end)
            previous_end = end
            if isinstance(stmt, _FUNCTIONS):
                if relevant([span], [stmt]):
                    regions.append([*header, span])
                    kept = True
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                always.extend([*header, span])
                kept = True
            elif not isinstance(stmt, ast.ClassDef):
                loose_spans_out.append((span, stmt))
                if _imports(stmt):
                    always.extend([*header, span])
                    kept = True
        return kept

    module_loose: list = []
    keep_block(tree.body, module_loose, [])
    for stmt in tree.body:
        if not isinstance(stmt, ast.ClassDef) or not stmt.body:
            continue
        start, _ = _span(stmt)
        body_start = _span(stmt.body[0])[0]
        if body_start == stmt.lineno:  # `class X: ...` on one line
            span = _span(stmt)
            is_relevant = relevant([span], [stmt])  # asked first: it records which rules matched
            if _imports(stmt):
                always.append(span)
            elif is_relevant:
                regions.append([span])
            continue
        header = [(start, body_start - 1)]  # decorators and the `class X(Base):` header
        class_loose: list = []
        keep_block(stmt.body, class_loose, header)
        if class_loose and relevant([s for s, _ in class_loose], [n for _, n in class_loose]):
            regions.append([*header, *(s for s, _ in class_loose)])
        nested = [s for s in stmt.body if isinstance(s, ast.ClassDef)]
        if nested and relevant([_span(s) for s in nested], nested):
            regions.append([*header, *(_span(s) for s in nested)])
    if module_loose and relevant([s for s, _ in module_loose], [n for _, n in module_loose]):
        regions.append([s for s, _ in module_loose])
    if tree.body:  # header comments, and the docstring: where fixes add imports
        first = tree.body[0]
        is_docstring = (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                        and isinstance(first.value.value, str))
        always.append((1, _span(first)[1] if is_docstring else _span(first)[0] - 1))
    matched = tuple(rule for index, rule in enumerate(rules) if index in relevant.matched)
    return _Plan(lines, always, regions, matched)


def reduce_source(text: str, rules: Sequence, *, tree: Optional[ast.Module] = None,
                  force: bool = False) -> Optional[Reduction]:
    """The text with irrelevant regions blanked (`text` None when blanking is not worth it), and the rules
    that have a region to look at; None when reducing is unsafe.

    `tree` is `ast.parse(text)` when the caller has it already."""
    plan = _plan(text, rules, tree)
    if plan is None:
        return None
    spans = [*plan.always, *(span for region in plan.regions for span in region)]
    if not plan.matched or (not force and plan.kept_rows(spans) >= WORTH_IT * len(plan.lines)):
        return Reduction(None, [], plan.matched)  # nothing to parse, or the whole file
    return plan.reduction(spans)


def region_reductions(text: str, rules: Sequence, *, tree: Optional[ast.Module] = None) -> Optional[list]:
    """One reduction per relevant region (each with the imports, header and docstring), for a caller that
    keeps each region's results while the others change (the language server); None as `reduce_source`.

    A rule that needs more than its region asks for the full module, as it does in `reduce_source`'s
    reduction (see `Rule.require_full_module`)."""
    plan = _plan(text, rules, tree)
    if plan is None:
        return None
    return [plan.reduction([*plan.always, *region], tuple(region)) for region in plan.regions]
