"""What a name means where it is used, and how a fix should spell a name so that it means what it should.

Rules ask two questions (through `FileContext.resolve` and `Rule.reference`):

- *resolve*: is this expression `torch.optim.Adam`? The root name is looked up by Python's scoping rules
  in the scopes around the use (innermost function, enclosing functions, the module; a class body only
  for code directly in it; `global`/`nonlocal` honoured). Only an import gives a qualified name: a
  parameter, local, loop variable, comprehension variable, `def`, `class` or assignment called `torch`
  or `optim` shadows the module, and `del torch` unbinds it. Where one scope binds the name several
  ways, the binding in effect is the last one before the use in source order (`optim =
  torch.optim.SGD(...)` shadows `from torch import optim` from that statement on); a use in a function
  of a name of an outer scope sees any of that scope's bindings (it runs later), so they must all agree.
  An import under `if TYPE_CHECKING:` resolves (annotations mean it) but never reaches a fix; an
  `except ImportError:` fallback (`torch = None`) does not hide the import it stands in for.
- *spell*: how to write `torch.nn.functional.normalize` at a fix site. An existing import is reused only
  if it resolves to that module at the site, at run time; otherwise the fix adds an import under the
  usual name (`import torch.nn.functional as F`) when that name is free everywhere it would matter, or
  under a fresh one (`import torch.nn.functional as _gl_F`), which no star import can bind either.

Names that snippets and notebooks use without importing them (`torch`, `nn`, `F`, `optim`, `np`)
resolve to their conventional module when nothing binds them, for detection only: a fix never relies
on them.

Order is statement order inside a LibCST scope and file rows at the module (whose bindings come from the
whole file's `ast`, see `binder`); a use's row is asked for (a positions pass) only in the rare case of
a module name bound several ways and used at module level.
"""

from __future__ import annotations

import builtins
import keyword
from typing import Callable, Iterator, Optional

import libcst as cst

from .binder import IMPORT, Binding, Bindings, dotted, scope_bindings

__all__ = ["CONVENTIONS", "Scope", "NameResolver", "dotted"]

CONVENTIONS = {
    "torch": "torch",
    "nn": "torch.nn",
    "F": "torch.nn.functional",
    "optim": "torch.optim",
    "np": "numpy",
}
# Import spellings that users expect, used when a fix needs a module the file does not reach yet.
PREFERRED_ALIASES = {"torch.nn.functional": "F", "torch.nn": "nn", "numpy": "np"}
FRESH_PREFIX = "_gl_"
_BUILTINS = frozenset(dir(builtins))

MODULE, FUNCTION, CLASS, LAMBDA, COMPREHENSION = "module", "function", "class", "lambda", "comprehension"
_DEFERRING = (FUNCTION, LAMBDA)  # code in these runs later than the enclosing scope's statements


class Scope:
    """One scope around a use: its kind, its node, its parent, and (computed on first use) its bindings."""

    __slots__ = ("kind", "node", "parent", "_bindings", "_walrus", "_row_of")

    def __init__(self, kind: str, node, parent: Optional[Scope], *, walrus: bool = False,
                 bindings: Optional[Bindings] = None,
                 row_of: Optional[Callable[[cst.CSTNode], Optional[int]]] = None) -> None:
        self.kind = kind
        self.node = node
        self.parent = parent
        self._bindings = bindings
        self._walrus = walrus
        self._row_of = row_of  # the module scope from `ast`: orders are file rows

    @property
    def bindings(self) -> Bindings:
        if self._bindings is None:
            self._bindings = scope_bindings(self.node, self._walrus)
        return self._bindings

    def order_of(self, statement: Optional[cst.CSTNode]) -> Optional[int]:
        """Where `statement` (a statement of this scope) runs, in the order of this scope's bindings."""
        if statement is None:
            return None
        if self._row_of is not None:
            return self._row_of(statement)
        return self.bindings.statement_order.get(id(statement))

    def module(self) -> Scope:
        scope = self
        while scope.parent is not None:
            scope = scope.parent
        return scope


