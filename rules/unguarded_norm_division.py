from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import libcst as cst

from gradlint.nodes import (
    arg,
    arg_value,
    format_number,
    is_name,
    is_pure,
    make_args,
    method,
    method_call,
    number,
    number_node,
    parenthesized,
    root_name,
    same_code,
)
from gradlint.rule import Invalid, Option, Valid
from gradlint.scopes import LocalsRule

# qualified name -> (input keyword, p keyword); all take (input, p, dim, keepdim) positionally.
NORM_FUNCTIONS = {
    "torch.norm": ("input", "p"),
    "torch.functional.norm": ("input", "p"),
    "torch.linalg.norm": ("A", "ord"),
    "torch.linalg.vector_norm": ("x", "ord"),
    "torch.linalg.matrix_norm": None,  # a norm, but never over one dimension
}
STD_FUNCTIONS = {"torch.std"}
SQRT_FUNCTIONS = {"torch.sqrt"}
RSQRT_FUNCTIONS = {"torch.rsqrt"}
REDUCE_FUNCTIONS = {"torch.sum", "torch.mean", "torch.nansum", "torch.nanmean"}
VAR_FUNCTIONS = {"torch.var"}
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
NON_TORCH_PREFIXES = ("numpy", "pandas", "jax", "tensorflow", "scipy", "sklearn", "cupy", "mxnet", "paddle")
P_DEFAULTS = (2.0,)


@dataclass(frozen=True)
class Unguarded:
    kind: str  # "norm", "std", "sqrt", "sqrt+eps", "rsqrt"
    node: cst.BaseExpression  # for sqrt kinds: the sqrt call; for "sqrt+eps": the addition
    inner: Optional[cst.BaseExpression] = None  # sqrt's argument
    eps: Optional[cst.BaseExpression] = None  # "sqrt+eps": the eps added outside


