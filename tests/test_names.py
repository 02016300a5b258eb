"""Names a rule resolves and a fix spells mean, at that place, what the rule and the fix mean."""

from __future__ import annotations

import ast

import pytest

from gradlint.engine import fix_text, lint_text
from gradlint.rule import Rule
from gradlint.rules.adam_weight_decay import AdamWeightDecay
from gradlint.rules.unguarded_norm_division import UnguardedNormDivision


class Probe(Rule):
    """Reports every call with what `ctx.resolve` makes of its callee."""

    code = "GL999"
    name = "probe"

    def visit_Call(self, node):
        self.report(node, f"{self.code_of(node.func)} -> {self.ctx.resolve(node.func)}")


def resolved(code: str, reduce: bool = False) -> list[str]:
    return [f.message for f in lint_text(code, "x.py", [Probe], reduce=reduce)]


def fixed(code: str, rule=UnguardedNormDivision, unsafe: bool = False) -> str:
    out = fix_text(code, "x.py", [rule], unsafe=unsafe)
    ast.parse(out.text)
    assert fix_text(out.text, "x.py", [rule], unsafe=unsafe).text == out.text, "a second fix changed it"
    return out.text


# -- resolve --------------------------------------------------------------------------------------------

def test_parameters_locals_and_loop_variables_shadow_imports():
    code = ("import torch\nimport torch.nn.functional as F\n\n\n"
            "def f(torch, x):\n    return torch.norm(x)\n\n\n"
            "def g(x):\n    F = registry()\n    return F.normalize(x)\n\n\n"
            "def h(xs, fs):\n    for F in fs:\n        F.normalize(xs)\n    return torch.norm(xs)\n")
    assert resolved(code) == [
        "torch.norm -> None", "registry -> None", "F.normalize -> None", "F.normalize -> None",
        "torch.norm -> torch.norm"]


def test_comprehension_and_lambda_variables_are_their_own_scope():
    code = ("import torch\n"
            "a = [torch.norm(x) for torch in backends]\n"
            "b = torch.norm(y)\n"
            "c = (lambda torch: torch.norm(z))\n")
    assert resolved(code) == ["torch.norm -> None", "torch.norm -> torch.norm", "torch.norm -> None"]


def test_assignment_shadows_an_imported_module_from_that_statement_on():
    code = ("from torch import optim\n"
            "optim = optim.SGD(model.parameters(), lr=0.1)\n"
            "for batch in loader:\n    optim.step()\n")
    assert resolved(code) == ["optim.SGD -> torch.optim.SGD", "model.parameters -> None", "optim.step -> None"]


def test_a_function_sees_every_binding_of_a_module_name():
    # `F` is rebound after the function: when it runs, `F` may be either.
    code = ("import torch.nn.functional as F\n\n\ndef f(x):\n    return F.normalize(x)\n\n\nF = 3\n")
    assert resolved(code) == ["F.normalize -> None"]
    assert resolved("import torch\n\n\ndef f(x):\n    return torch.norm(x)\n\n\ndel torch\n") == [
        "torch.norm -> None"]


def test_global_rebinding_and_decorators():
    code = ("import torch\n\n\ndef setup():\n    global torch\n    torch = None\n\n\n"
            "def f(x):\n    return torch.norm(x)\n")
    assert resolved(code) == ["torch.norm -> None"]
    # A decorator is evaluated in the enclosing scope, not the function's.
    code = "import torch\n\n\n@torch.no_grad()\ndef f(torch):\n    return torch.norm(x)\n"
    assert resolved(code) == ["torch.no_grad -> torch.no_grad", "torch.norm -> None"]


def test_class_body_names_do_not_reach_methods():
    code = ("import torch\n\n\nclass M:\n    torch = None\n    a = torch\n\n"
            "    def f(self, x):\n        return torch.norm(x)\n")
    assert resolved(code) == ["torch.norm -> torch.norm"]


def test_imports_for_type_checking_and_optional_imports():
    code = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n\n\n"
            "def f(x) -> 'torch.Tensor':\n    return torch.norm(x)\n")
    assert resolved(code) == ["torch.norm -> torch.norm"]  # what it means; no fix relies on it (below)
    code = ("try:\n    import torch\nexcept ImportError:\n    torch = None\n\n\n"
            "def f(x):\n    return torch.norm(x)\n")
    assert resolved(code) == ["torch.norm -> torch.norm"]


def test_function_level_imports_belong_to_their_function():
    code = ("def f(x):\n    import torch.nn.functional as F\n    return F.normalize(x)\n\n\n"
            "def g(x):\n    from mylib import F\n    return F.normalize(x)\n")
    assert resolved(code) == ["F.normalize -> torch.nn.functional.normalize", "F.normalize -> mylib.F.normalize"]


