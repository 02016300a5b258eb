"""The lines under the findings in the terminal formats: how many, and how to fix them.

Inside a pre-commit hook (pre-commit sets PRE_COMMIT=1) nobody can type a flag: the hint names the
hook's `args:` instead of a command line.
"""

from __future__ import annotations

from . import Report
from .terminal import Style, printable


def plural(n: int, word: str) -> str:
    suffix = "" if n == 1 else ("es" if word.endswith("x") else "s")
    return f"{n} {word}{suffix}"


def _hidden_note(hidden: int, report: Report) -> str:
    if report.pre_commit:
        return f"{plural(hidden, 'hidden fix')} can be enabled with `args: [--fix, --unsafe-fixes]` on this hook"
    return f"{plural(hidden, 'hidden fix')} can be enabled with the `--unsafe-fixes` option"


def _how_to_fix(report: Report) -> str:
    if report.pre_commit:
        return f"`args: [--fix{', --unsafe-fixes' if report.unsafe_fixes else ''}]` on this hook"
    return f"`gradlint fix --write{' --unsafe-fixes' if report.unsafe_fixes else ''}`"


def fix_table(report: Report, style: Style) -> list[str]:
    """`--show-fixes`, as ruff lists them: per file, each rule's fixes, most first."""
    tables = {name: table for name, table in (report.fixes or {}).items() if sum(table.values())}
    if not tables:
        return []
    total = sum(sum(table.values()) for table in tables.values())
    width = len(str(max(max(table.values()) for table in tables.values())))
    verb = "Would fix" if report.command == "diff" else "Fixed"
    lines = ["", style.bold(style.green(f"{verb} {plural(total, 'error')}:"))]
    for filename in sorted(tables):
        lines.append(f"{style.cyan('-')} {style.bold(printable(filename))}{style.cyan(':')}")
        for (code, name), count in sorted(tables[filename].items(), key=lambda item: (-item[1], item[0])):
            lines.append(f"    {count:>{width}} × {style.red(code)} ({name})")
    return [*lines, ""]


def summary_lines(report: Report, style: Style) -> list[str]:
    return fix_table(report, style) + _summary(report, style)


def _summary(report: Report, style: Style) -> list[str]:
    findings = report.findings
    remaining = len(findings)
    safe = sum(1 for f in findings if f.fixable(False))
    hidden = sum(1 for f in findings if f.fixable(True) and not f.fixable(False))
    fixable = safe + (hidden if report.unsafe_fixes else 0)
    if report.command == "diff":
        return [f"Would fix {plural(fixable, 'error')}." if fixable else "No errors would be fixed."]
    if report.command == "fix-only":  # ruff's: what was fixed, nothing about what remains
        return [f"Fixed {plural(report.fixed, 'error')}."] if report.fixed else []
    if report.command == "write" and report.fixed:
        out = [f"Found {plural(remaining + report.fixed, 'error')} ({report.fixed} fixed, {remaining} remaining)."]
    elif remaining == 0:
        return [style.green("All checks passed!")]
    else:
        out = [f"Found {plural(remaining, 'error')}."]
    if report.command == "check":
        if fixable:
            note = f" ({_hidden_note(hidden, report)})" if hidden and not report.unsafe_fixes else ""
            out.append(f"[{style.cyan('*')}] {fixable} fixable with {_how_to_fix(report)}{note}.")
        elif hidden:
            out.append(f"No fixes available ({_hidden_note(hidden, report)}).")
    elif hidden and not report.unsafe_fixes:
        out.append(f"No fixes applied to {plural(hidden, 'error')} ({_hidden_note(hidden, report)}).")
    return out
