"""`[tool.gradlint]` in pyproject.toml, and which files a run walks."""

from __future__ import annotations

import textwrap

DEFECT = "import torch\n\n\ndef f(x):\n    return x / x.norm(dim=-1, keepdim=True)\n"
PLAIN = "z = x / x.norm(dim=-1)\n"


def write(root, files: dict):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_nearest_pyproject_with_a_gradlint_table_is_used(tmp_path, gradlint):
    write(tmp_path, {"pyproject.toml": '[tool.gradlint]\nignore = ["GL001"]\n', "pkg/m.py": PLAIN})
    assert gradlint(tmp_path / "pkg", "check", ".")[0] == 0
    assert gradlint(tmp_path, "check", "pkg")[0] == 0


def test_select_extend_select_and_cli_override(tmp_path, gradlint):
    write(tmp_path, {"pyproject.toml": '[tool.gradlint]\nselect = ["GL003"]\n', "m.py": PLAIN})
    assert gradlint(tmp_path, "check", ".")[0] == 0
    assert gradlint(tmp_path, "check", "--extend-select", "GL001", ".")[0] == 1
    assert gradlint(tmp_path, "check", "--select", "GL001", ".")[0] == 1


def test_per_file_ignores(tmp_path, gradlint):
    write(tmp_path, {"pyproject.toml": '[tool.gradlint.per-file-ignores]\n"tests/*" = ["GL001"]\n',
                     "tests/t.py": PLAIN, "src/m.py": PLAIN})
    code, out, _ = gradlint(tmp_path, "check", ".")
    assert code == 1 and "src/m.py" in out and "tests/t.py" not in out


def test_rule_option_changes_the_fix(tmp_path, gradlint):
    write(tmp_path, {"pyproject.toml": "[tool.gradlint.unguarded-norm-division]\neps = 1e-4\n", "m.py": PLAIN})
    gradlint(tmp_path, "fix", "--write", ".")
    assert (tmp_path / "m.py").read_text() == "z = x / x.norm(dim=-1).clamp_min(0.0001)\n"


def test_unknown_option_is_a_clear_usage_error(tmp_path, gradlint):
    write(tmp_path, {"pyproject.toml": "[tool.gradlint.unguarded-norm-division]\nepsilon = 1e-4\n", "m.py": PLAIN})
    code, _, err = gradlint(tmp_path, "check", ".")
    assert code == 2 and "has no option `epsilon`" in err and "eps" in err


def test_unknown_setting_and_bad_toml(tmp_path, gradlint):
    write(tmp_path, {"pyproject.toml": "[tool.gradlint]\nselcet = ['GL001']\n", "m.py": PLAIN})
    code, _, err = gradlint(tmp_path, "check", ".")
    assert code == 2 and "selcet" in err
    write(tmp_path, {"pyproject.toml": "[tool.gradlint\nselect = 1\n"})
    code, _, err = gradlint(tmp_path, "check", ".")
    assert code == 2 and "invalid TOML" in err


def test_exclude_patterns_and_explicit_files(tmp_path, gradlint):
    write(tmp_path, {"pyproject.toml": '[tool.gradlint]\nextend-exclude = ["generated", "*_pb2.py"]\n',
                     "generated/m.py": PLAIN, "api_pb2.py": PLAIN, "keep.py": PLAIN})
    code, out, _ = gradlint(tmp_path, "check", ".")
    assert out.count("GL001") == 1 and "keep.py" in out
    assert gradlint(tmp_path, "check", "api_pb2.py")[0] == 1  # named explicitly: checked
    assert gradlint(tmp_path, "check", "--force-exclude", "api_pb2.py", "generated/m.py")[0] == 0


def test_walk_skips_virtualenvs_git_and_gitignored_files(tmp_path, gradlint):
    write(tmp_path, {".git/HEAD": "ref: refs/heads/main\n", ".gitignore": "build/\nscratch_*.py\n!scratch_keep.py\n",
                     ".venv/lib/m.py": PLAIN, "env2/pyvenv.cfg": "home = /usr\n", "env2/lib/m.py": PLAIN,
                     "build/m.py": PLAIN, "scratch_1.py": PLAIN, "scratch_keep.py": PLAIN,
                     "node_modules/m.py": PLAIN, "src/m.py": PLAIN, "src/.gitignore": "local.py\n",
                     "src/local.py": PLAIN, "src/stub.pyi": PLAIN, "notes.txt": PLAIN})
    code, out, _ = gradlint(tmp_path, "check", ".")
    reported = sorted(line.split(":")[0] for line in out.splitlines() if "GL001" in line)
    assert reported == ["scratch_keep.py", "src/m.py", "src/stub.pyi"]


