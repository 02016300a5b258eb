from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Optional

import libcst as cst

from gradlint.astflow import aliased, called_name, operands, region_flow
from gradlint.divisors import Divisors
from gradlint.nodes import arg_value, format_number, make_args, number, parenthesized, same_code
from gradlint.origins import OriginRule, contains, names_in
from gradlint.reach import LossReach
from gradlint.rule import Invalid, Option, Valid
from gradlint.triggers import scan
from gradlint.walk import children

SQUARE_FUNCTIONS = {"torch.square"}
SUM_FUNCTIONS = {"torch.sum": "sum", "torch.mean": "mean", "torch.nansum": "sum", "torch.nanmean": "mean"}
MEAN_OF_SQUARES = {"torch.nn.functional.mse_loss"}
DIVIDE_FUNCTIONS = {"torch.div", "torch.divide", "torch.true_divide"}
DIVIDE_METHODS = {"div", "div_", "divide", "divide_", "true_divide", "true_divide_"}
VIEW_METHODS = {"squeeze", "unsqueeze", "view", "reshape", "flatten", "contiguous", "float", "double", "to"}


@dataclass(frozen=True)
class Squares:
    """A sum or mean of squares under a sqrt; `base` and `reduce` set when it is `(base ** 2).sum(...)`."""

    node: cst.BaseExpression  # the expression under the sqrt (after following names)
    base: Optional[cst.BaseExpression] = None  # E in (E ** 2).sum(dim)
    reduce: Optional[cst.Call] = None  # the .sum(...) / torch.sum(...) call
    hops: tuple = ()  # (Name, value) followed from the sqrt's argument


