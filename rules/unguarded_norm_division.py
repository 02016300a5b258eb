from __future__ import annotations

import ast
import re
from typing import Optional

import libcst as cst

from gradlint.astflow import aliased, called_name, region_flow
from gradlint.calls import call_sites
from gradlint.divisors import NORMS, ROOTS, Divisors
from gradlint.guards import (
    enclosing_selectors,
    flat_statements,
    grad_off_around,
    guarded_by_control_flow,
    selected_guard,
    selector,
    statements_after,
    uses_all_selected,
)
from gradlint.helpers import Helpers
from gradlint.nodes import (
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
from gradlint.norms import (
    DIVIDE_FUNCTIONS,
    DIVIDE_METHODS,
    NORM_FUNCTIONS,
    Denominators,
    Unguarded,
    input_of,
)
from gradlint.outputs import NetworkOutputs
from gradlint.provenance import Provenance, writes_before
from gradlint.rule import Invalid, Option, Valid
from gradlint.scopes import LocalsRule
from gradlint.tensors import TensorEvidence

P_DEFAULTS = (2.0,)
EPS_LIKE = re.compile(r"eps|epsilon", re.IGNORECASE)
LARGEST_EPS = 1e-3  # a constant added to a sqrt up to this is an eps; a larger one is a term of its own


class UnguardedNormDivision(LocalsRule):
    """
    ## What it does
    Finds divisions whose denominator is a norm, a standard deviation, a variance or the square root of a
    sum of squares with nothing keeping it away from zero: `x / x.norm(dim=-1, keepdim=True)`,
    `torch.div(x, torch.linalg.vector_norm(x))`, `(x - mu) / x.std()`, `x / x.var(dim=0)`,
    `x / torch.sqrt((x**2).sum(-1))`, also as a factor of the denominator (`a / (a.norm() * b.norm())`,
    `x / x.norm() ** 2`), through a local name (`n = x.norm(...)` then `x / n`), `/=`, `torch.div` and
    `.div`. A square root is also `s ** 0.5` or `torch.pow(s, 0.5)`.

    A call of a function defined in the same module is followed (`x / _get_vector_norm(x)`, as in
    transformers' CLIP models) when the called name is bound, where it is called, to that one module-level
    `def` (a parameter, local or import of the same name, or a second binding, is something else) and every
    `return` of the function is one of the above, unguarded, computed from its parameters. A helper that
    guards (`F.normalize`, `+ eps`, `.clamp_min`) returns no such value; a decorated or async function,
    a method, and a helper's own helpers are not followed.

    `+ eps`, `.clamp(min=...)`, `.clamp_min(...)`, `clamp_`, `torch.clamp(..., min=...)`, `.add(eps)`,
    `torch.maximum(...)` and `F.normalize` are guards. So is code that only divides when the value is
    non-zero: an `if n > 0:` (or `if n > 1.:`, `if n:`, the `else` of `if n == 0:`) around the division,
    an early `if n == 0: return` or an `assert n > 0` before it, `x / n if n > 0 else x`, and a caller
    that only calls the function under such a test on a value it passes. A *mask*
    (`torch.where(n > 0, x / n, x)`, also when the quotient is bound to a name that only the mask reads,
    or `masked_fill(n == 0, ...)`) hides the NaN from the forward pass but not from the gradient: it is a
    guard only where no gradient flows, under `torch.no_grad()` or `torch.inference_mode()` (a decorator
    or a `with`) or in a function that only such code calls (an optimizer's `step`).

    One addition is not a guard: `torch.sqrt(sum_sq) + eps` is finite in the forward pass, but sqrt's
    gradient at 0 is infinite, so an all-zero row still gets NaN gradients; that form is reported too.

    A `.norm()`, `.std()` or `.var()` method is a tensor's only with evidence: the module imports torch, or
    the call has a signature only tensors have (`dim=`, `keepdim=`). `M / M.norm()` in a module that never
    touches torch (sympy, a user class) is not reported.

    Also not reported: an L1 norm (`p=1`, `ord=1`), which normalises a mass to sum to one as `w / w.sum()`
    does; and an evaluation's forward-only normalisation of a network's output, `f / f.norm(...)` where `f`
    is what a model returned (`model.encode_image(x)`, `model(x)`) computed without gradients (under
    `torch.no_grad()` or `torch.inference_mode()`, the division inside the block or after it): NaN only for
    an exactly zero output vector, with nothing trained on it (`gradlint/outputs.py`). A statistic of such
    outputs (their mean can be 0) and the same division with gradients are reported. Nor the norm of a
    module's weights in a module-level function whose every call hands it a module just built
    (`init(nn.Linear(...))`, cleanrl's `layer_init_normed`): random initial weights have no zero row.

    ## Why is this bad?
    A zero vector (a blank image, an empty caption, a zero-padded row) has norm 0, and `0 / 0` is NaN; a
    constant input has standard deviation and variance 0. One NaN in a batch spreads through the loss into
    every weight at the next optimizer step.

    ## Example
    ```python
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    ```

    ## Use instead
    ```python
    image_features = F.normalize(image_features, dim=-1, eps=1e-6)
    ```
    When the numerator is not the norm's own input, or the norm is not taken over one kept dimension,
    each norm factor of the denominator is clamped: `x / n.clamp_min(1e-6)`,
    `dot / (a.norm(dim=-1).clamp_min(1e-6) * b.norm(dim=-1).clamp_min(1e-6))`. For a square root, eps goes
    inside it: `torch.sqrt(sum_sq + eps)`.

    ## Fix safety
    A safe fix changes results only where the original was already broken and never raises where it ran.
    `F.normalize(x, dim=d, eps=eps)` is `x / x.norm(dim=d, keepdim=True).clamp_min(eps)`, and clamping a
    norm (or a standard deviation) at eps changes the result only where that norm is below eps, where the
    original divides by (nearly) zero: NaN, Inf, or a quotient whose gradient grows like 1/norm². Both are
    safe under these conditions, each checked:
    - the clamp lands on the norm factor itself, never on a product or power of it: clamping
      `a.norm() * b.norm()` would change every pair whose product is below eps although each norm is
      fine (norms 1e-4 and 1e-3), and clamping `-2 * n` would flip its sign; `x / n ** 2` gets
      `n.clamp_min(eps) ** 2`. A name bound to such a product (`d = a.norm() * b.norm()`) gets an unsafe
      clamp;
    - the clamped value is provably a tensor (a torch function's result, a `dim=`/`keepdim=` signature, a
      parameter annotated `torch.Tensor`, a value built by tensor-only methods); otherwise `.clamp_min`
      could raise on a NumPy array or a Python float, and the fix is unsafe;
    - the rewrite keeps every comment of the expression (else `F.normalize` gives way to the clamp).
    A helper's result is clamped where it divides (`x / l2(x).clamp_min(eps)`) under the same conditions:
    safe when every return of the helper is a norm or a standard deviation and provably a tensor. A helper
    returning the square root of a sum of squares gets no fix at the call site: clamping its result keeps
    the forward finite, but the clamp passes a zero gradient into the sqrt, whose derivative at 0 is
    infinite, and `0 * inf` is still NaN; eps belongs inside the helper's sqrt, which all its callers share.
    The eps the fix passes is still non-zero in float16 and bfloat16 (`F.normalize`'s default, 1e-12,
    rounds to 0 in float16). A product or power of guarded norms (`eps ** 2`) underflows in float16, as a
    product of two healthy norms of 1e-4 already does in the original: compute such norms in float32
    (autocast does). Each safe fix is run under torch by the tests, on ordinary inputs (equal results and
    gradients) and on zero inputs (finite). The clamp on a variance is unsafe: a variance below eps is a standard
    deviation below sqrt(eps) (1e-3), which quiet but healthy inputs reach. Moving (or adding) eps inside
    a square root is unsafe: `sqrt(s + eps)` differs from `sqrt(s)` wherever `s` is below about eps, that is
    for norms up to `sqrt(eps)`, so quiet but non-zero inputs change too. eps is moved inside only when
    the term added outside is an eps (a constant up to 1e-3, or an eps named so: `self.eps`,
    `config.layer_norm_eps`); another term stays where it is and an eps is added inside.

    ## Options
    - `eps` (default `1e-6`, greater than 0 and less than 1): the guard the fix inserts. 1e-6 survives
      float16 (as a subnormal) and bfloat16; use `1e-4` on hardware that flushes float16 subnormals to
      zero.
    """

    code = "GL001"
    reports_in_tests = False
    name = "unguarded-norm-division"
    summary = "Division by a norm, std, variance or sqrt of a sum of squares with no eps guard"
    triggers = (
        (r"/", r"div", r"rsqrt"),
        (r"\.norm(?<!self\.norm)\s*\(", r"\.sqrt(?<!math\.sqrt)(?<!np\.sqrt)\s*\(", r"rsqrt", r"\.std\s*\(",
         r"\.var\s*\(", r"vector_norm", r"matrix_norm", r"norm(?<![\w.]norm)\s*\(",
         r"sqrt(?<![\w.]sqrt)\s*\(", r"std(?<![\w.]std)\s*\(", r"var(?<![\w.]var)\s*\(", r"norm\s+as\b",
         r"sqrt\s+as\b", r"std\s+as\b", r"var\s+as\b", r"\*\*\s*0?\.5\b", r"pow\(\s*0?\.5\s*\)",
         r",\s*0?\.5\s*\)"),
    )
    callee_triggers = 1  # `x / helper(x)`: the norm may be in a module-level function the division calls
    options = (Option("eps", 1e-6, "Guard inserted by the fix; non-zero in float16 and bfloat16.",
                      above=0, below=1),)

    VALID = [
        Valid("import torch.nn.functional as F\nz = F.normalize(x, dim=-1)\n"),
        Valid("import numpy as np\nimport torch\n\n\ndef load(path):\n"
              "    data = np.genfromtxt(path, delimiter='\\t')\n"
              "    data = (data - data.mean(axis=0)) / data.std(axis=0)\n"
              "    return torch.tensor(data)\n",
              note="NumPy's std in a module that imports torch: the value comes from numpy"),
        Valid("import torch\n\n\ndef icir(pred):\n"
              "    ic = pred.groupby(level='datetime').apply(lambda x: x.label.corr(x.score))\n"
              "    return ic.mean() / ic.std()\n",
              note="a pandas Series (groupby) is no tensor"),
        Valid("import torch\n\n\ndef whiten(wh0):\n"
              "    wh = wh0[(wh0 >= 2.0).any(1)].astype('float32')\n"
              "    s = wh.std(0)\n"
              "    return wh / s\n",
              note="astype: a NumPy array"),
        Valid("z = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-6)\n"),
        Valid("import torch\nz = x / x.norm().clamp_min(eps)\n"),
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
        Valid("import torch\nz = (x - x.mean()) / (x.std() + 1e-5)\n"),
        Valid("import torch\nz = (x - x.mean(0)) / (x.var(0) + 1e-5)\n"),
        Valid("import numpy as np\nz = v / np.linalg.norm(v)\n", note="NumPy, not torch"),
        Valid("from numpy.linalg import norm\nz = v / norm(v)\n"),
        Valid("import numpy as np\nz = (a - a.mean()) / a.std()\n", note="NumPy-only module"),
        Valid("from sympy import Matrix\nM = Matrix([[1, 2], [3, 4]])\nunit = M / M.norm()\n",
              note="sympy: a module that never touches torch"),
        Valid("class Vec:\n    def norm(self):\n        return (self.x ** 2 + self.y ** 2) ** 0.5\n\n\n"
              "def unit(v):\n    return v / v.norm()\n", note="a user class, no torch"),
        Valid("import math\nscale = q / math.sqrt(head_dim)\n", note="sqrt of a constant"),
        Valid("x = x / self.norm(x)\n", note="a LayerNorm module called `norm`"),
        Valid("clip_coef = max_norm / (total_norm + 1e-6)\n", note="torch's own clip_grad_norm_"),
        Valid("z = x / n\n", note="n comes from outside: unknown, not reported"),
        Valid("z = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-6).unsqueeze(-1)\n"),
        Valid("import torch\nc = sigma / torch.sqrt(noise * noise + self.sigma_data * self.sigma_data)\n",
              note="EDM preconditioning: a constant term keeps the sum of squares away from 0"),
        Valid("import torch\ndef f(self, x, noise):\n    sigma_data = self.sigma_data\n"
              "    return x / torch.sqrt(noise * noise + sigma_data * sigma_data)\n"),
        Valid("import torch\n\n\ndef clip(c_t):\n    c_t_norm = torch.norm(c_t)\n    if c_t_norm > 1.:\n"
              "        c_t = c_t / c_t_norm\n    return c_t\n",
              note="timm's optim/mars.py: the division runs only when the norm exceeds 1"),
        Valid("import torch\n\n\ndef unit(x):\n    n = x.norm(dim=-1)\n    if (n == 0).any():\n"
              "        return x\n    return x / n.unsqueeze(-1)\n"),
        Valid("import torch\n\n\ndef unit(x):\n    n = torch.linalg.vector_norm(x)\n    if n == 0:\n"
              "        return x\n    return x / n\n", note="an early exit"),
        Valid("import torch\n\n\ndef unit(x):\n    n = x.norm()\n    return x / n if n > 0 else x\n"),
        Valid("import torch\n\n\nclass Lamb(torch.optim.Optimizer):\n    @torch.no_grad()\n"
              "    def step(self, closure=None):\n        for p in self.params:\n"
              "            w_norm = p.norm(2.0)\n            g_norm = p.grad.norm(2.0)\n"
              "            trust_ratio = w_norm / g_norm\n"
              "            trust_ratio = torch.where(w_norm > 0, torch.where(g_norm > 0, trust_ratio, 1.0), 1.0)\n"
              "            p.add_(p.grad * trust_ratio)\n",
              note="timm's optim/lamb.py: masked by torch.where under no_grad"),
        Valid("import torch\n\n\ndef _lb(A, max_abs):\n    A = A / max_abs\n    x = A[:, 0] @ A\n"
              "    return max_abs * torch.linalg.vector_norm(x / torch.linalg.vector_norm(x))\n\n\n"
              "def _norm_lower_bound(A):\n    max_abs = A.norm(float('inf'))\n"
              "    return torch.where(max_abs > 0, _lb(A, max_abs), max_abs)\n\n\n"
              "class Kron(torch.optim.Optimizer):\n    @torch.no_grad()\n    def step(self):\n"
              "        return _norm_lower_bound(self.Q)\n",
              note="timm's optim/kron.py: the caller masks a zero input, and only no_grad code calls it"),
        Valid("import torch\n\n\ndef route(router_logits, top_k):\n"
              "    router_logits = torch.nn.functional.softmax(router_logits, dim=1)\n"
              "    top_value, top_index = torch.topk(router_logits, top_k, dim=-1)\n"
              "    return top_value / torch.norm(top_value, p=1, dim=-1, keepdim=True), top_index\n",
              note="transformers' DBRX router: the largest probabilities never sum to 0"),
        Valid("import math\nimport torch\nfrom torch import nn\n\n\ndef init_pe(config):\n"
              "    if config.positional_encoding_type == 'random':\n"
              "        pe = nn.Parameter(torch.randn(config.num_patches, config.d_model))\n"
              "    else:\n        pe = torch.zeros(config.num_patches, config.d_model)\n"
              "        position = torch.arange(0, config.num_patches).unsqueeze(1)\n"
              "        div_term = torch.exp(torch.arange(0, config.d_model, 2) * -(math.log(10000.0) / config.d_model))\n"
              "        pe[:, 0::2] = torch.sin(position * div_term)\n"
              "        pe[:, 1::2] = torch.cos(position * div_term)\n"
              "        pe = pe - pe.mean()\n        pe = pe / (pe.std() * 10)\n    return pe\n",
              note="transformers' PatchTST: the std of a sin/cos table built from sizes"),
        Valid("import torch\n\n\ndef denoise(self, x, noise_level, update):\n    sigma_data = self.sigma_data\n"
              "    sigma_data_sq = sigma_data * sigma_data\n    noise_level_sq = noise_level * noise_level\n"
              "    return x + (sigma_data * noise_level) / torch.sqrt(sigma_data_sq + noise_level_sq) * update\n",
              note="transformers' ESMFold2: the constant square through a name"),
        Valid("import torch\n\n\ndef make_inputs(batch, dim, generator):\n"
              "    img = torch.randn(batch, dim, generator=generator)\n"
              "    return img / img.norm(dim=-1, keepdim=True)\n",
              note="open_clip's tests: random samples are never all zero"),
        Valid("import torch\n\n\ndef change_ratio(model, before):\n    with torch.no_grad():\n"
              "        initial = torch.cat([p.view(-1) for p in model.parameters()])\n"
              "    return torch.norm(initial - before) / torch.norm(initial)\n",
              note="Lightning's test helpers: a model's whole parameter vector"),
        Valid("import torch\nimport torch.nn.functional as F\n\n\ndef unit(t):\n"
              "    return F.normalize(t, dim=-1)\n\n\ndef embed(x):\n    return x / unit(x)\n",
              note="a helper that guards (F.normalize) returns no norm"),
        Valid("import torch\n\n\ndef l2(t):\n    return t.norm(dim=-1, keepdim=True) + 1e-6\n\n\n"
              "def embed(x):\n    return x / l2(x)\n", note="the helper adds eps"),
        Valid("import torch\n\n\ndef l2(t):\n    n = torch.linalg.vector_norm(t, dim=-1, keepdim=True)\n"
              "    return n.clamp_min(1e-6)\n\n\ndef embed(x):\n    return x / l2(x)\n",
              note="the helper clamps its result"),
        Valid("import torch\n\n\ndef scale(t):\n    return t.abs().amax(dim=-1, keepdim=True)\n\n\n"
              "def embed(x):\n    return x / scale(x)\n", note="the helper returns something else"),
        Valid("import torch\n\n\ndef l2(t):\n    if t.dim() == 1:\n        return t.norm()\n"
              "    return t.abs().sum(-1)\n\n\ndef embed(x):\n    return x / l2(x)\n",
              note="not every return is a norm"),
        Valid("import torch\n\n\ndef l2(t):\n    return torch.linalg.vector_norm(t, dim=-1, keepdim=True)\n\n\n"
              "def embed(x, l2):\n    return x / l2(x)\n", note="`l2` here is the parameter, not the helper"),
        Valid("import torch\n\n\ndef l2(t):\n    return torch.linalg.vector_norm(t, dim=-1, keepdim=True)\n\n\n"
              "l2 = torch.nn.Identity()\n\n\ndef embed(x):\n    return x / l2(x)\n",
              note="the module rebinds the name: not only the `def`"),
        Valid("import torch\n\n\ndef l2(t):\n    return torch.linalg.vector_norm(REFERENCE, dim=-1, keepdim=True)\n\n\n"
              "def embed(x):\n    return x / l2(x)\n", note="the norm of a global, not of the argument"),
        Valid("import torch\n\n\ndef update(weights, grew):\n    weights[grew] = weights[grew] * 1.5\n"
              "    return weights / torch.norm(weights, dim=1, p=1).unsqueeze(1)\n",
              note="an L1 norm normalises a mass to sum to one, as `w / w.sum()` does (AdaRNN's boosting weights)"),
        Valid("import torch\nprobs = counts / counts.norm(p=1, dim=-1, keepdim=True)\n"),
        Valid("import unittest\n\nimport torch\n\n\nclass PretrainedTests(unittest.TestCase):\n"
              "    def test_zero_shot(self):\n        with torch.no_grad():\n"
              "            f = model.encode_image(image)\n            f /= f.norm(dim=-1, keepdim=True)\n"
              "        self.assertTrue(torch.allclose(f @ g.T, expected))\n",
              note="a test: fixed inputs, an asserted outcome (open_clip's tests)"),
        Valid("import torch\n\n\ndef zero_shot(model, image_input, text_inputs):\n"
              "    with torch.no_grad():\n        image_features = model.encode_image(image_input)\n"
              "        text_features = model.encode_text(text_inputs)\n"
              "    image_features /= image_features.norm(dim=-1, keepdim=True)\n"
              "    text_features /= text_features.norm(dim=-1, keepdim=True)\n"
              "    return (100.0 * image_features @ text_features.T).softmax(dim=-1)\n",
              note="CLIP's zero-shot evaluation: a network's outputs, computed without gradients, normalised "
                   "forward only (NaN only for an exactly zero output, nothing trained on it)"),
        Valid("import torch\nfrom torch import nn\n\n\ndef layer_init_normed(layer, norm_dim, scale=1.0):\n"
              "    with torch.no_grad():\n"
              "        layer.weight.data *= scale / layer.weight.norm(dim=norm_dim, p=2, keepdim=True)\n"
              "        layer.bias *= 0\n    return layer\n\n\nclass Agent(nn.Module):\n"
              "    def __init__(self):\n        super().__init__()\n        conv = nn.Conv2d(3, 16, 3)\n"
              "        self.conv = layer_init_normed(conv, norm_dim=(1, 2, 3))\n"
              "        self.actor = layer_init_normed(nn.Linear(256, 4), norm_dim=1, scale=0.1)\n",
              note="cleanrl's ppg_procgen: every call hands it a module just built, whose random weights "
                   "have no zero row"),
        Valid("import torch\n\n\n@torch.no_grad()\ndef embed(model, images):\n"
              "    f = model(images).float()\n    return f / f.norm(dim=-1, keepdim=True)\n"),
        Valid("import pytest\nimport torch\n\n\n@pytest.mark.parametrize('dim', [0, 1])\n"
              "def test_cosine(dim):\n    x = torch.randn(3, 4)\n"
              "    assert (x / x.norm(dim=dim, keepdim=True)).isfinite().all()\n",
              note="a function pytest collects"),
    ]
    INVALID = [
        Invalid(
            "import torch\n\n\ndef test_embed(x):\n    return x / x.norm(dim=-1, keepdim=True)\n",
            "import torch\n\n\ndef test_embed(x):\n    return torch.nn.functional.normalize(x, dim=-1, eps=1e-6)\n",
            note="a name is not a test: no pytest import, no TestCase"),
        Invalid(
            "import pytest\nimport torch\n\n\nclass TestEmbed:\n    def __init__(self, x):\n"
            "        self.x = x\n\n    def test_embed(self):\n        return self.x / self.x.norm(dim=-1, keepdim=True)\n"
            "\n\ny = TestEmbed(x).test_embed()\n",
            "import pytest\nimport torch\n\n\nclass TestEmbed:\n"
            "    def __init__(self, x):\n        self.x = x\n\n    def test_embed(self):\n"
            "        return torch.nn.functional.normalize(self.x, dim=-1, eps=1e-6)\n\n\ny = TestEmbed(x).test_embed()\n",
            note="pytest does not collect a class with an __init__"),
        Invalid(
            "import torch\nw = counts / counts.norm(p=2, dim=-1, keepdim=True)\n",
            "import torch\nw = torch.nn.functional.normalize(counts, dim=-1, eps=1e-6)\n",
            note="the L2 norm is a direction's normalisation"),
        Invalid(
            "import torch\n\n\ndef spread(scores):\n    top = scores.topk(5, dim=-1).values\n"
            "    return top / top.std()\n",
            "import torch\n\n\ndef spread(scores):\n    top = scores.topk(5, dim=-1).values\n"
            "    return top / top.std().clamp_min(1e-6)\n",
            unsafe=True, note="`.values` of topk is a tensor, not a pandas object's"),
        Invalid(
            "import torch\n\n\ndef l2(t):\n    return torch.linalg.vector_norm(t, dim=-1, keepdim=True)\n\n\n"
            "def embed(x):\n    return x / l2(x)\n",
            "import torch\n\n\ndef l2(t):\n    return torch.linalg.vector_norm(t, dim=-1, keepdim=True)\n\n\n"
            "def embed(x):\n    return x / l2(x).clamp_min(1e-6)\n",
            note="a helper of the module returns a norm: its result is clamped where it divides"),
        Invalid(
            "import torch\n\n\ndef spread(t):\n    s = t.std(dim=0)\n    return s\n\n\n"
            "def whiten(x):\n    return (x - x.mean(dim=0)) / spread(x)\n",
            "import torch\n\n\ndef spread(t):\n    s = t.std(dim=0)\n    return s\n\n\n"
            "def whiten(x):\n    return (x - x.mean(dim=0)) / spread(x).clamp_min(1e-6)\n",
            note="a helper returning a standard deviation through a local"),
        Invalid(
            "import torch\n\n\ndef l2(t):\n    return t.norm()\n\n\ndef embed(x):\n    return x / l2(x)\n",
            "import torch\n\n\ndef l2(t):\n    return t.norm()\n\n\ndef embed(x):\n"
            "    return x / l2(x).clamp_min(1e-6)\n",
            unsafe=True, note="nothing says the helper's result is a tensor: the clamp could raise"),
        Invalid(
            "import torch\n\n\ndef _get_vector_norm(tensor: torch.Tensor) -> torch.Tensor:\n"
            "    square_tensor = torch.pow(tensor, 2)\n"
            "    sum_tensor = torch.sum(square_tensor, dim=-1, keepdim=True)\n"
            "    return torch.pow(sum_tensor, 0.5)\n\n\nclass Model:\n"
            "    def forward(self, image_embeds):\n"
            "        return image_embeds / _get_vector_norm(image_embeds)\n",
            note="transformers CLIP: no fix at the call site, where a clamp keeps the sqrt's NaN gradient"),
        Invalid(
            "import torch\nz = x / (x * x).sum(-1, keepdim=True) ** 0.5\n",
            "import torch\nz = x / ((x * x).sum(-1, keepdim=True) + 1e-6) ** 0.5\n", unsafe=True),
        Invalid(
            "import torch\nz = x / torch.pow(x.pow(2).sum(-1, keepdim=True), 0.5)\n",
            "import torch\nz = x / torch.pow(x.pow(2).sum(-1, keepdim=True) + 1e-6, 0.5)\n", unsafe=True),
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
            "import torch\nfrom torch import nn\nz = w / torch.linalg.vector_norm(w, 3, dim=0, keepdim=True)\n",
            "import torch\nfrom torch import nn\nz = nn.functional.normalize(w, p=3, dim=0, eps=1e-6)\n"),
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
            "import torch\ncos = (a * b).sum(-1) / (a.norm(dim=-1).clamp_min(1e-6) * b.norm(dim=-1).clamp_min("
            "1e-6))\n", note="each norm factor is clamped, not their product"),
        Invalid(
            "import torch\nd = a / (a.norm(dim=-1, keepdim=True) * -2.0)\n",
            "import torch\nd = a / (a.norm(dim=-1, keepdim=True).clamp_min(1e-6) * -2.0)\n",
            note="a negative factor keeps its sign"),
        Invalid(
            "import torch\ny = torch.div(g, g.norm())\n",
            "import torch\ny = torch.div(g, g.norm().clamp_min(1e-6))\n", unsafe=True,
            note="`g` is not proven a tensor: the clamp could raise"),
        Invalid(
            "import torch\ny = torch.div(g, torch.linalg.vector_norm(g))\n",
            "import torch\ny = torch.div(g, torch.linalg.vector_norm(g).clamp_min(1e-6))\n"),
        Invalid(
            "import torch\n\n\ndef f(v: torch.Tensor):\n    return 1 / v.norm() ** 2\n",
            "import torch\n\n\ndef f(v: torch.Tensor):\n    return 1 / v.norm().clamp_min(1e-6) ** 2\n",
            note="the norm is clamped before it is squared"),
        Invalid(
            "import torch\n\n\ndef f(a, b):\n    d = a.norm(dim=-1) * b.norm(dim=-1)\n    return (a * b).sum(-1) / d\n",
            "import torch\n\n\ndef f(a, b):\n    d = a.norm(dim=-1) * b.norm(dim=-1)\n"
            "    return (a * b).sum(-1) / d.clamp_min(1e-6)\n",
            unsafe=True, note="a name bound to a product: the clamp would land on the product"),
        Invalid(
            "import torch\nz = (x - x.mean(0)) / torch.std(x, 0)\n",
            "import torch\nz = (x - x.mean(0)) / torch.std(x, 0).clamp_min(1e-6)\n"),
        Invalid(
            "import torch\nz = (x - x.mean(0)) / x.std(0)\n",
            "import torch\nz = (x - x.mean(0)) / x.std(0).clamp_min(1e-6)\n", unsafe=True,
            note="`x` may be a NumPy array, which has no clamp_min"),
        Invalid(
            "import torch\nz = (x - x.mean(dim=0)) / x.std(dim=0)\n",
            "import torch\nz = (x - x.mean(dim=0)) / x.std(dim=0).clamp_min(1e-6)\n",
            note="`dim=`: a tensor's std"),
        Invalid(
            "import torch\nz = (x - x.mean(dim=0)) / x.var(dim=0)\n",
            "import torch\nz = (x - x.mean(dim=0)) / x.var(dim=0).clamp_min(1e-6)\n", unsafe=True,
            note="a variance below eps is a std below sqrt(eps): healthy quiet inputs change"),
        Invalid(
            "import torch\nz = x / torch.var(x, dim=-1, keepdim=True)\n",
            "import torch\nz = x / torch.var(x, dim=-1, keepdim=True).clamp_min(1e-6)\n", unsafe=True),
        Invalid(
            "import torch\nx = x / (torch.sqrt((x ** 2).sum(-1, keepdim=True)) + 1e-8)\n",
            "import torch\nx = x / (torch.sqrt((x ** 2).sum(-1, keepdim=True) + 1e-8))\n",
            unsafe=True, note="eps outside sqrt: finite forward, NaN gradient"),
        Invalid(
            "import torch\nx = x / (torch.sqrt((x ** 2).sum(-1, keepdim=True)) + self.eps)\n",
            "import torch\nx = x / (torch.sqrt((x ** 2).sum(-1, keepdim=True) + self.eps))\n", unsafe=True),
        Invalid(
            "import torch\nx = x / (torch.sqrt((x ** 2).sum(-1, keepdim=True)) + 1.0)\n",
            "import torch\nx = x / (torch.sqrt((x ** 2).sum(-1, keepdim=True) + 1e-6) + 1.0)\n", unsafe=True,
            note="a term that is not an eps stays outside; an eps is added inside"),
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
        Invalid(
            "import torch\n\n\ndef cos(a, b):\n    n = a.norm(dim=-1) * b.norm(dim=-1)\n"
            "    return torch.where(n > 0, (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)), 0.0)\n",
            "import torch\n\n\ndef cos(a, b):\n    n = a.norm(dim=-1) * b.norm(dim=-1)\n"
            "    return torch.where(n > 0, (a * b).sum(-1) / (a.norm(dim=-1).clamp_min(1e-6) * b.norm(dim=-1)"
            ".clamp_min(1e-6)), 0.0)\n",
            note="a torch.where mask under autograd: the masked branch's gradient is still NaN"),
        Invalid(
            "import torch\n\n\ndef unit(x):\n    n = torch.linalg.vector_norm(x)\n    if n > -1:\n"
            "        x = x / n\n    return x\n",
            "import torch\n\n\ndef unit(x):\n    n = torch.linalg.vector_norm(x)\n    if n > -1:\n"
            "        x = x / n.clamp_min(1e-6)\n    return x\n",
            note="a test that does not exclude zero is no guard"),
        Invalid(
            "import torch\n\n\ndef unit_rows(x):\n    table = torch.zeros(x.shape)\n    table[:] = x\n"
            "    return table / table.norm(dim=-1, keepdim=True)\n",
            "import torch\n\n\ndef unit_rows(x):\n    table = torch.zeros(x.shape)\n    table[:] = x\n"
            "    return torch.nn.functional.normalize(table, dim=-1, eps=1e-6)\n",
            note="a table filled from an input is data"),
    ]

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._tensors = TensorEvidence(ctx.resolve, self.locals.value_of, self.locals.annotation_of)
        self._norms = Denominators(ctx.resolve, self.locals.value_of, Helpers(ctx).unguarded)
        self._provenance = Provenance(ctx.resolve)
        self._evaluation = NetworkOutputs(ctx, self.locals.value_of)
        self._callers: dict = {}  # module-level function name -> its call sites in the module
        self._grad_off: dict = {}  # module-level function name -> every call runs without gradients

    # -- region filter -------------------------------------------------------------------------------
    @classmethod
    def region_filter(cls, nodes, tree, text) -> bool:
        """A division (`/`, `/=`, `div`) whose divisor may have a norm as a factor (`divisors.Divisors`, the
        loose `ast` mirror of what `norms.Denominators` follows), or a product with an `rsqrt`."""
        if aliased(text, _NORM_NAMES | _DIVIDE_NAMES):
            return True  # a norm or a division imported under another name: calls cannot be told by name
        flow = region_flow(nodes)
        divisors = Divisors(flow, tree)
        if any(isinstance(side, ast.Call) and called_name(side) == "rsqrt" and divisors.rsqrt_of_squares(side)
               for product in flow.products for side in (product.left, product.right)):
            return True
        candidates = list(flow.quotients)
        for call in flow.calls:
            if called_name(call) in _DIVIDE_NAMES:
                candidates += [*call.args, *(keyword.value for keyword in call.keywords)]
        return any(divisors.may_hold_norm(candidate) for candidate in candidates)

    # -- visits --------------------------------------------------------------------------------------
    def visit_BinaryOperation(self, node: cst.BinaryOperation) -> None:
        if isinstance(node.operator, cst.Divide):
            self._check(node, node.right, numerator=node.left)
        elif isinstance(node.operator, cst.Multiply):
            for side in (node.left, node.right):
                found = self._norms.rsqrt(side)
                if found is not None:
                    self._consider(node, side, [found], None)
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
        factors = self._norms.factors(denominator)
        if factors and self._is_torch(factors, numerator):
            self._consider(site, denominator, factors, numerator)

    def _is_torch(self, factors: list[Unguarded], numerator) -> bool:
        """Whether the division is torch's: the module (or the function) imports torch, or the values
        have a signature only tensors have. A function of torch is a torch division already."""
        if any(self.ctx.resolve(f.node.func) is not None for f in factors if isinstance(f.node, cst.Call)):
            return True
        if any(f.tensor for f in factors):
            return True  # a helper of the module that returns a torch function's result
        receivers = [mc[0] for f in factors if isinstance(f.node, cst.Call) and (mc := method_call(f.node))]
        if receivers and all(self._tensors.is_array(r) for r in receivers):
            return False  # NumPy's or pandas' `.std()` in a module that also imports torch
        if any(t == "torch" or t.startswith("torch.") for t in self.ctx.imported_modules()):
            return True
        return any(self._tensors.is_tensor(e) for e in (*(f.factor for f in factors), numerator))

    # -- guards around the division ------------------------------------------------------------------
    def _consider(self, site, denominator, factors: list[Unguarded], numerator) -> None:
        """Report unless code around the division guards it; defer to the callers when they might."""
        def matches(expr) -> bool:
            return any(self._stands_for(expr, f) for f in factors)

        statements = self.ctx.statements
        if all(self._never_zero(f, statements) for f in factors):
            return
        if guarded_by_control_flow(statements, site, matches, self._literal):
            return
        resolve = self.ctx.resolve
        if self._evaluation.forward_only_normalisation(site, factors, numerator):
            return
        guard = selected_guard(enclosing_selectors(self.ctx.statement, site, resolve), site, matches, resolve,
                               self._literal) if self.ctx.statement is not None else None
        if guard is None:
            guard = self._masked_later(site, matches)
        if guard == "flow":
            return
        masked = guard == "mask"
        if masked and grad_off_around(statements, resolve):
            return
        function = self._module_function(statements)
        if function is not None and self._called_in_module(function.name.value):
            self.require_full_module()  # its callers may guard the input, or turn gradients off
            name = function.name.value
            if masked and self._grad_off_in_callers(name):
                return
            if self._callers_guard(name):
                return
        self.report(site, self._message(denominator, factors[0], masked),
                    fix=self._fix(site, denominator, factors, numerator))

    def _never_zero(self, found: Unguarded, statements) -> bool:
        """The value the norm (or std, var, sum of squares) is taken of cannot make it 0: probabilities,
        or a table built from constants (no input decides whether it is degenerate)."""
        if found.helper is not None:  # what the helper takes the norm of is its argument
            args = found.node.args
            source = args[0].value if len(args) == 1 and not args[0].star and args[0].keyword is None else None
        elif found.kind in ("sqrt", "sqrt+term", "rsqrt"):
            source = found.inner
        else:
            source = input_of(found.node, self.ctx.resolve)
        if source is None:
            return False
        if found.kind == "norm" and (self._norms.never_zero(source) or self._fresh_weights(source, statements)):
            return True
        function = next((s for s in reversed(statements) if isinstance(s, cst.FunctionDef)), None)
        return self._provenance.from_constants(source, function, self.ctx.statement)

    def _fresh_weights(self, source: cst.BaseExpression, statements) -> bool:
        """`layer.weight.norm(...)` in a module-level function whose every call passes, for `layer`, a module
        just built (`nn.Linear(...)`, or a name the caller bound to one): the weights are at their random
        initialisation, and no row of them is all zero (cleanrl's `layer_init_normed`). A function used in
        any other way than by calls (`model.apply(init)`) may be handed anything."""
        if isinstance(source, cst.Attribute) and source.attr.value == "data":
            source = source.value
        if not (isinstance(source, cst.Attribute) and isinstance(source.value, cst.Name)):
            return False
        function = self._module_function(statements)
        if function is None:
            return False
        params = [p.name.value for p in (*function.params.posonly_params, *function.params.params)]
        param = source.value.value
        if param not in params or self.locals.rebound(param):
            return False
        name = function.name.value
        if not self._called_in_module(name) or self._mentioned_between(function, None, self.ctx.statement, param):
            return False  # (`layer.weight.data.zero_()` before the division: no longer the initial weights)
        self.require_full_module()  # the calls can be anywhere in the file
        calls = self._calls_of(name)
        uses = len(re.findall(rf"(?<![\w.]){re.escape(name)}\b", self.ctx.text or self.ctx.module.code))
        if not calls or uses != len(calls) + 1:  # + 1: the `def`
            return False
        return all(self._builds_module(site, params.index(param), param) for site in calls)

    def _mentioned_between(self, function, first, last, name: str) -> bool:
        """Whether a simple statement of `function` after `first` (None: from its start) and before `last`
        mentions `name`."""
        pattern = re.compile(rf"(?<![\w.]){re.escape(name)}\b")
        after = first is None
        for stmt, _ in flat_statements(function):
            if stmt is last:
                return False
            if after and isinstance(stmt, cst.SimpleStatementLine) and pattern.search(self.ctx.code_of(stmt)):
                return True
            after = after or stmt is first
        return False

    def _builds_module(self, site, position: int, param: str) -> bool:
        given = arg_value(site.call, position, param)
        statement = site.statements[-1] if site.statements else None
        if isinstance(given, cst.Name):
            caller = next((s for s in reversed(site.statements) if isinstance(s, cst.FunctionDef)), None)
            if caller is None:
                return False
            writes, caller_params = writes_before(caller, statement)
            values = writes.get(given.value, [])
            if given.value in caller_params or len(values) != 1 or values[0] is None:
                return False
            built = next((stmt for stmt, _ in flat_statements(caller) if isinstance(stmt, cst.SimpleStatementLine)
                          and any(getattr(small, "value", None) is values[0] for small in stmt.body)), None)
            if built is None or self._mentioned_between(caller, built, statement, given.value):
                return False  # `nn.init.zeros_(conv.weight)` between building and handing it over
            given = values[0]
        if not isinstance(given, cst.Call):
            return False
        qualified = self.ctx.resolve(given.func, at=statement)
        return qualified is not None and qualified.startswith("torch.nn.") and \
            qualified.split(".")[2] not in ("functional", "init", "utils", "parameter")

    def _stands_for(self, expr: cst.BaseExpression, found: Unguarded) -> bool:
        """Whether `expr` is the guarded value: the factor itself, its norm call, or a name holding it."""
        for candidate in (found.factor, found.node):
            if candidate is not None and same_code(expr, candidate):
                return True
        if isinstance(expr, cst.Name):
            value = self.value_of(expr.value)
            return value is not None and (value is found.node or same_code(value, found.node))
        return False

    def _literal(self, expr: cst.BaseExpression) -> Optional[float]:
        value = number(expr)
        if value is None and isinstance(expr, cst.Name):
            value = number(self.value_of(expr.value))
        return value

    def _masked_later(self, site, matches) -> Optional[str]:
        """`t = w / g` whose every later use reads it through a guard (`torch.where(g > 0, t, 1.0)`)."""
        statement = self.ctx.statement
        if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
            return None
        assign = statement.body[0]
        if not isinstance(assign, cst.Assign) or len(assign.targets) != 1 or \
                not isinstance(assign.targets[0].target, cst.Name):
            return None
        function = next((s for s in reversed(self.ctx.statements) if isinstance(s, cst.FunctionDef)), None)
        if function is None:
            return None
        later = statements_after(function, statement)
        return uses_all_selected(later, assign.targets[0].target.value, matches, self.ctx.resolve, self._literal)

    def _module_function(self, statements) -> Optional[cst.FunctionDef]:
        """The module-level function the division is in (its callers are plain calls of its name)."""
        if statements and isinstance(statements[0], cst.FunctionDef) and \
                not any(isinstance(s, cst.FunctionDef) for s in statements[1:]):
            return statements[0]
        return None

    def _called_in_module(self, name: str) -> bool:
        text = self.ctx.text
        if text is None:
            return True
        return len(re.findall(rf"(?<![\w.]){re.escape(name)}\s*\(", text)) > 1  # more than its `def`

    # -- what callers do -----------------------------------------------------------------------------
    def _calls_of(self, name: str) -> list:
        if name not in self._callers:
            resolve = self.ctx.resolve
            found = call_sites(self.ctx.module, {name}, keep=lambda node: selector(node, resolve) is not None)
            self._callers[name] = found[name]
        return self._callers[name]

    def _grad_off_in_callers(self, name: str, depth: int = 0) -> bool:
        """Every call of the module-level function `name` runs with gradients off (directly, or in a
        function whose every call does)."""
        if name not in self._grad_off:
            self._grad_off[name] = False  # a cycle proves nothing
            calls = self._calls_of(name)
            self._grad_off[name] = bool(calls) and depth < 6 and all(self._grad_off_at(c, depth) for c in calls)
        return self._grad_off[name]

    def _grad_off_at(self, call, depth: int = 0) -> bool:
        if grad_off_around(call.statements, self.ctx.resolve):
            return True
        caller = self._module_function(call.statements)
        return caller is not None and self._grad_off_in_callers(caller.name.value, depth + 1)

    def _callers_guard(self, name: str) -> bool:
        """Every call passes a value the caller tested for zero (`if n > 0: f(x, n)`,
        `torch.where(n > 0, f(x, n), n)` without gradients): the degenerate input never reaches it."""
        calls = self._calls_of(name)
        return bool(calls) and all(self._caller_guards(call) for call in calls)

    def _caller_guards(self, call) -> bool:
        roots = {root_name(a.value) for a in call.call.args} - {None}

        def matches(expr) -> bool:
            return root_name(expr) in roots

        if guarded_by_control_flow(call.statements, call.call, matches):
            return True
        guard = selected_guard(call.enclosing, call.call, matches, self.ctx.resolve)
        return guard == "flow" or (guard == "mask" and self._grad_off_at(call))

    # -- reporting and fixes -------------------------------------------------------------------------
    def _message(self, denominator, found: Unguarded, masked: bool) -> str:
        shown = _short(self.code_of(denominator))
        if found.helper is not None:
            message = self._helper_message(shown, found)
        elif found.kind == "norm":
            message = f"Division by a norm with no eps guard: `{shown}` is 0 for an all-zero input (NaN)"
        elif found.kind == "std":
            message = f"Division by a standard deviation with no eps guard: `{shown}` is 0 for constant input"
        elif found.kind == "var":
            message = f"Division by a variance with no eps guard: `{shown}` is 0 for constant input"
        elif found.kind == "sqrt+term" and self._is_eps(found.term):
            message = ("eps is added outside `sqrt`: the forward is finite, but sqrt's gradient at 0 is "
                       "infinite, so an all-zero input gets NaN gradients; move eps inside the sqrt")
        elif found.kind == "sqrt+term":
            message = (f"`{_short(self.code_of(found.node))}`: the added term keeps the forward finite, but "
                       "sqrt's gradient at 0 is infinite, so an all-zero input gets NaN gradients; add an eps "
                       "inside the sqrt")
        elif found.kind == "rsqrt":
            message = f"`{_short(self.code_of(found.node))}` has no eps inside: Inf for an all-zero input"
        else:
            message = (f"Division by the sqrt of a sum of squares with no eps inside: `{shown}` is 0 for an "
                       "all-zero input, and sqrt's gradient there is infinite")
        if masked:
            message += ("; the mask hides the forward value, but under autograd the masked branch's gradient "
                        "is still NaN")
        return message

    def _helper_message(self, shown: str, found: Unguarded) -> str:
        what = {"norm": "a norm", "std": "a standard deviation", "var": "a variance"}.get(found.kind)
        if what is not None:
            return (f"Division by `{shown}`: `{found.helper}` returns {what} with no eps guard, 0 for an "
                    f"all-zero{' or constant' if found.kind != 'norm' else ''} input (NaN)")
        return (f"Division by `{shown}`: `{found.helper}` returns the sqrt of a sum of squares with no eps "
                "inside, 0 for an all-zero input (NaN), and sqrt's gradient there is infinite; add an eps "
                "inside its sqrt (a clamp here would keep the NaN gradient)")

    def _is_eps(self, term: Optional[cst.BaseExpression]) -> bool:
        """A small positive constant (directly or through a local name), or a value named eps."""
        value = self._literal(term) if term is not None else None
        if value is not None:
            return 0 < value <= LARGEST_EPS
        last = term.attr.value if isinstance(term, cst.Attribute) else \
            term.value if isinstance(term, cst.Name) else ""
        return bool(EPS_LIKE.search(last))

    def _fix(self, site, denominator, factors: list[Unguarded], numerator):
        eps = self.option("eps")
        first = factors[0]
        if any(f.helper is not None and f.kind not in ("norm", "std", "var") for f in factors):
            return None  # eps belongs inside the helper's sqrt, which every caller shares
        if first.kind in ("sqrt", "rsqrt", "sqrt+term"):
            return self._sqrt_fix(first, eps)
        if len(factors) == 1 and first.factor is denominator and not first.compound:
            normalized = self._normalize(site, denominator, numerator, eps)
            if normalized is not None and self._keeps_comments(normalized):
                return normalized
        clamped = [f for f in factors if f.kind in ("norm", "std", "var")]
        mapping = {f.factor: method(f.factor, "clamp_min", number_node(eps)) for f in clamped}
        safe = all(f.kind != "var" and not f.compound and (f.tensor or self._tensors.is_tensor(f.factor))
                   for f in clamped)
        which = "the norm factors" if len(mapping) > 1 else "the denominator"
        return self.rewrite(mapping, safe=safe,
                            message=f"Clamp {which} with `.clamp_min({format_number(eps)})`")

    def _sqrt_fix(self, found: Unguarded, eps):
        move = found.kind == "sqrt+term" and self._is_eps(found.term)
        added = found.term if move else number_node(eps)
        inner = cst.BinaryOperation(left=parenthesized(found.inner), operator=cst.Add(), right=added)
        call = self._sqrt_in(found) if found.kind == "sqrt+term" else found.node
        if call is None:
            return None
        if isinstance(call, cst.BinaryOperation):  # inner ** 0.5
            new_call = call.with_changes(left=parenthesized(inner))
        elif call.args and self.ctx.resolve(call.func) is not None:  # torch.sqrt(inner), torch.pow(inner, 0.5)
            new_call = call.with_changes(args=[call.args[0].with_changes(value=inner), *call.args[1:]])
        else:  # inner.sqrt(), inner.pow(0.5)
            new_call = call.with_changes(func=call.func.with_changes(value=parenthesized(inner)))
        if move:
            # Unsafe: sqrt(s + eps) differs from sqrt(s) + eps wherever s is below about eps, that is for
            # norms up to sqrt(eps): quiet signals, not only zero ones, change.
            new_call = new_call.with_changes(lpar=found.node.lpar, rpar=found.node.rpar)
            return self.replace(found.node, new_call, message="Move eps inside the sqrt", safe=False)
        return self.replace(call, new_call, message="Add eps inside the sqrt", safe=False)

    def _keeps_comments(self, plan) -> bool:
        from gradlint.engine import keeps_comments

        return keeps_comments(plan)

    @staticmethod
    def _sqrt_in(found: Unguarded) -> Optional[cst.BaseExpression]:
        """The sqrt of `sqrt(s) + term`: the side that is not the term."""
        addition = found.node
        for side in (addition.left, addition.right):
            if side is not found.term and isinstance(side, (cst.Call, cst.BinaryOperation)):
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


_NORM_NAMES = NORMS | ROOTS | {"rsqrt"}
_DIVIDE_NAMES = frozenset(DIVIDE_METHODS | {name.rsplit(".", 1)[1] for name in DIVIDE_FUNCTIONS})


def _short(code: str, limit: int = 60) -> str:
    code = " ".join(code.split())
    return code if len(code) <= limit else code[: limit - 3] + "..."

