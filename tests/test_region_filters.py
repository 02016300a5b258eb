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
    # A call counts as a softmax/sigmoid or a loss module only in a file that names the class.
    "log of an nn.Softmax built inline": (
        "GL008", "import torch\nfrom torch import nn\n\n\ndef f(x):\n    return torch.log(nn.Softmax(dim=1)(x))\n"),
    "log of one minus an nn.Sigmoid held in a local": (
        "GL009", "import torch\n\n\ndef f(x):\n    act = torch.nn.Sigmoid()\n    return torch.log(1 - act(x))\n"),
    "BCE module and sigmoid module held in locals": (
        "GL012", "from torch import nn\n\n\ndef f(x, y):\n    act = nn.Sigmoid()\n    crit = nn.BCELoss()\n"
                 "    return crit(act(x), y)\n"),
    "cross-entropy module held in a local, softmax module inline": (
        "GL013", "from torch import nn\n\n\ndef f(x, y):\n    crit = nn.CrossEntropyLoss()\n"
                 "    return crit(nn.Softmax(dim=1)(x), y)\n"),
    "softmax module the class builds in __init__": (
        "GL013", "import torch.nn.functional as F\nfrom torch import nn\n\n\nclass Head(nn.Module):\n"
                 "    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(4, 3)\n"
                 "        self.softmax = nn.Softmax(dim=1)\n\n    def forward(self, x, y):\n"
                 "        return F.cross_entropy(self.softmax(self.fc(x)), y)\n"),
    "sigmoid module registered by add_module": (
        "GL009", "import torch\nfrom torch import nn\n\n\nclass Head(nn.Module):\n    def __init__(self):\n"
                 "        super().__init__()\n        self.add_module('act', nn.Sigmoid())\n\n    def forward(self, x):\n"
                 "        return torch.log(self.act(x))\n"),
    "nll_loss given the softmax by keyword": (
        "GL013", "import torch\nimport torch.nn.functional as F\n\n\ndef f(x, y):\n"
                 "    p = torch.softmax(x, 1)\n    return F.nll_loss(input=p, target=y)\n"),
    "cross_entropy imported under another name in a function": (
        "GL013", "import torch\n\n\ndef f(x, y):\n    from torch.nn.functional import cross_entropy as ce\n"
                 "    return ce(torch.softmax(x, 1), y)\n"),
    # GL001: the divisor is followed through names, products, clamps and reshapes to a norm.
    "norm through two names and a reshape": (
        "GL001", "import torch\n\n\ndef f(x):\n    n = x.norm(dim=-1)\n    d = n.unsqueeze(-1) * 2\n"
                 "    return x / d\n"),
    "sqrt of a sum of squares plus eps, in place": (
        "GL001", "import torch\n\n\ndef f(x):\n    s = (x * x).sum(-1, keepdim=True)\n"
                 "    x /= torch.sqrt(s) + 1e-8\n    return x\n"),
    "rsqrt of a mean of squares, multiplied": (
        "GL001", "import torch\n\n\ndef f(x):\n    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True))\n"),
    "torch.div by a std given by keyword": (
        "GL001", "import torch\n\n\ndef f(x):\n    return torch.div(x - x.mean(0), other=x.std(0))\n"),
    "div_ method by a norm held in a local": (
        "GL001", "import torch\n\n\ndef f(x):\n    n = torch.linalg.vector_norm(x, dim=1, keepdim=True)\n"
                 "    return x.div_(n)\n"),
    "a module-level helper returning a norm": (
        "GL001", "import torch\n\n\ndef l2(t):\n    return torch.linalg.vector_norm(t, dim=-1, keepdim=True)\n\n\n"
                 "def f(x):\n    return x / l2(x)\n"),
    "a parameter named np shadows the import": (
        "GL001", "import numpy as np\nimport torch\n\n\ndef f(x, np):\n    return x / np.linalg.norm(x)\n"),
    "GL014: sqrt of a sum of squares through a name, reaching a loss": (
        "GL014", "import torch\nimport torch.nn.functional as F\n\n\ndef f(a, b, y):\n"
                 "    d = ((a - b) ** 2).sum(-1)\n    dist = torch.sqrt(d)\n    loss = F.mse_loss(dist, y)\n"
                 "    loss.backward()\n    return loss\n"),
    "GL014: a power of one half of two squares added": (
        "GL014", "import torch\n\n\ndef f(x, y):\n    r = (x ** 2 + y ** 2) ** 0.5\n    loss = r.mean()\n"
                 "    loss.backward()\n    return loss\n"),
    "norm imported under another name in a function": (
        "GL001", "import torch\n\n\ndef f(x):\n    from torch.linalg import vector_norm as vn\n"
                 "    return x / vn(x, dim=-1, keepdim=True)\n"),
}


@pytest.mark.parametrize("code, source", CASES.values(), ids=list(CASES))
def test_region_by_region_finds_what_the_whole_file_holds(code, source):
    text = source + UNRELATED
    whole = [(f.code, f.location) for f in lint_text(text, "x.py", all_rules(), reduce=False)]
    assert code in {c for c, _ in whole}
    assert [(f.code, f.location) for f in lint_text(text, "x.py", all_rules(), force_reduce=True)] == whole


@pytest.mark.parametrize("source", [
    "import math\nimport torch\n\n\ndef f(q, k):\n    return q @ k.T / math.sqrt(q.shape[-1])\n",
    "import torch\n\n\ndef f(h, eps):\n    v = h.pow(2).mean(-1, keepdim=True)\n    return h * torch.rsqrt(v + eps)\n",
    "import numpy as np\nimport torch\n\n\ndef f(v):\n    return v / np.linalg.norm(v)\n",
])
def test_regions_that_cannot_divide_by_a_norm_are_not_parsed_for_gl001(source):
    from gradlint.regions import reduce_source
    from gradlint.registry import every_rule

    gl001 = [rule for rule in every_rule() if rule.code == "GL001"]
    reduction = reduce_source(source + UNRELATED, gl001, force=True)
    assert reduction is not None and reduction.rules == ()
