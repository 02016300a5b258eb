"""The whole file's routines and classes, for a rule that walks only part of it.

The engine parses with LibCST only the regions that match a rule's triggers (`regions`). A rule that needs
a fact from elsewhere in the file (what `__init__` assigns to an attribute, what a helper does with its
argument, who calls a routine) gets it here instead of asking for a LibCST parse of the whole file: the
file's text is indexed once with Python's own parser (`ast`, a tenth of LibCST's cost), and only the
routines actually asked about are parsed with LibCST, each on its own. Routines are named by
`(class name or None, function name)`; only top-level functions and methods of top-level classes are
indexed (a name defined twice is ambiguous and not indexed).

Nodes parsed here are not nodes of the module the walk is on: compare routines by their key, never by
identity.
"""

from __future__ import annotations

import ast
import re
import warnings
import weakref
from typing import Optional

import libcst as cst

ModuleScope = None  # the key of the module's own statements
_ROWS = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


class WholeFile:
    @classmethod
    def of(cls, ctx) -> "WholeFile":
        """The file's index, shared by every rule walking it (built on first use, kept on the context)."""
        whole = ctx.shared.get(cls)
        if whole is None:
            whole = ctx.shared[cls] = cls(ctx)
        return whole

    def __init__(self, ctx) -> None:
        # A proxy: the context holds this index, which must not hold the context back (no cycle, so the
        # file's trees are freed by reference counting as soon as the file is done).
        self.ctx = ctx if isinstance(ctx, weakref.ProxyType) else weakref.proxy(ctx)
        self.text: Optional[str] = getattr(ctx, "text", None)
        if self.text is None and not ctx.partial:
            self.text = ctx.module.code
        self._tree: Optional[ast.Module] = getattr(ctx, "tree", None) if self.text is not None else None
        self._functions: dict = {}
        self._classes: dict = {}
        self._parsed: dict = {}
        self._assignments: dict = {}
        self._lines: Optional[list] = None

    @property
    def available(self) -> bool:
        return self.text is not None and self.tree is not None

    @property
    def tree(self) -> Optional[ast.Module]:
        if self._lines is None and self.text is not None:
            if self._tree is None:  # the engine's `ast` of the file, else our own
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        self._tree = ast.parse(self.text)
                except (SyntaxError, ValueError, RecursionError, MemoryError):
                    self.text = None
                    return None
            self._lines = _ROWS.findall(self.text)  # as ast counts rows: \n, \r\n or \r
            for node in self._tree.body:
                table = self._functions if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else \
                    self._classes if isinstance(node, ast.ClassDef) else None
                if table is not None:
                    table[node.name] = None if node.name in table else node  # twice: ambiguous
        return self._tree

    # -- routines --------------------------------------------------------------------------------------
    def routine(self, key) -> Optional[cst.CSTNode]:
        """The LibCST node of routine `key`: a FunctionDef, or for `ModuleScope` a Module holding the
        module's own statements (functions and classes left out)."""
        if not self.available:
            return None
        if key in self._parsed:
            return self._parsed[key]
        node = self._ast_routine(key)
        if node is None and key is not ModuleScope:
            parsed = None
        elif key is ModuleScope:
            loose = [s for s in self.tree.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                       ast.ClassDef))]
            parsed = self._parse("".join(self._source(s) for s in loose), statement=False)
        else:
            parsed = self._parse(self._source(node), statement=True)
        self._parsed[key] = parsed
        return parsed

    def _ast_routine(self, key):
        if key is ModuleScope or not self.available:
            return None
        cls_name, name = key
        if cls_name is None:
            return self._functions.get(name)
        cls = self._classes.get(cls_name)
        if cls is None:
            return None
        found = [s for s in cls.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == name]
        return found[0] if len(found) == 1 else None

    def has_routine(self, key) -> bool:
        return self._ast_routine(key) is not None

    def methods(self, cls_name: str) -> list:
        cls = self._classes.get(cls_name) if self.available else None
        return [s.name for s in cls.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))] if cls else []

    def routines(self):
        """Every indexed routine's key, the module's statements first."""
        if not self.available:
            return
        yield ModuleScope
        for name, node in self._functions.items():
            if node is not None:
                yield (None, name)
        for cls_name, cls in self._classes.items():
            if cls is not None:
                for method in dict.fromkeys(self.methods(cls_name)):
                    yield (cls_name, method)

    def calls_in(self, key, match) -> bool:
        """Whether routine `key` holds an `ast.Call` for which `match(call)` is true (a cheap look before
        parsing the routine with LibCST)."""
        if key is ModuleScope:
            nodes = [s for s in self.tree.body if not isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                       ast.ClassDef))]
        else:
            routine = self._ast_routine(key)
            nodes = [routine] if routine is not None else []
        for root in nodes:
            for node in ast.walk(root):
                if isinstance(node, ast.Call) and match(node):
                    return True
        return False

    # -- classes ---------------------------------------------------------------------------------------
    def class_bases(self, cls_name: str) -> Optional[list]:
        """The class's base expressions (LibCST), or None when the class is not indexed."""
        cls = self._classes.get(cls_name) if self.available else None
        if cls is None:
            return None
        return [self._expression(base) for base in cls.bases]

    def class_assignments(self, cls_name: str) -> Optional[dict]:
        """attribute -> values (LibCST expressions; None for a value not known, as in `self.a, self.b = f()`)
        that the class assigns to `self.<attribute>` in its methods, to `<attribute>` in its body, or with
        `register_parameter`/`register_module`/`add_module`/`register_buffer`. None when not indexed."""
        if cls_name in self._assignments:
            return self._assignments[cls_name]
        cls = self._classes.get(cls_name) if self.available else None
        if cls is None:
            return None
        facts: dict = {}
        for statement in cls.body:
            if isinstance(statement, (ast.Assign, ast.AnnAssign)) and statement.value is not None:
                targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        facts.setdefault(target.id, []).append(self._expression(statement.value))
            if not isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            params = [*statement.args.posonlyargs, *statement.args.args]
            if not params:
                continue
            receiver = params[0].arg
            for node in ast.walk(statement):
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    single = len(targets) == 1 and isinstance(targets[0], ast.Attribute) \
                        and not isinstance(node, ast.AugAssign) and node.value is not None
                    for target in _flatten(targets):
                        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                                and target.value.id == receiver:
                            facts.setdefault(target.attr, []).append(
                                self._expression(node.value) if single else None)
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == receiver \
                        and node.func.attr in ("register_parameter", "register_module", "add_module",
                                               "register_buffer") \
                        and len(node.args) >= 2 and isinstance(node.args[0], ast.Constant) \
                        and isinstance(node.args[0].value, str):
                    facts.setdefault(node.args[0].value, []).append(self._expression(node.args[1]))
        self._assignments[cls_name] = facts
        return facts

    # -- parsing pieces --------------------------------------------------------------------------------
    def _source(self, node: ast.AST) -> str:
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", ()))])
        return "".join(self._lines[start - 1:node.end_lineno]) + "\n"

    def _parse(self, source: str, statement: bool) -> Optional[cst.CSTNode]:
        try:
            module = cst.parse_module(_dedent(source))
        except (cst.ParserSyntaxError, RecursionError, ValueError):
            return None
        if not statement:
            return module
        return module.body[0] if module.body else None

    def _segment(self, node: ast.AST) -> Optional[str]:
        """The source of `node` (ast's offsets count UTF-8 bytes), without re-splitting the file."""
        if getattr(node, "end_lineno", None) is None:
            return None
        lines = [line.encode("utf-8") for line in self._lines[node.lineno - 1:node.end_lineno]]
        if not lines:
            return None
        if len(lines) == 1:
            return lines[0][node.col_offset:node.end_col_offset].decode("utf-8", "replace")
        lines[0] = lines[0][node.col_offset:]
        lines[-1] = lines[-1][:node.end_col_offset]
        return b"".join(lines).decode("utf-8", "replace")

    def _expression(self, node: ast.AST) -> Optional[cst.BaseExpression]:
        segment = self._segment(node)
        if segment is None:
            return None
        try:
            return cst.parse_expression(segment if "\n" not in segment else f"({segment})")
        except (cst.ParserSyntaxError, RecursionError, ValueError):
            return None


def _flatten(targets):
    for target in targets:
        if isinstance(target, (ast.Tuple, ast.List)):
            yield from _flatten(target.elts)
        elif isinstance(target, ast.Starred):
            yield from _flatten([target.value])
        else:
            yield target


def _dedent(source: str) -> str:
    """Remove the first line's indentation from every line (a method's source, parsed on its own)."""
    first = source.lstrip("\n")
    indent = first[: len(first) - len(first.lstrip(" \t"))]
    if not indent:
        return source
    lines = source.splitlines(keepends=True)
    return "".join(line[len(indent):] if line.startswith(indent) else line for line in lines)
