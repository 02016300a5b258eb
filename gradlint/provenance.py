"""Whether a tensor is built from constants only, so that no input can make it degenerate.

`position_enc = torch.zeros(n, d)`, filled with `torch.sin(position * div_term)` where
`position = torch.arange(n)`: a table that depends on sizes, not on data. Its norm or standard deviation
is the same number on every run; whether it is 0 is settled the first time the code runs, not by an
unlucky input, which is what the stability rules are about.

A value is built from constants when every source it is computed from, through the local names of its
function (every write to them that can reach the use: assignments, `name[...] = value`, `name += value`
before it, except in another arm of an `if` around it), is a
tensor factory whose values do not depend on data (`torch.zeros`, `torch.arange`, ...), a number, a
`math` function, or a size (an attribute of an object other than `self`, used as a scalar:
`config.d_model`); and at least one factory is among them. A parameter, `self.` attributes (parameters
and buffers change in training), and any other call are data.
"""

from __future__ import annotations

from typing import Callable, Optional

import libcst as cst

from .guards import exclusive, flat_statements
from .nodes import method_call, number

FACTORIES = frozenset({
    "torch.zeros", "torch.ones", "torch.arange", "torch.linspace", "torch.logspace", "torch.eye",
    "torch.full", "torch.tensor", "torch.as_tensor",
})
MAX_DEPTH = 12


class Provenance:
    def __init__(self, resolve: Callable) -> None:
        self._resolve = resolve

    def from_constants(self, expr: cst.BaseExpression, function: Optional[cst.FunctionDef],
                       statement: cst.CSTNode) -> bool:
        """Whether `expr`, used in `statement` of `function`, is built from constants only."""
        if function is None:
            return False
        writes, params = _writes_before(function, statement)
        state = {"factory": False, "open": set()}
        return self._constant(expr, writes, params, state, 0) and state["factory"]

    def _constant(self, expr, writes: dict, params: set, state: dict, depth: int) -> bool:
        if expr is None or depth > MAX_DEPTH:
            return False
        again = lambda e: self._constant(e, writes, params, state, depth + 1)  # noqa: E731
        if number(expr) is not None or isinstance(expr, (cst.SimpleString, cst.Ellipsis)):
            return True
        if isinstance(expr, cst.Name):
            name = expr.value
            if name in params or name not in writes:
                return False
            if name in state["open"]:
                return True  # `t = t - t.mean()`: the other writes decide
            state["open"].add(name)
            try:
                return all(again(value) for value in writes[name])
            finally:
                state["open"].discard(name)
        if isinstance(expr, cst.Attribute):
            root = expr
            while isinstance(root, cst.Attribute):
                root = root.value
            return isinstance(root, cst.Name) and root.value != "self" and root.value not in writes
        if isinstance(expr, (cst.BinaryOperation,)):
            return again(expr.left) and again(expr.right)
        if isinstance(expr, cst.UnaryOperation):
            return again(expr.expression)
        if isinstance(expr, cst.Subscript):
            return again(expr.value)
        if not isinstance(expr, cst.Call):
            return False
        qualified = self._resolve(expr.func)
        if qualified in FACTORIES:
            state["factory"] = True
            return True
        if qualified is not None and qualified.startswith("math."):
            return True
        arguments = [a.value for a in expr.args]
        if qualified is not None:
            module, _, last = qualified.rpartition(".")
            return module == "torch" and last[:1].islower() and all(again(a) for a in arguments)
        mc = method_call(expr)
        return mc is not None and again(mc[0]) and all(again(a) for a in arguments)


def writes_before(function: cst.FunctionDef, statement: cst.CSTNode) -> tuple[dict, set]:
    """name -> values written to it in `function` before `statement` (None: a loop variable); and the
    function's parameters."""
    return _writes_before(function, statement)


def _writes_before(function: cst.FunctionDef, statement: cst.CSTNode) -> tuple[dict, set]:
    """name -> values written to it in `function` before `statement`; and the function's parameters."""
    params = function.params
    names = {p.name.value for p in (*params.posonly_params, *params.params, *params.kwonly_params)}
    for star in (params.star_arg, params.star_kwarg):
        if isinstance(star, cst.Param):
            names.add(star.name.value)
    writes: dict = {}
    ordered = flat_statements(function)
    here = next((arms for stmt, arms in ordered if stmt is statement), ())
    for stmt, arms in ordered:
        if stmt is statement:
            break
        if exclusive(here, arms):
            continue  # another arm of an `if` the use is in: its writes never reach the use
        if isinstance(stmt, cst.For):
            for name in _target_names(stmt.target):
                writes.setdefault(name, []).append(None)  # a loop variable: not followed
        if not isinstance(stmt, cst.SimpleStatementLine):
            continue
        for small in stmt.body:
            if isinstance(small, cst.Assign):
                for target in small.targets:
                    _record(writes, target.target, small.value)
            elif isinstance(small, (cst.AugAssign, cst.AnnAssign)) and small.value is not None:
                _record(writes, small.target, small.value)
    return writes, names


def _record(writes: dict, target, value) -> None:
    if isinstance(target, cst.Name):
        writes.setdefault(target.value, []).append(value)
    elif isinstance(target, cst.Subscript) and isinstance(target.value, cst.Name):
        writes.setdefault(target.value.value, []).append(value)  # `t[:, 0::2] = torch.sin(...)`
    else:
        for name in _target_names(target):
            writes.setdefault(name, []).append(None)  # unpacking: not followed


def _target_names(target) -> list:
    if isinstance(target, cst.Name):
        return [target.value]
    if isinstance(target, (cst.Tuple, cst.List)):
        return [n for e in target.elements for n in _target_names(e.value)]
    if isinstance(target, cst.StarredElement):
        return _target_names(target.value)
    return []
