"""Settings per file, as ruff resolves them: the closest configuration file wins, `extend` inherits, the
command line overrides every file's; and the fix controls (`fixable`, `extend-safe-fixes`, ...)."""

from __future__ import annotations

import json
import textwrap

import pytest

NORM = "z = x / x.norm(dim=-1)\n"  # GL001 (a norm over a dim: tensor evidence), a safe fix
ADAM = "import torch\nopt = torch.optim.Adam(p, weight_decay=1e-4)\n"  # GL003, an unsafe fix
BOTH = NORM + ADAM


def write(root, files: dict):
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def codes(out: str) -> list[tuple[str, str]]:
    """(file, code) of each finding line of the concise output."""
    return [(line.split(":")[0], line.split(": ")[1].split()[0]) for line in out.splitlines() if ": GL" in line]


@pytest.fixture
def two_roots(tmp_path):
    """A repository with two projects configured differently, and a file under neither project's file."""
    write(tmp_path, {
        "pyproject.toml": "[tool.gradlint]\nignore = [\"GL003\"]\n",
        "vision/pyproject.toml": "[tool.gradlint]\nignore = [\"GL001\"]\n",
        "vision/m.py": BOTH,
        "audio/gradlint.toml": "select = [\"GL003\"]\n",
        "audio/m.py": BOTH,
        "tools/m.py": BOTH,
    })
    return tmp_path


def test_results_do_not_depend_on_the_order_of_the_paths(two_roots, gradlint):
    expected = [("audio/m.py", "GL003"), ("tools/m.py", "GL001"), ("vision/m.py", "GL003")]
    orders = [("vision", "audio", "tools"), ("tools", "audio", "vision"), ("audio/m.py", "tools/m.py", "vision/m.py"),
              ("vision/m.py", "tools/m.py", "audio/m.py")]
    outputs = [gradlint(two_roots, "check", "--no-cache", *order) for order in orders]
    assert all(output == outputs[0] for output in outputs)
    assert codes(outputs[0][1]) == expected
    # The same with the caches each project keeps (in its own folder), and run from inside one project.
    for order in orders:
        assert codes(gradlint(two_roots, "check", *order)[1]) == expected
    assert (two_roots / "vision/.gradlint_cache").is_dir() and (two_roots / "audio/.gradlint_cache").is_dir()
    # From inside a project, a path into the other one still gets the other one's settings.
    _, out, _ = gradlint(two_roots / "vision", "check", "m.py", "../tools/m.py")
    assert codes(out) == [(str(two_roots / "tools/m.py"), "GL001"), ("m.py", "GL003")]


def test_the_closest_configuration_file_wins_and_parents_are_not_merged(two_roots, gradlint):
    # vision's file says nothing about GL003: the root's `ignore = ["GL003"]` does not reach it.
    assert codes(gradlint(two_roots, "check", "vision")[1]) == [("vision/m.py", "GL003")]
    # A pyproject.toml without a [tool.gradlint] table configures nothing: the parent's file applies.
    write(two_roots, {"tools/pyproject.toml": "[project]\nname = 'tools'\n"})
    assert codes(gradlint(two_roots, "check", "tools")[1]) == [("tools/m.py", "GL001")]


def test_gradlint_toml_then_dot_gradlint_toml_take_precedence_over_pyproject(tmp_path, gradlint):
    write(tmp_path, {"pyproject.toml": '[tool.gradlint]\nselect = ["GL001"]\n', "m.py": BOTH})
    assert codes(gradlint(tmp_path, "check", ".")[1]) == [("m.py", "GL001")]
    write(tmp_path, {"gradlint.toml": 'select = ["GL003"]\n'})
    assert codes(gradlint(tmp_path, "check", ".")[1]) == [("m.py", "GL003")]
    write(tmp_path, {".gradlint.toml": 'select = ["GL001", "GL003"]\n'})
    assert codes(gradlint(tmp_path, "check", ".")[1]) == [("m.py", "GL001"), ("m.py", "GL003")]
    # gradlint.toml has no [tool.gradlint] header: one written with it is an unknown setting.
    write(tmp_path, {".gradlint.toml": '[tool.gradlint]\nselect = ["GL001"]\n'})
    code, _, err = gradlint(tmp_path, "check", ".")
    assert code == 2 and ".gradlint.toml: settings go at the top of .gradlint.toml, without [tool.gradlint]" in err


