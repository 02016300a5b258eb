"""What a call of a function defined in the module returns, when that is an unguarded denominator.

`x / _get_vector_norm(x)`, with in the same module

    def _get_vector_norm(tensor):
        return torch.pow(torch.sum(torch.pow(tensor, 2), dim=-1, keepdim=True), 0.5)

divides by a norm as surely as `x / x.norm(dim=-1, keepdim=True)` does. The callee is what the called
name is bound to where it is called (`FileContext.module_function`: the one module-level `def` of that
name, through Python's scoping; a parameter, local, import or second binding of the name is something
else), never what the name says. Its body comes from the whole file (`WholeFile`), so a call in a region
the engine parsed on its own is followed too. A helper qualifies when it is a plain function (no
decorator, not async, no `yield`) and every `return` is an unguarded norm, standard deviation, variance
or square root of a sum of squares (`Denominators`) of values computed from its parameters alone. One
level deep: a helper's own calls of helpers are not followed.
"""

from __future__ import annotations

import builtins
from typing import Callable, Optional

import libcst as cst

from .names import FUNCTION, Scope
from .norms import Denominators, Unguarded
from .tensors import TensorEvidence
from .walk import children
from .wholefile import WholeFile

_BUILTINS = frozenset(dir(builtins))
# With several kinds of return, the one whose fix promises least stands for them all.
_WEAKEST = ("sqrt+term", "sqrt", "var", "std", "norm")


class Helpers:
    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self._found: dict = {}  # name -> Optional[Unguarded] (node: the helper's first return)

    def unguarded(self, call: cst.Call) -> Optional[Unguarded]:
        """For `f(...)` calling a module-level function whose every return is unguarded: that, with the
        call as its node; else None."""
        name = self.ctx.module_function(call.func)
        if name is None:
            return None
        if name not in self._found:
            routine = WholeFile.of(self.ctx).routine((None, name))
            self._found[name] = _returns_unguarded(routine, self.ctx.names) \
                if isinstance(routine, cst.FunctionDef) else None
        found = self._found[name]
        if found is None:
            return None
        return Unguarded(found.kind, call, helper=name, tensor=found.tensor)


def _returns_unguarded(function: cst.FunctionDef, names) -> Optional[Unguarded]:
    if function.decorators or function.asynchronous is not None:
        return None  # a decorator may change what a call returns; a coroutine is no tensor
    nodes = list(_own_nodes(function.body))
    if any(isinstance(n, (cst.Yield, cst.Global, cst.Nonlocal)) for n in nodes):
        return None
    returns = [n for n in nodes if isinstance(n, cst.Return)]
    if not returns or any(r.value is None for r in returns):
        return None
    scope = Scope(FUNCTION, function, names.module_scope)

    def resolve(expr: cst.BaseExpression) -> Optional[str]:
        return names.resolve(expr, scope)

    def known(name: str) -> bool:  # an import, or a builtin nothing rebinds (`True`, `float`)
        return names.resolve(cst.Name(name), scope) is not None or (
            name in _BUILTINS and names.binder_of(name, scope) is None)

    parameters = {p.name.value for p in (*function.params.posonly_params, *function.params.params,
                                         *function.params.kwonly_params)}
    values, rebound = _single_assignments(nodes)
    parameters -= rebound
    value_of = values.get
    denominators = Denominators(resolve, value_of)
    tensors = TensorEvidence(resolve, value_of, _annotations(function, rebound))
    kinds, tensor = set(), True
    for ret in returns:
        found = denominators.classify(ret.value)
        if found is None:
            return None
        source = found.inner if found.inner is not None else found.node
        if not _from_parameters(source, parameters, values, known):
            return None
        kinds.add(found.kind)
        tensor = tensor and tensors.is_tensor(ret.value)
    kind = next(k for k in _WEAKEST if k in kinds)
    return Unguarded(kind, returns[0].value, tensor=tensor)


def _own_nodes(body):
    """Every node of a function's body, except those of functions, lambdas and classes nested in it."""
    stack = [body]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
            continue
        stack.extend(children(node))


def _single_assignments(nodes) -> tuple[dict, set]:
    """name -> value for the names bound once, by a plain `name = value`, and never changed in place;
    and every name bound or changed in any way (a parameter among them no longer holds the argument)."""
    counts: dict = {}
    values: dict = {}
    changed: set = set()

    def bound(target, value=None) -> None:
        if isinstance(target, cst.Name):
            counts[target.value] = counts.get(target.value, 0) + 1
            values[target.value] = value
        elif isinstance(target, (cst.Tuple, cst.List)):
            for element in target.elements:
                bound(element.value)
        elif isinstance(target, cst.StarredElement):
            bound(target.value)
        else:  # `n[...] = ...`, `n.data = ...`: changed in place
            root = target
            while isinstance(root, (cst.Attribute, cst.Subscript)):
                root = root.value
            if isinstance(root, cst.Name):
                changed.add(root.value)

    for node in nodes:
        if isinstance(node, cst.Assign):
            for target in node.targets:
                bound(target.target, node.value if len(node.targets) == 1 else None)
        elif isinstance(node, (cst.AugAssign, cst.AnnAssign)):
            bound(node.target)
        elif isinstance(node, (cst.For, cst.CompFor)):
            bound(node.target)
        elif isinstance(node, cst.WithItem) and node.asname is not None:
            bound(node.asname.name)
        elif isinstance(node, cst.NamedExpr):
            bound(node.target)
        elif isinstance(node, cst.ExceptHandler) and node.name is not None:
            bound(node.name.name)
        elif isinstance(node, cst.Del):
            bound(node.target)
        elif isinstance(node, cst.Call) and isinstance(node.func, cst.Attribute) \
                and isinstance(node.func.value, cst.Name) and node.func.attr.value.endswith("_"):
            changed.add(node.func.value.value)  # `n.clamp_(min=eps)`
    rebound = set(counts) | changed
    single = {name: value for name, value in values.items()
              if counts[name] == 1 and value is not None and name not in changed}
    return single, rebound


def _annotations(function: cst.FunctionDef, rebound: set) -> Callable[[str], Optional[cst.BaseExpression]]:
    annotated = {p.name.value: p.annotation.annotation for p in (*function.params.posonly_params,
                                                                 *function.params.params,
                                                                 *function.params.kwonly_params)
                 if p.annotation is not None and p.name.value not in rebound}
    return annotated.get


def _from_parameters(expr, parameters: set, values: dict, known, depth: int = 0) -> bool:
    """Whether `expr` is computed from the function's parameters (at least one), imported names and
    builtins only (`known(name)`): a global or a closure variable could hold anything, so its norm says
    nothing about the arguments."""
    if depth > 8:
        return False
    reached = False
    for name in _names_read(expr):
        if name in parameters:
            reached = True
        elif name in values:
            if not _from_parameters(values[name], parameters, values, known, depth + 1):
                return False
            reached = True
        elif not known(name):
            return False
    return reached


def _names_read(expr) -> set:
    """Every Name read in `expr` (attribute names and keywords excluded)."""
    found: set = set()
    stack = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, cst.Name):
            found.add(node.value)
        elif isinstance(node, cst.Attribute):
            stack.append(node.value)
        elif isinstance(node, cst.Arg):
            stack.append(node.value)
        else:
            stack.extend(children(node))
    return found
