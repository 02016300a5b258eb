"""Rules about hazards of degenerate inputs or long runs stay out of tests; the others report there too.

What a test is comes from the code (a TestCase's methods, what pytest collects in a module that imports
pytest), never from the file's name."""

from __future__ import annotations

import pytest

from gradlint.engine import fix_text, lint_text
from gradlint.registry import every_rule

RULES = every_rule()
NORM = "x / x.norm(dim=-1, keepdim=True)"
DOUBLE_SOFTMAX = "torch.nn.functional.cross_entropy(torch.softmax(x, dim=-1), y)"


def codes(text: str, path: str = "module.py") -> list[str]:
    return [f.code for f in lint_text(text, path, RULES)]


def body(expression: str, indent: str) -> str:
    return f"{indent}return {expression}\n"


@pytest.mark.parametrize("layout", [
    "import unittest\nimport torch\n\n\nclass T(unittest.TestCase):\n    def test_a(self, x, y):\n{body}",
    "from unittest import TestCase\nimport torch\n\n\nclass T(TestCase):\n    def helper(self, x, y):\n{body}",
    "import unittest\nimport torch\n\n\nclass Base(unittest.TestCase):\n    pass\n\n\n"
    "class T(Base):\n    def test_a(self, x, y):\n{body}",
    "import pytest\nimport torch\n\n\ndef test_a(x, y):\n{body}",
    "import pytest\nimport torch\n\n\nclass TestNorm:\n    def test_a(self, x, y):\n{body}",
    "from pytest import approx\nimport torch\n\n\ndef test_a(x, y):\n    def inner(x, y):\n{deeper}"
    "    return inner(x, y)\n",
])
def test_hazard_rules_are_quiet_in_tests_and_wrong_formulas_are_not(layout):
    hazard = layout.format(body=body(NORM, "        "), deeper=body(NORM, "        "))
    wrong = layout.format(body=body(DOUBLE_SOFTMAX, "        "), deeper=body(DOUBLE_SOFTMAX, "        "))
    if "class" not in layout:
        hazard = layout.format(body=body(NORM, "    "), deeper=body(NORM, "        "))
        wrong = layout.format(body=body(DOUBLE_SOFTMAX, "    "), deeper=body(DOUBLE_SOFTMAX, "        "))
    assert codes(hazard) == []
    assert fix_text(hazard, "module.py", RULES, unsafe=True).text == hazard
    assert codes(wrong) == ["GL013"]


@pytest.mark.parametrize("path", ["test_norm.py", "norm_test.py", "tests/conftest.py", "module.py"])
def test_a_file_name_does_not_make_a_test(path):
    text = f"import torch\n\n\ndef test_norm(x):\n    return {NORM}\n"
    assert codes(text, path) == ["GL001"]


def test_code_beside_the_tests_is_still_checked():
    text = ("import pytest\nimport torch\n\n\ndef make_features(x):\n    return " + NORM + "\n\n\n"
            "def test_features():\n    assert make_features(torch.ones(2, 3)).isfinite().all()\n")
    assert codes(text) == ["GL001"]


def test_the_docs_say_where_a_rule_is_quiet():
    quiet = {rule.code for rule in RULES if not rule.reports_in_tests}
    assert {"GL001", "GL003", "GL005"} <= quiet and "GL013" not in quiet
    for rule in RULES:
        assert ("## In tests" in rule.documentation()) == (rule.code in quiet)
