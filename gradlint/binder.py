"""What each scope binds: the facts that name resolution (`names`) asks about.

A *binding* is one place where a scope gives a name a value: an import (with the dotted name it
imports), anything else (an assignment, a parameter, a loop or `with` target, a `def`, a `class`, a
walrus, a match capture), or a `del`. Python decides which scope a name belongs to from the whole scope
(a name assigned anywhere in a function is local throughout it), so a scope's bindings are collected
once, for the whole scope, and ordered so that "what is bound *here*" can be asked too.

Two binders, because the module scope must be seen whole while LibCST may have parsed only part of the
file (`regions`): the module's bindings come from Python's own `ast` of the whole file (rows order
them), every other scope's (a function, lambda, comprehension or class body, which a region always holds
whole) from its LibCST node (statement order). Without an `ast` (syntax newer than this Python) the
LibCST binder reads the module too: LibCST then parsed the whole file.

Not followed: names bound by `exec`, by `globals()[...] = ...`, or by a star import inside a function.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Optional

import libcst as cst

from .walk import child_fields

IMPORT, OTHER, DELETE = "import", "other", "delete"
FROM_START = -1  # order of parameters and comprehension targets: bound before any statement runs
LATE = 1 << 30  # order of a module name rebound through `global` in some function: at an unknown time

_GLOBAL = re.compile(r"^[ \t]*global[ \t]+\w", re.MULTILINE)  # a `global` statement, not the word


class Binding(NamedTuple):  # a tuple: files bind thousands of names, and this is made for each
    kind: str  # IMPORT, OTHER or DELETE
    target: Optional[str] = None  # for IMPORT: the qualified name bound (`torch.nn.functional`)
    order: int = FROM_START  # takes effect for uses ordered after this (rows or statement numbers)
    runtime: bool = True  # False under `if TYPE_CHECKING:`: never bound when the code runs
    fallback: bool = False  # in an `except` handler of a `try` that imports the same name


@dataclass
class Bindings:
    names: dict = field(default_factory=dict)  # name -> [Binding], in source order
    star_modules: list = field(default_factory=list)  # `from X import *` at this scope
    globals: set = field(default_factory=set)  # `global x` / `nonlocal x`: the name lives elsewhere
    nonlocals: set = field(default_factory=set)
    statement_order: dict = field(default_factory=dict)  # id(statement) -> order (LibCST scopes)

    def add(self, name: str, binding: Binding) -> None:
        self.names.setdefault(name, []).append(binding)


# -- import statements, in both trees ------------------------------------------------------------------

def _import_targets_ast(node) -> Iterable[tuple[str, Optional[str]]]:
    """(local name, qualified target) for each name an `ast` import binds; target None for a star."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname:
                yield alias.asname, alias.name
            else:
                top = alias.name.split(".", 1)[0]  # `import torch.optim` binds `torch`
                yield top, top
        return
    base = node.module if not node.level else None
    for alias in node.names:
        if alias.name == "*":
            if base:
                yield "*", base
            continue
        # A relative import binds a name we cannot qualify; it still shadows.
        yield alias.asname or alias.name, f"{base}.{alias.name}" if base else f".{alias.name}"


def dotted(expr) -> Optional[str]:
    """`a.b.c` for a LibCST Name/Attribute chain, else None."""
    parts = []
    while isinstance(expr, cst.Attribute):
        parts.append(expr.attr.value)
        expr = expr.value
    if not isinstance(expr, cst.Name):
        return None
    parts.append(expr.value)
    return ".".join(reversed(parts))


def _import_targets_cst(node) -> Iterable[tuple[str, Optional[str]]]:
    if isinstance(node, cst.Import):
        for alias in node.names:
            full = dotted(alias.name)
            if full is None:
                continue
            if alias.asname is not None and isinstance(alias.asname.name, cst.Name):
                yield alias.asname.name.value, full
            else:
                top = full.split(".", 1)[0]
                yield top, top
        return
    base = dotted(node.module) if node.module is not None and not node.relative else None
    if isinstance(node.names, cst.ImportStar):
        if base:
            yield "*", base
        return
    for alias in node.names:
        if not isinstance(alias.name, cst.Name):
            continue
        name = alias.name.value
        local = alias.asname.name.value if alias.asname is not None and isinstance(
            alias.asname.name, cst.Name) else name
        yield local, f"{base}.{name}" if base else f".{name}"


