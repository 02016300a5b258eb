"""A rule's region filter (`Rule.region_filter`) never hides a finding: a file checked region by region
reports what the whole file does, in spellings the rules' own examples do not use."""

import pytest

from gradlint.engine import lint_text
from gradlint.registry import all_rules

# Forty unrelated functions: enough that the engine parses only the matching region.
UNRELATED = "".join(f"\n\ndef helper_{i}(y):\n    return y + {i}\n" for i in range(40))

CASES = {
    "log of sigmoid, keyword input": (
        "GL009", "import torch\n\n\ndef f(x):\n    return torch.log(input=torch.sigmoid(x))\n"),
    "sigmoid imported under another name in a function": (
        "GL009", "import torch\n\n\ndef f(x):\n    from torch import sigmoid as sg\n    return torch.log(sg(x))\n"),
    "log imported under another name in a function": (
        "GL008", "import torch\n\n\ndef f(x):\n    from torch import log as lg\n    return lg(torch.softmax(x, -1))\n"),
    "log of a softmax through a selection": (
        "GL008", "import torch\n\n\ndef f(x, i):\n    p = torch.take_along_dim(x.softmax(-1), i, 1)\n"
                 "    return torch.log(p)\n"),
}


@pytest.mark.parametrize("code, source", CASES.values(), ids=list(CASES))
def test_region_by_region_finds_what_the_whole_file_holds(code, source):
    text = source + UNRELATED
    whole = [(f.code, f.location) for f in lint_text(text, "x.py", all_rules(), reduce=False)]
    assert code in {c for c, _ in whole}
    assert [(f.code, f.location) for f in lint_text(text, "x.py", all_rules(), force_reduce=True)] == whole