def test_module_names_are_seen_in_regions_that_were_not_parsed():
    # The rebinding sits in a function that the region reduction drops; the module's names still see it.
    filler = "".join(f"\n\ndef unrelated_{i}(a):\n    return a + {i}\n" for i in range(40))
    code = ("import torch\n\n\ndef f(x):\n    return torch.norm(x)\n" + filler +
            "\n\ndef torch():\n    pass\n")
    findings = lint_text(code, "x.py", [UnguardedNormDivision, Probe], force_reduce=True)
    assert "torch.norm -> None" in [f.message for f in findings]


# -- spelling in fixes ----------------------------------------------------------------------------------

NORM = "x / x.norm(dim=-1, keepdim=True)"


def test_fix_does_not_use_an_import_shadowed_by_a_parameter():
    code = f"import torch.nn.functional as F\n\n\ndef embed(F, x):\n    return {NORM}\n"
    assert fixed(code) == ("import torch.nn.functional as F\nimport torch.nn as nn\n\n\ndef embed(F, x):\n"
                           "    return nn.functional.normalize(x, dim=-1, eps=1e-6)\n")


def test_fix_uses_a_fresh_name_when_every_usual_one_means_something_else():
    code = f"def embed(F, nn, torch, x):\n    return {NORM}\n"
    assert fixed(code) == ("import torch.nn.functional as _gl_F\ndef embed(F, nn, torch, x):\n"
                           "    return _gl_F.normalize(x, dim=-1, eps=1e-6)\n")


def test_fix_does_not_use_a_module_name_rebound_later_or_deleted():
    code = f"import torch\n\n\ndef embed(x):\n    return {NORM}\n\n\ntorch = None\n"
    assert "F.normalize(x, dim=-1, eps=1e-6)" in fixed(code)
    assert "import torch.nn.functional as F\n" in fixed(code)
    code = f"import torch\nimport torch.nn.functional as F\n\n\ndef embed(x):\n    return {NORM}\n\n\nF = 3\n"
    assert "    return torch.nn.functional.normalize(x, dim=-1, eps=1e-6)\n" in fixed(code)
    code = f"import torch\n\n\ndef embed(x):\n    return {NORM}\n\n\ndel torch\n"
    assert "    return F.normalize(x, dim=-1, eps=1e-6)\n" in fixed(code)


def test_fix_does_not_rely_on_a_type_checking_import():
    code = (f"from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch.nn.functional as F\n\n\n"
            f"def embed(x):\n    return {NORM}\n")
    assert fixed(code) == ("from typing import TYPE_CHECKING\nimport torch.nn.functional as F\n"
                           "if TYPE_CHECKING:\n    import torch.nn.functional as F\n\n\n"
                           "def embed(x):\n    return F.normalize(x, dim=-1, eps=1e-6)\n")


def test_fix_inside_a_comprehension_over_a_name_called_F():
    code = "import torch.nn.functional as F\nys = [x / x.norm(dim=-1, keepdim=True) for F, x in pairs]\n"
    out = fixed(code)
    assert "[nn.functional.normalize(x, dim=-1, eps=1e-6) for F, x in pairs]" in out
    assert "import torch.nn as nn\n" in out


def test_adamw_import_does_not_clash_with_a_local_class():
    code = ("from torch.optim import Adam\n\n\nclass AdamW:\n    pass\n\n\n"
            "opt = Adam(params, lr=1e-3, weight_decay=1e-4)\n")
    assert fixed(code, AdamWeightDecay, unsafe=True) == (
        "from torch.optim import Adam\nimport torch\n\n\nclass AdamW:\n    pass\n\n\n"
        "opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)\n")


def test_adam_rebound_to_its_optimizer_is_still_found_on_the_right_side():
    code = "from torch import optim\noptim = optim.Adam(params, weight_decay=1e-4)\n"
    assert [f.code for f in lint_text(code, "x.py", [AdamWeightDecay])] == ["GL003"]
    # The fix spells `optim.AdamW`, which still means torch.optim.AdamW on the right-hand side.
    assert fixed(code, AdamWeightDecay, unsafe=True) == (
        "from torch import optim\noptim = optim.AdamW(params, weight_decay=1e-4)\n")


@pytest.mark.parametrize("shadow", ["torch = None", "def torch(): pass", "class torch: pass",
                                    "for torch in []: pass", "with ctx() as torch: pass"])
def test_module_level_shadowing_of_torch_is_seen(shadow):
    code = f"import torch\n{shadow}\n\n\ndef f(x):\n    return torch.norm(x)\n"
    assert resolved(code) == [m for m in resolved(code) if not m.startswith("torch.norm")] + [
        "torch.norm -> None"]


def test_a_walrus_binds_in_the_enclosing_function():
    code = ("import torch\n\n\ndef f(xs):\n    ys = [torch for x in xs if (torch := x)]\n"
            "    return torch.norm(xs)\n")
    assert resolved(code)[-1] == "torch.norm -> None"
