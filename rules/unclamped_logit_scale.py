from __future__ import annotations

import ast
import re
from typing import Optional

import libcst as cst

from gradlint.astflow import aliased, called_name, operands, region_flow, statements_spelling
from gradlint.nodes import arg_value, format_number, method
from gradlint.origins import CAST_METHODS, OriginRule, names_in
from gradlint.reach import LossReach, assignments
from gradlint.rule import Invalid, Option, Valid
from gradlint.triggers import scan
from gradlint.walk import children

SIMILARITY_FUNCTIONS = {f"torch.{name}" for name in ("matmul", "mm", "bmm", "einsum", "inner", "tensordot")} | {
    "torch.nn.functional.linear", "torch.nn.functional.cosine_similarity", "torch.cosine_similarity"}
SIMILARITY_METHODS = {"matmul", "mm", "bmm"}
PASS_THROUGH = CAST_METHODS | {"cpu", "cuda"}  # same value, maybe another device or dtype
IN_PLACE_CLAMPS = {"clamp_", "clip_", "clamp_max_", "clamp_min_"}


class UnclampedLogitScale(OriginRule):
    """
    ## What it does
    Finds a learnable temperature exponentiated with no upper bound and used to scale logits that reach
    a loss: `self.logit_scale.exp() * image_features @ text_features.T` (CLIP style), where
    `self.logit_scale` is a trainable `nn.Parameter` of the class (every assignment in the class says
    so), the exponential multiplies a similarity (`@`, `torch.matmul`, `einsum`, `F.linear`,
    `F.cosine_similarity`), and the product reaches a loss (`gradlint/reach.py`: a torch loss, a
    `.backward()`, or a routine of the module that computes one, such as HF's `clip_loss`). Not reported:
    a clamp before or after the exponential (`self.logit_scale.clamp(max=math.log(100)).exp()`,
    `torch.clamp(self.logit_scale.exp(), max=100)`), a module that clamps the parameter in place
    (`model.logit_scale.clamp_(0, math.log(100))` after the optimizer step, as open_clip's training loop
    does), a parameter created with `requires_grad=False`, and scaled logits that only leave the routine
    (inference, or a loss in another module: the rule cannot see it).

    ## Why is this bad?
    The loss rewards sharper logits, so the learned log-temperature tends to keep growing; its
    exponential multiplies every logit. Unbounded, the scale reaches values where the logits overflow in
    float16 (65504) or the softmax saturates, and training diverges or stalls. CLIP clips the scale at
    100 for this reason ("to prevent scaling the logits by more than 100, which we found necessary to
    prevent training instability", Radford et al., 2021).

    ## Example
    ```python
    logits_per_image = self.logit_scale.exp() * image_features @ text_features.T
    ```

    ## Use instead
    ```python
    logits_per_image = self.logit_scale.exp().clamp(max=100) * image_features @ text_features.T
    ```
    or clamp the parameter in place after each optimizer step, as open_clip does.

    ## Fix safety
    Unsafe: the clamp changes results wherever the learned scale is above the bound, which a model may
    have reached legitimately (CLIP's own checkpoints sit at the bound, ln(100) = 4.6052, whose
    exponential rounds to 100.00002 in float32 and is then clamped), and the bound is a choice, not a
    fact (`max-scale`).

    ## Options
    - `max-scale` (default `100`): the bound the fix puts on the exponential.
    """

    code = "GL011"
    reports_in_tests = False
    name = "unclamped-logit-scale"
    summary = "exp() of a learnable temperature scaling logits, with no clamp: it can grow until logits overflow"
    # An exponential (not math.exp or np.exp) and a similarity: a matrix product (`a @ b`, not a decorator),
    # matmul/mm/bmm, einsum, F.linear, a cosine similarity.
    triggers = ((r"exp(?<!math\.exp)(?<!np\.exp)\s*\(",),
                (r"@[\w(](?<=[\w)\]]@[\w(])", r"@[\w(](?<=[\w)\]] @[\w(])", r" @ ", r"matmul", r"mm\s*\(",
                 r"einsum", r"linear\s*\(", r"cosine_similarity", r"inner\s*\("))
    # A finding also needs, somewhere in the file, a parameter and a loss (or a backward) it reaches: each
    # group must match, one pattern per name (each is then asked only of a text that holds its literal).
    _file_needs = ((re.compile(r"Parameter\s*\("),),
                   tuple(re.compile(p) for p in (r"loss\w*\s*\(", r"Loss\s*\(", r"entropy\s*\(", r"backward\s*\(",
                                                 r"kl_div", r"autograd")))
    options = (Option("max-scale", 100, "The upper bound the fix puts on the exponentiated scale."),)

    VALID = [
        Valid("import torch\nfrom torch import nn\n\n\nclass OneFormerLoss(nn.Module):\n"
              "    def __init__(self):\n        super().__init__()\n"
              "        self.logit_scale = nn.Parameter(torch.tensor(2.6592))\n\n"
              "    def forward(self, image_queries, text_queries):\n"
              "        logit_scale = torch.clamp(self.logit_scale.exp(), max=100)\n"
              "        logits = torch.matmul(text_queries, image_queries.t()) * logit_scale\n"
              "        return nn.functional.cross_entropy(logits, torch.arange(len(logits)))\n",
              note="transformers oneformer: clamped after exp"),
        Valid("import math\nimport torch\nfrom torch import nn\n\n\nclass Attn(nn.Module):\n"
              "    def __init__(self, heads):\n        super().__init__()\n"
              "        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((heads, 1, 1))))\n\n"
              "    def forward(self, q, k):\n"
              "        scale = torch.clamp(self.logit_scale, max=math.log(1.0 / 0.01)).exp()\n"
              "        return (q @ k.transpose(-2, -1)) * scale\n",
              note="transformers swinv2: clamped before exp"),
        Valid("import torch\nfrom torch import nn\n\n\nclass CLIP(nn.Module):\n    def __init__(self):\n"
              "        super().__init__()\n        self.logit_scale = nn.Parameter(torch.ones([]) * 2.6592)\n\n"
              "    def get_logits(self, image_features, text_features):\n"
              "        image_logits = self.logit_scale.exp() * image_features @ text_features.T\n"
              "        return image_logits, image_logits.T\n",
              note="open_clip model.py: the loss (and the clamp) live in the training code"),
        Valid("import torch\nfrom torch import nn\n\n\nclass Mixer(nn.Module):\n    def __init__(self, n):\n"
              "        super().__init__()\n        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1.0)))\n\n"
              "    def forward(self, x, y):\n        A = -torch.exp(self.A_log.float())\n"
              "        loss = ((x * A) - y).pow(2).mean()\n        loss.backward()\n",
              note="exp of a parameter that does not scale a similarity (Mamba's A)"),
        Valid("import math\nimport torch\nfrom torch import nn\n\n\nclass Model(nn.Module):\n"
              "    def __init__(self):\n        super().__init__()\n"
              "        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))\n\n"
              "    def forward(self, a, b, labels):\n        logits = self.logit_scale.exp() * a @ b.t()\n"
              "        return nn.functional.cross_entropy(logits, labels)\n\n\n"
              "def train_step(model, opt, batch):\n    model(*batch).backward()\n    opt.step()\n"
              "    with torch.no_grad():\n        model.logit_scale.clamp_(0, math.log(100))\n",
              note="clamped in place after each step (open_clip's train.py)"),
        Valid("import torch\nfrom torch import nn\n\n\nclass Head(nn.Module):\n    def __init__(self):\n"
              "        super().__init__()\n        self.t = nn.Parameter(torch.zeros([]), requires_grad=False)\n\n"
              "    def forward(self, a, b, y):\n"
              "        return nn.functional.cross_entropy(self.t.exp() * a @ b.T, y)\n",
              note="a frozen parameter"),
    ]
    INVALID = [
        Invalid(
            "import torch\nfrom torch import nn\n\n\ndef contrastive_loss(logits):\n"
            "    return nn.functional.cross_entropy(logits, torch.arange(len(logits), device=logits.device))\n\n\n"
            "class CLIPModel(nn.Module):\n    def __init__(self, init):\n        super().__init__()\n"
            "        self.logit_scale = nn.Parameter(torch.tensor(init))\n\n"
            "    def forward(self, text_embeds, image_embeds, return_loss=False):\n"
            "        logits_per_text = torch.matmul(text_embeds, image_embeds.t())\n"
            "        logits_per_text = logits_per_text * self.logit_scale.exp().to(text_embeds.device)\n"
            "        loss = None\n        if return_loss:\n            loss = contrastive_loss(logits_per_text)\n"
            "        return loss, logits_per_text\n",
            "import torch\nfrom torch import nn\n\n\ndef contrastive_loss(logits):\n"
            "    return nn.functional.cross_entropy(logits, torch.arange(len(logits), device=logits.device))\n\n\n"
            "class CLIPModel(nn.Module):\n    def __init__(self, init):\n        super().__init__()\n"
            "        self.logit_scale = nn.Parameter(torch.tensor(init))\n\n"
            "    def forward(self, text_embeds, image_embeds, return_loss=False):\n"
            "        logits_per_text = torch.matmul(text_embeds, image_embeds.t())\n"
            "        logits_per_text = logits_per_text * self.logit_scale.exp().clamp(max=100).to(text_embeds.device)\n"
            "        loss = None\n        if return_loss:\n            loss = contrastive_loss(logits_per_text)\n"
            "        return loss, logits_per_text\n",
            unsafe=True, note="transformers CLIP-family models"),
        Invalid(
            "import numpy as np\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n\n"
            "class DualEncoder(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
            "        self.temperature = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))\n\n"
            "    def forward(self, img, txt, labels):\n        scale = torch.exp(self.temperature)\n"
            "        logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T\n"
            "        return F.cross_entropy(logits, labels)\n",
            "import numpy as np\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n\n"
            "class DualEncoder(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
            "        self.temperature = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))\n\n"
            "    def forward(self, img, txt, labels):\n        scale = torch.exp(self.temperature).clamp(max=100)\n"
            "        logits = scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T\n"
            "        return F.cross_entropy(logits, labels)\n",
            unsafe=True),
        Invalid(
            "import torch\nfrom torch import nn\n\n\nclass XCLIP(nn.Module):\n    def __init__(self):\n"
            "        super().__init__()\n        self.logit_scale = nn.Parameter(torch.tensor(2.6592))\n\n"
            "    def forward(self, video_embeds, text_embeds):\n        logit_scale = self.logit_scale.exp()\n"
            "        logits_per_video = torch.einsum('bd,bkd->bk', video_embeds, logit_scale * text_embeds)\n"
            "        loss = nn.functional.cross_entropy(logits_per_video, torch.arange(len(logits_per_video)))\n"
            "        return loss\n",
            "import torch\nfrom torch import nn\n\n\nclass XCLIP(nn.Module):\n    def __init__(self):\n"
            "        super().__init__()\n        self.logit_scale = nn.Parameter(torch.tensor(2.6592))\n\n"
            "    def forward(self, video_embeds, text_embeds):\n        logit_scale = self.logit_scale.exp().clamp(max=100)\n"
            "        logits_per_video = torch.einsum('bd,bkd->bk', video_embeds, logit_scale * text_embeds)\n"
            "        loss = nn.functional.cross_entropy(logits_per_video, torch.arange(len(logits_per_video)))\n"
            "        return loss\n",
            unsafe=True, note="transformers x_clip: the scale multiplies an einsum operand"),
    ]

    @classmethod
    def region_filter(cls, nodes, tree, text) -> bool:
        """An exponential of an attribute (`self.x.exp()`, `torch.exp(self.x)`), maybe through locals and
        casts: the exponential of a class's parameter."""
        if aliased(text, {"exp"}):
            return True
        flow = region_flow(nodes)

        def attribute(expr) -> bool:
            return isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name)

        for call in flow.calls:
            if called_name(call) != "exp":
                continue
            if any(flow.derives(operand, attribute) for operand in operands(call)):
                return True
        return False

    @classmethod
    def may_match(cls, text: str) -> bool:
        found = scan(text)
        return super().may_match(text) and all(any(found.search(p) for p in group) for group in cls._file_needs)

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._reach: Optional[LossReach] = None
        self._clamped: Optional[set] = None

    def visit_Call(self, node: cst.Call) -> None:
        super().visit_Call(node)
        qualified = self.ctx.resolve(node.func)
        if qualified == "torch.exp":
            operand = arg_value(node, 0, "input")
        elif qualified is None and isinstance(node.func, cst.Attribute) and node.func.attr.value == "exp" \
                and not node.args:
            operand = node.func.value
        else:
            return
        scope = self.function if self.function is not None else self.ctx.module
        if self._attribute(operand) is None or not self._scaled_similarities(scope, node):
            return  # (cheap, local checks first: the rest needs the whole module)
        if not self.whole.available:
            self.require_full_module()  # the parameter, the loss and any clamp can be anywhere in the file
        attribute = self._parameter(operand)
        products = self._scaled_similarities(scope, node)
        if attribute is None or not products or attribute in self._clamped_in_place():
            return
        if self._reach is None:
            self._reach = LossReach(self.ctx, self.whole, count_forward=False)
        key = self.routine_key()
        if not any(self._reach.reaches(scope, key, product) for product in products):
            return
        bound = self.option("max-scale")
        self.report(node, f"`{_short(self.code_of(node))}` exponentiates a learnable temperature that scales logits "
                          "reaching a loss, with no upper bound: it can grow until the logits overflow "
                          f"(CLIP clamps it at {format_number(bound)})",
                    fix=self.replace(node, method(node, "clamp", max=cst.parse_expression(format_number(bound))),
                                     safe=False, message=f"Clamp the scale at {format_number(bound)}"))

    def _attribute(self, expr: Optional[cst.BaseExpression], depth: int = 0) -> Optional[cst.Attribute]:
        """The `self.x` that `expr` is, through local names and casts, else None."""
        if expr is None or depth > 4:
            return None
        if isinstance(expr, cst.Name):
            value = self.value_of(expr.value)
            return self._attribute(value, depth + 1) if value is not None else None
        if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) \
                and expr.func.attr.value in PASS_THROUGH and self.ctx.resolve(expr.func) is None:
            return self._attribute(expr.func.value, depth + 1)
        return expr if self.self_attribute(expr) is not None else None

    def _parameter(self, expr: Optional[cst.BaseExpression]) -> Optional[str]:
        """The attribute name when `expr` is a trainable parameter of the class (through local names and
        casts), else None."""
        attribute = self._attribute(expr)
        return attribute.attr.value if attribute is not None and self.is_parameter(attribute) else None

    # -- is the exponential a logit scale? -----------------------------------------------------------
    def _scaled_similarities(self, scope, exp_call: cst.Call) -> list:
        """The products in `scope` where the exponential (or a local holding it) multiplies a similarity."""
        body = scope.body.body if isinstance(scope, cst.FunctionDef) else scope.body
        holders = self._holders(scope, exp_call)
        parents: dict = {}
        stack = list(body)
        products = []
        while stack:
            node = stack.pop()
            if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
                continue
            if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Multiply):
                products.append(node)
            for child in children(node):
                parents[id(child)] = node
                stack.append(child)
        found = []
        for product in products:
            sides = (product.left, product.right)
            for scale, other in (sides, sides[::-1]):
                if not self._is_scale(scale, exp_call, holders):
                    continue
                if self._similarity(scope, other):
                    found.append(product)
                    continue
                outer = self._similarity_around(product, parents)
                if outer is not None:  # (scale * a) @ b, einsum(..., scale * a, b)
                    found.append(outer)
        return found

    def _similarity_around(self, product: cst.BinaryOperation, parents: dict) -> Optional[cst.CSTNode]:
        parent = parents.get(id(product))
        if isinstance(parent, cst.BinaryOperation) and isinstance(parent.operator, cst.MatrixMultiply):
            return parent
        if isinstance(parent, cst.Arg):
            call = parents.get(id(parent))
            if isinstance(call, cst.Call) and (
                    self.ctx.resolve(call.func) in SIMILARITY_FUNCTIONS
                    or (isinstance(call.func, cst.Attribute) and self.ctx.resolve(call.func) is None
                        and call.func.attr.value in SIMILARITY_METHODS)):
                return call
        return None

    def _holders(self, scope, exp_call: cst.Call) -> set:
        """Local names whose value is the exponential (maybe moved or cast), in `scope`."""
        holders: set = set()
        stack = list(scope.body.body if isinstance(scope, cst.FunctionDef) else scope.body)
        assigns = []
        while stack:
            node = stack.pop()
            if isinstance(node, (cst.FunctionDef, cst.ClassDef, cst.Lambda)):
                continue
            if isinstance(node, cst.Assign) and len(node.targets) == 1 and isinstance(node.targets[0].target, cst.Name):
                assigns.append(node)
            stack.extend(children(node))
        for _ in range(3):
            for node in assigns:
                if self._is_scale(node.value, exp_call, holders):
                    holders.add(node.targets[0].target.value)
        return holders

    def _is_scale(self, expr: cst.BaseExpression, exp_call: cst.Call, holders: set) -> bool:
        while True:
            if expr is exp_call:
                return True
            if isinstance(expr, cst.Name):
                return expr.value in holders
            if isinstance(expr, cst.Call) and isinstance(expr.func, cst.Attribute) \
                    and expr.func.attr.value in PASS_THROUGH:
                expr = expr.func.value
                continue
            return False

    def _similarity(self, scope, expr: cst.BaseExpression, depth: int = 0) -> bool:
        if depth > 4:
            return False
        if isinstance(expr, cst.BinaryOperation):
            if isinstance(expr.operator, cst.MatrixMultiply):
                return True
            if isinstance(expr.operator, (cst.Multiply, cst.Divide)):
                return self._similarity(scope, expr.left, depth + 1)
            return False
        if isinstance(expr, cst.Name):
            # `logits = logits * scale` updates the same quantity: judge the name by its other values.
            values = [v for v in assignments(scope, expr.value) if v is None or expr.value not in names_in([v])]
            return bool(values) and all(v is not None and self._similarity(scope, v, depth + 1) for v in values)
        if isinstance(expr, cst.Call):
            if self.ctx.resolve(expr.func) in SIMILARITY_FUNCTIONS:
                return True
            if isinstance(expr.func, cst.Attribute) and self.ctx.resolve(expr.func) is None:
                name = expr.func.attr.value
                if name in SIMILARITY_METHODS:
                    return True
                if name in PASS_THROUGH or name in ("t", "transpose", "view", "reshape", "float"):
                    return self._similarity(scope, expr.func.value, depth + 1)
        return False

    # -- clamped elsewhere -------------------------------------------------------------------------------
    def _clamped_in_place(self) -> set:
        """Attribute names clamped in place anywhere in the file: `x.logit_scale.clamp_(...)`,
        `x.logit_scale.data.clamp_(...)`, `x.logit_scale.data = torch.clamp(...)` (read from the whole
        file's `ast`: the clamp is usually in a training loop far from the model)."""
        if self._clamped is None:
            found: set = set()
            # only the statements whose text spells a clamp: every clamp call's name does
            spelling = statements_spelling(self.whole.tree, self.whole.text, ("clamp", "clip")) \
                if self.whole.available else ()
            for node in (node for statement in spelling for node in ast.walk(statement)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in IN_PLACE_CLAMPS:
                    name = _attribute_name(node.func.value)
                    if name is not None:
                        found.add(name)
                elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                        and isinstance(node.value.func, ast.Attribute) \
                        and node.value.func.attr in ("clamp", "clip", "clamp_max"):
                    for target in node.targets:
                        name = _attribute_name(target)
                        if name is not None:
                            found.add(name)
            self._clamped = found
        return self._clamped


def _attribute_name(expr: ast.expr) -> Optional[str]:
    """`logit_scale` for `m.logit_scale` or `m.logit_scale.data`."""
    if isinstance(expr, ast.Attribute) and expr.attr == "data":
        expr = expr.value
    return expr.attr if isinstance(expr, ast.Attribute) else None


def _short(code: str, limit: int = 50) -> str:
    code = " ".join(code.split())
    return code if len(code) <= limit else code[: limit - 3] + "..."

