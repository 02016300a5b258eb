"""Shell completion scripts, run in the shells themselves: what a TAB offers."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from gradlint.cli import build_parser
from gradlint.completion import script
from gradlint.registry import every_rule

CODES = [rule.code for rule in every_rule()]


def _script(shell: str, tmp_path):
    path = tmp_path / f"gradlint.{shell}"
    path.write_text(script(shell, build_parser(with_verify_options=True), CODES))
    return path


def _needs(shell: str) -> str:
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed")
    return exe


def _bash_complete(path, cwd, *words: str) -> list[str]:
    words_array = " ".join(f"'{w}'" for w in words)
    command = (f"source {path}; COMP_WORDS=({words_array}); COMP_CWORD={len(words) - 1}; _gradlint; "
               'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run([_needs("bash"), "-c", command], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completes_commands_options_values_codes_and_files(tmp_path):
    path = _script("bash", tmp_path)
    (tmp_path / "train.py").write_text("")
    assert _bash_complete(path, tmp_path, "gradlint", "ch") == ["check"]
    assert _bash_complete(path, tmp_path, "gradlint", "fix", "--wr") == ["--write"]
    assert _bash_complete(path, tmp_path, "gradlint", "check", "--output-format", "s") == ["sarif"]
    assert _bash_complete(path, tmp_path, "gradlint", "check", "--select", "GL00")[:2] == ["GL001", "GL002"]
    assert _bash_complete(path, tmp_path, "gradlint", "rule", "GL1") == ["GL100"]
    assert _bash_complete(path, tmp_path, "gradlint", "check", "tr") == ["train.py"]
    assert _bash_complete(path, tmp_path, "gradlint", "check", "--jobs", "") == []


def test_fish_completes_with_descriptions(tmp_path):
    fish = _needs("fish")
    path = _script("fish", tmp_path)
    (tmp_path / "train.py").write_text("")

    def complete(line: str) -> list[str]:
        done = subprocess.run([fish, "-c", f"source {path}; complete -C '{line}'"], cwd=tmp_path,
                              capture_output=True, text=True, check=True)
        return done.stdout.splitlines()

    assert "check\treport findings" in complete("gradlint ")
    assert complete("gradlint fix --wr") == ["--write\twrite the fixes to the files"]
    assert "sarif" in complete("gradlint check --output-format ")
    assert complete("gradlint rule GL1") == ["GL100"]
    assert complete("gradlint check tr") == ["train.py"]


def test_zsh_script_parses_and_registers_itself(tmp_path):
    zsh = _needs("zsh")
    path = _script("zsh", tmp_path)
    subprocess.run([zsh, "-n", str(path)], check=True)
    done = subprocess.run([zsh, "-f", "-c", f"autoload -U compinit; compinit -u -D; source {path}; "
                                            "print -r -- $_comps[gradlint]"], capture_output=True, text=True)
    assert done.stdout.strip() == "_gradlint", done.stderr


def test_unknown_shell_is_refused():
    with pytest.raises(ValueError, match="bash, zsh, fish"):
        script("powershell", build_parser(), CODES)
