"""Suppression comments as a ruff user writes them: line and file directives, bad ones, unused ones."""

from __future__ import annotations

import textwrap

from gradlint.engine import fix_text, lint_file, lint_text
from gradlint.registry import all_rules, every_rule, rule_by_code_or_name

DEFECT = "x / x.norm(dim=-1, keepdim=True)"


def _source(*lines: str) -> str:
    return "import torch\n\n\ndef f(x):\n" + "".join(f"    {line}\n" for line in lines)


def test_a_prefix_is_not_a_code_it_suppresses_nothing_and_warns(tmp_path, gradlint):
    (tmp_path / "m.py").write_text(_source(f"return {DEFECT}  # noqa: GL"))
    code, out, _ = gradlint(tmp_path, "check", "m.py")
    assert code == 1 and "m.py:5:12: GL001" in out
    result = lint_file((tmp_path / "m.py").read_text(), "m.py", all_rules())
    assert [f.code for f in result.findings] == ["GL001"]
    assert result.warnings == ["Invalid `# noqa` directive on m.py:5: expected a comma-separated list of codes "
                               "(e.g., `# noqa: GL001, GL005`)."]


def test_malformed_directives_suppress_nothing_and_say_why():
    cases = {
        "# noqa:": "expected a comma-separated list of codes",
        "#noqaGL001": "expected `:` followed by a comma-separated list of codes",
        "# noqa: GL001x": "expected code to consist of uppercase letters followed by digits only",
        "# noqa: gl001": "expected a comma-separated list of codes",  # codes are upper case, as in ruff
    }
    for comment, why in cases.items():
        result = lint_file(_source(f"return {DEFECT}  {comment}"), "m.py", all_rules())
        assert [f.code for f in result.findings] == ["GL001"], comment
        [warning] = result.warnings
        assert warning.startswith("Invalid `# noqa` directive on m.py:5: ") and why in warning, comment


def test_well_formed_directives_suppress():
    for comment in ("# noqa", "# NOQA", "# noqa: GL001", "# noqa:GL001,GL005", "# noqa: E501 GL001",
                    "# noqa: GL001 the norm is never 0 here", "# type: ignore # noqa: GL001"):
        result = lint_file(_source(f"return {DEFECT}  {comment}"), "m.py", all_rules())
        assert result.findings == [] and result.warnings == [], comment


def test_joined_codes_suppress_and_warn():
    result = lint_file(_source(f"return {DEFECT}  # noqa: GL005GL001"), "m.py", all_rules())
    assert result.findings == []
    assert result.warnings == ["Missing or joined rule code(s) at m.py:5: expected comma or space delimiter "
                               "between codes"]


def test_noqa_inside_a_string_is_not_a_directive():
    source = _source('s = "# noqa: GL001"', "return x / x.norm(dim=-1, keepdim=True)")
    source = source.replace("keepdim=True)\n", 'keepdim=True) if s else "# noqa"\n')
    assert [f.code for f in lint_text(source, "m.py", all_rules())] == ["GL001"]


def test_file_level_noqa_silences_the_file(tmp_path, gradlint):
    (tmp_path / "m.py").write_text("# gradlint: noqa\n" + _source(f"return {DEFECT}"))
    assert gradlint(tmp_path, "check", "m.py")[:2] == (0, "All checks passed!\n")


def test_file_level_noqa_with_codes_silences_only_those(tmp_path, gradlint):
    source = _source(f"y = {DEFECT}", "optimizer = torch.optim.Adam(x, weight_decay=1e-4)", "return y")
    (tmp_path / "m.py").write_text(source + "# gradlint: noqa: GL001\n")
    code, out, _ = gradlint(tmp_path, "check", "m.py")
    assert code == 1 and "GL003" in out and "GL001" not in out


def test_file_level_noqa_after_code_is_ignored_with_a_warning():
    source = _source(f"return {DEFECT}  # gradlint: noqa")
    result = lint_file(source, "m.py", all_rules())
    assert [f.code for f in result.findings] == ["GL001"]
    assert result.warnings == [
        "Unexpected `# gradlint: noqa` directive at m.py:5. File-level suppression comments must appear on "
        "their own line. For line-level suppression, omit the `gradlint:` prefix."]


def test_other_tools_file_level_directives_do_not_silence_gradlint():
    for comment in ("# ruff: noqa", "# flake8: noqa"):
        source = comment + "\n" + _source(f"return {DEFECT}")
        assert [f.code for f in lint_text(source, "m.py", all_rules())] == ["GL001"], comment


# -- GL100, unused-noqa -------------------------------------------------------------------------------

UNUSED = rule_by_code_or_name("GL100")


def test_unused_noqa_is_a_rule_that_is_off_by_default():
    assert UNUSED.name == "unused-noqa" and not UNUSED.default_enabled
    assert UNUSED in every_rule() and UNUSED not in all_rules()
    source = _source("return x  # noqa: GL001")
    assert lint_text(source, "m.py", all_rules()) == []


def test_unused_noqa_reports_in_ruffs_shape_and_fixes_safely():
    source = textwrap.dedent("""\
        import torch


        def f(x):
            a = x / x.norm(dim=-1, keepdim=True)  # noqa: GL001
            b = x + 1  # noqa: GL001, E501
            c = x * 2  # noqa: GL001 kept from an older version
            d = x - 1  # noqa: GL005, GL005
            return a, b, c, d  # noqa
    """)
    rules = [rule for rule in every_rule() if rule.code in ("GL001", "GL100")]
    findings = lint_text(source, "m.py", rules)
    assert [(f.code, f.location.row, f.location.column, f.message) for f in findings] == [
        ("GL100", 6, 16, "Unused `noqa` directive (unused: `GL001`)"),
        ("GL100", 7, 16, "Unused `noqa` directive (unused: `GL001`)"),
        ("GL100", 8, 16, "Unused `noqa` directive (non-enabled: `GL005`; duplicated: `GL005`)"),
    ]
    assert all(f.fix.applicability == "safe" for f in findings)
    fixed = fix_text(source, "m.py", rules)
    assert fixed.text.splitlines()[4:9] == [
        "    a = x / x.norm(dim=-1, keepdim=True)  # noqa: GL001",  # used: kept
        "    b = x + 1  # noqa: E501",  # another linter's code: kept
        "    c = x * 2",
        "    d = x - 1",
        "    return a, b, c, d  # noqa",  # a bare noqa may be another linter's
    ]
    assert fixed.remaining == [] and fixed.fixed == 3
    assert fix_text(fixed.text, "m.py", rules).text == fixed.text
