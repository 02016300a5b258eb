from __future__ import annotations

from typing import Optional

import libcst as cst

from gradlint.nodes import arg, format_number, method
from gradlint.origins import CAST_METHODS, SELECT_ATTRIBUTES, SELECT_METHODS, OriginRule
from gradlint.rule import Invalid, Option, Valid

INVERSE_TRIG = {"torch.acos": "acos", "torch.arccos": "acos", "torch.asin": "asin", "torch.arcsin": "asin"}
INVERSE_TRIG_METHODS = {"acos": "acos", "arccos": "acos", "asin": "asin", "arcsin": "asin"}
COSINE_SIMILARITY = {"torch.nn.functional.cosine_similarity", "torch.cosine_similarity"}
COSINE_MODULES = {"torch.nn.CosineSimilarity": "cosine", "torch.nn.modules.distance.CosineSimilarity": "cosine"}
# Reductions of products: a dot product or a sum of rounded terms, which can land just past ±1.
PRODUCT_SUMS = {f"torch.{name}" for name in (
    "matmul", "mm", "bmm", "dot", "vdot", "inner", "einsum", "tensordot", "sum", "trace")} | {
    "torch.nn.functional.linear", "torch.linalg.vecdot"}
PRODUCT_SUM_METHODS = {"matmul", "mm", "bmm", "dot", "inner", "sum", "trace"}
DIVISIONS = {"torch.div", "torch.divide", "torch.true_divide"}
DIVISION_METHODS = {"div", "divide", "true_divide"}
CLAMPS = {"torch.clamp", "torch.clip", "torch.nn.functional.hardtanh", "torch.where", "torch.minimum",
          "torch.maximum", "torch.min", "torch.max"}
CLAMP_METHODS = {"clamp", "clip", "clamp_", "clip_", "clamp_max", "clamp_min", "minimum", "maximum", "where"}


