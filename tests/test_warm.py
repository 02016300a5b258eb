"""The language server's warm linter: the same findings as a cold `lint_text`, edit after edit.

It keeps each region's results, splices the syntax tree of the touched statements, and (quick mode)
stands in last whole-module verdicts for regions whose rules need the whole file until `lint` runs.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from gradlint.engine import lint_text
from gradlint.registry import all_rules
from gradlint.warm import WarmLinter, _Syntax

ROOT = Path(__file__).resolve().parent.parent
RULES = all_rules()
FIXTURES = sorted((ROOT / "fixtures").glob("*/*.py"))
EXAMPLES = [example.code for rule in RULES for example in (*rule.INVALID, *rule.VALID)]


def edits_of(text: str, count: int, seed: int):
    """Edits as a user makes them: a comment appended to a line, a line inserted, a line deleted."""
    rng = random.Random(seed)
    lines = text.splitlines(keepends=True)
    for k in range(count):
        if not lines:
            return
        row = rng.randrange(len(lines))
        indent = lines[row][:len(lines[row]) - len(lines[row].lstrip())]
        if k % 3 == 0:
            lines[row] = lines[row].rstrip("\r\n") + "  # edited\n"
        elif k % 3 == 1:
            lines.insert(row, f"{indent}pass\n")
        else:
            del lines[row]
        yield "".join(lines)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_findings_equal_a_cold_lint_after_every_edit(path):
    warm = WarmLinter(RULES)
    text = path.read_text()
    for edits in (False, True):
        assert warm.lint(text, "f.py", edits=edits) == sorted(lint_text(text, "f.py", RULES, edits=edits),
                                                              key=lambda f: f.sort_key())
    for edited in edits_of(text, 12, seed=len(text)):
        assert warm.lint(edited, "f.py") == sorted(lint_text(edited, "f.py", RULES, edits=False),
                                                   key=lambda f: f.sort_key())


def test_rule_examples_give_the_same_findings_warm():
    warm = WarmLinter(RULES)
    for code in EXAMPLES:
        assert warm.lint(code, "x.py", edits=True) == sorted(lint_text(code, "x.py", RULES), key=lambda f: f.sort_key())


def test_edits_only_for_the_rows_asked():
    text = (ROOT / "fixtures" / "transformer" / "train.py").read_text()
    warm = WarmLinter(RULES)
    rows = [f.location.row for f in warm.lint(text, "train.py") if f.fix is not None]
    assert len(rows) >= 2
    findings = warm.lint(text, "train.py", edits=(rows[0], rows[0]))
    with_edits = [f.location.row for f in findings if f.fix is not None and f.fix.edits]
    assert with_edits == [rows[0]]


def test_quick_lint_stands_in_old_whole_module_verdicts_until_the_exact_one():
    text = (ROOT / "fixtures" / "transformer" / "train.py").read_text()
    warm = WarmLinter(RULES)
    exact = warm.lint(text, "train.py")
    assert any(f.code == "GL004" for f in exact)  # a verdict that needs the whole module
    # Two lines inserted at the top: the old verdicts move down with their lines.
    edited = "# one\n# two\n" + text
    quick, is_exact = warm.lint_quick(edited, "train.py")
    assert not is_exact
    moved = {(f.code, f.location.row - 2, f.location.column) for f in quick}
    assert moved == {(f.code, f.location.row, f.location.column) for f in exact}
    assert warm.lint(edited, "train.py") == sorted(lint_text(edited, "train.py", RULES, edits=False),
                                                   key=lambda f: f.sort_key())
    assert warm.lint_quick(edited, "train.py")[1]  # now that text's whole lint is known


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_the_spliced_syntax_tree_is_the_parsed_one(path):
    syntax = _Syntax()
    text = path.read_text()
    syntax.parse(text, "f.py")
    for edited in edits_of(text, 30, seed=7):
        try:
            expected = ast.dump(ast.parse(edited), include_attributes=True)
        except SyntaxError:
            expected = None
        got = syntax.parse(edited, "f.py")
        if expected is None:
            assert not isinstance(got, ast.Module)
        else:
            assert ast.dump(got, include_attributes=True) == expected


def test_a_region_follows_an_edit_of_the_helper_it_calls():
    # GL001 reads the body of `l2` (another region) to judge `x / l2(x)`: editing only the helper changes it.
    call = "\n\ndef unit(x):\n    return x / l2(x)\n"
    bare = "import torch\n\n\ndef l2(x):\n    return x.norm(dim=-1, keepdim=True)\n" + call
    guarded = "import torch\n\n\ndef l2(x):\n    return x.norm(dim=-1, keepdim=True).clamp_min(1e-6)\n" + call
    warm = WarmLinter(RULES)
    for text in (bare, guarded, bare):
        assert warm.lint(text, "x.py", edits=True) == sorted(lint_text(text, "x.py", RULES), key=lambda f: f.sort_key())
    assert [f.code for f in warm.lint(bare, "x.py")] == ["GL001"] and warm.lint(guarded, "x.py") == []
