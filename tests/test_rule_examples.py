"""Every rule's VALID and INVALID examples, run the way a user meets them: check, then fix."""

from __future__ import annotations

import ast

import pytest

from gradlint.engine import fix_text, lint_text
from gradlint.registry import every_rule

RULES = every_rule()


def _cases(kind: str):
    for rule in RULES:
        for index, example in enumerate(getattr(rule, kind)):
            yield pytest.param(rule, example, id=f"{rule.code}-{kind.lower()}-{index}")


@pytest.mark.parametrize("rule, example", list(_cases("VALID")))
def test_valid_example_is_not_reported(rule, example):
    findings = lint_text(example.code, "example.py", [rule])
    assert findings == [], [f.message for f in findings]


@pytest.mark.parametrize("rule, example", list(_cases("VALID")))
def test_valid_example_is_not_reported_on_the_parsed_regions_only(rule, example):
    # What a rule asks of code outside the region it sees (a helper, a caller) must not change its verdict.
    findings = lint_text(example.code, "example.py", [rule], force_reduce=True)
    assert findings == [], [f.message for f in findings]


@pytest.mark.parametrize("rule, example", list(_cases("INVALID")))
def test_invalid_example_is_reported_and_fixed(rule, example):
    findings = lint_text(example.code, "example.py", [rule])
    assert [f.code for f in findings] == [rule.code] * example.count, [f.message for f in findings]

    fixed = fix_text(example.code, "example.py", [rule], unsafe=True)
    assert fixed.text == (example.expected if example.expected is not None else example.code)
    ast.parse(fixed.text)
    if example.expected is not None:
        assert fixed.remaining == [], "the fix must remove the finding"
        assert fix_text(fixed.text, "example.py", [rule], unsafe=True).text == fixed.text, "fix is not idempotent"

    safe_only = fix_text(example.code, "example.py", [rule], unsafe=False).text
    if example.expected is None or example.unsafe:
        assert safe_only == example.code, "an unsafe (or absent) fix was applied without --unsafe-fixes"
    else:
        assert safe_only == example.expected
        assert all(f.fix is not None and f.fix.applicability == "safe" for f in findings)


@pytest.mark.parametrize("rule, example", list(_cases("INVALID")))
def test_prefilter_never_hides_an_invalid_example(rule, example):
    assert rule.may_match(example.code), "the rule's triggers skip a file that holds a finding"
    # Parsing only the regions that match the triggers finds the same as parsing everything.
    reduced = lint_text(example.code, "example.py", [rule], force_reduce=True)
    full = lint_text(example.code, "example.py", [rule], reduce=False)
    assert reduced == full


@pytest.mark.parametrize("rule", RULES, ids=[r.code for r in RULES])
def test_rule_is_documented(rule):
    doc = rule.documentation()
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Fix safety"):
        assert heading in doc, f"{rule.code} docs lack {heading!r}"
    assert rule.code.startswith("GL") and rule.name and rule.summary
    assert rule.VALID and rule.INVALID