def test_extend_inherits_a_file_relative_to_the_one_that_says_it(tmp_path, gradlint):
    write(tmp_path, {
        "pyproject.toml": """\
            [tool.gradlint]
            ignore = ["GL003"]
            extend-exclude = ["generated"]

            [tool.gradlint.unguarded-norm-division]
            eps = 1e-4
            """,
        "pkg/gradlint.toml": 'extend = "../pyproject.toml"\nextend-exclude = ["legacy.py"]\n',
        "pkg/m.py": BOTH, "pkg/legacy.py": NORM, "pkg/generated/g.py": NORM,
    })
    code, out, _ = gradlint(tmp_path, "check", "pkg")
    assert codes(out) == [("pkg/m.py", "GL001")]  # GL003 ignored, both excludes apply
    gradlint(tmp_path, "fix", "--write", "pkg")
    assert (tmp_path / "pkg/m.py").read_text().startswith("z = x / x.norm(dim=-1).clamp_min(0.0001)\n")
    # The extending file's own settings win over the base's.
    write(tmp_path, {"pkg/gradlint.toml": 'extend = "../pyproject.toml"\nextend-select = ["GL003"]\n',
                     "pkg/m.py": BOTH})
    assert codes(gradlint(tmp_path, "check", "pkg/m.py")[1]) == [("pkg/m.py", "GL001"), ("pkg/m.py", "GL003")]


def test_extend_errors_name_the_file(tmp_path, gradlint):
    write(tmp_path, {"a/gradlint.toml": 'extend = "../b/gradlint.toml"\n', "b/gradlint.toml": 'extend = "../a/gradlint.toml"\n',
                     "a/m.py": NORM})
    code, out, err = gradlint(tmp_path, "check", "a")
    assert (code, out) == (2, "") and "circular `extend`" in err and "a/gradlint.toml -> " in err
    write(tmp_path, {"a/gradlint.toml": 'extend = "missing.toml"\n'})
    code, _, err = gradlint(tmp_path, "check", "a")
    assert code == 2 and "`extend` names" in err and "missing.toml, which is not a file" in err


def test_ruffs_selection_the_more_specific_selector_wins(tmp_path, gradlint):
    write(tmp_path, {"gradlint.toml": 'ignore = ["GL00"]\nextend-select = ["GL001"]\n', "m.py": BOTH})
    assert codes(gradlint(tmp_path, "check", ".")[1]) == [("m.py", "GL001")]
    # ALL, and prefixes, reach the rules that are off by default (GL100), which the default set leaves out.
    write(tmp_path, {"gradlint.toml": "", "n.py": "y = 1  # noqa: GL001\n"})
    assert codes(gradlint(tmp_path, "check", "n.py")[1]) == []
    write(tmp_path, {"gradlint.toml": 'select = ["ALL"]\n'})
    assert codes(gradlint(tmp_path, "check", "n.py")[1]) == [("n.py", "GL100")]
    # `select = [], ignore = [...]` in a base carries its ignores into the file that extends it.
    write(tmp_path, {"base.toml": "select = []\nignore = [\"GL003\"]\n",
                     "gradlint.toml": 'extend = "base.toml"\nselect = ["GL001", "GL003"]\n'})
    assert codes(gradlint(tmp_path, "check", "m.py")[1]) == [("m.py", "GL001")]


def test_unfixable_rules_lose_their_fix_and_fixable_limits_the_fixes(tmp_path, gradlint):
    write(tmp_path, {"gradlint.toml": 'unfixable = ["GL001"]\n', "m.py": NORM})
    code, out, _ = gradlint(tmp_path, "check", "m.py")
    assert "[*]" not in out and "fixable" not in out
    gradlint(tmp_path, "fix", "--write", "m.py")
    assert (tmp_path / "m.py").read_text() == NORM
    _, out, _ = gradlint(tmp_path, "check", "--output-format", "json", "m.py")
    assert json.loads(out)[0]["fix"] is None  # as ruff shows an unfixable rule's finding
    write(tmp_path, {"gradlint.toml": 'fixable = ["GL003"]\n', "m.py": BOTH})
    gradlint(tmp_path, "fix", "--write", "--unsafe-fixes", "m.py")
    assert (tmp_path / "m.py").read_text() == NORM + ADAM.replace("Adam(", "AdamW(")


