from __future__ import annotations

import ast
from typing import Optional

import libcst as cst

from gradlint.astflow import (
    aliased,
    called_name,
    first_argument,
    imported,
    module_call,
    region_flow,
)
from gradlint.origins import SIGMOID, Origin, OriginRule
from gradlint.rule import Invalid, Valid

WITH_LOGITS = "torch.nn.functional.binary_cross_entropy_with_logits"
WITH_LOGITS_MODULE = "torch.nn.BCEWithLogitsLoss"
# BCELoss's constructor arguments, in order; BCEWithLogitsLoss takes the same first four.
CTOR_ARGS = ("weight", "size_average", "reduce", "reduction")


class SigmoidThenBce(OriginRule):
    """
    ## What it does
    Finds binary cross-entropy computed on a sigmoid's output: `F.binary_cross_entropy(torch.sigmoid(x),
    y)`, `nn.BCELoss()(x.sigmoid(), y)`, a `criterion = nn.BCELoss()` (a local, or an attribute that the
    class sets to `nn.BCELoss(...)`) called on a sigmoid output, and the same when the sigmoid is reached
    through local names, selections and reshapes (`probs = torch.sigmoid(logits)` ...
    `criterion(probs.view(-1), y)`). Both the loss and the sigmoid are recognised by what the calls
    resolve to through the module's imports.

    ## Why is this bad?
    `sigmoid(x)` rounds to exactly 1 for `x` above about 17 in float32 (0 below about -88), and well
    before that `1 - sigmoid(x)` has lost most of its digits. `binary_cross_entropy` then clamps its log
    at -100, so a confidently wrong logit gets a loss of 100 and a gradient of 0: the example that most
    needs correcting stops contributing. `binary_cross_entropy_with_logits` computes the same loss from
    the logits with the log-sum-exp trick, exactly and with the right gradient for every `x`; it is also
    the only one of the two that runs under CUDA autocast (`binary_cross_entropy` raises there).

    ## Example
    ```python
    loss = F.binary_cross_entropy(torch.sigmoid(logits), targets, reduction="sum")
    ```

    ## Use instead
    ```python
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
    ```
    The fix passes the sigmoid's input and keeps every other argument (`weight`, `reduction`; the two
    losses take them in the same order). A loss module built inline becomes `nn.BCEWithLogitsLoss(...)`.
    A criterion held in a local or an attribute may also serve other calls, so the fix rewrites only this
    call, to `F.binary_cross_entropy_with_logits(..., reduction=...)`, and only when the constructor's
    arguments are literals it can copy; a sigmoid reached through a local name is replaced by its input
    only when that input is a name or attribute not rebound in between. Otherwise there is no fix.

    Limits: a criterion the class builds in another method (`self.criterion = nn.BCELoss()` in
    `__init__`) is recognised when the sigmoid is passed to it inline (`self.criterion(x.sigmoid(), y)`),
    not through a local name: the text prefilter would otherwise have to parse every routine that
    calls a sigmoid and an attribute.

    ## Fix safety
    Safe: both losses compute `-(y log σ(x) + (1 - y) log(1 - σ(x)))`, with the same weights and
    reduction. On ordinary logits they agree within float32 rounding, values and gradients (a test
    checks); they differ where σ(x) saturated or lost its digits, where the original's clamped log gives
    a wrong loss and a zero gradient, and the fix gives the exact value. The fix never raises where the
    original ran (the logits form accepts every input the probability form does, and also runs under
    autocast). Unsafe when a dtype cast stands between the sigmoid and the loss: the fixed code applies
    the cast to the logits instead.

    ## Options
    None.
    """

    code = "GL012"
    reports_in_tests = False
    name = "sigmoid-then-bce"
    summary = "binary_cross_entropy/BCELoss on a sigmoid output; use the with_logits form"
    # The loss must be called or built in the routine (or passed a sigmoid inline, for a criterion the
    # class built elsewhere): a sigmoid is in many gates, a loss name in many imports.
    triggers = (
        (r"binary_cross_entropy\s*\(", r"BCELoss\s*\(", r"binary_cross_entropy\s+as\b",
         # one pattern per name: each is then asked only of a text that holds its literal (`triggers`)
         r"self\.\w+\(\s*(?:F\.|torch\.|nn\.functional\.|torch\.nn\.functional\.|torch\.special\.)?sigmoid\(",
         r"self\.\w+\(\s*(?:F\.|torch\.|nn\.functional\.|torch\.nn\.functional\.|torch\.special\.)?expit\(",
         r"self\.\w+\(\s*[A-Za-z_][\w.]*\.sigmoid\(\)"),
        (r"sigmoid(?<!logsigmoid)\s*\(", r"Sigmoid(?<!LogSigmoid)\s*\(", r"expit\s*\(", r"sigmoid\s+as\b",
         r"expit\s+as\b"),
    )

    VALID = [
        Valid("import torch.nn.functional as F\nloss = F.binary_cross_entropy_with_logits(logits, targets)\n"),
        Valid("import torch.nn.functional as F\n\n\ndef loss_function(recon_x, x, mu, logvar):\n"
              "    BCE = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction='sum')\n"
              "    return BCE\n",
              note="pytorch/examples vae/main.py: the decoder's output comes from another routine"),
        Valid("import torch\nfrom torch import nn\ncriterion = nn.BCELoss()\n"
              "errD_real = criterion(output, label)\n", note="pytorch/examples dcgan: output of a model"),
        Valid("import torch\nimport torch.nn.functional as F\n"
              "loss = F.binary_cross_entropy(torch.sigmoid(x).clamp(1e-6, 1 - 1e-6), y)\n",
              note="clamped first: not a sigmoid output any more"),
        Valid("import torch\nimport torch.nn.functional as F\n"
              "loss = F.binary_cross_entropy(probs, torch.sigmoid(teacher_logits))\n",
              note="a sigmoid as the soft target is fine"),
        Valid("import torch\nfrom torch.nn import BCELoss\n\n\ndef loss(scores, labels):\n"
              "    loss_fct = BCELoss()\n    return loss_fct(scores, labels.float())\n",
              note="transformers generation/watermarking.py: scores from another routine"),
    ]
    INVALID = [
        Invalid(
            "import torch\nimport torch.nn.functional as F\n"
            "loss = F.binary_cross_entropy(torch.sigmoid(x), y, reduction='sum')\n",
            "import torch\nimport torch.nn.functional as F\n"
            "loss = F.binary_cross_entropy_with_logits(x, y, reduction='sum')\n"),
        Invalid(
            "import torch\nfrom torch import nn\nloss = nn.BCELoss()(logits.sigmoid(), target)\n",
            "import torch\nfrom torch import nn\nloss = nn.BCEWithLogitsLoss()(logits, target)\n"),
        Invalid(
            "import torch\nfrom torch import nn\n\n\ndef train_step(model, x, y):\n"
            "    criterion = nn.BCELoss(reduction='mean')\n    probs = torch.sigmoid(model(x))\n"
            "    loss = criterion(probs.squeeze(1), y)\n    return loss, probs\n",
            None, note="the sigmoid's input is a call (evaluated again by a rewrite): reported, no fix"),
        Invalid(
            "import torch\nfrom torch import nn\n\n\ndef train_step(model, x, y):\n"
            "    criterion = nn.BCELoss(reduction='mean')\n    out = model(x)\n    probs = torch.sigmoid(out)\n"
            "    loss = criterion(probs.squeeze(1), y)\n    return loss, probs\n",
            "import torch\nfrom torch import nn\n\n\ndef train_step(model, x, y):\n"
            "    criterion = nn.BCELoss(reduction='mean')\n    out = model(x)\n    probs = torch.sigmoid(out)\n"
            "    loss = nn.functional.binary_cross_entropy_with_logits(out.squeeze(1), y, reduction='mean')\n"
            "    return loss, probs\n",
            note="a criterion in a local: this call is rewritten, the criterion stays"),
        Invalid(
            "import torch\nfrom torch import nn\n\n\nclass Model(nn.Module):\n    def __init__(self):\n"
            "        super().__init__()\n        self.head = nn.Linear(8, 1)\n        self.loss_fn = nn.BCELoss()\n\n"
            "    def forward(self, x, y):\n        return self.loss_fn(torch.sigmoid(self.head(x)), y)\n",
            "import torch\nfrom torch import nn\n\n\nclass Model(nn.Module):\n    def __init__(self):\n"
            "        super().__init__()\n        self.head = nn.Linear(8, 1)\n        self.loss_fn = nn.BCELoss()\n\n"
            "    def forward(self, x, y):\n"
            "        return nn.functional.binary_cross_entropy_with_logits(self.head(x), y)\n",
            note="the loss is an attribute the class sets to nn.BCELoss()"),
        Invalid(
            "from torch.nn.functional import binary_cross_entropy\nimport torch\n"
            "l = binary_cross_entropy(torch.special.expit(z), t, w)\n",
            "from torch.nn.functional import binary_cross_entropy\nimport torch\n"
            "l = torch.nn.functional.binary_cross_entropy_with_logits(z, t, w)\n"),
    ]

    @classmethod
    def region_filter(cls, nodes, tree, text) -> bool:
        """A call that may be a BCE (a function called `binary_cross_entropy`, or a call of what may hold a
        `BCELoss`: `astflow.holders`) whose first argument a sigmoid, or a call of what may hold an
        `nn.Sigmoid`, produced."""
        if aliased(text, {"sigmoid", "expit", "binary_cross_entropy"}):
            return True
        flow, modules = region_flow(nodes), imported(tree)

        def produced(expr) -> bool:
            return isinstance(expr, ast.Call) and (called_name(expr) in ("sigmoid", "expit")
                                                   or module_call(expr, flow, modules, tree, text, ("Sigmoid",)))

        def loss(call) -> bool:
            return called_name(call) == "binary_cross_entropy" or module_call(call, flow, modules, tree, text, ("BCELoss",))

        return any(loss(call) and flow.derives(first_argument(call), produced) for call in flow.calls)

    def visit_Call(self, node: cst.Call) -> None:
        super().visit_Call(node)
        found = self.loss_input_origin(node, ("bce",), SIGMOID)
        if found is None:
            return
        loss, given, origin = found
        self.report(node, "Binary cross-entropy of a sigmoid output: the sigmoid saturates and BCE clamps its "
                          "log at -100, so confidently wrong logits get a wrong loss and no gradient; use "
                          "`binary_cross_entropy_with_logits` on the logits",
                    fix=self._fix(node, given, origin, loss[1]))

    def _fix(self, call: cst.Call, given: cst.Arg, origin: Origin, ctor: Optional[cst.Call]):
        if not self.unchanged_since(origin):
            return None
        logits = origin.rebuild(origin.input.with_changes(lpar=[], rpar=[]) if not origin.steps else origin.input)
        args = [a.with_changes(value=logits) if a is given else a for a in call.args]
        safe = not origin.cast
        if ctor is None:  # F.binary_cross_entropy(...)
            func, references = self._renamed(call.func, "binary_cross_entropy_with_logits", WITH_LOGITS)
            return self.replace(call, call.with_changes(func=func, args=args), safe=safe, references=references,
                                message="Use `binary_cross_entropy_with_logits` on the logits")
        if call.func is ctor:  # nn.BCELoss(...)(p, y): build the logits module in its place
            func, references = self._renamed(ctor.func, "BCEWithLogitsLoss", WITH_LOGITS_MODULE)
            new = call.with_changes(func=ctor.with_changes(func=func), args=args)
            return self.replace(call, new, safe=safe, references=references, message="Use `nn.BCEWithLogitsLoss`")
        keywords = self._literal_keywords(ctor)
        if keywords is None:
            return None
        ref = self.reference(WITH_LOGITS)
        last = args[-1]
        if keywords and last.comma is cst.MaybeSentinel.DEFAULT:
            args[-1] = last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
        new = cst.Call(func=ref.expr, args=[*args, *keywords], lpar=call.lpar, rpar=call.rpar)
        return self.replace(call, new, safe=safe, references=[ref],
                            message="Use `binary_cross_entropy_with_logits` on the logits")

    def _renamed(self, func: cst.BaseExpression, attr: str, qualified: str):
        if isinstance(func, cst.Attribute):
            return func.with_changes(attr=cst.Name(attr)), ()
        ref = self.reference(qualified)
        return ref.expr, (ref,)

    @staticmethod
    def _literal_keywords(ctor: cst.Call) -> Optional[list]:
        """The constructor's arguments as keywords, when every one is a literal (else None)."""
        out = []
        for position, a in enumerate(ctor.args):
            if a.star or position >= len(CTOR_ARGS):
                return None
            keyword = a.keyword.value if a.keyword is not None else CTOR_ARGS[position]
            if keyword not in CTOR_ARGS or not _literal(a.value):
                return None
            out.append(cst.Arg(value=a.value, keyword=cst.Name(keyword),
                               equal=cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""),
                                                     whitespace_after=cst.SimpleWhitespace(""))))
        return out


def _literal(expr: cst.BaseExpression) -> bool:
    if isinstance(expr, (cst.SimpleString, cst.Integer, cst.Float)):
        return True
    return isinstance(expr, cst.Name) and expr.value in ("True", "False", "None")
