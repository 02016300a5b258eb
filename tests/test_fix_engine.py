"""How `fix` applies rewrites: nested findings in one run, comments never lost, and a fixpoint."""

from __future__ import annotations

import ast

from gradlint.engine import fix_text, lint_text
from gradlint.rules.unclamped_einsum_chain import UnclampedEinsumChain
from gradlint.rules.unguarded_norm_division import UnguardedNormDivision


def _nested_einsums(depth: int) -> str:
    expr = "a0"
    for i in range(1, depth + 1):
        expr = f"torch.einsum('ij,jk->ik', {expr}, a{i})"
    return f"import torch\ny = {expr}\n"


def test_more_than_ten_nested_findings_are_fixed_in_one_run():
    code = _nested_einsums(14)  # 13 links, each a finding whose fix wraps the next one's
    assert len(lint_text(code, "x.py", [UnclampedEinsumChain])) == 13
    out = fix_text(code, "x.py", [UnclampedEinsumChain], unsafe=True)
    assert out.remaining == [] and out.fixed == 13
    assert out.text.count(".clamp(-1e4, 1e4)") == 13
    ast.parse(out.text)
    assert fix_text(out.text, "x.py", [UnclampedEinsumChain], unsafe=True).text == out.text


def test_nested_divisions_are_fixed_in_one_run():
    code = "import torch\ny = (x / x.norm(dim=-1).unsqueeze(-1)) / (x / x.norm(dim=-1).unsqueeze(-1)).norm()\n"
    out = fix_text(code, "x.py", [UnguardedNormDivision])
    assert out.remaining == []
    assert out.text.count(".clamp_min(1e-6)") == 3


def test_a_comment_inside_a_replaced_expression_is_kept():
    code = ("import torch\n\n\ndef f(x):\n    y = x / x.norm(  # unit rows\n"
            "        dim=-1, keepdim=True)\n    return y\n")
    out = fix_text(code, "x.py", [UnguardedNormDivision])
    assert out.remaining == []
    assert out.text == ("import torch\n\n\ndef f(x):\n    y = x / x.norm(  # unit rows\n"
                        "        dim=-1, keepdim=True).clamp_min(1e-6)\n    return y\n")
