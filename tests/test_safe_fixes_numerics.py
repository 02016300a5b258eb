"""Every safe fix, run under torch: equal results and gradients on ordinary inputs, finite on the
degenerate input that breaks the original. The cases are the rules' own INVALID examples with a safe
fix (the snippet and its `expected` text), plus the fuzzing finds of issue 9 and cases from real code.
Add a rule whose safe fixes are expression rewrites to EXPRESSION_RULES to have its examples run here."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from numerics import breaks, compare, degenerate  # noqa: E402

from gradlint.engine import fix_text  # noqa: E402
from gradlint.registry import all_rules  # noqa: E402

EXPRESSION_RULES = ("GL001",)
RULES = {rule.code: rule for rule in all_rules()}


def _safe_examples():
    for code in EXPRESSION_RULES:
        rule = RULES[code]
        for index, example in enumerate(rule.INVALID):
            if example.expected is not None and not example.unsafe:
                yield pytest.param(rule, example, id=f"{code}-invalid-{index}")


SAFE_EXAMPLES = list(_safe_examples())


@pytest.mark.parametrize("rule, example", SAFE_EXAMPLES)
def test_safe_fix_keeps_ordinary_results_and_gradients(rule, example):
    assert compare(example.code, example.expected) == []


@pytest.mark.parametrize("rule, example", SAFE_EXAMPLES)
def test_safe_fix_is_finite_where_the_original_breaks(rule, example):
    assert breaks(example.code) is not None, "the example does not show the hazard"
    assert degenerate(example.expected) == []
    assert degenerate(example.expected, dtype=torch.float32) == []


# eps survives float16 for one guarded norm. A product or a power of guarded norms (eps**2 = 1e-12)
# underflows there, as a product of healthy norms of 1e-4 already does in the original: float16 cannot
# hold it (autocast computes norms in float32 for that reason), see GL001's Fix safety.
ONE_FACTOR = [p for p in SAFE_EXAMPLES
              if p.values[1].expected.count("clamp_min(") + p.values[1].expected.count("normalize(") == 1
              and "**" not in p.values[1].expected]


@pytest.mark.parametrize("rule, example", ONE_FACTOR)
def test_safe_fix_eps_survives_float16(rule, example):
    try:
        problems = degenerate(example.expected, dtype=torch.float16, gradients=False, kinds=("zeros",))
    except RuntimeError as error:  # an op this CPU build has no float16 kernel for
        pytest.skip(f"float16 on CPU: {error}")
    assert problems == []


def test_every_gl001_safe_fix_is_run():
    assert len([p for p in SAFE_EXAMPLES if p.values[0].code == "GL001"]) >= 12


# Fuzzing finds (issue 9) and shapes from real code, fixed by the rule rather than by an example's text.
CASES = {
    "product of two norms": "import torch\ncos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))\n",
    "negative factor": "import torch\nd = a / (a.norm(dim=-1, keepdim=True) * -2.0)\n",
    "squared norm": "import torch\nz = x / x.norm(dim=-1, keepdim=True) ** 2\n",
    "power and factor": "import torch\nz = 3.0 * x / (0.5 * x.norm(dim=1, keepdim=True) ** 3)\n",
    "CLIP features": ("import torch\n\n\ndef logits(image_features, text_features):\n"
                     "    image_features = image_features / image_features.norm(dim=-1, keepdim=True)\n"
                     "    text_features = text_features / text_features.norm(dim=-1, keepdim=True)\n"
                     "    return image_features @ text_features.t()\n"),
    "in-place division": "import torch\nx /= torch.linalg.vector_norm(x, dim=-1, keepdim=True)\n",
    "p=3 normalisation": "import torch\nz = w / torch.linalg.vector_norm(w, 3, dim=0, keepdim=True)\n",
    "through a name": "import torch\n\n\ndef f(x):\n    n = x.norm(dim=-1, keepdim=True)\n    return x / n\n",
    "std over a batch": "import torch\nz = (x - x.mean(dim=0)) / x.std(dim=0)\n",
    "parameter annotated": ("import torch\n\n\ndef unit(v: torch.Tensor, w: torch.Tensor):\n"
                            "    return torch.div(w, v.norm() * w.norm())\n"),
    "parameter named F": ("import torch.nn.functional as F\n\n\ndef embed(F, x):\n"
                          "    return x / x.norm(dim=-1, keepdim=True)\n"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fix_of_real_shapes(name):
    original = CASES[name]
    out = fix_text(original, "case.py", [RULES["GL001"]])
    assert out.text != original, "no safe fix was applied"
    assert out.remaining == []
    if name == "parameter named F":
        # The parameter is not a module: a tensor stands in for it, which the fix must not call.
        original, fixed = original.replace("F, x", "x"), out.text.replace("F, x", "x")
    else:
        fixed = out.text
    assert compare(original, fixed) == []
    assert breaks(original) is not None
    assert degenerate(fixed) == []


def test_the_harness_sees_a_clamp_on_a_product_change_healthy_results():
    # What the fix did before issue 9: clamp the product of two norms of about 3e-4 each (1e-7 < eps).
    original = CASES["product of two norms"]
    clamped_product = original.replace("(a.norm(dim=-1) * b.norm(dim=-1))",
                                       "(a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-6)")
    assert any("scale 0.0001" in problem for problem in compare(original, clamped_product))
