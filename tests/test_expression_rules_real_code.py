"""GL001, GL002 and GL003 options and settings, on real code (timm as pinned in `benchmarks/corpus.py`) and
on small snippets. Every finding of these rules on real code is judged in `tests/verdicts/` and checked by
`tests/test_precision_suite.py`.
"""

from __future__ import annotations

import pytest

from benchmarks.corpus import CorpusUnavailable, corpus_dir
from gradlint.engine import fix_text, lint_text
from gradlint.rules.adam_weight_decay import AdamWeightDecay
from gradlint.rules.unclamped_einsum_chain import UnclampedEinsumChain


@pytest.mark.slow
def test_min_factors_2_reports_timm_bilinear_einsum_chains():
    """`min-factors = 2` adds the bilinear chains of timm's MultiQueryAttentionV2 (attention2d.py)."""
    try:
        root = corpus_dir("timm")
    except CorpusUnavailable as error:
        pytest.skip(f"corpus timm unavailable: {error}")
    rel = "timm/layers/attention2d.py"
    text = (root / rel).read_text(encoding="utf-8")
    rule = UnclampedEinsumChain
    assert lint_text(text, rel, [rule]) == []
    findings = lint_text(text, rel, [rule], {"unclamped-einsum-chain": {"min-factors": 2}})
    # q·k from two einsum projections (attention logits), attn·v, and the output projection of o.
    assert [(f.location.row, f.message.split(" another einsum")[0]) for f in findings] == [
        (83, "einsum operands `q`, `k` are"), (88, "einsum operand `v` is"), (89, "einsum operand `o` is")]


def test_bound_option_sets_the_clamp():
    rule = UnclampedEinsumChain
    code = "import torch\ny = torch.einsum('ij,jk->ik', torch.einsum('ij,jk->ik', a, b), c)\n"
    fixed = fix_text(code, "x.py", [rule], {"unclamped-einsum-chain": {"bound": 100}}, unsafe=True)
    assert fixed.text == (
        "import torch\ny = torch.einsum('ij,jk->ik', torch.einsum('ij,jk->ik', a, b).clamp(-100, 100), c)\n")


def test_report_non_literal_option():
    rule = AdamWeightDecay
    code = ("from torch.optim import Adam\n\n\ndef make(model, lr, weight_decay):\n"
            "    return Adam(model.parameters(), lr=lr, weight_decay=weight_decay)\n")
    assert [f.code for f in lint_text(code, "x.py", [rule])] == ["GL003"]
    assert lint_text(code, "x.py", [rule], {"adam-weight-decay": {"report-non-literal": False}}) == []