def test_extend_safe_and_unsafe_fixes_move_a_rules_fixes(tmp_path, gradlint):
    write(tmp_path, {"gradlint.toml": 'extend-safe-fixes = ["GL003"]\nextend-unsafe-fixes = ["GL001"]\n',
                     "m.py": BOTH})
    _, out, _ = gradlint(tmp_path, "check", "m.py")
    assert out.splitlines()[:2] == [
        "m.py:1:5: GL001 Division by a norm with no eps guard: `x.norm(dim=-1)` is 0 for an all-zero input (NaN)",
        "m.py:3:7: GL003 [*] `Adam(weight_decay=1e-4)` is an L2 penalty that Adam's adaptive step rescales; use "
        "`AdamW` (decoupled decay). AdamW's decay is scaled by lr, so the value may need retuning"]
    gradlint(tmp_path, "fix", "--write", "m.py")
    assert (tmp_path / "m.py").read_text() == NORM + ADAM.replace("Adam(", "AdamW(")
    _, out, _ = gradlint(tmp_path, "check", "--output-format", "json", "m.py")
    assert json.loads(out)[0]["fix"]["applicability"] == "unsafe"


def test_unsafe_fixes_in_the_configuration_and_no_unsafe_fixes_on_the_command_line(tmp_path, gradlint):
    write(tmp_path, {"gradlint.toml": "unsafe-fixes = true\n", "m.py": ADAM})
    gradlint(tmp_path, "fix", "--write", "--no-unsafe-fixes", "m.py")
    assert (tmp_path / "m.py").read_text() == ADAM
    code, out, _ = gradlint(tmp_path, "fix", "--write", "m.py")
    assert (tmp_path / "m.py").read_text() == ADAM.replace("Adam(", "AdamW(")
    assert code == 0 and "Found 1 error (1 fixed, 0 remaining)." in out


def test_config_key_value_overrides_every_file_and_config_file_replaces_them(two_roots, gradlint):
    _, out, _ = gradlint(two_roots, "check", "--config", "extend-select = ['GL003']", "vision", "tools")
    assert codes(out) == [("tools/m.py", "GL001"), ("tools/m.py", "GL003"), ("vision/m.py", "GL003")]
    _, out, _ = gradlint(two_roots, "check", "--config", "ignore = []", "--config", 'select = ["GL001"]', ".")
    assert codes(out) == [("audio/m.py", "GL001"), ("tools/m.py", "GL001"), ("vision/m.py", "GL001")]
    # A file given with --config applies to every file; its patterns are relative to the current folder.
    write(two_roots, {"ci.toml": 'select = ["GL001"]\nextend-exclude = ["tools"]\n'})
    _, out, _ = gradlint(two_roots, "check", "--config", "ci.toml", ".")
    assert codes(out) == [("audio/m.py", "GL001"), ("vision/m.py", "GL001")]
    assert codes(gradlint(two_roots, "check", "--isolated", ".")[1]) == [
        (f, c) for f in ("audio/m.py", "tools/m.py", "vision/m.py") for c in ("GL001", "GL003")]


@pytest.mark.parametrize("args, message", [
    (["--config", "select = GL001"], "--config 'select = GL001': neither a configuration file nor a TOML"),
    (["--config", "missing.toml"], "--config missing.toml: configuration file not found"),
    (["--config", "selct = ['GL001']"], "unknown setting `selct`"),
    (["--config", "extend = 'x.toml'"], "`extend` cannot be set with --config"),
    (["--config", "a.toml", "--config", "b.toml"], "only one configuration file can be given"),
    (["--isolated", "--config", "a.toml"], "cannot be used with --isolated"),
    (["--select", "GL999"], "unknown rule selector: `GL999`"),
])
def test_command_line_configuration_errors_are_one_line(tmp_path, gradlint, args, message):
    write(tmp_path, {"a.toml": "", "b.toml": "", "m.py": NORM})
    code, out, err = gradlint(tmp_path, "check", "--no-cache", *args, "m.py")
    assert (code, out) == (2, "") and len(err.splitlines()) == 1 and message in err, err


