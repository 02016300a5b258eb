"""`--statistics`: findings counted per rule, as ruff prints them (a table, or JSON with `--output-format json`)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from . import Report
from .summary import summary_lines
from .terminal import Style

STATISTICS_FORMATS = ("full", "concise", "json")


@dataclass(frozen=True)
class RuleCount:
    code: str
    name: str
    count: int
    fixable_count: int

    @property
    def fixable(self) -> bool:
        """ruff's `fixable`: every finding of the rule can be fixed."""
        return self.fixable_count == self.count


def counts(report: Report) -> list[RuleCount]:
    """One entry per rule, most frequent first (ties by code)."""
    by_code: dict[str, list] = {}
    for finding in report.findings:
        entry = by_code.setdefault(finding.code, [finding.rule_name, 0, 0])
        entry[1] += 1
        entry[2] += finding.fixable(report.unsafe_fixes)
    rows = [RuleCount(code, name, count, fixable) for code, (name, count, fixable) in by_code.items()]
    return sorted(rows, key=lambda row: (-row.count, row.code))


def render(fmt: str, report: Report) -> str:
    if fmt == "json":
        return render_json(report)
    if fmt in STATISTICS_FORMATS:
        return render_table(report)
    raise ValueError(f"--statistics works with --output-format {', '.join(STATISTICS_FORMATS)}, not {fmt}")


def render_json(report: Report) -> str:
    """`[{code, name, count, fixable, fixable_count}]`, ruff's shape."""
    return json.dumps([{"code": row.code, "name": row.name, "count": row.count, "fixable": row.fixable,
                        "fixable_count": row.fixable_count} for row in counts(report)], indent=2)


def render_table(report: Report) -> str:
    """flake8's `--statistics` table as ruff prints it: count, code, `[*]` all / `[-]` some fixable, name."""
    rows = counts(report)
    if not rows:
        return ""
    style = Style(report.color)
    count_width = max(len(str(row.count)) for row in rows)
    code_width = max(len(row.code) for row in rows)
    any_fixable = any(row.fixable_count for row in rows)
    lines = []
    for row in rows:
        mark = ""
        if any_fixable:
            mark = f"[{style.cyan('*')}] " if row.fixable else f"[{style.cyan('-')}] " if row.fixable_count else "[ ] "
        padding = " " * (code_width - len(row.code))
        lines.append(f"{style.bold(str(row.count).rjust(count_width))}\t{style.red(row.code)}{padding}\t{mark}{row.name}")
    if not report.quiet:
        lines.extend(summary_lines(report, style))
    return "\n".join(lines)
