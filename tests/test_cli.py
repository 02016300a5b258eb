"""The CLI as a ruff user meets it: output shape, exit codes, fix, diff, rule docs, selection."""

from __future__ import annotations

import json
import textwrap

import pytest

from gradlint.registry import all_rules

DEFECT = textwrap.dedent("""\
    import torch


    def embed(x):
        return x / x.norm(dim=-1, keepdim=True)
""")
CLEAN = "import torch.nn.functional as F\n\n\ndef embed(x):\n    return F.normalize(x, dim=-1)\n"


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.gradlint]\n")
    (tmp_path / "model.py").write_text(DEFECT)
    (tmp_path / "clean.py").write_text(CLEAN)
    return tmp_path


def test_check_reports_in_ruff_shape_and_exits_1(project, gradlint):
    code, out, _ = gradlint(project, "check", ".")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("model.py:5:12: GL001 [*] Division by a norm with no eps guard")
    assert "Found 1 error." in lines
    assert "[*] 1 fixable with `gradlint fix --write`." in lines


def test_check_clean_tree_exits_0(project, gradlint):
    code, out, _ = gradlint(project, "check", "clean.py")
    assert (code, out.strip()) == (0, "All checks passed!")


def test_exit_zero(project, gradlint):
    code, _, _ = gradlint(project, "check", "--exit-zero", ".")
    assert code == 0


def test_fix_prints_diff_and_exits_1_without_touching_files(project, gradlint):
    code, out, err = gradlint(project, "fix", ".")
    assert code == 1
    assert "-    return x / x.norm(dim=-1, keepdim=True)" in out
    assert "+    return torch.nn.functional.normalize(x, dim=-1, eps=1e-6)" in out
    assert "Would fix 1 error." in err
    assert (project / "model.py").read_text() == DEFECT


def test_fix_write_fixes_and_second_run_changes_nothing(project, gradlint):
    code, out, _ = gradlint(project, "fix", "--write", ".")
    assert code == 0
    assert "Found 1 error (1 fixed, 0 remaining)." in out
    fixed = (project / "model.py").read_text()
    assert "torch.nn.functional.normalize(x, dim=-1, eps=1e-6)" in fixed
    code, out, _ = gradlint(project, "fix", "--write", ".")
    assert code == 0 and (project / "model.py").read_text() == fixed
    assert gradlint(project, "check", ".")[0] == 0


def test_check_fix_is_an_alias_for_fix_write(project, gradlint):
    assert gradlint(project, "check", "--fix", ".")[0] == 0
    assert "normalize" in (project / "model.py").read_text()


def test_unsafe_fix_needs_the_flag(tmp_path, gradlint):
    source = "import torch\nz = (x - x.mean(0)) / x.std(0)\n"
    (tmp_path / "std.py").write_text(source)
    code, out, _ = gradlint(tmp_path, "check", "std.py")
    assert code == 1 and "[*]" not in out
    assert "No fixes available (1 hidden fix can be enabled with the `--unsafe-fixes` option)." in out
    gradlint(tmp_path, "fix", "--write", "std.py")
    assert (tmp_path / "std.py").read_text() == source
    gradlint(tmp_path, "fix", "--write", "--unsafe-fixes", "std.py")
    assert "x.std(0).clamp_min(1e-6)" in (tmp_path / "std.py").read_text()


def test_json_output_has_ruffs_shape(project, gradlint):
    code, out, _ = gradlint(project, "check", "--output-format", "json", ".")
    assert code == 1
    [item] = json.loads(out)
    assert set(item) >= {"code", "message", "filename", "location", "end_location", "fix", "url"}
    assert item["code"] == "GL001"
    assert item["filename"] == str(project / "model.py")
    assert item["location"] == {"row": 5, "column": 12}
    assert item["end_location"] == {"row": 5, "column": 44}
    assert item["fix"]["applicability"] == "safe"
    [edit] = item["fix"]["edits"]
    assert set(edit) == {"content", "location", "end_location"}
    # Applying the reported edits gives exactly what `fix --write` writes.
    from gradlint.diagnostics import Edit, Location
    from gradlint.edits import apply_edits

    edits = [Edit(e["content"], Location(**e["location"]), Location(**e["end_location"]))
             for e in item["fix"]["edits"]]
    patched = apply_edits(DEFECT, edits)
    gradlint(project, "fix", "--write", ".")
    assert patched == (project / "model.py").read_text()


def test_json_output_is_an_empty_list_when_clean(project, gradlint):
    code, out, _ = gradlint(project, "check", "--output-format", "json", "clean.py")
    assert (code, json.loads(out)) == (0, [])


def test_github_annotations(project, gradlint):
    _, out, _ = gradlint(project, "check", "--output-format", "github", ".")
    assert out.startswith("::error title=gradlint (GL001),file=model.py,line=5,col=12,endLine=5,endColumn=44::")


def test_statistics(project, gradlint):
    (project / "more.py").write_text("y = a / a.norm(dim=-1)\nz = b / b.norm(dim=-1)\n")
    code, out, _ = gradlint(project, "check", "--statistics", ".")
    assert code == 1
    assert out.splitlines()[0] == "3\tGL001\t[*] unguarded-norm-division"


def test_select_and_ignore(project, gradlint):
    assert gradlint(project, "check", "--ignore", "GL001", ".")[0] == 0
    assert gradlint(project, "check", "--select", "GL00", ".")[0] == 1
    assert gradlint(project, "check", "--select", "GL999", ".")[0] == 2  # unknown selector: usage error


def test_nonexistent_path_is_a_usage_error(project, gradlint):
    code, out, err = gradlint(project, "check", "missing.py")
    assert code == 2 and "missing.py: No such file or directory" in err


def test_rule_docs(gradlint, tmp_path):
    code, out, _ = gradlint(tmp_path, "rule", "GL001")
    assert code == 0
    assert out.startswith("# unguarded-norm-division (GL001)")
    for heading in ("## What it does", "## Why is this bad?", "## Example", "## Use instead", "## Fix safety",
                    "## Options"):
        assert heading in out
    code, out, _ = gradlint(tmp_path, "rule", "--all")
    assert code == 0 and all(f"({rule.code})" in out for rule in all_rules())
    assert gradlint(tmp_path, "rule", "GL999")[0] == 2


def test_no_command_prints_help_and_exits_2(gradlint, tmp_path):
    code, out, _ = gradlint(tmp_path)
    assert code == 2 and "check" in out


def test_output_is_deterministic_across_parallel_runs(tmp_path, gradlint):
    padding = "# " + "x" * 100 + "\n"
    for i in range(30):  # enough files and bytes for the process pool
        (tmp_path / f"m{i:02d}.py").write_text((DEFECT if i % 3 == 0 else CLEAN) + padding * 400)
    serial = gradlint(tmp_path, "check", "--no-cache", "--jobs", "1", ".")
    parallel = gradlint(tmp_path, "check", "--no-cache", "--jobs", "2", ".")
    assert serial == parallel and serial[1].count("GL001") == 10