def test_exclude_extend_exclude_and_gitignore_on_the_command_line(tmp_path, gradlint):
    write(tmp_path, {".git/HEAD": "", ".gitignore": "scratch.py\n", "gradlint.toml": 'exclude = ["gen"]\n',
                     "gen/g.py": NORM, "scratch.py": NORM, "legacy/old.py": NORM, "m.py": NORM})
    reported = [f for f, _ in codes(gradlint(tmp_path, "check", ".")[1])]
    assert reported == ["legacy/old.py", "m.py"]
    reported = [f for f, _ in codes(gradlint(tmp_path, "check", "--extend-exclude", "legacy", ".")[1])]
    assert reported == ["m.py"]
    reported = [f for f, _ in codes(gradlint(tmp_path, "check", "--exclude", "legacy", ".")[1])]
    assert reported == ["gen/g.py", "m.py"]  # --exclude replaces the configuration's
    reported = [f for f, _ in codes(gradlint(tmp_path, "check", "--no-respect-gitignore", ".")[1])]
    assert reported == ["legacy/old.py", "m.py", "scratch.py"]
    # With --force-exclude (what pre-commit passes) a file named on the command line is excluded too.
    assert codes(gradlint(tmp_path, "check", "--extend-exclude", "legacy", "legacy/old.py")[1]) != []
    assert codes(gradlint(tmp_path, "check", "--force-exclude", "--extend-exclude", "legacy", "legacy/old.py")[1]) == []


def test_per_file_ignores_on_the_command_line(tmp_path, gradlint):
    write(tmp_path, {"gradlint.toml": '[per-file-ignores]\n"tests/*" = ["GL001"]\n', "tests/t.py": BOTH,
                     "src/m.py": BOTH})
    assert codes(gradlint(tmp_path, "check", ".")[1]) == [("src/m.py", "GL001"), ("src/m.py", "GL003"),
                                                          ("tests/t.py", "GL003")]
    _, out, _ = gradlint(tmp_path, "check", "--per-file-ignores", "src/*:GL003", ".")  # replaces the file's
    assert codes(out) == [("src/m.py", "GL001"), ("tests/t.py", "GL001"), ("tests/t.py", "GL003")]
    _, out, _ = gradlint(tmp_path, "check", "--extend-per-file-ignores", "src/*:GL003,GL001", ".")
    assert codes(out) == [("tests/t.py", "GL003")]


def test_show_settings_and_show_files(two_roots, gradlint):
    code, out, _ = gradlint(two_roots, "check", "--show-files", "vision", "audio")
    assert code == 0 and out.splitlines() == [str(two_roots / "audio/m.py"), str(two_roots / "vision/m.py")]
    code, out, _ = gradlint(two_roots, "check", "--show-settings", "audio")
    lines = out.splitlines()
    assert code == 0 and lines[:4] == [f"Resolved settings for: {two_roots / 'audio/m.py'}",
                                       f"Settings path: {two_roots / 'audio/gradlint.toml'}",
                                       f"root = {two_roots / 'audio'}", "rules = [GL003]"]
    assert f"cache-dir = {two_roots / 'audio/.gradlint_cache'}" in lines
    _, out, _ = gradlint(two_roots, "check", "--show-settings", "--extend-select", "GL001", "--unfixable", "GL001",
                         "audio")
    assert "rules = [GL001, GL003]" in out and "unfixable = [GL001]" in out


def test_settings_for_is_the_public_way_to_ask_and_reads_each_file_once(two_roots, monkeypatch):
    from gradlint import settings as settings_module
    from gradlint.settings import Resolver, settings_for

    reads = []
    load = settings_module.load_configuration
    monkeypatch.setattr(settings_module, "load_configuration", lambda path, **kw: reads.append(path) or load(path, **kw))
    resolver = Resolver(two_roots)
    deep = two_roots / "vision/a/b/c"
    deep.mkdir(parents=True)
    first = resolver.settings_for(deep / "x.py")
    assert first.config_file == two_roots / "vision/pyproject.toml"
    assert resolver.settings_for(two_roots / "vision/m.py") is first
    assert [r.code for r in first.resolved.rules] == ["GL002", "GL003", "GL004", "GL005", "GL006", "GL007"]
    assert resolver.settings_for(two_roots / "tools/m.py").config_file == two_roots / "pyproject.toml"
    assert reads == [two_roots / "vision/pyproject.toml", two_roots / "pyproject.toml"]
    assert settings_for(two_roots / "audio/m.py", cwd=two_roots).config_file == two_roots / "audio/gradlint.toml"
