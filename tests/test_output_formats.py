"""Each output format as ruff prints it, fed the same findings; colour, escaped names, pre-commit hints."""

from __future__ import annotations

import io
import json
import textwrap
import xml.etree.ElementTree as ET

import pytest

from gradlint.engine import lint_text
from gradlint.registry import all_rules
from gradlint.reporters import FORMATS, Report, needs_edits, render
from gradlint.reporters.terminal import printable, use_color

SOURCE = "import torch\n\n\ndef embed(x):\n    return x / x.norm(dim=-1, keepdim=True)\n\n\nz = (a - a.mean()) / a.std()\n"


@pytest.fixture
def report(tmp_path):
    (tmp_path / "model.py").write_text(SOURCE)

    def make(**options) -> Report:
        options = {"findings": lint_text(SOURCE, "model.py", all_rules()), "color": False, "pre_commit": False,
                   **options}
        return Report(cwd=tmp_path, **options)

    return make


def test_full_shows_a_code_frame_and_the_fix_as_a_diff(report):
    assert render("full", report()) == textwrap.dedent("""\
        GL001 [*] Division by a norm with no eps guard: `x.norm(dim=-1, keepdim=True)` is 0 for an all-zero input (NaN)
         --> model.py:5:12
          |
        4 | def embed(x):
        5 |     return x / x.norm(dim=-1, keepdim=True)
          |            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
          |
        help: Replace with `torch.nn.functional.normalize(x, dim=-1, eps=1e-6)`
          |
        4 | def embed(x):
          -     return x / x.norm(dim=-1, keepdim=True)
        5 +     return torch.nn.functional.normalize(x, dim=-1, eps=1e-6)
        6 |
          |

        GL001 Division by a standard deviation with no eps guard: `a.std()` is 0 for constant input
         --> model.py:8:5
          |
        8 | z = (a - a.mean()) / a.std()
          |     ^^^^^^^^^^^^^^^^^^^^^^^^
          |
        help: Clamp the denominator with `.clamp_min(1e-6)`
          |
        7 |
          - z = (a - a.mean()) / a.std()
        8 + z = (a - a.mean()) / a.std().clamp_min(1e-6)
          |
        note: This is an unsafe fix and may change runtime behavior

        Found 2 errors.
        [*] 1 fixable with `gradlint fix --write` (1 hidden fix can be enabled with the `--unsafe-fixes` option).""")


def test_full_marks_a_span_over_several_lines_as_ruff_does(tmp_path):
    source = "import torch\n\ny = (x /\n     x.norm(dim=-1,\n            keepdim=True))\nw = 1\n"
    (tmp_path / "m.py").write_text(source)
    out = render("full", Report(lint_text(source, "m.py", all_rules()), tmp_path, color=False, pre_commit=False))
    assert out.split("help:")[0].splitlines()[1:] == [
        " --> m.py:3:6",
        "  |",
        "1 |   import torch",
        "2 |",
        "3 |   y = (x /",
        "  |  ______^",
        "4 | |      x.norm(dim=-1,",
        "5 | |             keepdim=True))",
        "  | |_________________________^",
        "6 |   w = 1",
        "  |",
    ]


def test_concise_is_one_line_a_finding_and_text_is_its_old_name(report):
    lines = render("concise", report()).splitlines()
    assert lines[:2] == [
        "model.py:5:12: GL001 [*] Division by a norm with no eps guard: `x.norm(dim=-1, keepdim=True)` is 0 for an "
        "all-zero input (NaN)",
        "model.py:8:5: GL001 Division by a standard deviation with no eps guard: `a.std()` is 0 for constant input"]
    assert render("text", report()) == render("concise", report())


def test_pylint(report):
    assert render("pylint", report()).splitlines() == [
        "model.py:5: [GL001] Division by a norm with no eps guard: `x.norm(dim=-1, keepdim=True)` is 0 for an "
        "all-zero input (NaN)",
        "model.py:8: [GL001] Division by a standard deviation with no eps guard: `a.std()` is 0 for constant input"]


def test_json_items_carry_the_rule_name_and_json_lines_is_one_item_a_line(report):
    items = json.loads(render("json", report()))
    assert [(i["code"], i["name"], i["severity"]) for i in items] == [("GL001", "unguarded-norm-division", "error")] * 2
    lines = render("json-lines", report()).splitlines()
    assert [json.loads(line) for line in lines] == items


def test_junit_has_a_suite_per_file_and_a_failure_per_finding(report, tmp_path):
    root = ET.fromstring(render("junit", report()))
    assert (root.tag, root.get("tests"), root.get("failures")) == ("testsuites", "2", "2")
    [suite] = root
    assert suite.get("name") == str(tmp_path / "model.py") and suite.get("package") == "org.gradlint"
    cases = suite.findall("testcase")
    assert [(c.get("name"), c.get("line"), c.get("column")) for c in cases] == [
        ("org.gradlint.GL001", "5", "12"), ("org.gradlint.GL001", "8", "5")]
    assert cases[1].find("failure").text.startswith("line 8, col 5, Division by a standard deviation")
    clean = ET.fromstring(render("junit", report(findings=[])))
    assert clean.find("testsuite/testcase").get("name") == "No errors found"


