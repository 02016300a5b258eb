from __future__ import annotations

import ast

import libcst as cst

from gradlint.astflow import (
    aliased,
    called_name,
    first_argument,
    imported,
    module_call,
    region_flow,
)
from gradlint.origins import SOFTMAX, Origin, OriginRule
from gradlint.rule import Invalid, Valid


class LogOfSoftmax(OriginRule):
    """
    ## What it does
    Finds the log of a softmax: `torch.log(F.softmax(x, dim))`, `x.softmax(dim).log()`,
    `torch.log(torch.softmax(x, dim))`, an `nn.Softmax` module's output, and the same through local names
    and through selections and reshapes (`probs = F.softmax(logits, -1)` then `torch.log(probs[:, 0])`).
    The softmax is recognised by what the call resolves to through the module's imports (`torch.softmax`,
    `torch.nn.functional.softmax`, `torch.special.softmax`, the `Tensor.softmax` method, an attribute or
    local bound to `nn.Softmax(...)`), never by a variable's name.

    ## Why is this bad?
    softmax rounds small probabilities to exactly 0: in float32 a logit that is about 104 below the largest
    one in its row already gives 0 (about 17 in float16), and its log is `-inf`. The gradient there is NaN
    (`inf * 0` in the backward), which then spreads to every weight. `log_softmax` computes
    `x - logsumexp(x)` and stays finite for any finite logits.

    ## Example
    ```python
    log_probs = torch.log(F.softmax(logits, dim=-1))
    ```

    ## Use instead
    ```python
    log_probs = F.log_softmax(logits, dim=-1)
    ```
    The fix keeps the call's arguments (`dim`, `dtype`) and the selection applied after the softmax:
    `torch.log(F.softmax(x, -1)[:, 0])` becomes `F.log_softmax(x, -1)[:, 0]`. Through a local name it
    rewrites only the log (the probabilities stay for their other uses), and only when the softmax's input
    is a name or attribute that is not rebound in between; otherwise the finding has no fix.

    ## Fix safety
    Safe: `log_softmax(x)` is `log(softmax(x))` mathematically, and in floating point the two agree to a
    few units in the last place wherever the original is finite, gradients included (a test checks values
    and gradients on ordinary and large logits). They differ only where softmax underflowed to 0, where
    the original is `-inf` with a NaN gradient and the fix is the correct finite value. A selection
    commutes with an elementwise log, so moving it after `log_softmax` changes nothing.

    Unsafe when a dtype cast stands between the softmax and the log (`F.softmax(x).float().log()`): the
    fixed code takes the log in the softmax's dtype and casts after, which rounds differently in float16.

    ## Options
    None.
    """

    code = "GL008"
    reports_in_tests = False
    name = "log-of-softmax"
    summary = "log of a softmax output: -inf and NaN gradients where softmax underflows; use log_softmax"
    triggers = (
        (r"softmax(?<!log_softmax)\s*\(", r"Softmax(?<!LogSoftmax)\s*\(", r"softmax\s+as\b",
         r"log\s*\(\s*self\.", r"\)\.log\(\)"),
        (r"\.log(?<!math\.log)(?<!np\.log)(?<!self\.log)\s*\(", r"log(?<![\w.]log)\s*\(", r"log\s+as\b"),
    )

    VALID = [
        Valid("import torch.nn.functional as F\nlogprobs = F.log_softmax(logits, dim=-1)\n",
              note="nanoGPT/minGPT-style log-probabilities"),
        Valid("import torch\n\n\ndef entropy(logits):\n    p = torch.softmax(logits, dim=-1)\n"
              "    return -(p * torch.log(p + 1e-10)).sum(-1)\n", note="guarded: eps inside the log"),
        Valid("import torch\nlog_p = torch.log(probs.clamp(min=1e-8))\n"),
        Valid("import torch\nlog_likelihoods = torch.log(torch.clamp(likelihoods, min=1e-30))\n",
              note="transformers generation/watermarking.py"),
        Valid("import torch\nimport torch.nn.functional as F\n\n\ndef f(scores):\n"
              "    probs = F.softmax(scores, dim=-1)\n    probs = probs * mask\n    return torch.log(probs)\n",
              note="the value logged is no longer a softmax output"),
        Valid("import torch\nlog_p = torch.log(self.softmax_temperature)\n",
              note="an attribute named like softmax is not a softmax"),
        Valid("import numpy as np\nlog_p = np.log(np.exp(x) / np.exp(x).sum())\n"),
        Valid("import torch\nimport torch.nn.functional as F\ntarget = torch.log(F.softmax(t, -1) + 1e-12)\n"),
    ]
    INVALID = [
        Invalid(
            "import torch\nimport torch.nn.functional as F\nlog_probs = torch.log(F.softmax(logits, dim=-1))\n",
            "import torch\nimport torch.nn.functional as F\nlog_probs = F.log_softmax(logits, dim=-1)\n"),
        Invalid(
            "import torch\nlog_probs = logits.softmax(-1).log()\n",
            "import torch\nlog_probs = logits.log_softmax(-1)\n"),
        Invalid(
            "import torch\nlp = torch.log(torch.softmax(scores, dim=1, dtype=torch.float32))\n",
            "import torch\nlp = torch.log_softmax(scores, dim=1, dtype=torch.float32)\n"),
        Invalid(
            "import torch\nimport torch.nn.functional as F\n\n\ndef pick(logits, labels):\n"
            "    return torch.log(F.softmax(logits, dim=1).gather(1, labels[:, None]))\n",
            "import torch\nimport torch.nn.functional as F\n\n\ndef pick(logits, labels):\n"
            "    return F.log_softmax(logits, dim=1).gather(1, labels[:, None])\n",
            note="a selection commutes with the log"),
        Invalid(
            "import torch\n\n\ndef entropy(scores):\n    probs = torch.softmax(scores, dim=1)\n"
            "    log_probs = torch.log(probs)\n    return -(probs * log_probs).sum(1)\n",
            "import torch\n\n\ndef entropy(scores):\n    probs = torch.softmax(scores, dim=1)\n"
            "    log_probs = torch.log_softmax(scores, dim=1)\n    return -(probs * log_probs).sum(1)\n",
            note="transformers generation/logits_process.py: entropy of a softmax; NaN when probs underflow"),
        Invalid(
            "import torch\n\n\ndef f(scores):\n    probs = torch.softmax(scores, dim=1)\n"
            "    scores = scores * 2\n    return torch.log(probs)\n",
            None, note="`scores` is rebound in between: reported, no fix"),
        Invalid(
            "from torch.nn.functional import softmax\nlp = softmax(x, 1).log()\n",
            "from torch.nn.functional import softmax\nfrom torch.nn.functional import log_softmax\n"
            "lp = log_softmax(x, 1)\n"),
        Invalid(
            "import torch\nfrom torch import nn\n\n\nclass Head(nn.Module):\n"
            "    def __init__(self):\n        super().__init__()\n        self.act = nn.Softmax(dim=1)\n\n"
            "    def forward(self, x):\n        return torch.log(self.act(x))\n",
            "import torch\nfrom torch import nn\n\n\nclass Head(nn.Module):\n"
            "    def __init__(self):\n        super().__init__()\n        self.act = nn.Softmax(dim=1)\n\n"
            "    def forward(self, x):\n        return nn.functional.log_softmax(x, dim=1)\n",
            note="an nn.Softmax module held by the class"),
        Invalid(
            "import torch\nlp = torch.softmax(x.half(), -1).float().log()\n",
            "import torch\nlp = torch.log_softmax(x.half(), -1).float()\n", unsafe=True,
            note="a cast in between: the log is then taken in float16"),
    ]

    @classmethod
    def region_filter(cls, nodes, tree, text) -> bool:
        """A log (method, or a function called `log`) of something a softmax, or a call of what may hold an
        `nn.Softmax` (`astflow.holders`), produced."""
        if aliased(text, {"log", "softmax"}):
            return True
        flow, modules = region_flow(nodes), imported(tree)

        def softmax(expr) -> bool:
            return isinstance(expr, ast.Call) and (called_name(expr) == "softmax"
                                                   or module_call(expr, flow, modules, tree, text, ("Softmax",)))

        return any(flow.derives(operand, softmax) for operand in map(_log_operand, flow.calls) if operand)

    def visit_Call(self, node: cst.Call) -> None:
        super().visit_Call(node)
        operand = self.log_operand(node)
        if operand is None:
            return
        origin = self.origin(operand)
        if origin is None or origin.kind != SOFTMAX:
            return
        shown = " ".join(self.code_of(node).split())
        shown = shown if len(shown) <= 50 else shown[:47] + "..."
        self.report(node, f"`{shown}` is the log of a softmax: -inf where a probability underflows to 0 "
                          "(a logit gap of ~104 in float32), with NaN gradients; use `log_softmax`",
                    fix=self._fix(node, origin))

    def _fix(self, log_call: cst.Call, origin: Origin):
        if not self.unchanged_since(origin):
            return None
        new_op, references = self.log_softmax_call(origin)
        if new_op is None:
            return None
        replacement = origin.rebuild(new_op).with_changes(lpar=log_call.lpar, rpar=log_call.rpar)
        return self.replace(log_call, replacement, safe=not origin.cast, references=references,
                            message="Use `log_softmax`")


def _log_operand(call: ast.Call):
    """The operand of `x.log()` or of `log(x)` / `torch.log(x)` in `ast`, else None."""
    if called_name(call) != "log":
        return None
    if not call.args and not call.keywords and isinstance(call.func, ast.Attribute):
        return call.func.value
    return first_argument(call) if len(call.args) + len(call.keywords) == 1 else None