class NameResolver:
    """Answers `resolve` and `spell` for one module, given the scope and statement of a use."""

    def __init__(self, module_scope: Scope) -> None:
        self.module_scope = module_scope

    # -- what a name means ---------------------------------------------------------------------------
    def resolve(self, expr: cst.BaseExpression, scope: Scope, statement=None) -> Optional[str]:
        """The qualified name of a Name/Attribute chain whose root is bound by an import, else None.

        `optim.Adam` with `from torch import optim` -> `torch.optim.Adam`; `x.norm` with `x` a local ->
        None; `torch.norm` inside `def f(torch): ...` -> None."""
        path = dotted(expr)
        if path is None:
            return None
        root, _, rest = path.partition(".")
        target = self.lookup(root, scope, statement)
        if target is None:
            return None
        return f"{target}.{rest}" if rest else target

    def lookup(self, name: str, scope: Scope, statement=None, *, runtime: bool = False) -> Optional[str]:
        """The qualified name `name` is bound to by import where `statement` of `scope` runs, else None.

        `runtime=True` (what a fix may rely on) ignores TYPE_CHECKING imports and conventions."""
        found = self._binding_scope(name, scope)
        if found is None:
            return None if runtime else self._unbound(name)
        owner, immediate = found
        bindings = owner.bindings.names[name]
        live = [b for b in bindings if not b.fallback] or bindings
        if runtime:
            live = [b for b in live if b.runtime]
            if not live:
                return None
        target = _agreed(live)
        if target is not None or not immediate or not any(b.kind == IMPORT for b in live):
            return target
        # Bound several ways and used right here: the last binding before the use is the one in effect.
        use = owner.order_of(statement)
        if use is None:
            return None
        before = [b for b in live if b.order < use]
        if before:
            return _agreed(before[-1:])
        return None

    def _binding_scope(self, name: str, scope: Scope) -> Optional[tuple[Scope, bool]]:
        """The scope whose binding of `name` a use in `scope` sees, and whether the use runs as that
        scope's statements run (rather than later, from a function or lambda); None if unbound."""
        immediate = True
        current: Optional[Scope] = scope
        while current is not None:
            bindings = current.bindings
            if name in bindings.globals:
                module = current.module()
                return (module, False) if name in module.bindings.names else None
            visible = current.kind != CLASS or current is scope
            if visible and name in bindings.names and name not in bindings.nonlocals:
                return current, immediate
            if current.kind in _DEFERRING:
                immediate = False
            current = current.parent
        return None

    def _unbound(self, name: str) -> Optional[str]:
        stars = self.module_scope.bindings.star_modules
        if stars:
            torchy = [m for m in stars if m == "torch" or m.startswith("torch.")]
            if len(torchy) == len(stars) == 1:
                return f"{torchy[0]}.{name}"
            return None
        return CONVENTIONS.get(name)

    def is_import_bound(self, name: str) -> bool:
        """Whether the module binds `name` by an import at module level."""
        return any(b.kind == IMPORT for b in self.module_scope.bindings.names.get(name, ()))

    def module_imports(self) -> dict[str, str]:
        """The names module-level imports bind, each with the qualified name it means (the last import)."""
        return {name: imports[-1].target for name, bindings in self.module_scope.bindings.names.items()
                if (imports := [b for b in bindings if b.kind == IMPORT])}

    def imported_modules(self, scope: Optional[Scope] = None) -> Iterator[str]:
        """Every qualified name imported at module level, and in the scopes around `scope`."""
        current = scope if scope is not None else self.module_scope
        while current is not None:
            for bindings in current.bindings.names.values():
                for b in bindings:
                    if b.kind == IMPORT:
                        yield b.target
            yield from current.bindings.star_modules
            current = current.parent

    # -- how a fix spells a name ---------------------------------------------------------------------
    def spell(self, qualified: str, scope: Scope, statement=None) -> tuple[str, Optional[str]]:
        """(expression text for `qualified` at the site, import line to add or None)."""
        best = None
        for name, target in self._visible_imports(scope):
            if qualified != target and not qualified.startswith(target + "."):
                continue
            if self.lookup(name, scope, statement, runtime=True) == target:
                candidate = name + qualified[len(target):]
                if best is None or len(candidate) < len(best):
                    best = candidate
        if best is not None:
            return best, None
        parent, _, last = qualified.rpartition(".")
        # `from torch.optim import Adam` present: add `from torch.optim import AdamW` beside it.
        if parent and self._imports_from(parent) and self.can_bind(last, qualified, scope):
            return last, f"from {parent} import {last}"
        for module_name, alias in PREFERRED_ALIASES.items():
            if qualified.startswith(module_name + ".") and self.can_bind(alias, module_name, scope):
                return f"{alias}.{qualified[len(module_name) + 1:]}", f"import {module_name} as {alias}"
        root = qualified.split(".", 1)[0]
        if self.can_bind(root, root, scope):
            return qualified, f"import {root}"
        # Every usual spelling means something else here: a fresh name, which only this import binds.
        module_name = next((m for m in PREFERRED_ALIASES if qualified.startswith(m + ".")), None)
        if module_name is not None:
            alias = self._fresh(PREFERRED_ALIASES[module_name], module_name, scope)
            return f"{alias}.{qualified[len(module_name) + 1:]}", f"import {module_name} as {alias}"
        alias = self._fresh(last, qualified, scope)
        return alias, f"from {parent} import {last} as {alias}"

    def can_bind(self, name: str, target: str, scope: Scope) -> bool:
        """Whether a module-level import of `target` as `name` would reach `scope` and change nothing
        else: nothing binds `name` otherwise (in the module or around the site), it is no builtin or
        keyword, and no star import could bind it."""
        if keyword.iskeyword(name) or name in _BUILTINS:
            return False
        module = self.module_scope.bindings
        if module.star_modules and not name.startswith("_"):
            return False  # `from x import *` may bind it (star imports skip underscore names)
        if any(b.kind != IMPORT or b.target != target for b in module.names.get(name, ())):
            return False
        current: Optional[Scope] = scope
        while current is not None and current is not self.module_scope:
            bindings = current.bindings
            if name in bindings.names and (current.kind != CLASS or current is scope):
                if any(b.kind != IMPORT or b.target != target for b in bindings.names[name]):
                    return False
            current = current.parent
        return True

    def _fresh(self, stem: str, target: str, scope: Scope) -> str:
        name = FRESH_PREFIX + stem
        index = 2
        while not self.can_bind(name, target, scope):
            name = f"{FRESH_PREFIX}{stem}{index}"
            index += 1
        return name

    def _visible_imports(self, scope: Scope) -> Iterator[tuple[str, str]]:
        seen = set()
        current: Optional[Scope] = scope
        while current is not None:
            for name, bindings in current.bindings.names.items():
                if name in seen:
                    continue
                seen.add(name)
                for b in bindings:
                    if b.kind == IMPORT:
                        yield name, b.target
            current = current.parent

    def _imports_from(self, parent: str) -> bool:
        """Whether the module imports a name from `parent` (`from parent import x`)."""
        for name, bindings in self.module_scope.bindings.names.items():
            for b in bindings:
                if b.kind == IMPORT and b.target.rpartition(".")[0] == parent and b.target.endswith("." + name):
                    return True
        return False


def _agreed(bindings: list[Binding]) -> Optional[str]:
    """The import target all `bindings` agree on, else None (a non-import, a del, two targets)."""
    target = None
    for b in bindings:
        if b.kind != IMPORT or (target is not None and b.target != target):
            return None
        target = b.target
    return target
