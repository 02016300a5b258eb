from __future__ import annotations

import libcst as cst

from gradlint.mixing import MixingWeights
from gradlint.nodes import arg_value, format_number, is_name, method, method_call, number, root_name
from gradlint.rule import Invalid, Option, Valid
from gradlint.scopes import LocalsRule

EINSUM = {"torch.einsum", "torch.functional.einsum"}

# Methods that keep an unbounded value unbounded: shape, dtype and copy ops, reductions, scaling.
TRANSPARENT_METHODS = {
    "view", "view_as", "reshape", "reshape_as", "permute", "transpose", "t", "contiguous", "float", "double",
    "half", "bfloat16", "to", "type", "type_as", "unsqueeze", "squeeze", "flatten", "unflatten", "expand",
    "expand_as", "repeat", "repeat_interleave", "clone", "detach", "conj", "movedim", "swapaxes", "flip",
    "roll", "sum", "mean", "mul", "neg", "clamp_min", "clamp_max",
}
# Methods whose result is bounded whatever the input: the chain stops there.
BOUNDING_METHODS = {"softmax", "log_softmax", "sigmoid", "tanh", "log", "logsumexp", "sign", "erf"}
CLAMP_METHODS = {"clamp", "clip"}
DIVIDE_METHODS = {"div", "divide", "true_divide"}

TRANSPARENT_FUNCTIONS = {
    "torch.reshape", "torch.permute", "torch.transpose", "torch.flatten", "torch.squeeze", "torch.unsqueeze",
    "torch.conj", "torch.movedim", "torch.swapaxes", "torch.sum", "torch.mean", "torch.mul",
    "torch.clamp_min", "torch.clamp_max", "torch.nn.functional.dropout",
}
BOUNDING_FUNCTIONS = {
    "torch.softmax", "torch.log_softmax", "torch.sigmoid", "torch.tanh", "torch.log", "torch.logsumexp",
    "torch.special.expit", "torch.special.log_softmax", "torch.special.softmax",
    "torch.nn.functional.softmax", "torch.nn.functional.log_softmax", "torch.nn.functional.sigmoid",
    "torch.nn.functional.tanh", "torch.nn.functional.hardtanh", "torch.nn.functional.normalize",
    "torch.nn.functional.layer_norm", "torch.nn.functional.rms_norm", "torch.nn.functional.group_norm",
    "torch.nn.functional.cosine_similarity",
}
CLAMP_FUNCTIONS = {"torch.clamp", "torch.clip"}
# A divisor made only of these is a scale (`/ math.sqrt(d)`, `/ x.size(-1)`), not a normalisation.
SCALE_METHODS = {"size", "numel", "dim", "exp", "sqrt", "item", "float"}
MAX_DEPTH = 12


