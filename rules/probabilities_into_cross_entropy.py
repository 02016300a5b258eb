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

WHAT = {
    "cross_entropy": "`cross_entropy` applies log_softmax itself, so a softmax output is softmaxed twice",
    "nll_loss": "`nll_loss` expects log-probabilities",
    "kl_div": "`kl_div` expects log-probabilities as its input",
}

# What the losses are called, as functions and as module classes (`LOSS_FUNCTIONS`, `LOSS_MODULES`), for
# the region filter.
LOSS_NAMES = ("cross_entropy", "nll_loss", "kl_div")
LOSS_CLASSES = ("CrossEntropyLoss", "NLLLoss", "KLDivLoss")


class ProbabilitiesIntoCrossEntropy(OriginRule):
    """
    ## What it does
    Finds a loss fed probabilities where it expects logits or log-probabilities:
    `F.cross_entropy` / `nn.CrossEntropyLoss` given a softmax output (a double softmax), and
    `F.nll_loss` / `nn.NLLLoss` and `F.kl_div` / `nn.KLDivLoss` given a softmax output as their input
    rather than log-probabilities. Only the input (first argument) is checked: probabilities are the
    right *target* for soft-label cross-entropy and for `kl_div`. The softmax and the loss are recognised
    by what the calls resolve to through the module's imports (a local or an attribute set to the loss
    module counts), through local names, selections and reshapes.

    ## Why is this bad?
    `cross_entropy(softmax(x), y)` computes `log_softmax(softmax(x))`: the probabilities, all in [0, 1],
    are treated as logits, so the loss can never get close to 0, its gradient shrinks as the model gets
    confident, and training drifts towards a flatter target than the labels. `nll_loss(softmax(x), y)`
    is `-p[y]`, a linear score, not the negative log-likelihood: it barely penalises confident mistakes.
    Both train, slowly and towards the wrong optimum, without any error.

    ## Example
    ```python
    probs = F.softmax(logits, dim=1)
    loss = F.cross_entropy(probs, labels)
    ```

    ## Use instead
    ```python
    loss = F.cross_entropy(logits, labels)
    ```
    and, for `nll_loss` or `kl_div`, `F.log_softmax(logits, dim=1)` as the input.

    Limits: a criterion the class builds in another method (`self.criterion = nn.CrossEntropyLoss()` in
    `__init__`) is recognised where the routine calling it passes the softmax inline
    (`self.criterion(F.softmax(out, 1), y)`), not through a local name: the text prefilter would
    otherwise have to parse every attention routine (a softmax and a `self.` call). Nor is a model whose `forward` ends
    in a softmax followed into the loss its output feeds.

    ## Fix safety
    Unsafe, always: the rewrite changes the loss and its gradient for every input, not only where the
    original was broken. That is the point (the original optimises the wrong objective), but learning
    rates, loss scales and checkpoints tuned on the old loss no longer match. For `cross_entropy` the fix
    passes the softmax's input: it assumes the softmax was taken over the class dimension (dim 1, or the
    last dimension of 2-D logits). Through a local name, the fix is offered only when the softmax's input
    is a name or attribute that is not rebound in between.

    ## Options
    None.
    """

    code = "GL013"
    name = "probabilities-into-cross-entropy"
    summary = "cross_entropy/nll_loss/kl_div fed a softmax output instead of logits or log-probabilities"
    # The loss must be called or built in the routine (or passed a softmax inline, for a criterion the
    # class built elsewhere): a softmax is in most attention routines, a loss name in most imports.
    triggers = (
        (r"cross_entropy\s*\(", r"CrossEntropyLoss\s*\(", r"nll_loss\s*\(", r"NLLLoss\s*\(", r"kl_div\s*\(",
         r"KLDivLoss\s*\(", r"cross_entropy\s+as\b", r"nll_loss\s+as\b", r"kl_div\s+as\b",
         r"self\.\w+\(\s*(?:F\.|torch\.|nn\.functional\.|torch\.nn\.functional\.)?softmax\(",
         r"self\.\w+\(\s*[A-Za-z_][\w.]*\.softmax\("),
        (r"softmax(?<!log_softmax)\s*\(", r"Softmax(?<!LogSoftmax)\s*\(", r"softmax\s+as\b"),
    )

    VALID = [
        Valid("import torch.nn.functional as F\n\n\ndef train(model, data, target):\n"
              "    output = model(data)\n    return F.nll_loss(output, target)\n",
              note="pytorch/examples mnist: the model ends with log_softmax"),
        Valid("import torch.nn.functional as F\nlogits = model(x)\n"
              "loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)\n",
              note="nanoGPT model.py"),
        Valid("import torch.nn.functional as F\n"
              "loss = F.cross_entropy(student_logits, F.softmax(teacher_logits / T, dim=-1))\n",
              note="soft targets: probabilities are the target"),
        Valid("import torch.nn as nn\nimport torch.nn.functional as F\n"
              "kd = nn.KLDivLoss(reduction='batchmean')(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1))\n",
              note="Hinton distillation: log-probabilities in, probabilities as target"),
        Valid("import torch\nimport torch.nn.functional as F\nprobs = F.softmax(x, dim=1)\n"
              "loss = F.nll_loss(torch.log(probs + 1e-8), y)\n"),
    ]
    INVALID = [
        Invalid(
            "import torch.nn.functional as F\n\n\ndef loss_fn(logits, labels):\n"
            "    probs = F.softmax(logits, dim=1)\n    return F.cross_entropy(probs, labels)\n",
            "import torch.nn.functional as F\n\n\ndef loss_fn(logits, labels):\n"
            "    probs = F.softmax(logits, dim=1)\n    return F.cross_entropy(logits, labels)\n",
            unsafe=True),
        Invalid(
            "import torch\nfrom torch import nn\ncriterion = nn.CrossEntropyLoss()\n"
            "loss = criterion(torch.softmax(out, -1), y)\n",
            "import torch\nfrom torch import nn\ncriterion = nn.CrossEntropyLoss()\nloss = criterion(out, y)\n",
            unsafe=True),
        Invalid(
            "import torch.nn.functional as F\nloss = F.nll_loss(F.softmax(out, dim=1), target)\n",
            "import torch.nn.functional as F\nloss = F.nll_loss(F.log_softmax(out, dim=1), target)\n",
            unsafe=True),
        Invalid(
            "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n\nclass Net(nn.Module):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n        self.fc = nn.Linear(4, 3)\n        self.loss = nn.CrossEntropyLoss()\n\n"
            "    def forward(self, x, y):\n        return self.loss(F.softmax(self.fc(x), dim=1), y)\n",
            "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n\nclass Net(nn.Module):\n"
            "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(4, 3)\n"
            "        self.loss = nn.CrossEntropyLoss()\n\n"
            "    def forward(self, x, y):\n        return self.loss(self.fc(x), y)\n",
            unsafe=True, note="a criterion the class builds in __init__"),
        Invalid(
            "import torch.nn.functional as F\nkd = F.kl_div(F.softmax(s, dim=-1), F.softmax(t, dim=-1))\n",
            "import torch.nn.functional as F\nkd = F.kl_div(F.log_softmax(s, dim=-1), F.softmax(t, dim=-1))\n",
            unsafe=True),
    ]

    @classmethod
    def region_filter(cls, nodes, tree, text) -> bool:
        """A call that may be a loss (a function called `cross_entropy`, `nll_loss` or `kl_div`, or a call of
        what may hold a loss module: `astflow.holders`) whose first argument a softmax, or a call of what may
        hold an `nn.Softmax`, produced."""
        if aliased(text, {"softmax", *LOSS_NAMES}):
            return True
        flow, modules = region_flow(nodes), imported(tree)

        def produced(expr) -> bool:
            return isinstance(expr, ast.Call) and (called_name(expr) == "softmax"
                                                   or module_call(expr, flow, modules, tree, text, ("Softmax",)))

        def loss(call) -> bool:
            return called_name(call) in LOSS_NAMES or module_call(call, flow, modules, tree, text, LOSS_CLASSES)

        return any(loss(call) and flow.derives(first_argument(call), produced) for call in flow.calls)

    def visit_Call(self, node: cst.Call) -> None:
        super().visit_Call(node)
        found = self.loss_input_origin(node, WHAT, SOFTMAX)
        if found is None:
            return
        loss, given, origin = found
        kind = loss[0]
        self.report(node, f"A softmax output is the input of a loss that expects "
                          f"{'logits' if kind == 'cross_entropy' else 'log-probabilities'}: {WHAT[kind]}",
                    fix=self._fix(node, given, origin, kind))

    def _fix(self, call: cst.Call, given: cst.Arg, origin: Origin, kind: str):
        if not self.unchanged_since(origin):
            return None
        references: tuple = ()
        if kind == "cross_entropy":
            new_input = origin.rebuild(origin.input.with_changes(lpar=[], rpar=[]) if not origin.steps
                                       else origin.input)
            message = "Pass the logits (the softmax's input); the loss changes everywhere"
        else:
            new_op, references = self.log_softmax_call(origin)
            if new_op is None:
                return None
            new_input = origin.rebuild(new_op)
            message = "Pass `log_softmax`; the loss changes everywhere"
        args = [a.with_changes(value=new_input) if a is given else a for a in call.args]
        return self.replace(call, call.with_changes(args=args), safe=False, references=references, message=message)