def _is_type_checking(test) -> bool:
    """`if TYPE_CHECKING:` / `if typing.TYPE_CHECKING:` in either tree."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    if isinstance(test, ast.Attribute):
        return test.attr == "TYPE_CHECKING"
    if isinstance(test, cst.Name):
        return test.value == "TYPE_CHECKING"
    return isinstance(test, cst.Attribute) and test.attr.value == "TYPE_CHECKING"


# -- the module, from `ast` ---------------------------------------------------------------------------

class _ModuleBinder:
    """Module-level bindings of a whole file, from its `ast` (function and class bodies are their own)."""

    def __init__(self, text: str) -> None:
        self.out = Bindings()
        self._walrus_rows = _walrus_rows(text)  # only statements spanning one are searched for a walrus

    def block(self, body: list, runtime: bool = True, fallback: frozenset = frozenset()) -> None:
        for stmt in body:
            self.statement(stmt, runtime, fallback)

    def bind(self, name: str, order: int, runtime: bool, fallback: frozenset, kind: str = OTHER,
             target: Optional[str] = None) -> None:
        self.out.add(name, Binding(kind, target, order, runtime, name in fallback and kind != IMPORT))

    def targets(self, node, order: int, runtime: bool, fallback: frozenset, kind: str = OTHER) -> None:
        if isinstance(node, ast.Name):
            self.bind(node.id, order, runtime, fallback, kind)
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                self.targets(element, order, runtime, fallback, kind)
        elif isinstance(node, ast.Starred):
            self.targets(node.value, order, runtime, fallback, kind)

    def statement(self, stmt, runtime: bool, fallback: frozenset) -> None:
        end = stmt.end_lineno or stmt.lineno
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for local, target in _import_targets_ast(stmt):
                if local == "*":
                    self.out.star_modules.append(target)
                else:
                    self.bind(local, end, runtime, fallback, IMPORT, target)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.bind(stmt.name, end, runtime, fallback)
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                self.targets(target, end, runtime, fallback)
        elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign)):
            if not isinstance(stmt, ast.AnnAssign) or stmt.value is not None:
                self.targets(stmt.target, end, runtime, fallback)
        elif isinstance(stmt, ast.Delete):
            for target in stmt.targets:
                self.targets(target, end, runtime, fallback, DELETE)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            self.targets(stmt.target, stmt.iter.end_lineno or end, runtime, fallback)
            self.block(stmt.body, runtime, fallback)
            self.block(stmt.orelse, runtime, fallback)
        elif isinstance(stmt, ast.While):
            self.block(stmt.body, runtime, fallback)
            self.block(stmt.orelse, runtime, fallback)
        elif isinstance(stmt, ast.If):
            self.block(stmt.body, runtime and not _is_type_checking(stmt.test), fallback)
            self.block(stmt.orelse, runtime, fallback)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                if item.optional_vars is not None:
                    self.targets(item.optional_vars, item.context_expr.end_lineno or end, runtime, fallback)
            self.block(stmt.body, runtime, fallback)
        elif isinstance(stmt, (ast.Try, getattr(ast, "TryStar", ast.Try))):
            self.block(stmt.body, runtime, fallback)
            imported = frozenset(name for s in stmt.body if isinstance(s, (ast.Import, ast.ImportFrom))
                                 for name, _ in _import_targets_ast(s))
            for handler in stmt.handlers:
                if handler.name:
                    self.bind(handler.name, handler.lineno, runtime, fallback)
                self.block(handler.body, runtime, fallback | imported)
            self.block(stmt.orelse, runtime, fallback)
            self.block(stmt.finalbody, runtime, fallback)
        elif isinstance(stmt, getattr(ast, "Match", ())):
            for case in stmt.cases:
                for node in ast.walk(case.pattern):
                    for name in (getattr(node, "name", None), getattr(node, "rest", None)):
                        if isinstance(name, str):
                            self.bind(name, case.pattern.end_lineno or end, runtime, fallback)
                self.block(case.body, runtime, fallback)
        if self._walrus_rows and not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and any(stmt.lineno <= row <= end for row in self._walrus_rows):
            for node in _module_expressions(stmt):
                if isinstance(node, ast.NamedExpr) and isinstance(node.target, ast.Name):
                    self.bind(node.target.id, end, runtime, fallback)


def _module_expressions(stmt):
    """The expression nodes of a statement's own line(s), not those of nested statements or scopes."""
    stack = [value for name, value in ast.iter_fields(stmt)
             if name not in ("body", "orelse", "finalbody", "handlers", "cases")]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, ast.AST) and not isinstance(value, (ast.stmt, ast.Lambda)):
            yield value
            stack.extend(v for _, v in ast.iter_fields(value))