class UnclampedEinsumChain(LocalsRule):
    """
    ## What it does
    Finds a `torch.einsum` whose operand is the result of another `torch.einsum`, directly
    (`torch.einsum(eq, torch.einsum(eq2, a, b), c)`) or through a local name, with nothing bounding the
    intermediate in between, when the chain multiplies three or more activations.

    Bounds that stop a chain: `softmax`, `log_softmax`, `sigmoid`, `tanh`, `F.normalize`, layer/RMS/group
    norm, `cosine_similarity`, a two-sided `clamp`/`clip`, `log`/`logsumexp` (log-space), division by
    anything that is not a plain scale (`/ x.norm(...)`). Shape, dtype and copy ops (`view`, `reshape`,
    `permute`, `transpose`, `contiguous`, `float`, `to`, ...), reductions (`sum`, `mean`), one-sided
    clamps and arithmetic scaling (`* self.scale`, `/ math.sqrt(d)`, `+ mask`) keep the value unbounded.
    Any other call (a module, a helper) makes it unknown, and unknown is not reported.

    `einsum` is resolved through imports (`torch.einsum`, `from torch import einsum as es`,
    `torch.functional.einsum`); `np.einsum`, `jnp.einsum` and `opt_einsum.contract` are not torch.

    Precision: every factor of an einsum multiplies the result's magnitude, so the hazard is how many
    activations the chain multiplies. An operand that is a module attribute (`self.query_proj`,
    `self.rel_pos[idx]`: a parameter or buffer) is a linear map, not an activation, and an inner einsum's
    own factors count towards the outer one. A chain of two factors is a bilinear form — attention logits
    from einsum projections (`q = einsum(x, self.wq)`, `k = einsum(m, self.wk)`, `einsum(q, k)`), an
    output projection of attention — that grows no faster than the matmul it replaces and is not reported;
    three or more (`einsum(einsum(a, b), c)`, the 6-D CLIP loss: six) are. Only einsum operands are
    counted: elementwise arithmetic on the way (`* mask`, `+ bias`) keeps the count. Attention written
    as einsum (`scores = einsum(q, k)`, `attn = scores.softmax(-1)`, `einsum(attn, v)`) is bounded by
    the softmax.

    ## Why is this bad?
    An einsum of `k` factors contracted over `n` elements can reach `n * max|x|**k`. Chaining einsums
    multiplies the factors of every stage: the 6-D CLIP loss
    `torch.einsum("abcz,defz->abcdef", torch.einsum("az,bz,cz->abcz", I, C1, C2),
    torch.einsum("az,bz,cz->abcz", C3, C4, C5))` is a degree-6 product of features. One large feature
    value (an unnormalised embedding, a diverging step) makes the intermediate huge and the outer einsum
    Inf; Inf turns into NaN in the loss and its gradient, and the NaN reaches every weight. Under float16
    autocast the limit is 65504, reached with far smaller values.

    ## Example
    ```python
    logits = torch.einsum(
        "abcz,defz->abcdef",
        torch.einsum("az,bz,cz->abcz", I, C1, C2),
        torch.einsum("az,bz,cz->abcz", C3, C4, C5),
    )
    ```

    ## Use instead
    Normalise the inputs and bound each intermediate, or compute the product in log-space; the fix
    clamps each unbounded inner operand at the use site:
    ```python
    logits = torch.einsum(
        "abcz,defz->abcdef",
        torch.einsum("az,bz,cz->abcz", I, C1, C2).clamp(-1e4, 1e4),
        torch.einsum("az,bz,cz->abcz", C3, C4, C5).clamp(-1e4, 1e4),
    )
    ```

    ## Fix safety
    Unsafe. Clamping the intermediate changes every finite value beyond the bound, and `clamp` has zero
    gradient there, so entries that hit the bound stop learning. That trade is right for a run that would
    otherwise produce Inf, but it changes results of runs that did not, so the fix is applied only with
    `--unsafe-fixes`. The fix is offered for every finding: it wraps the operand as written at the use
    site (`inner.clamp(-B, B)`), so the inner einsum and its other uses are untouched.

    ## Options
    - `bound` (default `1e4`): the clamp the fix inserts, `(-bound, bound)`. Large enough never to touch a
      healthy activation (features are O(1), logits O(100)), so the clamp only acts on a run that is
      already diverging; small enough that a product of two clamped operands summed over a 10^6-long
      contraction (1e14), and even a six-factor chain (1e24 * n), stays finite in float32 and bfloat16
      (3.4e38). No bound makes a chain safe in float16 (65504): compute it in float32 there.
    - `min-factors` (default `3`): how many activations the chain must multiply to be reported; `2` also
      reports bilinear chains such as attention logits from einsum projections.
    """

    code = "GL002"
    reports_in_tests = False
    name = "unclamped-einsum-chain"
    summary = "An einsum of another einsum's unbounded result (products of products overflow)"
    triggers = ((r"einsum[\s\S]*?einsum", r"einsum\s+as\b"),)
    options = (
        Option("bound", 1e4, "The fix clamps each inner operand to (-bound, bound).", above=0),
        Option("min-factors", 3, "Activations a chain must multiply to be reported.", at_least=2),
    )

    VALID = [
        Valid("import torch\n\n\ndef attend(q, k, v, scale):\n"
              "    scores = torch.einsum('bhqd,bhkd->bhqk', q, k) * scale\n"
              "    attn = scores.softmax(dim=-1)\n"
              "    return torch.einsum('bhqk,bhkd->bhqd', attn, v)\n",
              note="attention as einsum: bounded by the softmax"),
        Valid("import torch\nimport torch.nn.functional as F\n\n\ndef attend(q, k, v):\n"
              "    attn = F.softmax(torch.einsum('bid,bjd->bij', q, k), dim=-1)\n"
              "    return torch.einsum('bij,bjd->bid', attn, v)\n"),
        Valid("import torch\n\n\nclass MultiQueryAttentionV2:\n    def forward(self, x, m):\n"
              "        q = torch.einsum('bnd,hkd->bnhk', x, self.query_proj)\n"
              "        k = torch.einsum('bmd,dk->bmk', m, self.key_proj)\n"
              "        attn = torch.einsum('bnhk,bmk->bnhm', q, k) * self.scale\n"
              "        attn = attn.softmax(dim=-1)\n"
              "        attn = self.attn_drop(attn)\n"
              "        v = torch.einsum('bmd,dv->bmv', m, self.value_proj)\n"
              "        o = torch.einsum('bnhm,bmv->bnhv', attn, v)\n"
              "        return torch.einsum('bnhv,dhv->bdn', o, self.out_proj)\n",
              note="timm's attention2d.py: projections by parameters, two-factor chains"),
        Valid("import torch\n"
              "sim = torch.einsum('ij,jk->ik', torch.einsum('ij,jk->ik', a, b).clamp(-1e4, 1e4), c)\n"),
        Valid("import torch\nimport torch.nn.functional as F\n"
              "y = torch.einsum('ij,jk->ik', F.normalize(torch.einsum('ij,jk->ik', a, b), dim=-1), c)\n"),
        Valid("import torch\n\n\ndef f(a, b, c):\n    ab = torch.einsum('ij,jk->ik', a, b)\n"
              "    ab = ab / ab.norm(dim=-1, keepdim=True).clamp_min(1e-6)\n"
              "    return torch.einsum('ik,kl->il', ab, c)\n",
              note="normalised in between"),
        Valid("import torch\n\n\ndef f(a, b, c):\n    ab = torch.einsum('ij,jk->ik', a, b)\n"
              "    ab.clamp_(-100, 100)\n    return torch.einsum('ik,kl->il', ab, c)\n",
              note="clamped in place"),
        Valid("import torch\n\n\ndef f(a, b, c):\n"
              "    log_ab = torch.logsumexp(torch.einsum('ij,jk->ijk', a, b), dim=1)\n"
              "    return torch.einsum('ik,kl->il', log_ab, c)\n", note="log-space"),
        Valid("import torch\n\n\ndef f(a, b, c):\n    ab = self.proj(torch.einsum('ij,jk->ik', a, b))\n"
              "    return torch.einsum('ik,kl->il', ab, c)\n", note="an unknown call: not reported"),
        Valid("import numpy as np\nx = np.einsum('ij,jk->ik', np.einsum('ij,jk->ik', a, b), c)\n",
              note="NumPy, not torch"),
        Valid("import jax.numpy as jnp\nx = jnp.einsum('ij,jk->ik', jnp.einsum('ij,jk->ik', a, b), c)\n"),
        Valid("import opt_einsum\n"
              "x = opt_einsum.contract('ij,jk->ik', opt_einsum.contract('ij,jk->ik', a, b), c)\n"),
        Valid("import torch\n\n\ndef precond(exprs, Q, G):\n"
              "    return torch.einsum(exprs[-1], *[q.conj() for q in Q], *Q, G)\n",
              note="timm's kron.py: no inner einsum"),
        Valid("import torch\n\n\ndef f(x, y):\n    xy = torch.einsum('bi,bj->bij', x, y)\n"
              "    return torch.einsum('bij,ij->b', xy, self.weight)\n",
              note="two activations and a parameter: a bilinear form"),
        Valid("import torch\n\n\ndef f(a, b, c):\n    ab = torch.einsum('ij,jk->ik', a, b)\n"
              "    return torch.einsum('ik,kl->il', torch.clamp(ab, -1e4, 1e4), c)\n"),
        Valid("import torch\nimport torch.nn.functional as F\n\n\ndef gather(rel, rows, cols, n):\n"
              "    t = torch.einsum('nhw,ixh->nixw', rel, F.one_hot(rows, n).float())\n"
              "    return torch.einsum('nixw,jyw->nijxy', t, F.one_hot(cols, n).float())\n",
              note="one-hot operands: a lookup, not a product of magnitudes"),
        Valid("import torch\nfrom torch import nn\n\n\ndef generate_lookup_tensor(length):\n"
              "    ret = torch.zeros(length, length, 2 * length - 1)\n    for i in range(length):\n"
              "        for x in range(length):\n            ret[i, x, x - i + length - 1] = 1\n    return ret\n\n\n"
              "def reindex_2d_einsum_lookup(rel, height_lookup, width_lookup):\n"
              "    t = torch.einsum('nhw,ixh->nixw', rel, height_lookup)\n"
              "    return torch.einsum('nixw,jyw->nijxy', t, width_lookup)\n\n\n"
              "class RelPosBiasTf(nn.Module):\n    def __init__(self, size):\n        super().__init__()\n"
              "        self.register_buffer('height_lookup', torch.empty(size, size, 2 * size - 1))\n"
              "        self.register_buffer('width_lookup', generate_lookup_tensor(size))\n"
              "        self.height_lookup.copy_(generate_lookup_tensor(size))\n\n"
              "    def forward(self, rel):\n"
              "        return reindex_2d_einsum_lookup(rel, self.height_lookup, self.width_lookup)\n",
              note="timm's layers/pos_embed_rel.py: the lookups are one-hot buffers, the chain is a gather"),
        Valid("import torch\n\n\ndef resize(input, height_out, width_out):\n"
              "    def axis_weights(size_in, size_out):\n"
              "        center = (torch.arange(size_out) + 0.5) * (size_in / size_out)\n"
              "        distance = (torch.arange(size_in)[None, :] + 0.5 - center[:, None]).abs()\n"
              "        weights = (1.0 - distance).clamp(min=0.0)\n"
              "        return (weights / weights.sum(-1, keepdim=True)).to(input.dtype)\n\n"
              "    height_weights = axis_weights(input.shape[-2], height_out)\n"
              "    resized = torch.einsum('nchw,oh->ncow', input, height_weights)\n"
              "    width_weights = axis_weights(input.shape[-1], width_out)\n"
              "    return torch.einsum('ncow,pw->ncop', resized, width_weights)\n",
              note="transformers' separable resize: weights that sum to 1 average, they do not multiply"),
    ]
    INVALID = [
        Invalid(
            "import torch\n\n\ndef calculate_loss(I, C1, C2, C3, C4, C5):\n"
            "    return torch.einsum(\"abcz,defz->abcdef\", torch.einsum(\"az,bz,cz->abcz\", I, C1, C2), "
            "torch.einsum(\"az,bz,cz->abcz\", C3, C4, C5))\n",
            "import torch\n\n\ndef calculate_loss(I, C1, C2, C3, C4, C5):\n"
            "    return torch.einsum(\"abcz,defz->abcdef\", torch.einsum(\"az,bz,cz->abcz\", I, C1, C2)"
            ".clamp(-1e4, 1e4), torch.einsum(\"az,bz,cz->abcz\", C3, C4, C5).clamp(-1e4, 1e4))\n",
            unsafe=True, note="the seeds' 6-D CLIP loss"),
        Invalid(
            "import torch\n\n\ndef calculate_loss(I, C1, C2, C3, C4, C5):\n"
            "    I = I / I.norm(dim=-1, keepdim=True)\n"
            "    left = torch.einsum('az,bz,cz->abcz', I, C1, C2)\n"
            "    right = torch.einsum('az,bz,cz->abcz', C3, C4, C5)\n"
            "    return torch.einsum('abcz,defz->abcdef', left, right)\n",
            "import torch\n\n\ndef calculate_loss(I, C1, C2, C3, C4, C5):\n"
            "    I = I / I.norm(dim=-1, keepdim=True)\n"
            "    left = torch.einsum('az,bz,cz->abcz', I, C1, C2)\n"
            "    right = torch.einsum('az,bz,cz->abcz', C3, C4, C5)\n"
            "    return torch.einsum('abcz,defz->abcdef', left.clamp(-1e4, 1e4), right.clamp(-1e4, 1e4))\n",
            unsafe=True, note="through local names; normalised inputs still multiply six factors"),
        Invalid(
            "from torch import einsum as es\ny = es('ij,jk->ik', es('ij,jk->ik', a, b), c)\n",
            "from torch import einsum as es\n"
            "y = es('ij,jk->ik', es('ij,jk->ik', a, b).clamp(-1e4, 1e4), c)\n",
            unsafe=True),
        Invalid(
            "import torch\n"
            "y = torch.functional.einsum('ij,jk->ik', a, torch.functional.einsum('jk,kl->jl', b, c))\n",
            "import torch\n"
            "y = torch.functional.einsum('ij,jk->ik', a, torch.functional.einsum('jk,kl->jl', b, c)"
            ".clamp(-1e4, 1e4))\n",
            unsafe=True),
        Invalid(
            "import torch\n\n\ndef f(a, b, c):\n    ab = torch.einsum('bi,bj->bij', a, b)\n"
            "    ab = ab.reshape(ab.shape[0], -1).float() * 2.0\n"
            "    return torch.einsum('bk,bk->b', ab, c)\n",
            "import torch\n\n\ndef f(a, b, c):\n    ab = torch.einsum('bi,bj->bij', a, b)\n"
            "    ab = ab.reshape(ab.shape[0], -1).float() * 2.0\n"
            "    return torch.einsum('bk,bk->b', ab.clamp(-1e4, 1e4), c)\n",
            unsafe=True, note="shape ops and scaling keep the value unbounded"),
        Invalid(
            "import torch\n\n\ndef f(q, k, v):\n    scores = torch.einsum('bid,bjd->bij', q, k)\n"
            "    return torch.einsum('bij,bjd->bid', scores / q.shape[-1] ** 0.5, v)\n",
            "import torch\n\n\ndef f(q, k, v):\n    scores = torch.einsum('bid,bjd->bij', q, k)\n"
            "    return torch.einsum('bij,bjd->bid', (scores / q.shape[-1] ** 0.5).clamp(-1e4, 1e4), v)\n",
            unsafe=True, note="attention without its softmax"),
        Invalid(
            "import torch\n\n\ndef f(a, b, c):\n    ab = torch.einsum('ij,jk->ik', a, b).clamp(min=0)\n"
            "    return torch.einsum('ik,kl->il', ab, c)\n",
            "import torch\n\n\ndef f(a, b, c):\n    ab = torch.einsum('ij,jk->ik', a, b).clamp(min=0)\n"
            "    return torch.einsum('ik,kl->il', ab.clamp(-1e4, 1e4), c)\n",
            unsafe=True, note="a one-sided clamp leaves the other side unbounded"),
        Invalid(
            "import torch\n"
            "x = torch.einsum('ij,jk->ik', torch.einsum('ij,jk->ik', torch.einsum('ij,jk->ik', a, b), c), "
            "d)\n",
            "import torch\n"
            "x = torch.einsum('ij,jk->ik', torch.einsum('ij,jk->ik', torch.einsum('ij,jk->ik', a, b)"
            ".clamp(-1e4, 1e4), c).clamp(-1e4, 1e4), d)\n",
            unsafe=True, count=2, note="two links, two findings"),
        Invalid(
            "import torch\nx = torch.einsum('nm,hnm->h', (torch.einsum('ni,mi->nm', a, b), attn))\n",
            "import torch\n"
            "x = torch.einsum('nm,hnm->h', (torch.einsum('ni,mi->nm', a, b).clamp(-1e4, 1e4), attn))\n",
            unsafe=True, note="operands passed as one tuple"),
        Invalid(
            "import torch\n\n\ndef reindex(rel, height_lookup, width_lookup):\n"
            "    t = torch.einsum('nhw,ixh->nixw', rel, height_lookup)\n"
            "    t = torch.einsum('nixw,jyw->nijxy', t, width_lookup)\n    return t\n",
            "import torch\n\n\ndef reindex(rel, height_lookup, width_lookup):\n"
            "    t = torch.einsum('nhw,ixh->nixw', rel, height_lookup)\n"
            "    t = torch.einsum('nixw,jyw->nijxy', t.clamp(-1e4, 1e4), width_lookup)\n    return t\n",
            unsafe=True, note="a name rebound to its own einsum (timm's pos_embed_rel)"),
    ]

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._operands: dict[int, tuple] = {}  # id(einsum call) -> (functions around it, [(kind, node)])
        self._traced: dict[int, tuple] = {}  # id(bound value) -> (value, einsum it carries or None)
        self._mixing = MixingWeights(ctx, self.locals.value_of, self.locals.rebound)

    # -- bindings: remember what a value carries when it is bound, before its name changes meaning -----
    def leave_Assign(self, node: cst.Assign) -> None:
        self._remember(node.value)
        super().leave_Assign(node)

    def leave_AnnAssign(self, node: cst.AnnAssign) -> None:
        if node.value is not None:
            self._remember(node.value)
        super().leave_AnnAssign(node)

    def leave_NamedExpr(self, node: cst.NamedExpr) -> None:
        self._remember(node.value)
        super().leave_NamedExpr(node)

    def _remember(self, value: cst.BaseExpression) -> None:
        self._traced[id(value)] = (value, self._trace(value, 0))

    # -- the check -----------------------------------------------------------------------------------
    def leave_Call(self, node: cst.Call) -> None:
        if self.ctx.resolve(node.func) not in EINSUM:
            return
        operands = []  # (kind, node): "einsum" (an inner einsum's result), "value", "star" or "parameter"
        chained = []
        for operand in _operands(node):
            if isinstance(operand, cst.StarredElement) or (isinstance(operand, cst.Arg) and operand.star):
                operands.append(("star", operand))
                continue
            inner = self._trace(operand, 0)
            if inner is not None:
                operands.append(("einsum", inner))
                chained.append(operand)
            elif self._is_parameter(operand) or self._mixing.local(operand):
                operands.append(("parameter", operand))
            else:
                operands.append(("value", operand))
        functions = tuple(s for s in self.ctx.statements if isinstance(s, cst.FunctionDef))
        self._operands[id(node)] = (functions, operands)
        minimum = self.option("min-factors")
        if not chained or self._degree(node, module=False) < minimum:
            return
        if self._may_be_lookups(node):
            self.require_full_module()  # a parameter or a helper elsewhere may be a one-hot lookup
        degree = self._degree(node, module=True)
        if degree >= minimum:
            self._report(node, chained, degree)

    def _degree(self, call: cst.Call, module: bool, depth: int = 0) -> int:
        """How many activations the einsum multiplies: its inner einsums' own count, plus each operand
        that is neither a module's parameter nor a 0/1 indicator (a one-hot lookup gathers, it does not
        multiply magnitudes); the module's facts are asked only with `module`."""
        functions, operands = self._operands.get(id(call), ((), ()))
        degree = 0
        for kind, operand in operands:
            if kind == "einsum":
                degree += self._degree(operand, module, depth + 1) if depth < MAX_DEPTH else 1
            elif kind == "value":
                degree += 0 if module and self._mixing.in_module(operand, functions) else 1
            elif kind == "star":
                degree += 1
        return degree

    def _may_be_lookups(self, call: cst.Call, depth: int = 0) -> bool:
        functions, operands = self._operands.get(id(call), ((), ()))
        for kind, operand in operands:
            if kind == "value" and self._mixing.needs_module(operand, functions):
                return True
            if kind == "einsum" and depth < MAX_DEPTH and self._may_be_lookups(operand, depth + 1):
                return True
        return False

    def _is_parameter(self, expr: cst.BaseExpression | None, depth: int = 0) -> bool:
        """`self.weight`, `self.rel_pos[idx]`, `w = self.kernel`, `self.weight.t()`: a module's parameter or
        buffer, a linear map rather than an activation."""
        if expr is None or depth > MAX_DEPTH:
            return False
        if isinstance(expr, cst.Name):
            return self._is_parameter(self.value_of(expr.value), depth + 1)
        if isinstance(expr, (cst.Attribute, cst.Subscript)):
            return root_name(expr) == "self" and not any(isinstance(n, cst.Call) for n in _chain(expr))
        mc = method_call(expr)
        return mc is not None and mc[1] in TRANSPARENT_METHODS and self._is_parameter(mc[0], depth + 1)

    def _trace(self, expr: cst.BaseExpression | None, depth: int) -> cst.Call | None:
        """The einsum call whose unbounded result `expr` carries, or None (bounded, unknown, not einsum)."""
        if expr is None or depth > MAX_DEPTH:
            return None
        if isinstance(expr, cst.Name):
            value = self.value_of(expr.value)
            if value is None:
                return None
            remembered = self._traced.get(id(value))
            if remembered is not None and remembered[0] is value:
                return remembered[1]
            return self._trace(value, depth + 1)
        if isinstance(expr, cst.Subscript):
            return self._trace(expr.value, depth + 1)
        if isinstance(expr, cst.UnaryOperation) and isinstance(expr.operator, (cst.Minus, cst.Plus)):
            return self._trace(expr.expression, depth + 1)
        if isinstance(expr, cst.BinaryOperation):
            op = expr.operator
            if isinstance(op, (cst.Multiply, cst.MatrixMultiply, cst.Add, cst.Subtract)):
                return self._trace(expr.left, depth + 1) or self._trace(expr.right, depth + 1)
            if isinstance(op, cst.Divide):
                return self._trace(expr.left, depth + 1) if self._is_scale(expr.right, 0) else None
            if isinstance(op, cst.Power):
                return self._trace(expr.left, depth + 1)
            return None
        if isinstance(expr, cst.Call):
            return self._trace_call(expr, depth)
        return None

    def _trace_call(self, call: cst.Call, depth: int) -> cst.Call | None:
        qualified = self.ctx.resolve(call.func)
        if qualified is not None:
            if qualified in EINSUM:
                return call
            if qualified in TRANSPARENT_FUNCTIONS:
                return self._trace(arg_value(call, 0, "input"), depth + 1)
            if qualified in CLAMP_FUNCTIONS:
                if _two_sided(call, offset=1):
                    return None
                return self._trace(arg_value(call, 0, "input"), depth + 1)
            return None  # bounding functions and every unknown function
        mc = method_call(call)
        if mc is None:
            return None
        receiver, name = mc
        if name in BOUNDING_METHODS:
            return None
        if name in CLAMP_METHODS:
            return None if _two_sided(call, offset=0) else self._trace(receiver, depth + 1)
        if name in DIVIDE_METHODS:
            divisor = arg_value(call, 0, "other")
            return self._trace(receiver, depth + 1) if self._is_scale(divisor, 0) else None
        if name in TRANSPARENT_METHODS:
            return self._trace(receiver, depth + 1)
        return None

    def _is_scale(self, expr: cst.BaseExpression | None, depth: int) -> bool:
        """A number-like divisor: `/ math.sqrt(d)`, `/ self.temperature`, `/ x.size(0)`, `/ d ** 0.5`."""
        if expr is None or depth > MAX_DEPTH:
            return False
        if number(expr) is not None or isinstance(expr, (cst.Attribute, cst.Subscript)):
            return not any(isinstance(n, cst.Call) for n in _chain(expr)) or self._is_scale_call(expr)
        if isinstance(expr, cst.Name):
            value = self.value_of(expr.value)
            return value is None or self._is_scale(value, depth + 1)
        if isinstance(expr, cst.BinaryOperation):
            return self._is_scale(expr.left, depth + 1) and self._is_scale(expr.right, depth + 1)
        if isinstance(expr, cst.UnaryOperation):
            return self._is_scale(expr.expression, depth + 1)
        if isinstance(expr, cst.Call):
            return self._is_scale_call(expr)
        return False

    def _is_scale_call(self, expr: cst.BaseExpression) -> bool:
        if isinstance(expr, cst.Subscript):
            expr = expr.value
        if not isinstance(expr, cst.Call):
            return False
        qualified = self.ctx.resolve(expr.func)
        if qualified is not None:
            return qualified.startswith("math.") or qualified in ("float", "int", "len")
        if is_name(expr.func, "float", "int", "len"):
            return True
        mc = method_call(expr)
        return mc is not None and mc[1] in SCALE_METHODS and not isinstance(mc[0], cst.Call)

    # -- reporting and the fix -----------------------------------------------------------------------
    def _report(self, node: cst.Call, chained: list, degree: int) -> None:
        names = list(dict.fromkeys(_short(self.code_of(op), 40) for op in chained))
        shown = ", ".join(f"`{name}`" for name in names)
        operand_word, verb = ("operand", "is") if len(names) == 1 else ("operands", "are")
        message = (f"einsum {operand_word} {shown} {verb} another einsum's unbounded result: the chain "
                   f"multiplies {degree} factors, whose magnitudes multiply and can overflow to Inf; bound "
                   "the intermediate (normalize, softmax, clamp) or work in log-space")
        bound = abs(float(self.option("bound")))
        if not 0 < bound < float("inf"):
            self.report(node, message)  # no clamp to offer
            return
        low, high = cst.parse_expression(_bound_text(-bound)), cst.parse_expression(_bound_text(bound))
        mapping = {op: method(op, "clamp", low, high) for op in chained}
        what = "operand" if len(chained) == 1 else "operands"
        fix = self.rewrite(mapping, safe=False,
                           message=f"Clamp the einsum {what} to ±{_bound_text(bound)} (changes values "
                                   "beyond the bound, with zero gradient there)")
        self.report(node, message, fix=fix)


