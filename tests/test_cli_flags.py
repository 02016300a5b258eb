"""Each of `check`'s flags and output formats as a ruff user meets them: what is printed, and the exit code."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from gradlint import __version__
from gradlint.registry import every_rule

DEFECT = "import torch\n\n\ndef embed(x):\n    return x / x.norm(dim=-1, keepdim=True)\n"
FIXED = "import torch\n\n\ndef embed(x):\n    return torch.nn.functional.normalize(x, dim=-1, eps=1e-6)\n"
ADAM = "import torch\nopt = torch.optim.Adam(p, weight_decay=1e-4)\n"  # an unsafe fix only
NO_FILES = "warning: No Python files found under the given path(s)\n"


@pytest.fixture
def project(tmp_path):
    (tmp_path / "model.py").write_text(DEFECT)
    return tmp_path


def test_the_default_format_is_full_as_in_ruff(project, gradlint, monkeypatch):
    monkeypatch.delenv("GRADLINT_OUTPUT_FORMAT")
    code, out, _ = gradlint(project, "check", ".")
    assert code == 1
    assert out.splitlines()[:6] == [
        "GL001 [*] Division by a norm with no eps guard: `x.norm(dim=-1, keepdim=True)` is 0 for an all-zero "
        "input (NaN)",
        " --> model.py:5:12",
        "  |",
        "4 | def embed(x):",
        "5 |     return x / x.norm(dim=-1, keepdim=True)",
        "  |            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^"]
    assert "5 +     return torch.nn.functional.normalize(x, dim=-1, eps=1e-6)" in out
    assert out.endswith("Found 1 error.\n[*] 1 fixable with `gradlint fix --write`.\n")
    monkeypatch.setenv("GRADLINT_OUTPUT_FORMAT", "sarif-ish")
    code, out, err = gradlint(project, "check", ".")
    assert (code, out) == (2, "") and "GRADLINT_OUTPUT_FORMAT: unknown output format 'sarif-ish'" in err


def _parse(fmt: str, out: str):
    """(path, row, code) of each finding, as the format writes them."""
    if fmt in ("concise", "text"):
        return [(line.split(":")[0], int(line.split(":")[1]), line.split()[1]) for line in out.splitlines()
                if ": GL" in line]
    if fmt == "full":
        lines = out.splitlines()
        return [(lines[i + 1].split()[1].split(":")[0], int(lines[i + 1].split(":")[1]), line.split()[0])
                for i, line in enumerate(lines) if line.startswith("GL")]
    if fmt == "json":
        return [(item["filename"].rsplit("/", 1)[1], item["location"]["row"], item["code"]) for item in json.loads(out)]
    if fmt == "json-lines":
        return [(item["filename"].rsplit("/", 1)[1], item["location"]["row"], item["code"])
                for item in map(json.loads, out.splitlines())]
    if fmt == "junit":
        return [(suite.get("name"), int(case.get("line")), case.get("name").rsplit(".", 1)[1])
                for suite in ET.fromstring(out).iter("testsuite") for case in suite.iter("testcase")]
    if fmt == "gitlab":
        return [(i["location"]["path"], i["location"]["positions"]["begin"]["line"], i["check_name"])
                for i in json.loads(out)]
    if fmt == "pylint":
        return [(line.split(":")[0], int(line.split(":")[1]), line.split("[")[1].split("]")[0])
                for line in out.splitlines()]
    if fmt == "sarif":
        return [(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].rsplit("/", 1)[-1],
                 r["locations"][0]["physicalLocation"]["region"]["startLine"], r["ruleId"])
                for r in json.loads(out)["runs"][0]["results"]]
    if fmt == "github":
        return [(line.split("file=")[1].split(",")[0], int(line.split("line=")[1].split(",")[0]),
                 line.split("(")[1].split(")")[0]) for line in out.splitlines()]
    raise AssertionError(fmt)


@pytest.mark.parametrize("fmt", ["full", "concise", "text", "json", "json-lines", "junit", "gitlab", "pylint",
                                 "sarif", "github"])
def test_every_output_format_from_the_command_line(project, gradlint, fmt, monkeypatch):
    monkeypatch.chdir(project)
    (project / "opt.py").write_text(ADAM)
    code, out, err = gradlint(project, "check", "--output-format", fmt, ".")
    assert (code, err) == (1, "")
    found = _parse(fmt, out)
    assert sorted((path.rsplit("/", 1)[-1], row, rule) for path, row, rule in found) == [
        ("model.py", 5, "GL001"), ("opt.py", 2, "GL003")]


def test_json_shows_the_fix_edits_and_text_formats_their_mark(project, gradlint):
    _, out, _ = gradlint(project, "check", "--output-format", "json", ".")
    [item] = json.loads(out)
    assert item["fix"]["applicability"] == "safe" and item["fix"]["edits"]  # edits are computed for json
    _, out, _ = gradlint(project, "check", "--output-format", "pylint", ".")
    assert out == ("model.py:5: [GL001] Division by a norm with no eps guard: `x.norm(dim=-1, keepdim=True)` is 0 "
                   "for an all-zero input (NaN)\n")


def test_statistics_with_a_format_that_cannot_show_them_is_a_usage_error(project, gradlint):
    code, out, err = gradlint(project, "check", "--statistics", "--output-format", "junit", ".")
    assert (code, out) == (2, "") and err == "error: --statistics works with --output-format full, concise, json, not junit\n"


def test_show_fixes_lists_what_was_fixed_per_file_and_rule(project, gradlint):
    (project / "other.py").write_text("y = a / a.norm(dim=-1)\nz = b / b.norm(dim=-1)\n")
    code, out, _ = gradlint(project, "check", "--fix", "--show-fixes", ".")
    assert code == 0
    assert out.splitlines() == ["", "Fixed 3 errors:", "- model.py:", "    1 × GL001 (unguarded-norm-division)",
                                "- other.py:", "    2 × GL001 (unguarded-norm-division)", "",
                                "Found 3 errors (3 fixed, 0 remaining)."]
    code, out, _ = gradlint(project, "check", "--show-fixes", ".")
    assert (code, out) == (0, "All checks passed!\n")  # nothing fixed, nothing listed


def test_diff_writes_nothing_prints_the_diff_and_exits_1(project, gradlint):
    code, out, err = gradlint(project, "check", "--diff", ".")
    assert code == 1 and (project / "model.py").read_text() == DEFECT
    assert out.startswith("--- a/model.py\n+++ b/model.py\n")
    assert "+    return torch.nn.functional.normalize(x, dim=-1, eps=1e-6)\n" in out
    assert err == "Would fix 1 error.\n"
    assert gradlint(project, "fix", ".") == (code, out, err)  # the same as `fix` without --write
    (project / "model.py").write_text(FIXED)
    assert gradlint(project, "check", "--diff", ".") == (0, "", "No errors would be fixed.\n")


def test_fix_only_fixes_and_reports_nothing_of_what_remains(project, gradlint):
    (project / "opt.py").write_text(ADAM)
    code, out, err = gradlint(project, "check", "--fix-only", ".")
    assert (code, out, err) == (0, "Fixed 1 error.\n", "")
    assert (project / "model.py").read_text() == FIXED and (project / "opt.py").read_text() == ADAM
    assert gradlint(project, "check", "--fix-only", ".") == (0, "", "")  # nothing left to fix: nothing said
    assert gradlint(project, "check", ".")[0] == 1  # GL003 is still there


def test_exit_non_zero_on_fix(project, gradlint):
    code, out, _ = gradlint(project, "check", "--fix", "--exit-non-zero-on-fix", ".")
    assert code == 1 and out == "Found 1 error (1 fixed, 0 remaining).\n"
    assert gradlint(project, "check", "--fix", "--exit-non-zero-on-fix", ".")[0] == 0  # nothing fixed this time
    (project / "model.py").write_text(DEFECT)
    assert gradlint(project, "check", "--fix-only", "--exit-non-zero-on-fix", ".")[0] == 1


def test_version(gradlint, tmp_path, capsys):
    for flag in ("-V", "--version"):
        with pytest.raises(SystemExit) as exit_info:
            gradlint(tmp_path, flag)
        assert exit_info.value.code == 0 and capsys.readouterr().out == f"gradlint {__version__}\n"


def test_quiet_and_silent(project, gradlint):
    (project / "bad.py").write_text("x = 1  # noqa: GL\n")
    code, out, err = gradlint(project, "check", "-q", ".")
    assert code == 1 and out.startswith("model.py:5:12: GL001") and "Found" not in out and err == ""
    assert gradlint(project, "check", "--silent", ".") == (1, "", "")
    code, out, err = gradlint(project, "check", "--silent", "missing.py")  # errors are still said
    assert (code, out) == (2, "") and "missing.py: No such file or directory" in err


def test_verbose_says_which_settings_and_where_files_were_checked(project, gradlint):
    (project / "gradlint.toml").write_text("")
    code, _, err = gradlint(project, "check", "-v", "--no-cache", ".")
    lines = err.splitlines()
    assert code == 1 and lines[0] == f"debug: settings from {project / 'gradlint.toml'} (root .)"
    assert lines[1].startswith("debug: 1 file: 1 checked (in this process), 0 from the cache, in ")
    gradlint(project, "check", ".")
    assert "1 file: 0 checked (nothing to do), 1 from the cache" in gradlint(project, "check", "-v", ".")[2]


def test_small_runs_are_checked_in_process_and_big_ones_in_workers(tmp_path, gradlint):
    """Forking costs more than linting a pre-commit hook's few files; a big file keeps its isolation."""
    for name in ("a.py", "b.py", "c.py"):
        (tmp_path / name).write_text(DEFECT)
    assert "3 checked (in this process)" in gradlint(tmp_path, "check", "-v", "--no-cache", ".")[2]
    (tmp_path / "big.py").write_text(DEFECT + "# padding\n" * 30_000)  # 300 kB
    code, out, err = gradlint(tmp_path, "check", "-v", "--no-cache", ".")
    assert code == 1 and out.count("GL001") == 4 and "4 checked (in 1 worker process)" in err