def module_bindings(tree: ast.Module, text: str) -> Bindings:
    binder = _ModuleBinder(text)
    binder.block(tree.body)
    if "global" in text and _GLOBAL.search(text):  # `global torch` in a function may rebind it any time
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                for name in node.names:
                    binder.out.add(name, Binding(OTHER, order=LATE))
    return binder.out


# -- every other scope, from LibCST -------------------------------------------------------------------

class _ScopeBinder:
    """Bindings of one LibCST scope, numbering its statements in source order (nested scopes skipped)."""

    def __init__(self, walrus: bool) -> None:
        self.out = Bindings()
        self._walrus = walrus
        self._next = 0

    def bind(self, name: str, order: int, runtime: bool = True, fallback: frozenset = frozenset(),
             kind: str = OTHER, target: Optional[str] = None) -> None:
        self.out.add(name, Binding(kind, target, order, runtime, name in fallback and kind != IMPORT))

    def targets(self, node, order: int, runtime: bool = True, fallback: frozenset = frozenset(),
                kind: str = OTHER) -> None:
        if isinstance(node, cst.Name):
            self.bind(node.value, order, runtime, fallback, kind)
        elif isinstance(node, (cst.Tuple, cst.List)):
            for element in node.elements:
                self.targets(element.value, order, runtime, fallback, kind)
        elif isinstance(node, (cst.StarredElement, cst.Element)):
            self.targets(node.value, order, runtime, fallback, kind)

    def params(self, params: cst.Parameters) -> None:
        for group in (params.posonly_params, params.params, params.kwonly_params):
            for param in group:
                self.bind(param.name.value, FROM_START)
        for param in (params.star_arg, params.star_kwarg):
            if isinstance(param, cst.Param):
                self.bind(param.name.value, FROM_START)

    def block(self, body, runtime: bool = True, fallback: frozenset = frozenset()) -> None:
        statements = body.body if isinstance(body, (cst.IndentedBlock, cst.SimpleStatementSuite)) else body
        for stmt in statements:
            self.statement(stmt, runtime, fallback)

    def statement(self, stmt, runtime: bool, fallback: frozenset) -> None:
        order = self._next
        self._next += 1
        self.out.statement_order[id(stmt)] = order
        if isinstance(stmt, cst.SimpleStatementLine):
            for small in stmt.body:
                self.small(small, order, runtime, fallback)
        elif isinstance(stmt, (cst.BaseSmallStatement,)):  # in a one-line suite: `if x: y = 1`
            self.small(stmt, order, runtime, fallback)
        elif isinstance(stmt, (cst.FunctionDef, cst.ClassDef)):
            self.bind(stmt.name.value, order, runtime, fallback)
            return  # its body is its own scope
        elif isinstance(stmt, cst.For):
            self.targets(stmt.target, order, runtime, fallback)
            self.block(stmt.body, runtime, fallback)
            if stmt.orelse is not None:
                self.block(stmt.orelse.body, runtime, fallback)
        elif isinstance(stmt, cst.While):
            self.block(stmt.body, runtime, fallback)
            if stmt.orelse is not None:
                self.block(stmt.orelse.body, runtime, fallback)
        elif isinstance(stmt, cst.If):
            self.block(stmt.body, runtime and not _is_type_checking(stmt.test), fallback)
            if isinstance(stmt.orelse, cst.If):
                self.statement(stmt.orelse, runtime, fallback)
            elif stmt.orelse is not None:
                self.block(stmt.orelse.body, runtime, fallback)
        elif isinstance(stmt, cst.With):
            for item in stmt.items:
                if item.asname is not None:
                    self.targets(item.asname.name, order, runtime, fallback)
            self.block(stmt.body, runtime, fallback)
        elif isinstance(stmt, (cst.Try, cst.TryStar)):
            self.block(stmt.body, runtime, fallback)
            imported = frozenset(name for s in stmt.body.body if isinstance(s, cst.SimpleStatementLine)
                                 for small in s.body if isinstance(small, (cst.Import, cst.ImportFrom))
                                 for name, _ in _import_targets_cst(small))
            for handler in stmt.handlers:
                if handler.name is not None:
                    self.targets(handler.name.name, order, runtime, fallback)
                self.block(handler.body, runtime, fallback | imported)
            for extra in (stmt.orelse, stmt.finalbody):
                if extra is not None:
                    self.block(extra.body, runtime, fallback)
        elif isinstance(stmt, cst.Match):
            for case in stmt.cases:
                for node in _subtree(case.pattern):
                    name = getattr(node, "name", None) if isinstance(node, (cst.MatchAs, cst.MatchStar)) \
                        else getattr(node, "rest", None) if isinstance(node, cst.MatchMapping) else None
                    if isinstance(name, cst.Name):
                        self.bind(name.value, order, runtime, fallback)
                self.block(case.body, runtime, fallback)
        if self._walrus and not isinstance(stmt, cst.SimpleStatementLine):
            self.walrus_in(_header_of(stmt), order, runtime, fallback)

    def small(self, small, order: int, runtime: bool, fallback: frozenset) -> None:
        if isinstance(small, (cst.Import, cst.ImportFrom)):
            for local, target in _import_targets_cst(small):
                if local == "*":
                    self.out.star_modules.append(target)
                else:
                    self.bind(local, order, runtime, fallback, IMPORT, target)
        elif isinstance(small, cst.Assign):
            for target in small.targets:
                self.targets(target.target, order, runtime, fallback)
        elif isinstance(small, cst.AugAssign):
            self.targets(small.target, order, runtime, fallback)
        elif isinstance(small, cst.AnnAssign):
            if small.value is not None:
                self.targets(small.target, order, runtime, fallback)
        elif isinstance(small, cst.Del):
            self.targets(small.target, order, runtime, fallback, DELETE)
        elif isinstance(small, cst.Global):
            self.out.globals.update(item.name.value for item in small.names)
        elif isinstance(small, cst.Nonlocal):
            self.out.nonlocals.update(item.name.value for item in small.names)
        if self._walrus:
            self.walrus_in([small], order, runtime, fallback)

    def walrus_in(self, nodes, order: int, runtime: bool, fallback: frozenset) -> None:
        """`(n := x.norm())` binds n in the enclosing function, even inside a comprehension."""
        for node in nodes:
            for inner in _subtree(node, skip=(cst.Lambda, cst.FunctionDef, cst.ClassDef)):
                if isinstance(inner, cst.NamedExpr):
                    self.targets(inner.target, order, runtime, fallback)


