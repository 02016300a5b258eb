"""The README's promises: its two set-up commands, CI running the same test command, the rule table."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from gradlint.docs import rule_table, rules_markdown
from gradlint.registry import every_rule

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _commands() -> list[str]:
    return re.findall(r"```bash\n(?:#[^\n]*\n)?(.+?)\n```", README)


def test_readme_opens_with_the_two_set_up_commands():
    first, second = _commands()[:2]
    head = README[: README.index(second) + len(second)]
    assert "gradlint verify fixtures/" in first and "gradlint check fixtures" in first
    assert "pytest" in second
    assert README.index(first) < README.index("## ") and head.count("```bash") == 2


def test_ci_runs_the_readmes_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci


def test_rule_table_is_in_sync():
    table = re.search(r"<!-- rules-table.*?-->\n(.*?)\n<!-- end rules-table -->", README, re.S).group(1)
    assert table == rule_table(every_rule()), "regenerate with `python -m gradlint.docs`"


def test_rules_doc_is_in_sync():
    assert (ROOT / "docs" / "rules.md").read_text() == rules_markdown(every_rule()), \
        "regenerate with `python -m gradlint.docs --markdown > docs/rules.md`"


def _quick_start() -> list[tuple[list[str], list[str]]]:
    """The Quick start's `$ gradlint ...` commands, each with the output shown under it."""
    block = re.search(r"## Quick start\n\n```console\n(.*?)```", README, re.S).group(1)
    sessions: list[tuple[list[str], list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            sessions.append((shlex.split(line[2:].split("  #")[0]), []))
        else:
            sessions[-1][1].append(line)
    return sessions


def _in_order(shown: list[str], actual: list[str]) -> bool:
    """Whether the lines shown appear in the actual output in that order; `...` stands for any lines."""
    position = 0
    for line in shown:
        if line == "...":
            continue
        try:
            position = actual.index(line, position) + 1
        except ValueError:
            return False
    return True


def test_the_quick_starts_outputs_are_what_gradlint_prints(tmp_path):
    """Each command of the Quick start that runs on the bundled fixtures prints what the README shows."""
    shutil.copytree(ROOT / "fixtures", tmp_path / "fixtures")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("GRADLINT_", "FORCE_COLOR"))}
    ran = 0
    for argv, shown in _quick_start():
        if argv[:2] == ["gradlint", "verify"] or any(arg == "src" for arg in argv):
            continue  # verify runs training (its own tests); `src` stands for the reader's code
        done = subprocess.run([sys.executable, "-m", "gradlint", *argv[1:]], cwd=tmp_path, capture_output=True,
                              text=True, env=env, timeout=300)
        assert done.returncode in (0, 1), done.stderr
        actual = (done.stdout + done.stderr).splitlines()
        assert _in_order([line for line in shown if line], actual), (argv, done.stdout)
        ran += 1
    assert ran == 5
