"""The shared trigger scan answers exactly what each trigger regex answers on its own."""

import re

import pytest

from gradlint.registry import every_rule
from gradlint.triggers import TriggerScan, required_literals

PATTERNS = sorted({(p.pattern, p.flags) for rule in every_rule() for group in rule.compiled_triggers()
                   for p in group})
TEXTS = sorted({example.code for rule in every_rule() for example in (*rule.VALID, *rule.INVALID)})


@pytest.mark.parametrize("pattern", [re.compile(p, f) for p, f in PATTERNS], ids=lambda p: p.pattern)
def test_scan_agrees_with_the_regex(pattern):
    for text in TEXTS:
        assert TriggerScan(text).search(pattern) == (pattern.search(text) is not None), text


def test_required_literals():
    assert required_literals(re.compile(r"self\.\w+\(\s*(?:F\.)?softmax\(")) == ("softmax(", "self.", "(")
    assert required_literals(re.compile(r"acos(?<!math\.acos)\s*\(")) == ("acos", "(")
    assert required_literals(re.compile(r"loss\w*\(|Loss\(")) == ()  # an alternation at the top
    assert required_literals(re.compile(r"(?i)noqa")) == ()  # case-insensitive
