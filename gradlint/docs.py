"""Rule documentation, for `gradlint rule` and for the README's rule table."""

from __future__ import annotations

from .rule import Rule

FIX_NOTES = {
    "always": "Fix is always available.",
    "sometimes": "Fix is sometimes available.",
    "never": "Fix is not available.",
}


def explain(rule: type[Rule]) -> str:
    lines = [f"# {rule.name} ({rule.code})", "", FIX_NOTES[rule.fix_availability()], "", rule.documentation()]
    if rule.options:
        lines += ["", f"Configure under `[tool.gradlint.{rule.name}]`:"]
        lines += [f"- `{opt.name}` = `{opt.default!r}`: {opt.doc}" for opt in rule.options]
    return "\n".join(lines)


def rule_table(rules) -> str:
    """The README's table of rules (a test keeps the README in sync with it)."""
    rows = ["| Code | Name | What it finds | Fix |", "|---|---|---|---|"]
    for rule in rules:
        rows.append(f"| {rule.code} | `{rule.name}` | {rule.summary} | {rule.fix_availability()} |")
    return "\n".join(rows)


if __name__ == "__main__":
    from .registry import all_rules

    print(rule_table(all_rules()))
