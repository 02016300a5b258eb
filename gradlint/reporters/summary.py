"""The lines under the findings in the terminal formats: how many, and how to fix them.

Inside a pre-commit hook (pre-commit sets PRE_COMMIT=1) nobody can type a flag: the hint names the
hook's `args:` instead of a command line.
"""

from __future__ import annotations

from . import Report
from .terminal import Style


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


def summary_lines(report: Report, style: Style) -> list[str]:
    findings = report.findings
    remaining = len(findings)
    safe = sum(1 for f in findings if f.fixable(False))
    hidden = sum(1 for f in findings if f.fixable(True) and not f.fixable(False))
    fixable = safe + (hidden if report.unsafe_fixes else 0)
    if report.command == "diff":
        return [f"Would fix {plural(fixable, 'error')}." if fixable else "No errors would be fixed."]
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