def test_noqa_comments(tmp_path, gradlint):
    write(tmp_path, {"m.py": """\
        a = x / x.norm(dim=-1)  # noqa: GL001
        b = x / x.norm(dim=-1)  # noqa
        c = x / x.norm(dim=-1)  # noqa: GL002
        d = x / x.norm(dim=-1)  # NOQA:GL003,GL001
        e = (x /
             x.norm(dim=-1))  # noqa: GL001
        f = (x /  # noqa: GL001
             x.norm(dim=-1))
        g = (
            x / x.norm(dim=-1)
        )  # noqa: GL001
        """})
    code, out, _ = gradlint(tmp_path, "check", ".")
    assert [line.split(":")[1] for line in out.splitlines() if "GL001" in line] == ["3"]


def test_cache_is_used_and_invalidated_by_content(tmp_path, gradlint):
    write(tmp_path, {"pyproject.toml": "[tool.gradlint]\n", "m.py": PLAIN})
    first = gradlint(tmp_path, "check", ".")
    assert (tmp_path / ".gradlint_cache").is_dir()
    assert gradlint(tmp_path, "check", ".") == first
    (tmp_path / "m.py").write_text("z = x\n")
    assert gradlint(tmp_path, "check", ".")[0] == 0
    assert gradlint(tmp_path, "check", "--ignore", "GL001", ".")[0] == 0


def test_settings_of_the_wrong_type_are_errors(tmp_path, gradlint):
    cases = {
        'select = "GL001"': '`select` must be a list of strings, like ["GL001"]; got "GL001"',
        'respect-gitignore = "false"': '`respect-gitignore` must be true or false; got "false"',
        "extend-exclude = 3": "`extend-exclude` must be a list of strings",
        "cache-dir = 5": "`cache-dir` must be a folder name (a string); got 5",
        'per-file-ignores = { "tests/*" = ["GL999"] }': "per-file-ignores `tests/*`: unknown rule selector: `GL999`",
        'per-file-ignores = { "tests/*" = "GL001" }': "`tests/*` must be a list of strings",
    }
    (tmp_path / "m.py").write_text(PLAIN)
    for setting, message in cases.items():
        (tmp_path / "pyproject.toml").write_text(f"[tool.gradlint]\n{setting}\n")
        code, out, err = gradlint(tmp_path, "check", "--no-cache", ".")
        assert (code, out) == (2, ""), setting
        assert len(err.splitlines()) == 1 and message in err, (setting, err)


def test_unknown_per_file_ignore_code_is_an_error_on_a_warm_run_too(tmp_path, gradlint):
    write(tmp_path, {"pyproject.toml": '[tool.gradlint.per-file-ignores]\n"m.py" = ["GL001"]\n', "m.py": PLAIN})
    assert gradlint(tmp_path, "check", ".")[0] == 0  # fills the cache
    write(tmp_path, {"pyproject.toml": '[tool.gradlint.per-file-ignores]\n"m.py" = ["GL01O"]\n'})
    code, _, err = gradlint(tmp_path, "check", ".")
    assert code == 2 and "unknown rule selector: `GL01O`" in err


def test_per_file_ignores_apply_to_fix_too(tmp_path, gradlint):
    write(tmp_path, {"pyproject.toml": '[tool.gradlint.per-file-ignores]\n"tests/*" = ["GL001"]\n',
                     "tests/t.py": PLAIN, "src/m.py": PLAIN})
    gradlint(tmp_path, "fix", "--write", ".")
    assert (tmp_path / "tests/t.py").read_text() == PLAIN
    assert (tmp_path / "src/m.py").read_text() != PLAIN


def test_empty_selector_on_the_command_line_is_a_usage_error(tmp_path, gradlint, capsys):
    import pytest

    (tmp_path / "m.py").write_text(PLAIN)
    for args in (["--select", ","], ["--ignore", "GL001,"], ["--select", ""]):
        with pytest.raises(SystemExit) as exit_info:
            gradlint(tmp_path, "check", *args, ".")
        assert exit_info.value.code == 2
        assert "expected comma-separated rule codes" in capsys.readouterr().err
