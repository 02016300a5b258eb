"""What a denominator is: a norm, a standard deviation, a variance, the square root of a sum of squares.

`x / x.norm(dim=-1)`, `a / (a.norm() * b.norm())`, `x / n` with `n = x.norm()`, `torch.sqrt((x**2).sum())`:
`Denominators(resolve, value_of).factors(expr)` lists the factors of a denominator that can be 0 for an
all-zero (or constant) input and have nothing keeping them from it (`+ eps`, `clamp(min=...)`), each
with the expression of the denominator that carries it (the one a fix guards). A name is followed to
the value it holds (`value_of`); a name bound to an operation on a norm (`n = a.norm() ** 2`) gives a
*compound* factor, which a clamp would not guard as a norm. A call of a plain function is asked of `helper` (see
`helpers`: a function of the module whose every return is unguarded). `sum_of_squares` is the question GL014
asks too.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional

import libcst as cst

from .nodes import arg, arg_value, is_name, method_call, number, root_name, same_code

# qualified name -> (input keyword, p keyword); all take (input, p, dim, keepdim) positionally.
NORM_FUNCTIONS = {
    "torch.norm": ("input", "p"),
    "torch.functional.norm": ("input", "p"),
    "torch.linalg.norm": ("A", "ord"),
    "torch.linalg.vector_norm": ("x", "ord"),
    "torch.linalg.matrix_norm": None,  # a norm, but never over one dimension
}
STD_FUNCTIONS = {"torch.std"}
VAR_FUNCTIONS = {"torch.var"}
SQRT_FUNCTIONS = {"torch.sqrt"}
RSQRT_FUNCTIONS = {"torch.rsqrt"}
REDUCE_FUNCTIONS = {"torch.sum", "torch.mean", "torch.nansum", "torch.nanmean"}
SQUARE_FUNCTIONS = {"torch.square"}
CLAMP_FUNCTIONS = {"torch.clamp", "torch.clip"}
DIVIDE_FUNCTIONS = {"torch.div", "torch.divide", "torch.true_divide"}
DIVIDE_METHODS = {"div", "div_", "divide", "divide_", "true_divide", "true_divide_"}
# Methods that keep a zero a zero: the guard question passes through them to their receiver.
TRANSPARENT_METHODS = {
    "unsqueeze", "squeeze", "view", "view_as", "reshape", "reshape_as", "expand", "expand_as", "flatten",
    "unflatten", "permute", "transpose", "t", "contiguous", "detach", "clone", "float", "double", "half",
    "bfloat16", "to", "type", "type_as", "repeat", "repeat_interleave",
}
SOFTMAX_FUNCTIONS = {"torch.softmax", "torch.nn.functional.softmax", "torch.special.softmax"}
RANDOM_FUNCTIONS = {"torch.randn", "torch.randn_like", "torch.rand", "torch.rand_like", "torch.normal"}
PARAMETERS_TO_VECTOR = "torch.nn.utils.parameters_to_vector"
CONCATENATIONS = {"torch.cat", "torch.concat", "torch.concatenate", PARAMETERS_TO_VECTOR}
MAX_DEPTH = 8


def _l1(p: Optional[cst.BaseExpression]) -> bool:
    """Whether a norm's order is 1. An L1 norm is a sum of magnitudes: dividing by it normalises a mass
    (weights, counts) to sum to one, as `w / w.sum()` does, which is not a direction's normalisation and
    not what GL001 reports; its gradient at 0 is finite (the subgradient of |x| there is 0)."""
    return number(p) == 1


@dataclass(frozen=True)
class Unguarded:
    kind: str  # "norm", "std", "var", "sqrt", "sqrt+term", "rsqrt"
    node: cst.BaseExpression  # the norm/std/var/sqrt call (maybe bound elsewhere); "sqrt+term": the sum
    factor: Optional[cst.BaseExpression] = None  # the expression of the denominator that carries it
    inner: Optional[cst.BaseExpression] = None  # sqrt's argument
    term: Optional[cst.BaseExpression] = None  # "sqrt+term": what is added outside the sqrt
    compound: bool = False  # reached through a name bound to an operation on it (`n = a.norm() ** 2`)
    helper: Optional[str] = None  # a call of this module-level function, whose every return is the above
    tensor: bool = False  # (helper) every return is provably a tensor


class Denominators:
    def __init__(self, resolve: Callable, value_of: Callable[[str], Optional[cst.BaseExpression]],
                 helper: Optional[Callable[[cst.Call], Optional[Unguarded]]] = None) -> None:
        """`helper(call)`: what a call of a function (not a method) returns, when it is unguarded."""
        self._resolve = resolve
        self._value_of = value_of
        self._helper = helper

    def factors(self, expr: cst.BaseExpression, depth: int = 0) -> list[Unguarded]:
        """The unguarded factors of a denominator: `a.norm() * b.norm()` has two, `-2 * n ** 2` one (`n`)."""
        if depth > MAX_DEPTH:
            return []
        if isinstance(expr, cst.BinaryOperation):
            op = expr.operator
            if isinstance(op, cst.Multiply):
                return self.factors(expr.left, depth + 1) + self.factors(expr.right, depth + 1)
            if isinstance(op, cst.Divide):
                return self.factors(expr.left, depth + 1)
            if isinstance(op, cst.Power) and number(expr.right) != 0.5:
                return self.factors(expr.left, depth + 1) if (number(expr.right) or 0) > 0 else []
        if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, (cst.Minus, cst.Plus)):
            return self.factors(expr.expression, depth + 1)
        found = self.classify(expr, depth)
        return [replace(found, factor=expr)] if found is not None else []

    def classify(self, expr: cst.BaseExpression, depth: int = 0) -> Optional[Unguarded]:
        if depth > MAX_DEPTH:
            return None
        if isinstance(expr, cst.Name):
            value = self._value_of(expr.value)
            if value is None:
                return None
            if isinstance(value, (cst.BinaryOperation, cst.UnaryOperation)):
                found = self.sqrt_plus_term(value, depth + 1)
                if found is not None:
                    return found
                inner = self.factors(value, depth + 1)
                return replace(inner[0], compound=True) if inner else None
            return self.classify(value, depth + 1)
        if isinstance(expr, cst.Subscript):
            return self.classify(expr.value, depth + 1)
        if isinstance(expr, cst.BinaryOperation):
            if isinstance(expr.operator, cst.Power) and number(expr.right) == 0.5:  # `s ** 0.5`
                return Unguarded("sqrt", expr, inner=expr.left) if self.sum_of_squares(expr.left, depth) else None
            return self.sqrt_plus_term(expr, depth)
        if isinstance(expr, cst.Call):
            return self.classify_call(expr, depth)
        return None

    def sqrt_plus_term(self, expr: cst.BaseExpression, depth: int) -> Optional[Unguarded]:
        """`sqrt(sum_sq) + eps`: the term keeps the value from 0, but not sqrt's gradient."""
        if not isinstance(expr, cst.BinaryOperation) or not isinstance(expr.operator, cst.Add):
            return None
        for side, other in ((expr.left, expr.right), (expr.right, expr.left)):
            inner = self.classify(side, depth + 1)
            if inner is not None and inner.kind == "sqrt" and inner.node is side and inner.helper is None:
                return Unguarded("sqrt+term", expr, inner=inner.inner, term=other)
        return None  # `norm + eps`: a guard

    def classify_call(self, call: cst.Call, depth: int) -> Optional[Unguarded]:
        qualified = self._resolve(call.func)
        if qualified is not None:
            if qualified in NORM_FUNCTIONS:
                keywords = NORM_FUNCTIONS[qualified]
                if keywords is not None and _l1(arg_value(call, 1, keywords[1])):
                    return None
                return Unguarded("norm", call)
            if qualified in STD_FUNCTIONS:
                return Unguarded("std", call)
            if qualified in VAR_FUNCTIONS:
                return Unguarded("var", call)
            if qualified in SQRT_FUNCTIONS:
                inner = arg_value(call, 0, "input")
                return Unguarded("sqrt", call, inner=inner) if self.sum_of_squares(inner, depth) else None
            if qualified == "torch.pow" and number(arg_value(call, 1, "exponent")) == 0.5:
                inner = arg_value(call, 0, "input")
                return Unguarded("sqrt", call, inner=inner) if self.sum_of_squares(inner, depth) else None
            if qualified in CLAMP_FUNCTIONS:
                if self._has_min(call, offset=1):
                    return None
                inner = arg_value(call, 0, "input")
                return self.classify(inner, depth + 1) if inner is not None else None
            return None
        if isinstance(call.func, cst.Name):
            return self._helper(call) if self._helper is not None else None
        mc = method_call(call)
        if mc is None:
            return None
        receiver, name = mc
        if name == "pow" and number(arg_value(call, 0, "exponent")) == 0.5 and self.sum_of_squares(receiver, depth):
            return Unguarded("sqrt", call, inner=receiver)
        if name == "norm" and self._is_tensor_norm(call, receiver):
            return None if _l1(arg_value(call, 0, "p")) else Unguarded("norm", call)
        if name in ("std", "var") and not is_name(receiver, "self", "cls"):
            return Unguarded(name, call)
        if name == "sqrt" and self.sum_of_squares(receiver, depth):
            return Unguarded("sqrt", call, inner=receiver)
        if name in ("clamp", "clip", "clamp_", "clip_"):
            return None if self._has_min(call, offset=0) else self.classify(receiver, depth + 1)
        if name in TRANSPARENT_METHODS:
            return self.classify(receiver, depth + 1)
        return None

    def rsqrt(self, expr: cst.BaseExpression) -> Optional[Unguarded]:
        if not isinstance(expr, cst.Call):
            return None
        qualified = self._resolve(expr.func)
        if qualified in RSQRT_FUNCTIONS:
            inner = arg_value(expr, 0, "input")
        elif qualified is None and (mc := method_call(expr)) and mc[1] == "rsqrt":
            inner = mc[0]
        else:
            return None
        return Unguarded("rsqrt", expr, factor=expr, inner=inner) if self.sum_of_squares(inner, 0) else None

    def sum_of_squares(self, expr: Optional[cst.BaseExpression], depth: int) -> bool:
        if expr is None or depth > MAX_DEPTH:
            return False
        if isinstance(expr, cst.Name):
            value = self._value_of(expr.value)
            return value is not None and self.sum_of_squares(value, depth + 1)
        if self.square(expr, depth):
            return True
        if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Add):
            # `noise * noise + sigma * sigma` with `sigma` a constant is never 0: not a finding.
            return (self.sum_of_squares(expr.left, depth + 1) and self.sum_of_squares(expr.right, depth + 1)
                    and not self.constant_square(expr.left) and not self.constant_square(expr.right))
        if not isinstance(expr, cst.Call):
            return False
        qualified = self._resolve(expr.func)
        if qualified in REDUCE_FUNCTIONS:
            return self.square(arg_value(expr, 0, "input"), depth + 1)
        if qualified in VAR_FUNCTIONS:
            return True
        if qualified is None and (mc := method_call(expr)):
            receiver, name = mc
            if name in ("sum", "mean", "nansum", "nanmean"):
                return self.square(receiver, depth + 1)
            if name == "var":
                return True
            if name in TRANSPARENT_METHODS:
                return self.sum_of_squares(receiver, depth + 1)
        return False

    def square(self, expr: Optional[cst.BaseExpression], depth: int) -> bool:
        if expr is None or depth > MAX_DEPTH:
            return False
        if isinstance(expr, cst.Name):
            value = self._value_of(expr.value)
            return value is not None and self.square(value, depth + 1)
        if isinstance(expr, cst.BinaryOperation):
            if isinstance(expr.operator, cst.Power):
                return number(expr.right) == 2
            if isinstance(expr.operator, cst.Multiply):
                return same_code(expr.left, expr.right)
            return False
        if isinstance(expr, cst.Call):
            qualified = self._resolve(expr.func)
            if qualified in SQUARE_FUNCTIONS:
                return True
            if qualified == "torch.pow":
                return number(arg_value(expr, 1, "exponent")) == 2
            if qualified is None and (mc := method_call(expr)):
                receiver, name = mc
                if name == "square":
                    return True
                if name == "pow":
                    return number(arg_value(expr, 0, "exponent")) == 2
                if name in TRANSPARENT_METHODS or name == "abs":
                    return self.square(receiver, depth + 1)
        return False

    def constant_square(self, expr: cst.BaseExpression) -> bool:
        """The square of a number, of a `self.` attribute or of an UPPER_CASE name (directly or through a
        local name): a constant, likely > 0."""
        if isinstance(expr, cst.Name):  # `sigma_sq = sigma * sigma` then `sqrt(noise_sq + sigma_sq)`
            expr = self._value_of(expr.value) or expr
        if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, (cst.Power, cst.Multiply)):
            base = expr.left
        elif isinstance(expr, cst.Call) and (mc := method_call(expr)) and mc[1] in ("pow", "square"):
            base = mc[0]
        else:
            return False
        if isinstance(base, cst.Name) and not base.value.isupper():
            base = self._value_of(base.value) or base
        if number(base) is not None:
            return True
        if isinstance(base, cst.Attribute) and is_name(base.value, "self"):
            return True
        return isinstance(base, cst.Name) and base.value.isupper()

    @staticmethod
    def _has_min(call: cst.Call, offset: int) -> bool:
        low = arg_value(call, offset, "min")
        return low is not None and not is_name(low, "None") and number(low) != 0

    @staticmethod
    def _is_tensor_norm(call: cst.Call, receiver: cst.BaseExpression) -> bool:
        if is_name(receiver, "self", "cls"):
            return False  # `self.norm(x)`: a LayerNorm called norm
        first = arg(call, 0)
        if first is not None and root_name(receiver) == "self":
            p = first.value
            # `self.encoder.norm(h)` is a submodule; `self.weight.norm(2, dim=1)` is a tensor norm
            return number(p) is not None or isinstance(p, (cst.SimpleString, cst.Call))
        return True

    def never_zero(self, expr: Optional[cst.BaseExpression], depth: int = 0) -> bool:
        """A value whose norm cannot be 0: probabilities (a softmax sums to 1, so its largest entry is at
        least 1/n) and their largest entries (`probs.topk(k)[0]`, `probs.max(-1).values`); random samples
        (`torch.randn(...)`: all zero with probability 0); a model's whole parameter vector
        (`torch.cat([p.view(-1) for p in model.parameters()])`: initialisations are random)."""
        if expr is None or depth > MAX_DEPTH:
            return False
        if isinstance(expr, cst.Name):
            return self.never_zero(self._value_of(expr.value), depth + 1)
        if isinstance(expr, cst.Subscript) or (isinstance(expr, cst.Attribute) and expr.attr.value == "values"):
            largest = _largest_of(expr.value, self._resolve)
            return largest is not None and self.never_zero(largest, depth + 1)
        if not isinstance(expr, cst.Call):
            return False
        qualified = self._resolve(expr.func)
        if qualified in SOFTMAX_FUNCTIONS or qualified in RANDOM_FUNCTIONS:
            return True
        if qualified in CONCATENATIONS:
            return _over_parameters(arg_value(expr, 0, "tensors" if qualified != PARAMETERS_TO_VECTOR else
                                              "parameters"))
        mc = method_call(expr)
        if mc is None or self._resolve(expr.func) is not None:
            return False
        return mc[1] == "softmax" or (mc[1] in TRANSPARENT_METHODS and self.never_zero(mc[0], depth + 1))