def _header_of(stmt) -> list:
    """The expressions a compound statement evaluates itself (its test, iterable, items)."""
    out = []
    for name in ("test", "iter", "items", "subject"):
        value = getattr(stmt, name, None)
        if isinstance(value, (list, tuple)):
            out.extend(value)
        elif value is not None:
            out.append(value)
    return out


def _subtree(node, skip: tuple = ()):
    stack = [node]
    while stack:
        item = stack.pop()
        yield item
        for name in child_fields(type(item)):
            value = getattr(item, name)
            if isinstance(value, cst.CSTNode):
                if not isinstance(value, skip):
                    stack.append(value)
            elif isinstance(value, (list, tuple)):
                stack.extend(c for c in value if isinstance(c, cst.CSTNode) and not isinstance(c, skip))


def scope_bindings(node, walrus: bool) -> Bindings:
    """The bindings of the scope `node` opens: a FunctionDef, Lambda, ClassDef, comprehension or Module."""
    binder = _ScopeBinder(walrus)
    if isinstance(node, cst.FunctionDef):
        binder.params(node.params)
        binder.block(node.body)
    elif isinstance(node, cst.Lambda):
        binder.params(node.params)
        if walrus:
            binder.walrus_in([node.body], FROM_START, True, frozenset())
    elif isinstance(node, (cst.ClassDef, cst.Module)):
        binder.block(node.body)
    else:  # a comprehension: its `for` targets
        comp = node.for_in
        while comp is not None:
            binder.targets(comp.target, FROM_START)
            comp = comp.inner_for_in
    return binder.out


_DEF = re.compile(r"[ \t]*(?:async[ \t]+)?def[ \t]+(\w+)")


def walrus_functions(text: str) -> set:
    """Names of the functions whose rows hold a `:=`: the only ones whose scope a walrus may bind a name
    in. For each such row, the nearest `def` above it that is indented less (a `:=` in a docstring or a
    comment only costs a search of that function)."""
    if ":=" not in text:
        return set()
    lines = text.split("\n")
    found = set()
    for row in _walrus_rows(text):
        line = lines[row - 1]
        indent = len(line) - len(line.lstrip())
        for above in range(row - 2, -1, -1):
            match = _DEF.match(lines[above])
            if match and len(lines[above]) - len(lines[above].lstrip()) < indent:
                found.add(match.group(1))
                break
    return found


def _walrus_rows(text: str) -> list[int]:
    """The 1-based rows that hold `:=`."""
    rows, start = [], text.find(":=")
    while start != -1:
        rows.append(text.count("\n", 0, start) + 1)
        start = text.find(":=", start + 2)
    return rows
