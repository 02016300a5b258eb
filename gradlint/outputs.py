"""Is a division an evaluation's forward-only normalisation of a network's output? (GL001 leaves it alone.)

`f = model.encode_image(x)` under `torch.no_grad()`, then `f /= f.norm(dim=-1, keepdim=True)` (inside the
block or after it), is what CLIP-style zero-shot evaluation writes: the tensor requires no gradient, so the
division is NaN only for an exactly zero output vector, and nothing is trained on it. A statistic of such
outputs (open_clip's mean of template embeddings, which can be 0), a module helper's result, or the same
normalisation with gradients is not this case.

What counts as a network's output: the result of a call that is not a torch function (nor any import-bound
function) and not a tensor computation (`mean`, `sum`, arithmetic methods...): `model(x)`,
`model.encode_image(x)`, `self.encoder(x)`, through local names and value-keeping methods (`.float()`).
"""

from __future__ import annotations

from typing import Callable, Optional

import libcst as cst

from .guards import grad_off_around, turns_grad_off
from .nodes import method_call, same_code
from .norms import TRANSPARENT_METHODS, Unguarded, input_of
from .walk import children

# Tensor methods that compute a new value (a statistic, an arithmetic result), not a network's output.
TENSOR_COMPUTATIONS = frozenset({
    "mean", "sum", "nansum", "nanmean", "max", "min", "median", "amax", "amin", "prod", "cumsum", "std", "var",
    "norm", "abs", "exp", "log", "sqrt", "pow", "add", "sub", "mul", "div", "matmul", "mm", "bmm", "softmax",
    "sigmoid", "tanh", "relu", "gather", "index_select", "masked_fill", "where", "topk", "sort", "new_zeros",
    "new_ones", "new_tensor", "new_empty", "zeros_like", "ones_like", "fill_", "zero_", "copy_", "lerp",
    "addmm", "baddbmm", "einsum", "outer", "cross", "diff", "flip", "roll", "clamp", "clip", "clamp_min",
    "clamp_max", "maximum", "minimum", "neg", "square", "sign", "floor", "round", "cumprod", "logsumexp",
    "log_softmax", "masked_select", "scatter", "index_add", "nan_to_num",
})


class NetworkOutputs:
    def __init__(self, ctx, value_of: Callable[[str], Optional[cst.BaseExpression]]) -> None:
        self.ctx = ctx
        self.value_of = value_of

    def forward_only_normalisation(self, site, factors: list[Unguarded], numerator) -> bool:
        """Whether the division being walked normalises a network's output computed without gradients
        (lexically in a no_grad block or function, or from a call made in one)."""
        output = self.normalised_output(site, factors, numerator)
        if output is None:
            return False
        return grad_off_around(self.ctx.statements, self.ctx.resolve) or self.computed_without_grad(output)

    def normalised_output(self, site, factors: list[Unguarded], numerator) -> Optional[cst.Call]:
        """The call, when the division is `f / f.norm(...)` (or `f /= ...`) and `f` is a network's output."""
        if isinstance(site, cst.AugAssign):
            numerator = site.target
        if numerator is None or len(factors) != 1 or factors[0].kind != "norm" or factors[0].compound:
            return None
        taken_of = input_of(factors[0].node, self.ctx.resolve)
        if taken_of is None or not same_code(strip_views(taken_of), strip_views(numerator)):
            return None
        return self.network_output(numerator)

    def network_output(self, expr: Optional[cst.BaseExpression], depth: int = 0) -> Optional[cst.Call]:
        if expr is None or depth > 6:
            return None
        if isinstance(expr, cst.Name):
            return self.network_output(self.value_of(expr.value), depth + 1)
        if not isinstance(expr, cst.Call) or self.ctx.resolve(expr.func) is not None:
            return None  # an operation, a literal, or a function of an imported library (torch's)
        mc = method_call(expr)
        if mc is not None:
            receiver, name = mc
            if name in TRANSPARENT_METHODS:
                return self.network_output(receiver, depth + 1)
            return expr if name not in TENSOR_COMPUTATIONS else None
        if isinstance(expr.func, cst.Name):
            return expr if self.ctx.module_function(expr.func) is None else None  # not a helper of this file
        return expr if isinstance(expr.func, cst.Attribute) else None  # `self.encoder(x)`

    def computed_without_grad(self, call: cst.Call) -> bool:
        """Whether `call` sits in a `with torch.no_grad():` (or `inference_mode`) block of the routine being
        walked: `f = model.encode_image(x)` inside it, `f /= f.norm(...)` after it."""
        statements = self.ctx.statements
        scope = next((s for s in reversed(statements) if isinstance(s, cst.FunctionDef)), None)
        roots = [scope.body] if scope is not None else list(self.ctx.module.body)
        resolve = self.ctx.resolve
        stack = [(node, False) for node in roots]
        while stack:
            node, off = stack.pop()
            if node is call:
                return off
            if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)) and node is not scope:
                continue
            if isinstance(node, cst.With) and any(turns_grad_off(i.item, resolve) for i in node.items):
                off = True
            stack.extend((child, off) for child in children(node))
        return False


def strip_views(expr: cst.BaseExpression) -> cst.BaseExpression:
    """`f` for `f.float()`, `f.detach()` and other value-keeping methods (see `norms.TRANSPARENT_METHODS`)."""
    for _ in range(8):
        mc = method_call(expr) if isinstance(expr, cst.Call) else None
        if mc is None or mc[1] not in TRANSPARENT_METHODS:
            return expr
        expr = mc[0]
    return expr
