"""What a local name holds at a point of a function, for rules that follow values through names.

``n = x.norm(dim=-1, keepdim=True)`` then ``x / n``: the division's denominator is the norm. The walk
visits statements in source order, so the last assignment seen is the one in effect; a name that is
mutated in place (``n.clamp_(min=eps)``, ``n[n == 0] = 1``, ``n += eps``) or bound in a way we do not
follow (loop targets, parameters, unpacking anything but a call) has no known value, so rules stay
silent about it. ``v, i = x.topk(k)`` binds ``v`` to ``x.topk(k)[0]`` (a node made for the analysis).
Assignments take effect when the walk leaves them: in `n = n.unsqueeze(0)` the right side still sees the
old `n`. A value may mention its own name; rules that follow names bound their depth.
"""

from __future__ import annotations

from typing import Optional

import libcst as cst

from .rule import Rule

_UNKNOWN = object()


class Locals:
    """What each local name of the function being walked holds. Helpers of a rule take its bound methods
    (`value_of`, `rebound`, `annotation_of`): they hold no reference back to the rule, so that the rule,
    its helpers and the parsed module are freed by reference counting when the file is done."""

    def __init__(self) -> None:
        self._scopes: list[dict] = [{}]
        self._annotations: list[dict] = [{}]

    def value_of(self, name: str) -> Optional[cst.BaseExpression]:
        value = self._scopes[-1].get(name)
        return None if value is _UNKNOWN else value

    def rebound(self, name: str) -> bool:
        """Whether the current function binds `name` itself (so a parameter of that name is no longer
        what it holds, even where its value is unknown)."""
        return name in self._scopes[-1]

    def annotation_of(self, name: str) -> Optional[cst.BaseExpression]:
        """The annotation of the current function's parameter `name` (`x: torch.Tensor`), if any and
        if nothing rebound it."""
        if name in self._scopes[-1]:
            return None
        return self._annotations[-1].get(name)

    def bind(self, target: cst.BaseExpression, value) -> None:
        scope = self._scopes[-1]
        if isinstance(target, cst.Name):
            scope[target.value] = value
        elif isinstance(target, (cst.Tuple, cst.List)):
            # `values, indices = x.topk(k)`: each name holds an item of the call's result.
            unpacked = isinstance(value, cst.Call) and not any(
                isinstance(e, cst.StarredElement) for e in target.elements)
            for index, element in enumerate(target.elements):
                self.bind(element.value, _item(value, index) if unpacked else _UNKNOWN)
        elif isinstance(target, cst.StarredElement):
            self.bind(target.value, _UNKNOWN)
        elif isinstance(target, cst.Subscript):
            root = target.value
            while isinstance(root, (cst.Subscript, cst.Attribute)):
                root = root.value
            if isinstance(root, cst.Name):
                scope[root.value] = _UNKNOWN  # `n[n == 0] = 1` guards n in place

    def forget(self, name: str) -> None:
        self._scopes[-1][name] = _UNKNOWN

    def enter_function(self, node: cst.FunctionDef) -> None:
        self._scopes.append({})
        params = node.params
        self._annotations.append({p.name.value: p.annotation.annotation
                                  for p in (*params.posonly_params, *params.params, *params.kwonly_params)
                                  if p.annotation is not None})

    def leave_function(self) -> None:
        self._scopes.pop()
        self._annotations.pop()

    def enter_lambda(self, node: cst.Lambda) -> None:
        # A lambda's parameters shadow outer names for its body.
        inner = dict(self._scopes[-1])
        for param in node.params.params:
            inner[param.name.value] = _UNKNOWN
        self._scopes.append(inner)

    def leave_lambda(self) -> None:
        self._scopes.pop()


class LocalsRule(Rule):
    """A rule that can ask ``self.value_of(name)``. Subclasses overriding a visit method call super()."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.locals = Locals()

    def value_of(self, name: str) -> Optional[cst.BaseExpression]:
        return self.locals.value_of(name)

    def rebound(self, name: str) -> bool:
        return self.locals.rebound(name)

    def annotation_of(self, name: str) -> Optional[cst.BaseExpression]:
        return self.locals.annotation_of(name)

    def visit_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.locals.enter_function(node)

    def leave_FunctionDef(self, node: cst.FunctionDef) -> None:
        self.locals.leave_function()

    def visit_Lambda(self, node: cst.Lambda) -> None:
        self.locals.enter_lambda(node)

    def leave_Lambda(self, node: cst.Lambda) -> None:
        self.locals.leave_lambda()

    def leave_Assign(self, node: cst.Assign) -> None:
        single = len(node.targets) == 1
        for target in node.targets:
            self.locals.bind(target.target, node.value if single else _UNKNOWN)

    def leave_AnnAssign(self, node: cst.AnnAssign) -> None:
        self.locals.bind(node.target, node.value if node.value is not None else _UNKNOWN)

    def leave_AugAssign(self, node: cst.AugAssign) -> None:
        self.locals.bind(node.target, _UNKNOWN)

    def leave_NamedExpr(self, node: cst.NamedExpr) -> None:
        self.locals.bind(node.target, node.value)

    def visit_For(self, node: cst.For) -> None:
        self.locals.bind(node.target, _UNKNOWN)

    def visit_CompFor(self, node: cst.CompFor) -> None:
        self.locals.bind(node.target, _UNKNOWN)

    def visit_WithItem(self, node: cst.WithItem) -> None:
        if node.asname is not None:
            self.locals.bind(node.asname.name, _UNKNOWN)

    def visit_Call(self, node: cst.Call) -> None:
        func = node.func
        # An in-place method (`n.clamp_(min=eps)`, `n.add_(eps)`) may guard the value.
        if (isinstance(func, cst.Attribute) and isinstance(func.value, cst.Name)
                and func.attr.value.endswith("_") and not func.attr.value.startswith("__")):
            self.locals.forget(func.value.value)


def _item(value: cst.BaseExpression, index: int) -> cst.Subscript:
    """`value[index]`, a node made for the analysis only: it is not in the module."""
    return cst.Subscript(value=value, slice=[cst.SubscriptElement(slice=cst.Index(value=cst.Integer(str(index))))])