class AcosWithoutClamp(OriginRule):
    """
    ## What it does
    Finds `torch.acos` / `torch.asin` (also `arccos`, `arcsin` and the method forms) of a computed
    cosine with no clamp into [-1, 1]: a cosine similarity (`F.cosine_similarity`, `nn.CosineSimilarity`),
    a dot product or sum (`(a * b).sum(-1)`, `a @ b.T`, `torch.einsum`, `F.linear`), a ratio
    (`dot / (na * nb)`, `(trace - 1) / 2`), or arithmetic on those, directly or through local names.
    An operand the function does not compute (a parameter, an attribute, a user function's result) is
    not reported, nor is a constant (`torch.acos(torch.zeros(1))`, the classic way to spell pi) or the
    output of a bounded function (`torch.cos`, `torch.tanh`, a clamp).

    ## Why is this bad?
    A cosine computed in floating point is only within rounding of [-1, 1]: the dot product of two unit
    vectors rounds to `1.0000001` for nearly parallel vectors (about one row in five for random unit
    vectors of dimension 64 dotted with themselves, in float32), and `acos(1.0000001)` is NaN. At
    exactly ±1 the value is finite but the gradient, `-1 / sqrt(1 - x**2)`, is infinite. Either one
    turns the loss and then the weights into NaN.

    ## Example
    ```python
    theta = torch.acos((a * b).sum(-1))
    ```

    ## Use instead
    ```python
    theta = torch.acos((a * b).sum(-1).clamp(-1 + 1e-6, 1 - 1e-6))
    ```

    ## Fix safety
    Unsafe. Clamping into [-1, 1] alone would change only results that are NaN, but leaves the infinite
    gradient at exactly ±1; clamping into [-1 + eps, 1 - eps] removes both, and also changes healthy
    results: every cosine beyond 1 - eps (angles within about `sqrt(2 * eps)` radians, 1.4e-3 for the
    default eps, of 0 or pi) is moved to the bound, and its gradient becomes 0. Whether that is
    acceptable depends on how small the angles the code cares about are; review it with
    `--unsafe-fixes`. In float16 and bfloat16 the default bound rounds to ±1 (CUDA autocast computes
    `acos` and `asin` in float32).

    ## Options
    - `eps` (default `1e-6`): how far inside [-1, 1] the fix clamps.
    """

    code = "GL010"
    reports_in_tests = False
    name = "acos-without-clamp"
    summary = "acos/asin of a computed cosine with no clamp into [-1, 1]: NaN from rounding, infinite gradient at ±1"
    triggers = ((r"acos(?<!math\.acos)\s*\(", r"asin(?<!math\.asin)\s*\(", r"arccos(?<!np\.arccos)\s*\(",
                 r"arcsin(?<!np\.arcsin)\s*\(", r"acos\s+as\b", r"asin\s+as\b", r"arccos\s+as\b",
                 r"arcsin\s+as\b"),)
    options = (Option("eps", 1e-6, "The fix clamps into [-1 + eps, 1 - eps]."),)

    VALID = [
        Valid("import torch\npi = torch.acos(torch.zeros(1)).item() * 2\n", note="pi, a constant"),
        Valid("import torch\ntheta = torch.acos(torch.clamp(cosine, -1.0 + 1e-7, 1.0 - 1e-7))\n",
              note="ArcFace-style margin losses"),
        Valid("import torch\n\n\ndef slerp(val, low, high):\n"
              "    omega = torch.acos((low / torch.norm(low, dim=1, keepdim=True) * high / torch.norm("
              "high, dim=1, keepdim=True)).sum(1).clamp(-1, 1))\n    return omega\n",
              note="slerp with the clamp, as fixed in later versions of the well-known DCGAN gist"),
        Valid("import torch\nangle = torch.acos(cos_theta)\n", note="a value computed elsewhere"),
        Valid("import torch\nx = torch.asin(torch.sin(t))\n", note="bounded by construction"),
        Valid("import numpy as np\nangle = np.arccos(np.dot(u, v))\n", note="NumPy, not torch"),
        Valid("import torch\nangle = torch.acos(self.cos_m)\n", note="an attribute set elsewhere"),
    ]
    INVALID = [
        Invalid(
            "import torch\n\n\ndef slerp(val, low, high):\n    low_norm = low / torch.norm(low, dim=1, keepdim=True)\n"
            "    high_norm = high / torch.norm(high, dim=1, keepdim=True)\n"
            "    omega = torch.acos((low_norm * high_norm).sum(1))\n    return omega\n",
            "import torch\n\n\ndef slerp(val, low, high):\n    low_norm = low / torch.norm(low, dim=1, keepdim=True)\n"
            "    high_norm = high / torch.norm(high, dim=1, keepdim=True)\n"
            "    omega = torch.acos((low_norm * high_norm).sum(1).clamp(-1 + 1e-6, 1 - 1e-6))\n    return omega\n",
            unsafe=True, note="slerp between latent vectors, as in the well-known DCGAN gist"),
        Invalid(
            "import torch\nimport torch.nn.functional as F\n\n\ndef angle(a, b):\n"
            "    cos = F.cosine_similarity(a, b, dim=-1)\n    return cos.acos()\n",
            "import torch\nimport torch.nn.functional as F\n\n\ndef angle(a, b):\n"
            "    cos = F.cosine_similarity(a, b, dim=-1)\n    return cos.clamp(-1 + 1e-6, 1 - 1e-6).acos()\n",
            unsafe=True),
        Invalid(
            "import torch\n\n\ndef geodesic(R1, R2):\n    R = R1 @ R2.transpose(-1, -2)\n"
            "    trace = R.diagonal(dim1=-2, dim2=-1).sum(-1)\n    return torch.acos((trace - 1) / 2)\n",
            "import torch\n\n\ndef geodesic(R1, R2):\n    R = R1 @ R2.transpose(-1, -2)\n"
            "    trace = R.diagonal(dim1=-2, dim2=-1).sum(-1)\n"
            "    return torch.acos(((trace - 1) / 2).clamp(-1 + 1e-6, 1 - 1e-6))\n",
            unsafe=True, note="geodesic distance between rotations"),
        Invalid(
            "import torch\ntheta = torch.arcsin(q @ k.T)\n",
            "import torch\ntheta = torch.arcsin((q @ k.T).clamp(-1 + 1e-6, 1 - 1e-6))\n", unsafe=True),
    ]

    def visit_Call(self, node: cst.Call) -> None:
        super().visit_Call(node)
        found = self._operand(node)
        if found is None:
            return
        function, operand = found
        what = self._classify(operand)
        if what is None:
            return
        self.report(node, f"`{function}` of {what} with no clamp: rounding takes it past ±1 (NaN), and at "
                          "exactly ±1 the gradient is infinite; clamp it into [-1 + eps, 1 - eps]",
                    fix=self._fix(node, operand))

    def _operand(self, call: cst.Call) -> Optional[tuple[str, cst.BaseExpression]]:
        qualified = self.ctx.resolve(call.func)
        if qualified is not None:
            given = arg(call, 0, "input")
            if qualified in INVERSE_TRIG and given is not None and not given.star:
                return INVERSE_TRIG[qualified], given.value
            return None
        func = call.func
        if isinstance(func, cst.Attribute) and func.attr.value in INVERSE_TRIG_METHODS and not call.args:
            return INVERSE_TRIG_METHODS[func.attr.value], func.value
        return None

    def _classify(self, expr: cst.BaseExpression, depth: int = 0) -> Optional[str]:
        """What kind of computed cosine `expr` is ("a dot product", ...), or None when it is not one, is
        clamped, or is unknown."""
        if depth > 10:
            return None
        if isinstance(expr, cst.Name):
            value = self.value_of(expr.value)
            return self._classify(value, depth + 1) if value is not None else None
        if isinstance(expr, cst.Subscript):
            return self._classify(expr.value, depth + 1)
        if isinstance(expr, cst.Attribute):
            return self._classify(expr.value, depth + 1) if expr.attr.value in SELECT_ATTRIBUTES else None
        if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, (cst.Minus, cst.Plus)):
            return self._classify(expr.expression, depth + 1)
        if isinstance(expr, cst.BinaryOperation):
            return self._classify_operation(expr, depth)
        if isinstance(expr, cst.Call):
            return self._classify_call(expr, depth)
        return None

    def _classify_operation(self, expr: cst.BinaryOperation, depth: int) -> Optional[str]:
        op = expr.operator
        if isinstance(op, cst.MatrixMultiply):
            return "a dot product"
        if isinstance(op, cst.Divide):
            return "a ratio"
        sides = (self._classify(expr.left, depth + 1), self._classify(expr.right, depth + 1))
        if isinstance(op, (cst.Add, cst.Subtract)):
            if all(isinstance(s, cst.BinaryOperation) and isinstance(s.operator, cst.Multiply)
                   for s in (expr.left, expr.right)):
                return "a sum of products"
            return next((s for s in sides if s is not None), None)
        if isinstance(op, cst.Multiply):
            return next((s for s in sides if s is not None), None)
        return None

    def _classify_call(self, call: cst.Call, depth: int) -> Optional[str]:
        qualified = self.ctx.resolve(call.func)
        if qualified is not None:
            if qualified in COSINE_SIMILARITY:
                return "a cosine similarity"
            if qualified in PRODUCT_SUMS:
                return "a dot product" if qualified != "torch.sum" else "a sum"
            if qualified in DIVISIONS:
                return "a ratio"
            return None  # a clamp, a bounded or unknown function
        func = call.func
        if isinstance(func, cst.Attribute) and self.self_attribute(func) is None:
            name = func.attr.value
            if name in CLAMP_METHODS:
                return None
            if name in PRODUCT_SUM_METHODS:
                return "a sum" if name == "sum" else "a dot product"
            if name in DIVISION_METHODS:
                return "a ratio"
            if name in SELECT_METHODS or name in CAST_METHODS:
                return self._classify(func.value, depth + 1)
            if isinstance(func.value, cst.Name) and self.ctx.resolve(func.value) is not None:
                return None  # a function of an imported module we do not know
        if self.module_of(func, COSINE_MODULES) is not None:
            return "a cosine similarity"
        return None

    def _fix(self, call: cst.Call, operand: cst.BaseExpression):
        eps = format_number(self.option("eps"))
        low, high = cst.parse_expression(f"-1 + {eps}"), cst.parse_expression(f"1 - {eps}")
        clamped = method(operand, "clamp", low, high)
        if call.func is not None and isinstance(call.func, cst.Attribute) and call.func.value is operand:
            new = call.with_changes(func=call.func.with_changes(value=clamped))
        else:
            new = call.with_changes(args=[a.with_changes(value=clamped) if a.value is operand else a
                                          for a in call.args])
        return self.replace(call, new, safe=False,
                            message=f"Clamp into [-1 + {eps}, 1 - {eps}] (changes cosines beyond 1 - {eps})")
