"""What a rule sees of the file it checks: names, options, and where to send reports."""

from __future__ import annotations

import ast
import weakref
from typing import Any, Callable, Mapping, Optional

import libcst as cst

from .binder import OTHER, module_bindings, walrus_functions
from .names import CLASS, COMPREHENSION, FUNCTION, LAMBDA, MODULE, NameResolver, Scope
from .rule import Reference, Report, Rule
from .wholefile import WholeFile


def _line(row: int) -> str:
    return f"line {row}"


class FullModuleRequired(Exception):
    """Raised through the traversal when a rule cannot decide on a partial module."""


class FileContext:
    def __init__(self, module: cst.Module, path: str, *, partial: bool,
                 options: Mapping[str, Mapping[str, Any]], rows: Optional[list] = None,
                 tree: Optional[ast.Module] = None, text: Optional[str] = None,
                 describe_row: Optional[Callable[[int], str]] = None) -> None:
        """`tree` and `text` are the whole file's `ast` and source (the module's bindings are read from
        them: LibCST may have parsed only part of the file); without them, `module` must be whole."""
        self.module = module
        self.path = path
        self.text = text  # the whole file's source, when given
        self.tree = tree  # the whole file's `ast`, when given
        self.partial = partial
        self.reports: list[Report] = []
        self._options = options
        self._statements: list[cst.CSTNode] = []
        self._positions = None  # PositionProvider results, resolved on first use
        self._rows = rows  # reduced row -> the file's row (None: the module is the whole file)
        self._describe_row = describe_row or _line  # how a message names a row of the file
        # Functions whose rows hold a `:=`: only their scopes are searched for walrus bindings.
        self._walrus = walrus_functions(text or "") if tree is not None else None
        if tree is not None:
            module_scope = Scope(MODULE, module, None, bindings=module_bindings(tree, text or ""),
                                 row_of=_weak(self._row_of_statement))
        else:
            module_scope = Scope(MODULE, module, None, walrus=True)
        self.names = NameResolver(module_scope)
        self._scope = module_scope  # where the walk is
        self._scope_of_statement: dict[int, Scope] = {}
        self._scope_of_node: dict[int, Scope] = {id(module): module_scope}
        self._pending: list = []  # functions and classes whose body the walk has not reached yet
        # Analyses of this file shared by the rules (`WholeFile`, the flow rules' `Analysis`), keyed by their
        # class. They live and die with the context: a module-level cache keyed on it would keep every
        # file's trees alive, and the garbage collector's passes grow slower with every file.
        self.shared: dict = {}

    # -- called by the walker ------------------------------------------------------------------------
    def enter_statement(self, node: cst.CSTNode) -> None:
        self._statements.append(node)
        self._scope_of_statement[id(node)] = self._scope

    def leave_statement(self, node: cst.CSTNode) -> None:
        self._statements.pop()

    def walk_hooks(self) -> tuple[object, object]:
        """Two visitors that keep track of the scope the walk is in: the first must run before every
        rule's visit, the second after every rule's leave (so that a rule leaving a function still
        sees the function's scope)."""
        return _ScopeEnter(self), _ScopeLeave(self)

    def _open(self, kind: str, node) -> None:
        walrus = self._walrus is None or (
            bool(self._walrus) and (not isinstance(node, cst.FunctionDef) or node.name.value in self._walrus))
        self._scope = Scope(kind, node, self._scope, walrus=walrus)
        self._scope_of_node[id(node)] = self._scope

    def _close(self, node) -> None:
        if self._scope.node is node:
            self._scope = self._scope.parent

    # -- called by rules -----------------------------------------------------------------------------
    @property
    def statement(self) -> Optional[cst.CSTNode]:
        return self._statements[-1] if self._statements else None

    @property
    def statements(self) -> tuple:
        """The statements the walk is in, outermost first (functions, `if`s, loops, ..., the innermost)."""
        return tuple(self._statements)

    def add_report(self, report: Report, statement: Optional[cst.CSTNode] = None) -> None:
        report.statement = statement if statement is not None else self.statement
        self.reports.append(report)

    def option(self, rule: Rule, name: str) -> Any:
        configured = self._options.get(rule.name, {})
        if name in configured:
            return configured[name]
        for opt in rule.options:
            if opt.name == name:
                return opt.default
        raise KeyError(f"{rule.code} has no option {name!r}")

    def require_full_module(self) -> None:
        if self.partial:
            raise FullModuleRequired()

    def code_of(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def positions(self):
        """LibCST's PositionProvider results for the parsed module, resolved once (costly: only to report)."""
        if self._positions is None:
            from libcst.metadata import MetadataWrapper, PositionProvider

            self._positions = MetadataWrapper(self.module, unsafe_skip_copy=True).resolve(PositionProvider)
        return self._positions

    def file_row(self, row: int) -> int:
        """The file's row for a row of the parsed module (they differ when regions were dropped)."""
        return self._rows[row - 1] if self._rows is not None else row

    def line_of(self, node: cst.CSTNode) -> int:
        """The 1-based row of the file where `node` starts (to word a report)."""
        return self.file_row(self.positions()[node].start.line)

    def where(self, node: cst.CSTNode) -> str:
        """Where `node` starts, for a message: "line 49" ("cell 3, line 2" when the file is a notebook)."""
        return self._describe_row(self.line_of(node))

    # -- names -------------------------------------------------------------------------------------
    def resolve(self, expr: cst.BaseExpression, at: Optional[cst.CSTNode] = None) -> Optional[str]:
        """The qualified name an expression such as `optim.Adam` or `F.normalize` means, if its root is
        bound by an import (`torch.optim.Adam`), else None (a local, a parameter, an attribute of one).

        Scoping follows Python's (see `names`). The use is where the walk is (rules call this from their
        visits), or `at`: a statement the walk has passed, or a function, lambda or class node (a use
        inside its body)."""
        scope, statement = self._site(at)
        return self.names.resolve(expr, scope, statement)

    def reference(self, qualified: str, at: Optional[cst.CSTNode] = None) -> Reference:
        """How a fix at the walk's position (or `at`, as for `resolve`) spells `qualified`, and the import
        it must add, if any: an existing import that means `qualified` there, else a new one under the
        usual name, else under a fresh name."""
        scope, statement = self._site(at)
        text, line = self.names.spell(qualified, scope, statement)
        return Reference(cst.parse_expression(text), line)

    def module_function(self, expr: cst.BaseExpression, at: Optional[cst.CSTNode] = None) -> Optional[str]:
        """The name of the module-level function a use of `expr` (a Name) at the walk's position (or `at`)
        calls: the use sees the module scope's binding of the name, and that binding is one top-level
        `def` and nothing else (no import, assignment, second `def` or `global` rebinding), else None."""
        if not isinstance(expr, cst.Name):
            return None
        scope, _ = self._site(at)
        owner = self.names.binder_of(expr.value, scope)
        if owner is not self.names.module_scope:
            return None
        bindings = owner.bindings.names[expr.value]
        if len(bindings) != 1 or bindings[0].kind != OTHER or not bindings[0].runtime:
            return None
        whole = WholeFile.of(self)
        if not whole.available:
            self.require_full_module()  # the file's `ast` is what says the binding is a `def`
            return None
        return expr.value if whole.has_routine((None, expr.value)) else None

    def imported_modules(self, at: Optional[cst.CSTNode] = None) -> list[str]:
        """The qualified names imported at module level and in the scopes around the use."""
        scope, _ = self._site(at)
        return list(self.names.imported_modules(scope))

    def _site(self, at: Optional[cst.CSTNode]) -> tuple[Scope, Optional[cst.CSTNode]]:
        if at is None:
            return self._scope, self.statement
        scope = self._scope_of_node.get(id(at))
        if scope is not None:
            return scope, None
        scope = self._scope_of_statement.get(id(at))
        if scope is not None:
            return scope, at
        return self.names.module_scope, None

    def _row_of_statement(self, statement: cst.CSTNode) -> Optional[int]:
        try:
            return self.line_of(statement)
        except KeyError:
            return None


def _weak(method):
    """A bound method that keeps no reference to its object (the module's scope must not keep the file's
    context, and with it the parsed module, alive: reference counting then frees them at once)."""
    ref = weakref.WeakMethod(method)
    return lambda *args: ref()(*args)


class _ScopeEnter:
    """Opens a scope where Python does: a function's or class's at its body (decorators, defaults and
    annotations belong to the enclosing scope), a lambda's or comprehension's at the node."""

    def __init__(self, ctx: FileContext) -> None:
        self._ctx = ctx

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self._ctx._pending.append(node)

    visit_ClassDef = visit_FunctionDef

    def visit_IndentedBlock(self, node) -> None:
        pending = self._ctx._pending
        if pending and pending[-1].body is node:
            owner = pending.pop()
            self._ctx._open(FUNCTION if isinstance(owner, cst.FunctionDef) else CLASS, owner)

    visit_SimpleStatementSuite = visit_IndentedBlock

    def visit_Lambda(self, node: cst.Lambda) -> None:
        self._ctx._open(LAMBDA, node)

    def _comprehension(self, node) -> None:
        self._ctx._open(COMPREHENSION, node)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comprehension


class _ScopeLeave:
    def __init__(self, ctx: FileContext) -> None:
        self._ctx = ctx

    def _close(self, node) -> None:
        self._ctx._close(node)

    leave_FunctionDef = leave_ClassDef = leave_Lambda = _close
    leave_ListComp = leave_SetComp = leave_DictComp = leave_GeneratorExp = _close
