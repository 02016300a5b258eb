"""The README's promises: its two set-up commands, CI running the same test command, the rule table."""

from __future__ import annotations

import re
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
