"""Where a module calls its own functions: each call with the statements and expressions around it.

Rules that judge code by what its callers do (a caller that guards the input, a caller under
`torch.no_grad()`, a caller that passes a one-hot lookup) ask for the calls of a module-level function
by name. Only plain calls `name(...)` are found: a function passed around as a value, or called through
an alias, is not seen, so a rule must treat "no call found" as "unknown".
"""

from __future__ import annotations

from typing import Callable, Optional

import libcst as cst

from .walk import child_fields


class CallSite:
    __slots__ = ("call", "statements", "enclosing")

    def __init__(self, call: cst.Call, statements: list, enclosing: list) -> None:
        self.call = call
        self.statements = statements  # enclosing statements, outermost first
        self.enclosing = enclosing  # enclosing expressions that `keep` picked, outermost first

    @property
    def function(self) -> Optional[cst.FunctionDef]:
        """The innermost function the call is in."""
        return next((s for s in reversed(self.statements) if isinstance(s, cst.FunctionDef)), None)

    def argument(self, function: cst.FunctionDef, name: str) -> Optional[cst.BaseExpression]:
        """What this call passes for `function`'s parameter `name` (by keyword or position), or None."""
        for a in self.call.args:
            if a.keyword is not None and a.keyword.value == name:
                return a.value
        positional = [*function.params.posonly_params, *function.params.params]
        index = next((i for i, p in enumerate(positional) if p.name.value == name), None)
        if index is None:
            return None
        plain = []
        for a in self.call.args:
            if a.star:
                return None  # *args hides which position is which
            if a.keyword is None:
                plain.append(a.value)
        return plain[index] if index < len(plain) else None


def call_sites(module: cst.Module, names: set, keep: Callable[[cst.CSTNode], bool] = lambda node: False) -> dict:
    """name -> [CallSite] for every call `name(...)` of a plain name in `names` in the module."""
    out: dict = {name: [] for name in names}
    statements: list = []
    enclosing: list = []
    stack: list = [(module, False)]
    while stack:
        item, leaving = stack.pop()
        if leaving:
            if isinstance(item, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
                statements.pop()
            elif enclosing and enclosing[-1] is item:
                enclosing.pop()
            continue
        if isinstance(item, (cst.SimpleStatementLine, cst.BaseCompoundStatement)):
            statements.append(item)
            stack.append((item, True))
        elif keep(item):
            enclosing.append(item)
            stack.append((item, True))
        if isinstance(item, cst.Call) and isinstance(item.func, cst.Name) and item.func.value in out:
            out[item.func.value].append(CallSite(item, list(statements), list(enclosing)))
        children = []
        for name in child_fields(type(item)):
            value = getattr(item, name)
            if isinstance(value, cst.CSTNode):
                children.append(value)
            elif isinstance(value, (list, tuple)):
                children.extend(c for c in value if isinstance(c, cst.CSTNode))
        stack.extend((c, False) for c in reversed(children))
    return out


def module_function(module: cst.Module, name: str) -> Optional[cst.FunctionDef]:
    """The module-level `def name` (the last one, as Python binds it), or None."""
    found = None
    for statement in module.body:
        if isinstance(statement, cst.FunctionDef) and statement.name.value == name:
            found = statement
    return found