def _operands(call: cst.Call) -> list:
    """The tensor operands of an einsum call, in both call forms; starred arguments as Arg nodes."""
    args = list(call.args)
    if not args or any(a.keyword is not None for a in args):
        return []
    if len(args) >= 2 and isinstance(args[1].value, cst.List) and not args[1].star:
        # Sublist form: einsum(op1, [0, 1], op2, [1, 2], [0, 2]).
        return [a.value for i, a in enumerate(args) if i % 2 == 0 and not isinstance(a.value, cst.List)]
    rest = args[1:]
    if len(rest) == 1 and not rest[0].star and isinstance(rest[0].value, (cst.Tuple, cst.List)):
        return [e if isinstance(e, cst.StarredElement) else e.value for e in rest[0].value.elements]
    return [a if a.star else a.value for a in rest]


def _chain(expr: cst.BaseExpression):
    """The nodes along an attribute/subscript/call chain, outermost first."""
    while True:
        yield expr
        if isinstance(expr, (cst.Attribute, cst.Subscript)):
            expr = expr.value
        elif isinstance(expr, cst.Call):
            expr = expr.func
        else:
            return


def _two_sided(call: cst.Call, offset: int) -> bool:
    low = arg_value(call, offset, "min")
    high = arg_value(call, offset + 1, "max")
    return all(v is not None and not is_name(v, "None") for v in (low, high))


def _bound_text(value: float) -> str:
    """`1e4` rather than `10000.0`; `12345` and `0.5` as written; the shorter spelling wins."""
    plain = format_number(int(value) if float(value).is_integer() else value)
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    scientific = f"{mantissa}e{int(exponent)}"
    if float(scientific) == value and len(scientific) < len(plain):
        return scientific
    return plain


def _short(code: str, limit: int = 50) -> str:
    code = " ".join(code.split())
    return code if len(code) <= limit else code[: limit - 3] + "..."