@pytest.mark.parametrize("color, environment, colored", [
    ("always", {"NO_COLOR": "1"}, True), ("never", {"FORCE_COLOR": "1"}, False), ("auto", {"FORCE_COLOR": "1"}, True),
    ("auto", {"FORCE_COLOR": "1", "NO_COLOR": "1"}, True), ("auto", {"NO_COLOR": "1"}, False), ("auto", {}, False),
])
def test_color_flag_and_environment(project, gradlint, monkeypatch, color, environment, colored):
    for name in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    code, out, _ = gradlint(project, "check", "--color", color, ".")
    assert code == 1 and ("\x1b[1;31mGL001\x1b[0m" in out) == colored and ("\x1b[" in out) == colored
    _, _, err = gradlint(project, "fix", "--show-fixes", "--color", color, ".")  # the diff mode's, on stderr
    assert ("\x1b[1m\x1b[32mWould fix 1 error:\x1b[0m\x1b[0m" in err) == colored and ("\x1b[" in err) == colored


def test_no_python_files_is_a_warning(tmp_path, gradlint):
    (tmp_path / "notes.txt").write_text("")
    assert gradlint(tmp_path, "check", ".") == (0, "All checks passed!\n", NO_FILES)
    assert gradlint(tmp_path, "check", "-q", ".") == (0, "", "")