class SqrtWithoutEps(OriginRule):
    """
    ## What it does
    Finds `torch.sqrt` (also `.sqrt()`, `** 0.5`, `pow(0.5)`) of a sum or mean of squares with nothing
    added inside, whose result reaches a loss: a Euclidean distance or a norm written by hand,
    `torch.sqrt(((a - b) ** 2).sum(-1))`, `(x * x).sum(1).sqrt()`, `torch.sqrt(dx**2 + dy**2)`, an RMSE
    `torch.sqrt(F.mse_loss(pred, y))`, directly or through local names. "Reaches a loss" is established
    from the module's data flow (`gradlint/reach.py`): the value, or something computed from it, goes
    into a torch loss, a `.backward()`, a routine of the module that does, or is returned from the
    `forward` of an `nn.Module`. A sqrt used as a denominator is GL001's, and code under `no_grad` /
    `inference_mode` has no gradient, so neither is reported here.

    ## Why is this bad?
    The derivative of `sqrt(s)` is `1 / (2 * sqrt(s))`, infinite at `s = 0`; multiplied by the zero
    derivative of the squares there, the gradient is `inf * 0 = NaN`. A sum of squares is exactly 0 for
    the distance of a point to itself (the whole diagonal of a pairwise distance matrix), for two
    identical embeddings, or for an all-zero row, so one such entry makes every gradient NaN.
    `torch.linalg.vector_norm` (and `torch.cdist`) define the gradient at 0 as 0.

    ## Example
    ```python
    dist = torch.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))
    ```

    ## Use instead
    ```python
    dist = torch.linalg.vector_norm(a[:, None] - b[None], dim=-1)
    ```
    When the sum is not one reduction of one square (a mean, `dx**2 + dy**2`, an MSE), the fix adds a
    small eps inside the sqrt: `torch.sqrt(s + 1e-12)`.

    ## Fix safety
    Unsafe, both forms. `torch.linalg.vector_norm(E, dim)` computes the same values as
    `torch.sqrt((E ** 2).sum(dim))` (up to rounding) and the same gradients except at 0, where the
    original's is NaN and the fix's is 0; but it raises on an integer tensor, which the original accepts
    (`sqrt` promotes), and the dtype is not visible statically. Adding eps inside the sqrt changes every
    result whose sum of squares is below about eps relative to its magnitude, not only the zero ones.

    ## Options
    - `eps` (default `1e-12`): the term added inside the sqrt when `vector_norm` does not apply.
    """

    code = "GL014"
    reports_in_tests = False
    name = "sqrt-without-eps"
    summary = "sqrt of a sum of squares (a distance written by hand) that reaches a loss: NaN gradient at 0"
    # A sqrt (not rsqrt, math.sqrt or np.sqrt) or a power of one half, and something squared.
    triggers = (
        (r"sqrt(?<![\w.]rsqrt)(?<!math\.sqrt)(?<!np\.sqrt)\s*\(", r"\*\*\s*0?\.5\b", r"pow\(\s*0?\.5\s*\)",
         r"pow\([^()\n]*,\s*0?\.5\s*\)", r"sqrt\s+as\b"),
        (r"\*\*\s*2\b", r"pow\(\s*2", r"pow\([^()\n]*,\s*2\s*\)", r"square", r"mse_loss",
         # one pattern per name: each is then asked only of a text that holds its literal (`triggers`)
         r"\)\.sum\s*\(", r"\)\.mean\s*\(", r"\)\.nansum\s*\(", r"\)\.nanmean\s*\(", r"sum\(\s*[\w.]+\s*\*",
         r"mean\(\s*[\w.]+\s*\*"),
    )
    # A finding also needs, somewhere in the file, a loss, a backward or a module's forward it reaches.
    _file_needs = tuple(re.compile(p) for p in (r"loss\w*\s*\(", r"Loss\s*\(", r"entropy\s*\(", r"backward\s*\(",
                                                r"kl_div", r"autograd", r"def\s+forward\s*\("))
    options = (Option("eps", 1e-12, "Added inside the sqrt when the fix cannot use vector_norm."),)

    VALID = [
        Valid("import torch\n\n\ndef pts_to_distogram(pts, boundaries):\n"
              "    dists = torch.sqrt(torch.sum((pts.unsqueeze(-2) - pts.unsqueeze(-3)) ** 2, dim=-1))\n"
              "    return torch.bucketize(dists, boundaries)\n",
              note="transformers esm/openfold_utils: bucketized, never differentiated"),
        Valid("import torch\n\n\ndef forward(self, x):\n"
              "    inv_norm = torch.sqrt((x * x).sum(dim=-1, keepdim=True) + 1e-6)\n    return x / inv_norm\n",
              note="eps inside (transformers kimi_linear); also a denominator"),
        Valid("import torch\nimport torch.nn.functional as F\n\n\ndef loss(a, b):\n"
              "    return F.relu(torch.linalg.vector_norm(a - b, dim=-1) - 1.0).mean()\n"),
        Valid("import torch\n\n\n@torch.no_grad()\ndef rms(x):\n    return torch.sqrt((x ** 2).mean())\n"),
        Valid("import torch\n\n\ndef magnitudes(stft):\n    return torch.sqrt(stft.pow(2).sum(-1))\n",
              note="transformers feature extraction: the result goes back to the caller in another module"),
        Valid("import torch\nimport torch.nn.functional as F\n\n\ndef loss(a, b):\n"
              "    d = torch.sqrt(((a - b) ** 2).sum(-1).clamp_min(1e-12))\n    return F.relu(d - 1).mean()\n"),
        Valid("import torch\n\n\ndef _get_vector_norm(tensor):\n    square_tensor = torch.pow(tensor, 2)\n"
              "    sum_tensor = torch.sum(square_tensor, dim=-1, keepdim=True)\n"
              "    return torch.pow(sum_tensor, 0.5)\n\n\ndef forward(image_embeds, text_embeds, labels):\n"
              "    image_embeds = image_embeds / _get_vector_norm(image_embeds)\n"
              "    return torch.nn.functional.cross_entropy(image_embeds @ text_embeds.T, labels)\n",
              note="transformers CLIP: a caller divides by the result (GL001 reports the division)"),
        Valid("import torch\n\n\ndef normalize(x):\n    n = torch.sqrt((x ** 2).sum(-1, keepdim=True))\n"
              "    loss = (x / n).sum()\n    loss.backward()\n", note="a denominator: GL001's"),
    ]
    INVALID = [
        Invalid(
            "import torch\nimport torch.nn.functional as F\n\n\ndef triplet(anchor, pos, neg, margin=1.0):\n"
            "    d_ap = torch.sqrt(((anchor - pos) ** 2).sum(1))\n    d_an = torch.sqrt(((anchor - neg) ** 2).sum(1))\n"
            "    return F.margin_ranking_loss(d_an, d_ap, torch.ones_like(d_ap), margin=margin)\n",
            "import torch\nimport torch.nn.functional as F\n\n\ndef triplet(anchor, pos, neg, margin=1.0):\n"
            "    d_ap = torch.linalg.vector_norm(anchor - pos, dim=1)\n"
            "    d_an = torch.linalg.vector_norm(anchor - neg, dim=1)\n"
            "    return F.margin_ranking_loss(d_an, d_ap, torch.ones_like(d_ap), margin=margin)\n",
            unsafe=True, count=2),
        Invalid(
            "import torch\nfrom torch import nn\n\n\nclass ContrastiveLoss(nn.Module):\n"
            "    def forward(self, x1, x2, label):\n        d = (x1 - x2).pow(2).sum(1).sqrt()\n"
            "        return (label * d.pow(2) + (1 - label) * torch.relu(1.0 - d).pow(2)).mean()\n",
            "import torch\nfrom torch import nn\n\n\nclass ContrastiveLoss(nn.Module):\n"
            "    def forward(self, x1, x2, label):\n        d = torch.linalg.vector_norm(x1 - x2, dim=1)\n"
            "        return (label * d.pow(2) + (1 - label) * torch.relu(1.0 - d).pow(2)).mean()\n",
            unsafe=True, note="returned from an nn.Module's forward"),
        Invalid(
            "import torch\n\n\ndef pairwise(x):\n    diff = x[:, None, :] - x[None, :, :]\n"
            "    return torch.sqrt((diff ** 2).sum(-1))\n\n\ndef step(x, opt):\n"
            "    loss = pairwise(x).mean()\n    loss.backward()\n    opt.step()\n",
            "import torch\n\n\ndef pairwise(x):\n    diff = x[:, None, :] - x[None, :, :]\n"
            "    return torch.linalg.vector_norm(diff, dim=-1)\n\n\ndef step(x, opt):\n"
            "    loss = pairwise(x).mean()\n    loss.backward()\n    opt.step()\n",
            unsafe=True, note="a pairwise distance matrix: its diagonal is 0"),
        Invalid(
            "import torch\nimport torch.nn.functional as F\nloss = torch.sqrt(F.mse_loss(pred, y))\nloss.backward()\n",
            "import torch\nimport torch.nn.functional as F\nloss = torch.sqrt(F.mse_loss(pred, y) + 1e-12)\n"
            "loss.backward()\n", unsafe=True, note="RMSE: NaN gradient when the fit is exact"),
        Invalid(
            "import torch\n\n\ndef f(p, q):\n    dx = p[..., 0] - q[..., 0]\n    dy = p[..., 1] - q[..., 1]\n"
            "    dist = (dx ** 2 + dy ** 2) ** 0.5\n    dist.sum().backward()\n",
            "import torch\n\n\ndef f(p, q):\n    dx = p[..., 0] - q[..., 0]\n    dy = p[..., 1] - q[..., 1]\n"
            "    dist = (dx ** 2 + dy ** 2 + 1e-12) ** 0.5\n    dist.sum().backward()\n", unsafe=True),
    ]

    @classmethod
    def region_filter(cls, nodes, tree, text) -> bool:
        """A sqrt (or a power of one half) of what may be a sum of squares (`divisors.Divisors.squared`: a
        square, a sum or mean, a variance, an MSE, or an addition of such terms and nothing else)."""
        if aliased(text, {"sqrt", "pow", "sum", "mean", "nansum", "nanmean", "mse_loss"}):
            return True
        flow = region_flow(nodes)
        squares = Divisors(flow, tree).squared  # the loose mirror of what `_squares` accepts
        return any(isinstance(power.right, ast.Constant) and power.right.value == 0.5 and squares(power.left)
                   for power in flow.powers) or any(
            squares(operand) for call in flow.calls if called_name(call) in ("sqrt", "pow")
            for operand in operands(call))

    @classmethod
    def may_match(cls, text: str) -> bool:
        found = scan(text)
        return super().may_match(text) and any(found.search(p) for p in cls._file_needs)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._no_grad = 0
        self._reach: Optional[LossReach] = None

    def visit_With(self, node: cst.With) -> None:
        if any(self._is_no_grad(item.item) for item in node.items):
            self._no_grad += 1

    def leave_With(self, node: cst.With) -> None:
        if any(self._is_no_grad(item.item) for item in node.items):
            self._no_grad -= 1

    def _no_grad_routine(self) -> bool:
        return self.function is not None and any(self._is_no_grad(d.decorator) for d in self.function.decorators)

    def _is_no_grad(self, expr: cst.BaseExpression) -> bool:
        return self.ctx.resolve(expr.func if isinstance(expr, cst.Call) else expr) in (
            "torch.no_grad", "torch.inference_mode", "torch.autograd.no_grad")

    def visit_Call(self, node: cst.Call) -> None:
        super().visit_Call(node)
        qualified = self.ctx.resolve(node.func)
        if qualified == "torch.sqrt":
            self._check(node, arg_value(node, 0, "input"))
        elif qualified == "torch.pow":
            if number(arg_value(node, 1, "exponent")) == 0.5:
                self._check(node, arg_value(node, 0, "input"))
        elif qualified is None and isinstance(node.func, cst.Attribute) and self.self_attribute(node.func) is None:
            name = node.func.attr.value
            if (name == "sqrt" and not node.args) or (name == "pow" and number(arg_value(node, 0, "exponent")) == 0.5):
                self._check(node, node.func.value)

    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if isinstance(node.operator, cst.Power) and number(node.right) == 0.5:
            self._check(node, node.left)

    def _check(self, node: cst.CSTNode, operand: Optional[cst.BaseExpression]) -> None:
        if operand is None or self._no_grad:
            return
        squares = self._squares(operand)
        if squares is None:
            return
        scope = self.function if self.function is not None else self.ctx.module
        if self._denominator(scope, node) or self._no_grad_routine():
            return  # a denominator is GL001's; no_grad code has no gradient
        if not self.whole.available:
            self.require_full_module()  # the data flow follows helpers and callers anywhere in the file
        if self._reach is None:
            self._reach = LossReach(self.ctx, self.whole, count_forward=True)
        key = self.routine_key()
        if any(self._denominator(caller, call) for _, caller, call in self._reach.callers(key)):
            return  # a caller divides by the result: GL001's
        if not self._reach.reaches(scope, key, node):
            return
        self.report(node, "sqrt of a sum of squares with nothing added inside, and the result reaches a loss: "
                          "its gradient is NaN wherever the sum is 0 (a point's distance to itself, identical "
                          "or all-zero vectors); use `torch.linalg.vector_norm` or add eps inside",
                    fix=self._fix(node, operand, squares))

    # -- what is under the sqrt ----------------------------------------------------------------------
    def _squares(self, expr: cst.BaseExpression, depth: int = 0, hops: tuple = ()) -> Optional[Squares]:
        if depth > 6:
            return None
        if isinstance(expr, cst.Name):
            value = self.value_of(expr.value)
            return self._squares(value, depth + 1, hops + ((expr, value),)) if value is not None else None
        if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Add):
            terms = _terms(expr)
            if len(terms) > 1 and all(self._square(t) is not None for t in terms):
                return Squares(expr, hops=hops)
            return None
        if not isinstance(expr, cst.Call):
            return None
        qualified = self.ctx.resolve(expr.func)
        if qualified in MEAN_OF_SQUARES:
            return Squares(expr, hops=hops)
        if qualified in SUM_FUNCTIONS:
            base = self._square(arg_value(expr, 0, "input"))
            if base is None:
                return None
            return Squares(expr, base if SUM_FUNCTIONS[qualified] == "sum" else None, expr, hops)
        if qualified is None and isinstance(expr.func, cst.Attribute):
            name = expr.func.attr.value
            if name in ("sum", "mean", "nansum", "nanmean"):
                base = self._square(expr.func.value)
                if base is None:
                    return None
                return Squares(expr, base if name in ("sum", "nansum") else None, expr, hops)
        return None

    def _square(self, expr: Optional[cst.BaseExpression], depth: int = 0) -> Optional[cst.BaseExpression]:
        """E when `expr` is E squared (`E ** 2`, `E.pow(2)`, `E * E`, `E.square()`, `torch.square(E)`)."""
        if expr is None or depth > 4:
            return None
        if isinstance(expr, cst.Name):
            value = self.value_of(expr.value)
            return self._square(value, depth + 1) if value is not None else None
        if isinstance(expr, cst.BinaryOperation):
            if isinstance(expr.operator, cst.Power) and number(expr.right) == 2:
                return expr.left
            if isinstance(expr.operator, cst.Multiply) and same_code(expr.left, expr.right) \
                    and not _has_call(expr.left):
                return expr.left
            return None
        if not isinstance(expr, cst.Call):
            return None
        qualified = self.ctx.resolve(expr.func)
        if qualified in SQUARE_FUNCTIONS:
            return arg_value(expr, 0, "input")
        if qualified == "torch.pow" and number(arg_value(expr, 1, "exponent")) == 2:
            return arg_value(expr, 0, "input")
        if qualified is None and isinstance(expr.func, cst.Attribute):
            name = expr.func.attr.value
            if name == "square" and not expr.args:
                return expr.func.value
            if name == "pow" and number(arg_value(expr, 0, "exponent")) == 2:
                return expr.func.value
        return None

    # -- GL001's territory -----------------------------------------------------------------------------
    def _denominator(self, scope, seed: cst.CSTNode) -> bool:
        """Whether the sqrt, or a local assigned from it, is divided by."""
        body = scope.body.body if isinstance(scope, cst.FunctionDef) else scope.body
        holders = set()
        denominators = []
        stack = list(body)
        while stack:
            node = stack.pop()
            if isinstance(node, (cst.FunctionDef, cst.ClassDef)):
                continue
            if isinstance(node, cst.Assign) and contains(node.value, seed):
                for target in node.targets:
                    if isinstance(target.target, cst.Name):
                        holders.add(target.target.value)
            if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Divide):
                denominators.append(node.right)
            elif isinstance(node, cst.AugAssign) and isinstance(node.operator, cst.DivideAssign):
                denominators.append(node.value)
            elif isinstance(node, cst.Call):
                qualified = self.ctx.resolve(node.func)
                if qualified in DIVIDE_FUNCTIONS:
                    denominators.append(arg_value(node, 1, "other"))
                elif qualified is None and isinstance(node.func, cst.Attribute) \
                        and node.func.attr.value in DIVIDE_METHODS:
                    denominators.append(arg_value(node, 0, "other"))
            stack.extend(children(node))
        return any(d is not None and (contains(d, seed) or names_in([d]) & holders) for d in denominators)

    # -- fixes -------------------------------------------------------------------------------------------
    def _fix(self, node: cst.CSTNode, operand: cst.BaseExpression, squares: Squares):
        norm = self._vector_norm(node, squares)
        if norm is not None:
            return norm
        eps = cst.parse_expression(format_number(self.option("eps")))
        if squares.hops:
            return None  # the sum is in another statement: adding eps there may change its other uses
        inner = cst.BinaryOperation(left=operand.with_changes(lpar=[], rpar=[]), operator=cst.Add(), right=eps)
        if isinstance(node, cst.BinaryOperation):  # s ** 0.5
            new = node.with_changes(left=inner.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()]))
        elif isinstance(node.func, cst.Attribute) and node.func.value is operand:  # s.sqrt()
            new = node.with_changes(func=node.func.with_changes(value=parenthesized(inner)))
        else:  # torch.sqrt(s)
            new = node.with_changes(args=[a.with_changes(value=inner) if a.value is operand else a for a in node.args])
        return self.replace(node, new, safe=False, message=f"Add {format_number(self.option('eps'))} inside the sqrt")

    def _vector_norm(self, node: cst.CSTNode, squares: Squares):
        if squares.base is None or squares.reduce is None:
            return None
        reduce = squares.reduce
        is_function = self.ctx.resolve(reduce.func) is not None
        offset = 1 if is_function else 0
        if any(a.star or (a.keyword is not None and a.keyword.value not in ("dim", "keepdim", "input", "axis"))
               for a in reduce.args):
            return None  # dtype=, out=: not the same computation
        if sum(1 for a in reduce.args if a.keyword is None) > offset + 2:
            return None
        dim = arg_value(reduce, offset, "dim") or arg_value(reduce, None, "axis")
        keepdim = arg_value(reduce, offset + 1, "keepdim")
        base = squares.base
        if squares.hops or base is not squares.node:
            copied = [base, *(x for x in (dim, keepdim) if x is not None)]
            if squares.hops and not self._unchanged(copied, squares.hops[-1][1]):
                return None
        ref = self.reference("torch.linalg.vector_norm")
        kwargs = {}
        if dim is not None:
            kwargs["dim"] = dim
        if keepdim is not None:
            kwargs["keepdim"] = keepdim
        call = cst.Call(func=ref.expr, args=[cst.Arg(value=base.with_changes(lpar=[], rpar=[])),
                                             *make_args(**kwargs)])
        call = call.with_changes(lpar=node.lpar, rpar=node.rpar)
        return self.replace(node, call, safe=False, references=[ref], message="Use `torch.linalg.vector_norm`")

    def _unchanged(self, nodes: list, value: cst.BaseExpression) -> bool:
        if any(_has_call(n) for n in nodes):
            return False
        return self.unchanged_between(names_in(nodes), value)


def _terms(expr: cst.BaseExpression) -> list:
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Add) and not expr.lpar:
        return [*_terms(expr.left), *_terms(expr.right)]
    if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Add):
        return [*_terms(expr.with_changes(lpar=[], rpar=[]))]
    return [expr]


def _has_call(node: cst.CSTNode) -> bool:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, cst.Call):
            return True
        stack.extend(children(item))
    return False
