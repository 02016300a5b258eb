"""Whether an einsum operand mixes entries of the other operands rather than scaling them.

A contraction with a one-hot lookup, an identity or a 0/1 mask selects or adds up entries; one with
non-negative weights normalised to sum 1 (a softmax, `w / w.sum(-1, keepdim=True)` of clamped or
absolute values) averages them. Neither multiplies magnitudes, so an einsum with such an operand is a
gather or an average, not a product that can overflow.

Facts, in order of cost:
- in the expression: `F.one_hot(...)`, `torch.eye(...)`, `torch.zeros/ones(...)` (and `_like`), a
  comparison (a bool mask), a softmax, `w / w.sum(..., keepdim=True)` of a non-negative `w`, and dtype,
  device and shape changes or indexing of any of these;
- through a local name bound to one (`value_of`);
- in the module (asked only when the expression cannot decide; the caller makes sure LibCST parsed the
  whole module): a call of a function (nested in an enclosing one, or at module level) every `return`
  of which gives one (also `ret = torch.zeros(...)` whose only changes are `ret[...] = 1`), a parameter
  of a module function that every call in the module passes one for, and `self.attr` whose every write
  in the module (`self.attr = ...`, `self.register_buffer("attr", ...)`, `self.attr.copy_(...)`) is one
  (or an uninitialised `torch.empty(...)`/`.new_empty(...)` placeholder that another write fills).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import libcst as cst

from .calls import call_sites, module_function
from .nodes import arg_value, method_call, number
from .walk import child_fields

SOFTMAX = frozenset({"torch.softmax", "torch.nn.functional.softmax", "torch.special.softmax"})
NON_NEGATIVE_METHODS = frozenset({"abs", "exp", "relu", "sigmoid", "softmax", "square"})
INDICATOR_FUNCTIONS = frozenset({
    "torch.nn.functional.one_hot", "torch.eye", "torch.zeros", "torch.ones", "torch.zeros_like",
    "torch.ones_like",
})
PLACEHOLDERS = frozenset({"torch.empty", "torch.empty_like"})
KEEPING_METHODS = frozenset({
    "float", "double", "half", "bfloat16", "to", "type", "type_as", "long", "int", "bool", "view", "reshape",
    "permute", "transpose", "t", "contiguous", "unsqueeze", "squeeze", "flatten", "expand", "expand_as",
    "repeat", "detach", "clone", "cuda", "cpu",
})
MAX_DEPTH = 6


class MixingWeights:
    """`local(expr)` and `in_module(expr, functions)` for a rule: `value_of(name)` is the local value a
    name holds (or None); `functions` are the functions around `expr`, outermost first."""

    def __init__(self, ctx, value_of: Callable[[str], Optional[cst.BaseExpression]],
                 rebound: Callable[[str], bool] = lambda name: False) -> None:
        self._ctx = ctx
        self._value_of = value_of
        self._rebound = rebound  # the function binds the name itself: not (or no longer) a parameter
        self._functions: dict = {}  # id(def) -> every return mixes
        self._attributes: dict = {}  # attribute name -> every write mixes
        self._calls: Optional[dict] = None  # module-level function name -> its call sites

    def local(self, expr: Optional[cst.BaseExpression]) -> bool:
        """Mixes, by the expression itself or the local names it is bound to."""
        return self._mixes(expr, 0, None)

    def in_module(self, expr: Optional[cst.BaseExpression], functions: Sequence[cst.FunctionDef]) -> bool:
        """Mixes, by the module's facts too."""
        return self._mixes(expr, 0, tuple(functions))

    def needs_module(self, expr: cst.BaseExpression, functions: Sequence[cst.FunctionDef]) -> bool:
        """Whether LibCST must see the whole module to judge the expression: a parameter of the
        module-level function it is in (its calls), a call of a function this part does not define, or a
        `self.` attribute (its writes)."""
        for _ in range(MAX_DEPTH):
            if not isinstance(expr, cst.Name) or self._value_of(expr.value) is None:
                break
            expr = self._value_of(expr.value)
        if isinstance(expr, cst.Name):  # a parameter of a module-level function: its calls may tell
            return bool(functions) and not self._rebound(expr.value) and \
                _parameter(functions[-1], expr.value) is not None and \
                module_function(self._ctx.module, functions[-1].name.value) is functions[-1]
        if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Name):  # a helper not parsed yet
            return self._ctx.partial and self._find_function(expr.func.value, functions) is None
        return _self_attribute(expr) is not None

    def _mixes(self, expr, depth: int, functions: Optional[tuple], local_names: bool = True) -> bool:
        """`functions` None: only the expression and local names; else the module's facts too."""
        if expr is None or depth > MAX_DEPTH:
            return False

        def recurse(inner) -> bool:
            return self._mixes(inner, depth + 1, functions, local_names)

        if isinstance(expr, cst.Comparison):
            return True
        if isinstance(expr, cst.Subscript):
            return recurse(expr.value)
        if isinstance(expr, cst.Name):
            value = self._value_of(expr.value) if local_names else None
            if value is not None:
                return recurse(value)
            return bool(functions) and local_names and not self._rebound(expr.value) and \
                self._parameter_mixes(functions[-1], expr.value)
        if isinstance(expr, cst.BinaryOperation):
            return self._normalised(expr, depth, local_names)
        if functions is not None and (attribute := _self_attribute(expr)) is not None:
            return self._attribute_mixes(attribute)
        if not isinstance(expr, cst.Call):
            return False
        qualified = self._ctx.resolve(expr.func)
        if qualified in INDICATOR_FUNCTIONS or qualified in SOFTMAX:
            return True
        if qualified is None and isinstance(expr.func, cst.Name):
            return functions is not None and self._function_returns(expr.func.value, functions)
        mc = method_call(expr)
        if qualified is not None or mc is None:
            return False
        return mc[1] == "softmax" or (mc[1] in KEEPING_METHODS and recurse(mc[0]))

    def _normalised(self, expr: cst.BinaryOperation, depth: int, local_names: bool) -> bool:
        """`w / w.sum(dim, keepdim=True)` with `w` non-negative: weights that sum to 1."""
        if not isinstance(expr.operator, cst.Divide) or not isinstance(expr.right, cst.Call):
            return False
        total = expr.right
        mc = method_call(total)
        if mc is not None and mc[1] == "sum" and self._ctx.resolve(total.func) is None:
            summed, keepdim = mc[0], arg_value(total, 1, "keepdim")
        elif self._ctx.resolve(total.func) == "torch.sum":
            summed, keepdim = arg_value(total, 0, "input"), arg_value(total, 2, "keepdim")
        else:
            return False
        return (isinstance(keepdim, cst.Name) and keepdim.value == "True" and summed is not None
                and summed.deep_equals(expr.left) and self._non_negative(expr.left, depth + 1, local_names))

    def _non_negative(self, expr, depth: int, local_names: bool) -> bool:
        if expr is None or depth > MAX_DEPTH:
            return False
        if isinstance(expr, cst.Name):
            value = self._value_of(expr.value) if local_names else None
            return value is not None and self._non_negative(value, depth + 1, local_names)
        if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Power):
            return number(expr.right) == 2
        mc = method_call(expr)
        if mc is None:
            return False
        if mc[1] in NON_NEGATIVE_METHODS:
            return True
        if mc[1] in ("clamp", "clamp_min", "clip"):
            low = arg_value(expr, 0, "min")
            return number(low) is not None and number(low) >= 0
        return mc[1] in KEEPING_METHODS and self._non_negative(mc[0], depth + 1, local_names)

    # -- module facts ----------------------------------------------------------------------------------
    def _parameter_mixes(self, function: cst.FunctionDef, name: str) -> bool:
        if _parameter(function, name) is None or module_function(self._ctx.module, function.name.value) \
                is not function:
            return False  # only a module-level function's calls are found by name
        calls = self._calls_of(function.name.value)
        if not calls:
            return False
        for call in calls:
            passed = call.argument(function, name)
            caller = tuple(s for s in call.statements if isinstance(s, cst.FunctionDef))
            if passed is None or not self._mixes(passed, 1, caller, local_names=False):
                return False
        return True

    def _function_returns(self, name: str, functions: tuple) -> bool:
        """The function `name` means here (a def nested in an enclosing function, else the module's)
        returns a mixing value from every `return`."""
        function = self._find_function(name, functions)
        if function is None:
            return False
        key = id(function)
        if key not in self._functions:
            self._functions[key] = False  # recursion proves nothing
            self._functions[key] = self._returns_mixing(function, (*functions, function))
        return self._functions[key]

    def _find_function(self, name: str, functions: Sequence[cst.FunctionDef]) -> Optional[cst.FunctionDef]:
        """The def `name` means here: nested in an enclosing function, else at module level."""
        for outer in reversed(functions):
            if isinstance(outer.body, cst.IndentedBlock):
                found = next((s for s in outer.body.body if isinstance(s, cst.FunctionDef)
                              and s.name.value == name), None)
                if found is not None:
                    return found
        return module_function(self._ctx.module, name)

    def _calls_of(self, name: str) -> list:
        if self._calls is None:  # one walk finds the calls of every module-level function
            names = {s.name.value for s in self._ctx.module.body if isinstance(s, cst.FunctionDef)}
            self._calls = call_sites(self._ctx.module, names)
        return self._calls.get(name, [])

    def _attribute_mixes(self, attribute: str) -> bool:
        if attribute not in self._attributes:
            self._attributes[attribute] = False
            writes = list(_attribute_writes(self._ctx.module, attribute))
            filled = [w for w in writes if not self._placeholder(w)]
            self._attributes[attribute] = bool(filled) and all(
                self._mixes(w, 1, (), local_names=False) for w in filled)
        return self._attributes[attribute]

    def _placeholder(self, expr) -> bool:
        """`torch.empty(...)`, `t.new_empty(...)`: memory that another write fills."""
        if not isinstance(expr, cst.Call):
            return False
        mc = method_call(expr)
        return self._ctx.resolve(expr.func) in PLACEHOLDERS or (mc is not None and mc[1] == "new_empty")

    def _returns_mixing(self, function: cst.FunctionDef, functions: tuple) -> bool:
        """Every `return` of the function gives a mixing value, directly or through the helper's local
        names (the last value each was bound to), or a local built by an indicator factory (or
        `torch.empty`) and only changed by `name[...] = 0 or 1`."""
        built: dict = {}  # local name -> its last value
        changed: set = set()  # locals changed otherwise than `name[...] = 0 or 1`
        returns = []
        for node in _nodes(function.body):
            if isinstance(node, cst.Assign):
                for target in node.targets:
                    t = target.target
                    if isinstance(t, cst.Name):
                        built[t.value] = node.value
                    elif isinstance(t, cst.Subscript) and isinstance(t.value, cst.Name) and \
                            number(node.value) not in (0.0, 1.0):
                        changed.add(t.value.value)
            elif isinstance(node, cst.AugAssign):
                root = node.target.value if isinstance(node.target, cst.Subscript) else node.target
                if isinstance(root, cst.Name):
                    changed.add(root.value)
            elif isinstance(node, cst.Call) and (mc := method_call(node)) and mc[1].endswith("_") and \
                    isinstance(mc[0], cst.Name):
                changed.add(mc[0].value)  # an in-place method
            elif isinstance(node, cst.Return):
                returns.append(node.value)
        if not returns:
            return False
        outer_value_of = self._value_of
        self._value_of = lambda name: None if name in changed else built.get(name)  # the helper's locals
        try:
            for value in returns:
                for _ in range(MAX_DEPTH):
                    if not isinstance(value, cst.Name) or value.value not in built or value.value in changed:
                        break
                    value = built[value.value]
                if isinstance(value, cst.Call) and self._placeholder(value):
                    continue  # filled by `name[...] = 0 or 1` only
                if not self._mixes(value, 1, functions):
                    return False
        finally:
            self._value_of = outer_value_of
        return True