class UnguardedNormDivision(LocalsRule):
    """
    ## What it does
    Finds divisions whose denominator is a norm, a standard deviation or the square root of a sum of
    squares with nothing keeping it away from zero: `x / x.norm(dim=-1, keepdim=True)`,
    `torch.div(x, torch.linalg.vector_norm(x))`, `(x - mu) / x.std()`, `x / torch.sqrt((x**2).sum(-1))`,
    also through a local name (`n = x.norm(...)` then `x / n`), `/=`, `torch.div` and `.div`.

    `+ eps`, `.clamp(min=...)`, `.clamp_min(...)`, `clamp_`, `torch.clamp(..., min=...)`, `.add(eps)`,
    `torch.maximum(...)` and `F.normalize` are guards. One addition is not: `torch.sqrt(sum_sq) + eps`
    is finite in the forward pass, but sqrt's gradient at 0 is infinite, so an all-zero row still gets
    NaN gradients; that form is reported too.

    ## Why is this bad?
    A zero vector (a blank image, an empty caption, a zero-padded row) has norm 0, and `0 / 0` is NaN.
    One NaN in a batch spreads through the loss into every weight at the next optimizer step.

    ## Example
    ```python
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    ```

    ## Use instead
    ```python
    image_features = F.normalize(image_features, dim=-1, eps=1e-6)
    ```
    When the numerator is not the norm's own input, or the norm is not taken over one kept dimension,
    the denominator is clamped: `x / n.clamp_min(1e-6)`. For a square root, eps goes inside it:
    `torch.sqrt(sum_sq + eps)`.

    ## Fix safety
    `F.normalize` and `.clamp_min(eps)` are safe: they change results only where the norm is below eps,
    where the original gives NaN or Inf. The fix passes an eps that is still non-zero in float16 and
    bfloat16: `F.normalize`'s default (1e-12) rounds to 0 in float16, so a zero row would still give NaN
    there. The clamp on a `.std()` method call is unsafe: the receiver may be a NumPy array, which has no
    `clamp_min`. Moving (or adding) eps inside a square root is unsafe: `sqrt(s + eps)` differs from
    `sqrt(s) + eps` wherever `s` is below about eps, that is for norms up to `sqrt(eps)`, so quiet but
    non-zero inputs (near-silent audio, say) change too; review it with `--unsafe-fixes`.

    ## Options
    - `eps` (default `1e-6`): the guard the fix inserts. 1e-6 survives float16 (as a subnormal) and
      bfloat16; use `1e-4` on hardware that flushes float16 subnormals to zero.
    """

    code = "GL001"
    name = "unguarded-norm-division"
    summary = "Division by a norm, std or sqrt of a sum of squares with no eps guard"
    triggers = (
        (r"/", r"div", r"rsqrt"),
        (r"\.norm(?<!self\.norm)\s*\(", r"\.sqrt(?<!math\.sqrt)(?<!np\.sqrt)\s*\(", r"rsqrt", r"\.std\s*\(",
         r"vector_norm", r"matrix_norm", r"norm(?<![\w.]norm)\s*\(", r"sqrt(?<![\w.]sqrt)\s*\(",
         r"std(?<![\w.]std)\s*\(", r"norm\s+as\b", r"sqrt\s+as\b", r"std\s+as\b"),
    )
    options = (Option("eps", 1e-6, "Guard inserted by the fix; non-zero in float16 and bfloat16."),)

    VALID = [
        Valid("import torch.nn.functional as F\nz = F.normalize(x, dim=-1)\n"),
        Valid("z = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)\n"),
        Valid("z = x / x.norm().clamp_min(eps)\n"),
        Valid("z = x / (x.norm(dim=-1, keepdim=True) + 1e-8)\n"),
        Valid("z = x / x.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)\n"),
        Valid("import torch\nz = x / torch.clamp(torch.norm(x, dim=1, keepdim=True), min=1e-6)\n"),
        Valid("import torch\nz = x / torch.maximum(x.norm(dim=-1, keepdim=True), eps)\n"),
        Valid("z = x / x.norm(dim=-1, keepdim=True).add(1e-6)\n"),
        Valid("n = x.norm(dim=-1, keepdim=True)\nn.clamp_(min=1e-6)\nz = x / n\n"),
        Valid("n = x.norm(dim=-1, keepdim=True)\nn[n == 0] = 1\nz = x / n\n"),
        Valid("import torch\nx = x / torch.sqrt((x ** 2).sum(-1, keepdim=True) + 1e-8)\n"),
        Valid("import torch\nx = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)\n",
              note="LLaMA's RMSNorm"),
        Valid("z = (x - x.mean()) / (x.std() + 1e-5)\n"),
        Valid("import numpy as np\nz = v / np.linalg.norm(v)\n", note="NumPy, not torch"),
        Valid("from numpy.linalg import norm\nz = v / norm(v)\n"),
        Valid("import numpy as np\nz = (a - a.mean()) / a.std()\n", note="NumPy-only module"),
        Valid("import math\nscale = q / math.sqrt(head_dim)\n", note="sqrt of a constant"),
        Valid("x = x / self.norm(x)\n", note="a LayerNorm module called `norm`"),
        Valid("clip_coef = max_norm / (total_norm + 1e-6)\n", note="torch's own clip_grad_norm_"),
        Valid("z = x / n\n", note="n comes from outside: unknown, not reported"),
        Valid("z = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-6).unsqueeze(-1)\n"),
        Valid("import torch\nc = sigma / torch.sqrt(noise * noise + self.sigma_data * self.sigma_data)\n",
              note="EDM preconditioning: a constant term keeps the sum of squares away from 0"),
        Valid("import torch\ndef f(self, x, noise):\n    sigma_data = self.sigma_data\n"
              "    return x / torch.sqrt(noise * noise + sigma_data * sigma_data)\n"),
    ]
    INVALID = [
        Invalid(
            "import torch\n\n\ndef embed(x):\n    return x / x.norm(dim=-1, keepdim=True)\n",
            "import torch\n\n\ndef embed(x):\n"
            "    return torch.nn.functional.normalize(x, dim=-1, eps=1e-6)\n",
            note="reuses `import torch` rather than adding an import"),
        Invalid(
            "def embed(x):\n    return x / x.norm(dim=-1, keepdim=True)\n",
            "import torch.nn.functional as F\ndef embed(x):\n    return F.normalize(x, dim=-1, eps=1e-6)\n"),
        Invalid(
            "import torch.nn.functional as F\nimage_features = image_features / image_features.norm("
            "dim=-1, keepdim=True)  # unit length\n",
            "import torch.nn.functional as F\nimage_features = F.normalize(image_features, dim=-1, "
            "eps=1e-6)  # unit length\n"),
        Invalid(
            "import torch\nfrom torch import nn\nz = w / torch.linalg.vector_norm(w, 1, dim=0, keepdim=True)\n",
            "import torch\nfrom torch import nn\nz = nn.functional.normalize(w, p=1, dim=0, eps=1e-6)\n"),
        Invalid(
            "import torch\nz = x / torch.norm(x, p=2, dim=1, keepdim=True)\n",
            "import torch\nz = torch.nn.functional.normalize(x, dim=1, eps=1e-6)\n"),
        Invalid(
            "from torch.linalg import norm as lnorm\nz = x / lnorm(x)\n",
            "from torch.linalg import norm as lnorm\nz = x / lnorm(x).clamp_min(1e-6)\n"),
        Invalid(
            "z = x / x.norm(dim=1).unsqueeze(1)\n",
            "z = x / x.norm(dim=1).unsqueeze(1).clamp_min(1e-6)\n"),
        Invalid(
            "def f(x):\n    n = x.norm(dim=-1, keepdim=True)\n    return x / n\n",
            "def f(x):\n    n = x.norm(dim=-1, keepdim=True)\n    return x / n.clamp_min(1e-6)\n"),
        Invalid(
            "x /= x.norm(dim=-1, keepdim=True)\n",
            "x /= x.norm(dim=-1, keepdim=True).clamp_min(1e-6)\n"),
        Invalid(
            "import torch\ncos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))\n",
            "import torch\ncos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-6)\n"),
        Invalid(
            "import torch\ny = torch.div(g, g.norm())\n",
            "import torch\ny = torch.div(g, g.norm().clamp_min(1e-6))\n"),
        Invalid(
            "z = 1 / v.norm() ** 2\n",
            "z = 1 / (v.norm() ** 2).clamp_min(1e-6)\n"),
        Invalid(
            "import torch\nz = (x - x.mean(0)) / torch.std(x, 0)\n",
            "import torch\nz = (x - x.mean(0)) / torch.std(x, 0).clamp_min(1e-6)\n"),
        Invalid(
            "import torch\nz = (x - x.mean(0)) / x.std(0)\n",
            "import torch\nz = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)\n", unsafe=True),
        Invalid(
            "import torch\nx = x / (torch.sqrt((x ** 2).sum(-1, keepdim=True)) + 1e-8)\n",
            "import torch\nx = x / (torch.sqrt((x ** 2).sum(-1, keepdim=True) + 1e-8))\n",
            unsafe=True, note="eps outside sqrt: finite forward, NaN gradient"),
        Invalid(
            "import torch\nx = x / torch.sqrt(torch.sum(x * x, dim=1, keepdim=True))\n",
            "import torch\nx = x / torch.sqrt(torch.sum(x * x, dim=1, keepdim=True) + 1e-6)\n", unsafe=True),
        Invalid(
            "x = x / x.pow(2).mean(-1, keepdim=True).sqrt()\n",
            "x = x / (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()\n", unsafe=True),
        Invalid(
            "import torch\nx = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True))\n",
            "import torch\nx = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)\n", unsafe=True),
        Invalid(
            "import torch\ndef f(x):\n    ss = (x ** 2).sum(-1, keepdim=True)\n    return x / torch.sqrt(ss)\n",
            "import torch\ndef f(x):\n    ss = (x ** 2).sum(-1, keepdim=True)\n    return x / torch.sqrt(ss + 1e-6)\n", unsafe=True),
        Invalid(
            "z = x / x.norm(dim=-1, keepdim=True)[..., None]\n",
            "z = x / x.norm(dim=-1, keepdim=True)[..., None].clamp_min(1e-6)\n"),
    ]

    # -- visits --------------------------------------------------------------------------------------
    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if isinstance(node.operator, cst.Divide):
            self._check(node, node.right, numerator=node.left)
        elif isinstance(node.operator, cst.Multiply):
            for side in (node.left, node.right):
                if self._rsqrt(side) is not None:
                    self._report(node, side, self._rsqrt(side))
                    return

    def visit_AugAssign(self, node: cst.AugAssign) -> None:
        if isinstance(node.operator, cst.DivideAssign):
            self._check(node, node.value, numerator=None)

    def visit_Call(self, node: cst.Call) -> None:
        super().visit_Call(node)
        qualified = self.ctx.resolve(node.func)
        if qualified in DIVIDE_FUNCTIONS:
            denominator = arg_value(node, 1, "other")
        elif qualified is None and (mc := method_call(node)) and mc[1] in DIVIDE_METHODS:
            denominator = arg_value(node, 0, "other")
        else:
            return
        if denominator is not None:
            self._check(node, denominator, numerator=None)

    # -- classification ------------------------------------------------------------------------------
    def _check(self, site: cst.CSTNode, denominator: cst.BaseExpression, numerator) -> None:
        found = self._classify(denominator)
        if found is not None:
            self._report(site, denominator, found, numerator)

    def _classify(self, expr: cst.BaseExpression, depth: int = 0) -> Optional[Unguarded]:
        if depth > 8:
            return None
        if isinstance(expr, cst.Name):
            value = self.value_of(expr.value)
            return self._classify(value, depth + 1) if value is not None else None
        if isinstance(expr, cst.Subscript):
            return self._classify(expr.value, depth + 1)
        if isinstance(expr, cst.BinaryOperation):
            return self._classify_operation(expr, depth)
        if isinstance(expr, cst.Call):
            return self._classify_call(expr, depth)
        return None

    def _classify_operation(self, expr: cst.BinaryOperation, depth: int) -> Optional[Unguarded]:
        op = expr.operator
        if isinstance(op, cst.Add):
            for side, other in ((expr.left, expr.right), (expr.right, expr.left)):
                inner = self._classify(side, depth + 1)
                if inner is not None and inner.kind == "sqrt" and inner.node is side:
                    return Unguarded("sqrt+eps", expr, inner.inner, other)
            return None  # `norm + eps`: a guard
        if isinstance(op, cst.Multiply):
            return self._classify(expr.left, depth + 1) or self._classify(expr.right, depth + 1)
        if isinstance(op, cst.Power) and (number(expr.right) or 0) > 0:
            return self._classify(expr.left, depth + 1)
        return None

    def _classify_call(self, call: cst.Call, depth: int) -> Optional[Unguarded]:
        qualified = self.ctx.resolve(call.func)
        if qualified is not None:
            if qualified in NORM_FUNCTIONS:
                return Unguarded("norm", call)
            if qualified in STD_FUNCTIONS:
                return Unguarded("std", call)
            if qualified in SQRT_FUNCTIONS:
                inner = arg_value(call, 0, "input")
                return Unguarded("sqrt", call, inner) if self._sum_of_squares(inner, depth) else None
            if qualified in CLAMP_FUNCTIONS:
                if self._has_min(call, offset=1):
                    return None
                inner = arg_value(call, 0, "input")
                return self._classify(inner, depth + 1) if inner is not None else None
            return None
        mc = method_call(call)
        if mc is None:
            return None
        receiver, name = mc
        if name == "norm" and self._is_tensor_norm(call, receiver):
            return Unguarded("norm", call)
        if name == "std" and not is_name(receiver, "self", "cls") and self._torch_module():
            return Unguarded("std", call)
        if name == "sqrt" and self._sum_of_squares(receiver, depth):
            return Unguarded("sqrt", call, receiver)
        if name in ("clamp", "clip", "clamp_", "clip_"):
            return None if self._has_min(call, offset=0) else self._classify(receiver, depth + 1)
        if name in TRANSPARENT_METHODS:
            return self._classify(receiver, depth + 1)
        return None

    def _rsqrt(self, expr: cst.BaseExpression) -> Optional[Unguarded]:
        if not isinstance(expr, cst.Call):
            return None
        if self.ctx.resolve(expr.func) in RSQRT_FUNCTIONS:
            inner = arg_value(expr, 0, "input")
        elif self.ctx.resolve(expr.func) is None and (mc := method_call(expr)) and mc[1] == "rsqrt":
            inner = mc[0]
        else:
            return None
        return Unguarded("rsqrt", expr, inner) if self._sum_of_squares(inner, 0) else None

    def _sum_of_squares(self, expr: Optional[cst.BaseExpression], depth: int) -> bool:
        if expr is None or depth > 8:
            return False
        if isinstance(expr, cst.Name):
            value = self.value_of(expr.value)
            return value is not None and self._sum_of_squares(value, depth + 1)
        if self._square(expr, depth):
            return True
        if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Add):
            # `noise * noise + sigma * sigma` with `sigma` a constant is never 0: not a finding.
            return (self._sum_of_squares(expr.left, depth + 1) and self._sum_of_squares(expr.right, depth + 1)
                    and not self._constant_square(expr.left) and not self._constant_square(expr.right))
        if not isinstance(expr, cst.Call):
            return False
        qualified = self.ctx.resolve(expr.func)
        if qualified in REDUCE_FUNCTIONS:
            return self._square(arg_value(expr, 0, "input"), depth + 1)
        if qualified in VAR_FUNCTIONS:
            return True
        if qualified is None and (mc := method_call(expr)):
            receiver, name = mc
            if name in ("sum", "mean", "nansum", "nanmean"):
                return self._square(receiver, depth + 1)
            if name == "var":
                return True
            if name in TRANSPARENT_METHODS:
                return self._sum_of_squares(receiver, depth + 1)
        return False

    def _square(self, expr: Optional[cst.BaseExpression], depth: int) -> bool:
        if expr is None or depth > 8:
            return False
        if isinstance(expr, cst.Name):
            value = self.value_of(expr.value)
            return value is not None and self._square(value, depth + 1)
        if isinstance(expr, cst.BinaryOperation):
            if isinstance(expr.operator, cst.Power):
                return number(expr.right) == 2
            if isinstance(expr.operator, cst.Multiply):
                return same_code(expr.left, expr.right)
            return False
        if isinstance(expr, cst.Call):
            qualified = self.ctx.resolve(expr.func)
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
                    return self._square(receiver, depth + 1)
        return False

    def _constant_square(self, expr: cst.BaseExpression) -> bool:
        """The square of a number, of a `self.` attribute or of an UPPER_CASE name (directly or through a
        local name): a constant, likely > 0."""
        if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, (cst.Power, cst.Multiply)):
            base = expr.left
        elif isinstance(expr, cst.Call) and (mc := method_call(expr)) and mc[1] in ("pow", "square"):
            base = mc[0]
        else:
            return False
        if isinstance(base, cst.Name) and not base.value.isupper():
            base = self.value_of(base.value) or base
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

    def _torch_module(self) -> bool:
        targets = self.ctx.imported_modules()
        if any(t == "torch" or t.startswith("torch.") for t in targets):
            return True
        return not any(t.startswith(NON_TORCH_PREFIXES) for t in targets)

    # -- reporting and fixes -------------------------------------------------------------------------
    def _report(self, site, denominator, found: Unguarded, numerator=None) -> None:
        shown = _short(self.code_of(denominator))
        if found.kind == "norm":
            message = f"Division by a norm with no eps guard: `{shown}` is 0 for an all-zero input (NaN)"
        elif found.kind == "std":
            message = f"Division by a standard deviation with no eps guard: `{shown}` is 0 for constant input"
        elif found.kind == "sqrt+eps":
            message = ("eps is added outside `sqrt`: the forward is finite, but sqrt's gradient at 0 is "
                       "infinite, so an all-zero input gets NaN gradients; move eps inside the sqrt")
        elif found.kind == "rsqrt":
            message = f"`{_short(self.code_of(found.node))}` has no eps inside: Inf for an all-zero input"
        else:
            message = (f"Division by the sqrt of a sum of squares with no eps inside: `{shown}` is 0 for an "
                       "all-zero input, and sqrt's gradient there is infinite")
        self.report(site, message, fix=self._fix(site, denominator, found, numerator))

    def _fix(self, site, denominator, found: Unguarded, numerator):
        eps = self.option("eps")
        if found.kind in ("sqrt", "rsqrt", "sqrt+eps"):
            added = found.eps if found.kind == "sqrt+eps" else number_node(eps)
            inner = cst.BinaryOperation(left=parenthesized(found.inner), operator=cst.Add(), right=added)
            call = found.node if found.kind != "sqrt+eps" else self._sqrt_call_in(found.node)
            if call is None:
                return None
            if call.args and self.ctx.resolve(call.func) is not None:  # torch.sqrt(inner)
                new_call = call.with_changes(args=[call.args[0].with_changes(value=inner), *call.args[1:]])
            else:  # inner.sqrt()
                new_call = call.with_changes(func=call.func.with_changes(value=parenthesized(inner)))
            if found.kind == "sqrt+eps":
                new_call = new_call.with_changes(lpar=found.node.lpar, rpar=found.node.rpar)
            word = "Move" if found.kind == "sqrt+eps" else "Add"
            # Unsafe: sqrt(s + eps) differs from sqrt(s) (+ eps) wherever s is below about eps, that is for
            # norms up to sqrt(eps) (1e-4 for eps = 1e-8): quiet signals, not only zero ones, change.
            return self.replace(found.node, new_call, message=f"{word} eps inside the sqrt", safe=False)
        normalized = self._normalize(site, denominator, numerator, eps)
        if normalized is not None:
            return normalized
        clamped = method(denominator, "clamp_min", number_node(eps))  # parenthesized where needed
        return self.replace(denominator, clamped, safe=found.kind != "std" or self._std_function(found),
                            message=f"Clamp the denominator with `.clamp_min({format_number(eps)})`")

    def _std_function(self, found: Unguarded) -> bool:
        return self.ctx.resolve(found.node.func) in STD_FUNCTIONS

    @staticmethod
    def _sqrt_call_in(addition: cst.BinaryOperation) -> Optional[cst.Call]:
        for side in (addition.left, addition.right):
            if isinstance(side, cst.Call):
                return side
        return None

    def _normalize(self, site, denominator, numerator, eps):
        """`x / x.norm(dim=d, keepdim=True)` -> `F.normalize(x, dim=d, eps=eps)`, when provably the same."""
        if not isinstance(site, cst.BinaryOperation) or numerator is None or not isinstance(denominator, cst.Call):
            return None
        qualified = self.ctx.resolve(denominator.func)
        if qualified is not None:  # torch.norm(x, p, dim, keepdim)
            keywords = NORM_FUNCTIONS.get(qualified)
            if keywords is None:
                return None
            input_keyword, p_keyword = keywords
            norm_input = arg_value(denominator, 0, input_keyword)
            p_pos, max_positional = 1, 4
        else:  # x.norm(p, dim, keepdim)
            mc = method_call(denominator)
            if mc is None or mc[1] != "norm":
                return None
            norm_input, input_keyword, p_keyword, p_pos, max_positional = mc[0], None, "p", 0, 3
        if norm_input is None or not same_code(norm_input, numerator) or not is_pure(numerator):
            return None
        allowed = {"dim", "keepdim", p_keyword, input_keyword}
        if any(a.star or (a.keyword is not None and a.keyword.value not in allowed) for a in denominator.args):
            return None  # dtype=, out=: not the same computation
        if sum(1 for a in denominator.args if a.keyword is None) > max_positional:
            return None
        keepdim = arg_value(denominator, p_pos + 2, "keepdim")
        dim = arg_value(denominator, p_pos + 1, "dim")
        if not is_name(keepdim, "True") or number(dim) is None or not float(number(dim)).is_integer():
            return None
        p = arg_value(denominator, p_pos, p_keyword)
        if isinstance(p, cst.SimpleString) and p.evaluated_value == "nuc":
            return None
        keep_p = p is not None and not is_name(p, "None") and number(p) not in P_DEFAULTS and not (
            isinstance(p, cst.SimpleString) and p.evaluated_value == "fro")
        ref = self.reference("torch.nn.functional.normalize")
        kwargs = {"p": p} if keep_p else {}
        kwargs.update(dim=dim, eps=number_node(eps))
        call = cst.Call(func=ref.expr, args=[cst.Arg(value=numerator.with_changes(lpar=[], rpar=[])),
                                             *make_args(**kwargs)])
        call = call.with_changes(lpar=site.lpar, rpar=site.rpar)
        shown = self.code_of(call)
        shown = shown if len(shown) < 60 else "F.normalize(...)"
        return self.replace(site, call, message=f"Replace with `{shown}`", references=[ref])


def _short(code: str, limit: int = 60) -> str:
    code = " ".join(code.split())
    return code if len(code) <= limit else code[: limit - 3] + "..."
