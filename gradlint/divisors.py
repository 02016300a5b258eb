"""Could this region divide by a norm? The `ast` over-approximation of `norms.Denominators`, for GL001's
region filter (`Rule.region_filter`): a region it rejects is not parsed with LibCST.

It follows the same shapes `Denominators.factors` does (the factors of a product, the dividend of a
quotient, the base of a power, a sign, a subscript, a name's values, a clamp without a lower bound, a
reshape, `sqrt(...) + term`) down to the same leaves (a norm, a standard deviation, a variance, a square
root of something squared, a call of one of the module's functions), but more loosely: any method so named
counts, every assignment of a name counts in any order, and a squared value is anything with a `** 2`, a
product, `square`, `pow` or `var` in it. Calls through an imported module count unless the module is not
torch (`math.sqrt(d)`, `np.linalg.norm(v)` are never norms of tensors).
"""

from __future__ import annotations

import ast
from typing import Optional

from .astflow import RegionFlow, called_name, import_targets
from .norms import CLAMP_FUNCTIONS, TRANSPARENT_METHODS

NORMS = frozenset({"norm", "vector_norm", "matrix_norm", "std", "var"})
ROOTS = frozenset({"sqrt", "pow"})
_CLAMPS = frozenset({"clamp", "clip", "clamp_", "clip_"} | {name.rsplit(".", 1)[1] for name in CLAMP_FUNCTIONS})
_SQUARES = frozenset({"square", "pow", "var", "square_", "mse_loss"})
_REDUCTIONS = frozenset({"sum", "mean", "nansum", "nanmean"})
MAX_DEPTH = 40  # far beyond what `norms` follows (8): each name is visited once per question anyway


class Divisors:
    def __init__(self, flow: RegionFlow, tree: Optional[ast.Module]) -> None:
        self.flow = flow
        self.modules = import_targets(tree)
        self.functions = {node.name for node in (tree.body if tree is not None else ())
                          if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}

    def may_hold_norm(self, expr: Optional[ast.AST]) -> bool:
        """Whether `expr`, as a divisor, may have a factor that is a norm (see the module's docstring)."""
        return self._holds(expr, 0, False, set())

    def _holds(self, expr: Optional[ast.AST], depth: int, sqrt_only: bool, seen: set) -> bool:
        # `seen`: the (name, sqrt_only) pairs already followed for this divisor; a second visit finds no
        # leaf the first did not (this is an "any path reaches a leaf" search), and cycles stop there.
        if expr is None or depth > MAX_DEPTH:
            return False
        deeper = depth + 1
        if isinstance(expr, ast.Name):
            key = (expr.id, sqrt_only)
            if key in seen:
                return False
            seen.add(key)
            return any(self._holds(value, deeper, sqrt_only, seen) for value in self.flow.values.get(expr.id, ()))
        if isinstance(expr, ast.Subscript):
            return self._holds(expr.value, deeper, sqrt_only, seen)
        if isinstance(expr, ast.UnaryOp):
            return self._holds(expr.operand, deeper, sqrt_only, seen)
        if isinstance(expr, ast.BinOp):
            op = expr.op
            if isinstance(op, ast.Pow):
                if isinstance(expr.right, ast.Constant) and expr.right.value == 0.5:
                    return self.squared(expr.left)
                return self._holds(expr.left, deeper, sqrt_only, seen)
            if isinstance(op, ast.Add):  # `sqrt(sum_sq) + eps`: the eps does not guard sqrt's gradient
                return self._holds(expr.left, deeper, True, seen) or self._holds(expr.right, deeper, True, seen)
            if isinstance(op, ast.Mult):
                return self._holds(expr.left, deeper, sqrt_only, seen) or \
                    self._holds(expr.right, deeper, sqrt_only, seen)
            if isinstance(op, ast.Div):
                return self._holds(expr.left, deeper, sqrt_only, seen)
            return False
        if isinstance(expr, ast.Call):
            return self._call(expr, deeper, sqrt_only, seen)
        return False

    def _call(self, call: ast.Call, depth: int, sqrt_only: bool, seen: set) -> bool:
        name = called_name(call)
        func = call.func
        if isinstance(func, ast.Name):
            if func.id in self.functions and not sqrt_only:
                return True  # a helper of the module may return a norm (GL001 asks what it returns)
            operand = call.args[0] if call.args else None
        elif isinstance(func, ast.Attribute):
            if not self._may_be_torch(func):
                return False
            operand = func.value if not self._through_module(func) else (call.args[0] if call.args else None)
        else:
            return False
        if name in NORMS:
            return not sqrt_only
        if name in ROOTS:
            return any(self.squared(arg) for arg in (operand, *call.args, *(k.value for k in call.keywords)))
        if name in _CLAMPS or name in TRANSPARENT_METHODS:
            return self._holds(operand, depth, sqrt_only, seen)
        return False

    def rsqrt_of_squares(self, call: ast.Call) -> bool:
        """`torch.rsqrt(s)` or `s.rsqrt()` of what may be a sum of squares (`x * rsqrt(...)` divides too)."""
        func = call.func
        operands = [func.value] if isinstance(func, ast.Attribute) else []
        return any(self.squared(operand) for operand in (*operands, *call.args))

    def _through_module(self, func: ast.Attribute) -> bool:
        """`torch.sqrt(x)` (a function of an imported module) rather than `x.sqrt()` (a method)."""
        root = func.value
        while isinstance(root, ast.Attribute):
            root = root.value
        return isinstance(root, ast.Name) and root.id in self.modules and root.id not in self.flow.bound

    def _may_be_torch(self, func: ast.Attribute) -> bool:
        root = func.value
        while isinstance(root, ast.Attribute):
            root = root.value
        if not isinstance(root, ast.Name) or root.id in self.flow.bound:
            return True
        module = self.modules.get(root.id)
        return module is None or module == "torch" or module.startswith("torch.")

    def squared(self, expr: Optional[ast.AST], depth: int = 0, seen: Optional[set] = None) -> bool:
        """Whether `expr` may be a sum of squares, as `Denominators.sum_of_squares` asks: a square (`** 2`,
        a product, `square`, `pow`), a sum or mean of one, a variance, or a sum of such terms (an added
        term that is not a square, an eps, makes it no longer one)."""
        if expr is None or depth > MAX_DEPTH:
            return False
        seen = seen if seen is not None else set()
        deeper = depth + 1
        if isinstance(expr, ast.Name):
            if expr.id in seen:
                return False
            seen.add(expr.id)
            return any(self.squared(value, deeper, seen) for value in self.flow.values.get(expr.id, ()))
        if isinstance(expr, ast.BinOp):
            if isinstance(expr.op, ast.Add):  # both sides must be: each follows names on its own
                return self.squared(expr.left, deeper, set(seen)) and self.squared(expr.right, deeper, set(seen))
            return isinstance(expr.op, ast.Mult) or (
                isinstance(expr.op, ast.Pow) and isinstance(expr.right, ast.Constant) and expr.right.value == 2)
        if isinstance(expr, ast.Call):
            name = called_name(expr)
            if name in _SQUARES:
                return True
            if name in _REDUCTIONS:
                return True  # `(x ** 2).sum()`: loosely, any sum or mean
        return False
