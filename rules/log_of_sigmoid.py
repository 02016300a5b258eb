from __future__ import annotations

import ast
from typing import Optional

import libcst as cst

from gradlint.astflow import (
    aliased,
    called_name,
    imported,
    module_call,
    operands,
    region_flow,
)
from gradlint.nodes import number
from gradlint.origins import SIGMOID, Origin, OriginRule
from gradlint.rule import Invalid, Valid


class LogOfSigmoid(OriginRule):
    """
    ## What it does
    Finds the log of a sigmoid, `torch.log(torch.sigmoid(x))` and `x.sigmoid().log()`, and the log of its
    complement, `torch.log(1 - torch.sigmoid(x))`, `(1 - p).log()`, `torch.log1p(-p)`. The sigmoid is
    recognised by what the call resolves to (`torch.sigmoid`, `F.sigmoid`, `torch.special.expit`, the
    `Tensor.sigmoid` method, an attribute or local bound to `nn.Sigmoid()`), through local names and
    through selections and reshapes.

    ## Why is this bad?
    `sigmoid(x)` rounds to exactly 0 for `x` below about -88 in float32 (about -17 in float16) and to
    exactly 1 above about 17 in float32: `log(sigmoid(-100))` is `-inf`, `log(1 - sigmoid(20))` is
    `-inf`, and their gradients are NaN. Before it reaches 0, `1 - sigmoid(x)` also loses most of its
    digits to cancellation. `F.logsigmoid(x)` (that is `-softplus(-x)`) is finite and accurate for every
    finite `x`, and `log(1 - sigmoid(x))` is `logsigmoid(-x)`.

    ## Example
    ```python
    loss = -(y * torch.log(torch.sigmoid(x)) + (1 - y) * torch.log(1 - torch.sigmoid(x)))
    ```

    ## Use instead
    ```python
    loss = -(y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x))
    ```
    (or `F.binary_cross_entropy_with_logits(x, y, reduction="none")`). Through a local name the fix
    rewrites only the log, and only when the sigmoid's input is a name or attribute that is not rebound
    in between; otherwise the finding has no fix.

    ## Fix safety
    Safe: `logsigmoid(x)` equals `log(sigmoid(x))` and `logsigmoid(-x)` equals `log(1 - sigmoid(x))`
    mathematically. Where the original is finite they agree within the original's own rounding error,
    gradients included (a test checks both on ordinary inputs); they differ where `sigmoid` saturated,
    where the original is `-inf` with NaN gradients (or, for `1 - sigmoid(x)`, has lost most of its
    digits), and the fix is the correct value. Unsafe when a dtype cast stands between the sigmoid and
    the log: the fixed code computes in the input's dtype.

    ## Options
    None.
    """

    code = "GL009"
    reports_in_tests = False
    name = "log-of-sigmoid"
    summary = "log of a sigmoid (or of 1 - sigmoid): -inf and NaN gradients for large |x|; use F.logsigmoid"
    triggers = (
        (r"sigmoid(?<!logsigmoid)\s*\(", r"Sigmoid(?<!LogSigmoid)\s*\(", r"expit\s*\(", r"sigmoid\s+as\b",
         r"expit\s+as\b", r"log\s*\(\s*self\.", r"log\s*\(\s*1\.?0*\s*-\s*self\.", r"\)\.log\(\)"),
        (r"\.log(?<!math\.log)(?<!np\.log)(?<!self\.log)\s*\(", r"log(?<![\w.]log)\s*\(", r"log\s+as\b", r"log1p\s*\("),
    )

    VALID = [
        Valid("import torch.nn.functional as F\nloss = -F.logsigmoid(pos_score).mean()\n",
              note="word2vec-style negative sampling, as written in the PyTorch ecosystem"),
        Valid("import torch\np = torch.sigmoid(x)\nlog_p = torch.log(p + 1e-8)\n"),
        Valid("import torch\np = torch.sigmoid(x).clamp(1e-6, 1 - 1e-6)\nnll = -torch.log(1 - p)\n"),
        Valid("import torch\nrelative_surprisal_prior = torch.log(prior) - torch.log(1 - prior)\n",
              note="transformers generation/watermarking.py: prior is a probability, not a sigmoid"),
        Valid("import torch\nbox_bias = torch.log(box + 1e-4) - torch.log1p(-box + 1e-4)\n",
              note="transformers owlvit: guarded inverse sigmoid"),
        Valid("import torch\nimport torch.nn.functional as F\nx = torch.log(2 - torch.sigmoid(z))\n",
              note="2 - sigmoid is at least 1"),
    ]
    INVALID = [
        Invalid(
            "import torch\nimport torch.nn.functional as F\nlp = torch.log(torch.sigmoid(x))\n",
            "import torch\nimport torch.nn.functional as F\nlp = F.logsigmoid(x)\n"),
        Invalid(
            "import torch\nlp = score.sigmoid().log()\n",
            "import torch\nlp = torch.nn.functional.logsigmoid(score)\n"),
        Invalid(
            "import torch\nimport torch.nn.functional as F\nlq = torch.log(1 - torch.sigmoid(a + b))\n",
            "import torch\nimport torch.nn.functional as F\nlq = F.logsigmoid(-(a + b))\n"),
        Invalid(
            "import torch\nimport torch.nn.functional as F\n\n\ndef bce(x, y):\n    p = torch.sigmoid(x)\n"
            "    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()\n",
            "import torch\nimport torch.nn.functional as F\n\n\ndef bce(x, y):\n    p = torch.sigmoid(x)\n"
            "    return -(y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x)).mean()\n", count=2,
            note="binary cross-entropy written by hand"),
        Invalid(
            "import torch\nlq = torch.log1p(-torch.sigmoid(-s))\n",
            "import torch\nlq = torch.nn.functional.logsigmoid(s)\n"),
        Invalid(
            "import torch\nfrom torch import nn\n\n\nclass Gate(nn.Module):\n    def __init__(self):\n"
            "        super().__init__()\n        self.gate = nn.Sigmoid()\n\n    def forward(self, x):\n"
            "        return (1.0 - self.gate(x)).log()\n",
            "import torch\nfrom torch import nn\n\n\nclass Gate(nn.Module):\n    def __init__(self):\n"
            "        super().__init__()\n        self.gate = nn.Sigmoid()\n\n    def forward(self, x):\n"
            "        return nn.functional.logsigmoid(-x)\n"),
        Invalid(
            "import torch\n\n\ndef f(x):\n    p = x.sigmoid()\n    x = x + 1\n    return p.log()\n",
            None, note="`x` is rebound in between: reported, no fix"),
        Invalid(
            "import torch\nimport torch.nn.functional as F\nlp = torch.log(torch.sigmoid(x)[:, 0])\n",
            "import torch\nimport torch.nn.functional as F\nlp = F.logsigmoid(x)[:, 0]\n"),
    ]

    @classmethod
    def region_filter(cls, nodes, tree, text) -> bool:
        """A log or log1p of something a sigmoid, or a call of what may hold an `nn.Sigmoid`
        (`astflow.holders`), produced (or of 1 minus it)."""
        if aliased(text, {"log", "log1p", "sigmoid", "expit"}):
            return True
        flow, modules = region_flow(nodes), imported(tree)

        def sigmoid(expr) -> bool:
            if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Sub):
                return flow.derives(expr.right, sigmoid)  # 1 - p
            if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
                return flow.derives(expr.operand, sigmoid)  # log1p(-p)
            return isinstance(expr, ast.Call) and (called_name(expr) in ("sigmoid", "expit")
                                                   or module_call(expr, flow, modules, tree, text, ("Sigmoid",)))

        for call in flow.calls:
            if called_name(call) not in ("log", "log1p"):
                continue
            if any(flow.derives(operand, sigmoid) for operand in operands(call)):
                return True
        return False

    def visit_Call(self, node: cst.Call) -> None:
        super().visit_Call(node)
        complement = False
        operand = self.log_operand(node)
        if operand is None:
            operand = self.log_operand(node, names=("log1p",))
            if operand is None:
                return
            if not (isinstance(operand, cst.UnaryOperation) and isinstance(operand.operator, cst.Minus)):
                return
            operand, complement = operand.expression, True
        hops: tuple = ()
        if not complement:
            found = self._complement(operand)
            if found is not None:
                operand, hops = found
                complement = True
        origin = self.origin(operand, hops=hops)
        if origin is None or origin.kind != SIGMOID:
            return
        what = "1 - sigmoid" if complement else "a sigmoid"
        self.report(node, f"The log of {what}: -inf for large |x| ({'x > 17' if complement else 'x < -88'} in "
                          "float32), with NaN gradients; use `F.logsigmoid"
                          f"({'-x' if complement else 'x'})`",
                    fix=self._fix(node, origin, complement))

    def _complement(self, expr: cst.BaseExpression, depth: int = 0) -> Optional[tuple]:
        """(p, hops) when `expr` is `1 - p`, directly or through local names."""
        hops: tuple = ()
        while isinstance(expr, cst.Name) and depth < 4:
            value = self.value_of(expr.value)
            if value is None:
                return None
            hops, expr, depth = hops + ((expr, value),), value, depth + 1
        if isinstance(expr, cst.BinaryOperation) and isinstance(expr.operator, cst.Subtract) \
                and number(expr.left) == 1:
            return expr.right, hops
        return None

    def _fix(self, log_call: cst.Call, origin: Origin, complement: bool):
        if origin.input is None or not self.unchanged_since(origin):
            return None
        x = origin.input.with_changes(lpar=[], rpar=[]) if not complement else _negate(origin.input)
        ref = self.reference("torch.nn.functional.logsigmoid")
        new_op = cst.Call(func=ref.expr, args=[cst.Arg(value=x)])
        replacement = origin.rebuild(new_op).with_changes(lpar=log_call.lpar, rpar=log_call.rpar)
        spelled = f"F.logsigmoid({'-x' if complement else 'x'})"
        return self.replace(log_call, replacement, safe=not origin.cast, references=[ref],
                            message=f"Use `{spelled}`")


def _negate(expr: cst.BaseExpression) -> cst.BaseExpression:
    inner = expr.with_changes(lpar=[], rpar=[]) if expr.lpar else expr
    if isinstance(inner, cst.UnaryOperation) and isinstance(inner.operator, cst.Minus):
        return inner.expression
    if isinstance(inner, (cst.Name, cst.Attribute, cst.Call, cst.Subscript, cst.Integer, cst.Float)):
        return cst.UnaryOperation(operator=cst.Minus(), expression=inner)
    return cst.UnaryOperation(operator=cst.Minus(),
                              expression=inner.with_changes(lpar=[cst.LeftParen()], rpar=[cst.RightParen()]))