def _parameter(function: cst.FunctionDef, name: str) -> Optional[cst.Param]:
    params = function.params
    return next((p for p in (*params.posonly_params, *params.params, *params.kwonly_params)
                 if p.name.value == name), None)


def _self_attribute(expr) -> Optional[str]:
    if isinstance(expr, cst.Attribute) and isinstance(expr.value, cst.Name) and expr.value.value == "self":
        return expr.attr.value
    return None


def _nodes(root):
    """Every node under `root`, in source order (so that the last binding of a name is the last seen)."""
    stack = [root]
    while stack:
        item = stack.pop()
        yield item
        children = []
        for name in child_fields(type(item)):
            value = getattr(item, name)
            if isinstance(value, cst.CSTNode):
                children.append(value)
            elif isinstance(value, (list, tuple)):
                children.extend(c for c in value if isinstance(c, cst.CSTNode))
        stack.extend(reversed(children))


def _attribute_writes(module: cst.Module, attribute: str):
    """What the module writes to `self.<attribute>`: assignments, `register_buffer`, `.copy_(...)`."""
    for node in _nodes(module):
        if isinstance(node, cst.Assign):
            for target in node.targets:
                if _self_attribute(target.target) == attribute:
                    yield node.value
        elif isinstance(node, cst.AugAssign) and _self_attribute(node.target) == attribute:
            yield node  # not an indicator: makes the attribute unknown
        elif isinstance(node, cst.Call) and (mc := method_call(node)):
            receiver, name = mc
            if name == "register_buffer" and isinstance(receiver, cst.Name) and receiver.value == "self":
                key = arg_value(node, 0, "name")
                if isinstance(key, cst.SimpleString) and key.evaluated_value == attribute:
                    yield arg_value(node, 1, "tensor")
            elif name == "copy_" and _self_attribute(receiver) == attribute:
                yield arg_value(node, 0, "src")
            elif name.endswith("_") and _self_attribute(receiver) == attribute:
                yield node  # another in-place change