def _largest_of(expr, resolve) -> Optional[cst.BaseExpression]:
    """For `x.topk(k)` / `torch.topk(x, k)` / `x.max(dim)` / `torch.max(x, dim)` (largest first): `x`."""
    if not isinstance(expr, cst.Call):
        return None
    qualified = resolve(expr.func)
    if qualified in ("torch.topk", "torch.max"):
        source, offset = arg_value(expr, 0, "input"), 1
    elif qualified is None and (mc := method_call(expr)) and mc[1] in ("topk", "max"):
        source, offset = mc[0], 0
    else:
        return None
    largest = arg_value(expr, offset + 2, "largest") if (qualified or mc[1]).endswith("topk") else None
    return None if is_name(largest, "False") else source


def input_of(call: cst.BaseExpression, resolve: Callable) -> Optional[cst.BaseExpression]:
    """What a norm, std or var call is taken of: `x` in `x.norm()`, `torch.std(x)`, `torch.linalg.norm(A)`."""
    if not isinstance(call, cst.Call):
        return None
    qualified = resolve(call.func)
    if qualified is not None:
        keywords = NORM_FUNCTIONS.get(qualified)
        return arg_value(call, 0, keywords[0] if keywords else "input")
    mc = method_call(call)
    return mc[0] if mc is not None else None


def _over_parameters(expr) -> bool:
    """`model.parameters()`, or a comprehension over it (`[p.view(-1) for p in model.parameters()]`)."""
    if isinstance(expr, (cst.ListComp, cst.GeneratorExp)):
        expr = expr.for_in.iter if expr.for_in.inner_for_in is None else None
    mc = method_call(expr) if expr is not None else None
    return mc is not None and mc[1] == "parameters" and not expr.args