def test_gitlab_code_quality_with_fingerprints_that_survive_moved_lines(report, tmp_path, monkeypatch):
    monkeypatch.delenv("CI_PROJECT_DIR", raising=False)
    issues = json.loads(render("gitlab", report()))
    assert [(i["check_name"], i["severity"], i["location"]["path"], i["location"]["positions"]["begin"]["line"])
            for i in issues] == [("GL001", "major", "model.py", 5), ("GL001", "major", "model.py", 8)]
    assert issues[0]["description"].startswith("GL001: Division by a norm")
    assert len({i["fingerprint"] for i in issues}) == 2
    moved = "# a new first line\n" + SOURCE
    (tmp_path / "model.py").write_text(moved)
    again = json.loads(render("gitlab", Report(lint_text(moved, "model.py", all_rules()), tmp_path, color=False)))
    assert [i["fingerprint"] for i in again] == [i["fingerprint"] for i in issues]
    monkeypatch.setenv("CI_PROJECT_DIR", str(tmp_path.parent))
    assert json.loads(render("gitlab", report()))[0]["location"]["path"] == f"{tmp_path.name}/model.py"


def test_every_format_renders_and_says_whether_it_needs_the_edits(report):
    for fmt in FORMATS:
        assert render(fmt, report()), fmt
    assert {fmt for fmt in FORMATS if needs_edits(fmt)} == {"full", "json", "json-lines"}
    with pytest.raises(ValueError, match="unknown output format"):
        render("grouped", report())


def test_statistics_as_a_table_and_as_rufs_json(project_with_findings, gradlint):
    code, out, _ = gradlint(project_with_findings, "check", "--statistics", "--output-format", "json", ".")
    assert code == 1
    assert json.loads(out) == [
        {"code": "GL001", "name": "unguarded-norm-division", "count": 3, "fixable": False, "fixable_count": 2},
        {"code": "GL003", "name": "adam-weight-decay", "count": 1, "fixable": False, "fixable_count": 0}]
    code, out, _ = gradlint(project_with_findings, "check", "--statistics", ".")
    assert out.splitlines()[:2] == ["3\tGL001\t[-] unguarded-norm-division", "1\tGL003\t[ ] adam-weight-decay"]


def test_statistics_in_other_formats_is_refused_as_in_ruff(report):
    with pytest.raises(ValueError, match="--statistics works with"):
        render("sarif", report(statistics=True))


@pytest.fixture
def project_with_findings(tmp_path):
    (tmp_path / "model.py").write_text(SOURCE)
    (tmp_path / "opt.py").write_text("import torch\n\nopt = torch.optim.Adam(p, weight_decay=1e-4)\n"
                                     "y = b / b.norm(dim=-1)\n")
    return tmp_path


def test_control_characters_in_file_names_are_escaped(tmp_path, gradlint):
    (tmp_path / "a\nb\x1b[31m.py").write_text("y = b / b.norm(dim=-1)\n")
    _, out, _ = gradlint(tmp_path, "check", ".")
    first = out.splitlines()[0]
    assert first.startswith("a\\nb\\x1b[31m.py:1:5: GL001")
    assert printable("tab\there\u2028") == "tab\\there\\u2028"
    findings = lint_text("y = b / b.norm(dim=-1)\n", "a\nb.py", all_rules())
    for fmt in ("concise", "pylint", "junit"):
        assert "a\nb.py" not in render(fmt, Report(findings, tmp_path, color=False)), fmt


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_color_follows_the_flag_then_force_color_then_no_color_then_the_terminal():
    tty, pipe = _Stream(True), _Stream(False)
    assert use_color("auto", tty, {}) and not use_color("auto", pipe, {})
    assert not use_color("auto", tty, {"NO_COLOR": "1"})
    assert use_color("auto", tty, {"NO_COLOR": ""}), "NO_COLOR counts only when set and non-empty"
    assert use_color("auto", pipe, {"FORCE_COLOR": "1"}) and not use_color("auto", pipe, {"FORCE_COLOR": ""})
    assert not use_color("auto", tty, {"TERM": "dumb"})
    assert use_color("always", pipe, {"NO_COLOR": "1"}) and not use_color("never", tty, {"FORCE_COLOR": "1"})
    with pytest.raises(ValueError):
        use_color("sometimes", tty, {})


def test_colored_output_only_when_asked(tmp_path, gradlint, monkeypatch):
    (tmp_path / "m.py").write_text("y = b / b.norm(dim=-1)\n")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    out = gradlint(tmp_path, "check", ".")[1]
    assert "\x1b[1;31mGL001\x1b[0m" in out
    monkeypatch.delenv("FORCE_COLOR")
    assert "\x1b[" not in gradlint(tmp_path, "check", ".")[1]


def test_inside_pre_commit_the_hint_names_the_hooks_args(tmp_path, gradlint, monkeypatch):
    (tmp_path / "m.py").write_text(SOURCE)
    monkeypatch.setenv("PRE_COMMIT", "1")
    out = gradlint(tmp_path, "check", ".")[1]
    assert out.splitlines()[-1] == ("[*] 1 fixable with `args: [--fix]` on this hook (1 hidden fix can be enabled "
                                    "with `args: [--fix, --unsafe-fixes]` on this hook).")
    monkeypatch.delenv("PRE_COMMIT")
    assert out != gradlint(tmp_path, "check", ".")[1]