def test_an_unknown_flag_prints_the_subcommands_usage(tmp_path, gradlint, capsys):
    for command in ("check", "fix", "rule"):
        with pytest.raises(SystemExit) as exit_info:
            gradlint(tmp_path, command, "--fix-everything")
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert err.startswith(f"usage: gradlint {command} [-h]")
        assert err.rstrip().endswith(f"gradlint {command}: error: unrecognized arguments: --fix-everything")


def test_rule_json_one_and_all(gradlint, tmp_path):
    code, out, _ = gradlint(tmp_path, "rule", "GL001", "--output-format", "json")
    rule = json.loads(out)
    assert code == 0 and (rule["code"], rule["name"], rule["linter"]) == ("GL001", "unguarded-norm-division", "gradlint")
    assert rule["explanation"].startswith("## What it does")
    code, out, _ = gradlint(tmp_path, "rule", "--all", "--output-format", "json")
    rules = json.loads(out)
    assert code == 0 and [r["code"] for r in rules] == [r.code for r in every_rule()]
    assert {r["code"]: r["default_enabled"] for r in rules}["GL100"] is False
    code, out, _ = gradlint(tmp_path, "rule", "--all")
    assert code == 0 and "# unused-noqa (GL100)" in out


@pytest.mark.parametrize("shell, start", [("bash", "# bash completion for gradlint"), ("zsh", "#compdef gradlint"),
                                          ("fish", "# fish completion for gradlint")])
def test_completion_scripts(gradlint, tmp_path, shell, start):
    code, out, _ = gradlint(tmp_path, "completion", shell)
    assert code == 0 and out.startswith(start)
    assert "extend-per-file-ignores" in out and "GL100" in out and "steps" in out  # verify's options too


def test_invalid_noqa_warns_on_every_run_cached_or_not(tmp_path, gradlint):
    (tmp_path / "m.py").write_text("x = 1  # noqa: GL\n")
    warning = ("warning: Invalid `# noqa` directive on m.py:1: expected a comma-separated list of codes "
               "(e.g., `# noqa: GL001, GL005`).\n")
    assert gradlint(tmp_path, "check", ".") == (0, "All checks passed!\n", warning)
    assert gradlint(tmp_path, "check", ".") == (0, "All checks passed!\n", warning)  # from the cache


def test_unused_noqa_is_off_until_selected(tmp_path, gradlint):
    (tmp_path / "m.py").write_text("import torch\ny = torch.ones(3)  # noqa: GL001\n")
    assert gradlint(tmp_path, "check", ".")[0] == 0
    code, out, _ = gradlint(tmp_path, "check", "--extend-select", "GL100", ".")
    assert code == 1 and out.startswith("m.py:2:20: GL100 [*] Unused `noqa` directive (unused: `GL001`)")
    gradlint(tmp_path, "check", "--extend-select", "GL100", "--fix", ".")
    assert (tmp_path / "m.py").read_text() == "import torch\ny = torch.ones(3)\n"
